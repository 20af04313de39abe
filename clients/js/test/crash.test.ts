/**
 * The broker killed with SIGKILL mid-stream and restarted on the same data: every message the
 * app was told `sent` reaches every device of both persons exactly once, in order.
 */

import assert from "node:assert/strict";
import { test } from "node:test";

import type { SentFrame } from "../src/index.js";
import {
  Broker,
  Proxy,
  assertInOrderOnce,
  device,
  sleep,
  until,
  TEST_TIMEOUT_MS,
  closeAllClients,
  within,
} from "./harness.js";

test("SIGKILL mid-stream, restart on the same data: every `sent` message reaches every device once, in order", { timeout: TEST_TIMEOUT_MS }, async () => {
  const broker = await Broker.start();
  // The devices reach the broker through a proxy, so the restarted broker (on a new port the
  // kernel picks) is behind the same URL.
  const proxy = new Proxy(broker.addr);
  await proxy.listen();
  try {
    const a1 = await device(proxy.url, (await broker.token("alice@k", "a-phone")).token);
    const a2 = await device(proxy.url, (await broker.token("alice@k", "a-laptop")).token);
    const b1 = await device(proxy.url, (await broker.token("bob@k", "b-phone")).token);
    const b2 = await device(proxy.url, (await broker.token("bob@k", "b-tablet")).token);
    const all = [a1, a2, b1, b2];
    await Promise.all(all.map((d) => d.client.whenLive()));

    const N = 150;
    const sent: SentFrame[] = [];
    const failures: unknown[] = [];
    const sends: Promise<void>[] = [];
    for (let i = 0; i < N; i++) {
      for (const [d, to] of [[a1, "bob@k"], [b1, "alice@k"]] as const) {
        sends.push(
          d.client.send(to, { n: i }).then(
            (s) => void sent.push(s),
            (e: unknown) => void failures.push(e),
          ),
        );
      }
    }
    await until("some sends are answered", () => sent.length >= 40);
    await broker.kill();
    const answeredBeforeKill = sent.length;
    await sleep(200);
    await broker.spawn(); // the same data dir, a new port
    proxy.target = broker.addr;
    proxy.cut(); // the clients' half-open sockets to the old broker are gone
    await within("every send answered", Promise.all(sends));
    assert.deepEqual(failures, []);
    assert.equal(sent.length, 2 * N);
    assert.ok(answeredBeforeKill < 2 * N, "the kill came mid-stream");

    const mids = new Set(sent.map((s) => s.mid));
    assert.equal(mids.size, 2 * N, "each send stored once");
    for (const d of all) {
      await until("every device holds every sent message", () => {
        const have = new Set(d.messages.map((m) => m.mid));
        return [...mids].every((m) => have.has(m));
      });
    }
    await sleep(300);
    for (const [name, d] of [["a1", a1], ["a2", a2], ["b1", b1], ["b2", b2]] as const) {
      assertInOrderOnce(name, d);
      assert.equal(d.messages.length, 2 * N, `${name}: no message twice, none extra`);
      assert.ok(d.welcomes >= 2, `${name} reconnected`);
    }
    // The devices of one person hold the same log: each message at the same seq.
    const log = (d: typeof a1) =>
      d.messages.map((m) => `${m.mid}@${m.seq}`).sort().join(",");
    assert.equal(log(a1), log(a2));
    assert.equal(log(b1), log(b2));
    for (const d of all) d.client.close();
  } finally {
    closeAllClients();
    await proxy.close();
    await broker.stop();
  }
});
