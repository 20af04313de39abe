/** Two persons × two devices against the real broker: each message once, in order, everywhere. */

import assert from "node:assert/strict";
import { test } from "node:test";

import { ClosedError } from "../src/index.js";
import {
  Proxy,
  assertInOrderOnce,
  device,
  sleep,
  until,
  type Device,
  TEST_TIMEOUT_MS,
  within,
  useBroker,
} from "./harness.js";

const { broker, ws } = useBroker();

test("two persons x two devices: every message reaches every device once, in seq order", { timeout: TEST_TIMEOUT_MS }, async () => {
  const a1 = await device(ws(), (await broker().token("alice@t1", "a-phone")).token);
  const a2 = await device(ws(), (await broker().token("alice@t1", "a-laptop")).token);
  const b1 = await device(ws(), (await broker().token("bob@t1", "b-phone")).token);
  const b2 = await device(ws(), (await broker().token("bob@t1", "b-tablet")).token);
  const all = [a1, a2, b1, b2];
  await Promise.all(all.map((d) => d.client.whenLive()));

  const sends = [];
  for (let i = 0; i < 10; i++) {
    sends.push(a1.client.send("bob@t1", { text: `a1-${i}` }));
    sends.push(a2.client.send("bob@t1", { text: `a2-${i}` }));
    sends.push(b1.client.send("alice@t1", { text: `b1-${i}` }));
    sends.push(b2.client.send("alice@t1-linked-1", { text: `b2-${i}` }));
  }
  const sent = await within("every sent", Promise.all(sends));
  const mids = new Set(sent.map((s) => s.mid));
  assert.equal(mids.size, 40);

  for (const d of all) {
    await until("every device holds all 40 messages", () => d.messages.length >= 40);
  }
  await sleep(300); // anything extra (a duplicate) would arrive now
  for (const [name, d] of [["a1", a1], ["a2", a2], ["b1", b1], ["b2", b2]] as const) {
    assertInOrderOnce(name, d);
    assert.deepEqual(new Set(d.messages.map((m) => m.mid)), mids, `${name} holds every message`);
  }
  // Both devices of a person see the same log.
  const log = (d: Device) => d.messages.map((m) => `${m.seq}:${m.mid}`).join(",");
  assert.equal(log(a1), log(a2));
  assert.equal(log(b1), log(b2));
  // A device's own sends come back to its app as `out` messages carrying their client id,
  // and the person's other device sees them as `out` too.
  const own = a1.messages.filter((m) => m.id !== undefined);
  assert.equal(own.length, 10);
  assert.ok(own.every((m) => m.out === true && m.from === "alice@t1"));
  assert.equal(a2.messages.filter((m) => m.out && (m.body as { text: string }).text.startsWith("a1-")).length, 10);
  for (const d of all) d.client.close();
});

test("a send whose `sent` was lost in a close is retried with the same id and stored once", { timeout: TEST_TIMEOUT_MS }, async () => {
  const proxy = new Proxy(broker().addr);
  await proxy.listen();
  const a1 = await device(proxy.url, (await broker().token("alice@t2", "a-phone")).token);
  const a2 = await device(ws(), (await broker().token("alice@t2", "a-laptop")).token);
  const b1 = await device(ws(), (await broker().token("bob@t2", "b-phone")).token);
  await Promise.all([a1, a2, b1].map((d) => d.client.whenLive()));

  proxy.holdDown = true; // the broker's answers to a1 are lost from here on
  const promise = a1.client.send("bob@t2", { text: "only once" }, { id: "retry-1" });
  await until("bob got the message: the broker stored it", () => b1.messages.length === 1);
  assert.equal(a1.client.pendingSends()[0], "retry-1");
  proxy.cut();
  proxy.holdDown = false;
  const sent = await within("the retried send's sent", promise);
  assert.equal(sent.id, "retry-1");
  assert.equal(sent.mid, b1.messages[0]?.mid, "the retry got the original `sent`");
  await until("a2 got the out copy", () => a2.messages.length === 1);
  await until("a1's app got its own copy", () => a1.messages.length === 1);
  assert.ok(a1.welcomes >= 2, "a1 reconnected");
  await sleep(300);
  assert.equal(b1.messages.length, 1, "bob sees it once");
  assert.equal(a2.messages.length, 1);
  assert.equal(a1.messages.length, 1, "a1's app sees its own message once");
  assert.equal(a1.messages[0]?.id, "retry-1");
  assert.deepEqual(a1.client.pendingSends(), []);
  for (const d of [a1, a2, b1]) assertInOrderOnce("device", d);
  for (const d of [a1, a2, b1]) d.client.close();
  await proxy.close();
});

test("a connection gone silent is given up after answerTimeoutMs; the send is retried and stored once", { timeout: TEST_TIMEOUT_MS }, async () => {
  const proxy = new Proxy(broker().addr);
  await proxy.listen();
  const a1 = await device(proxy.url, (await broker().token("alice@t5", "a-phone")).token, {
    answerTimeoutMs: 1000,
  });
  const b1 = await device(ws(), (await broker().token("bob@t5", "b-phone")).token);
  await Promise.all([a1, b1].map((d) => d.client.whenLive()));
  proxy.silenceOpenConnections();
  const sent = await within("the sent, after giving the silent connection up", a1.client.send("bob@t5", "hello"));
  assert.ok(a1.welcomes >= 2, "a1 reconnected");
  await until("bob got it", () => b1.messages.length === 1);
  await sleep(300);
  assert.equal(b1.messages.length, 1);
  assert.equal(b1.messages[0]?.mid, sent.mid);
  assert.equal(a1.messages.length, 1);
  for (const d of [a1, b1]) d.client.close();
  await proxy.close();
});

test("a replaced login stops the older client for good, without a reconnect loop", { timeout: TEST_TIMEOUT_MS }, async () => {
  const { token } = await broker().token("carol@t3", "c-phone");
  const first = await device(ws(), token);
  await first.client.whenLive();
  const closed = first.client.once("closed");
  const second = await device(ws(), token);
  await second.client.whenLive();
  const err = await within("the first client's final close", closed);
  assert.equal(err.reason, "replaced");
  assert.equal(err.code, 4003);
  await sleep(1000); // with backoff 50..500 ms, a loop would have logged in again by now
  assert.equal(first.welcomes, 1);
  assert.equal(second.welcomes, 1);
  assert.equal(first.client.state, "closed");
  assert.equal(second.client.state, "live");
  await assert.rejects(first.client.send("bob@t1", "x"), ClosedError);
  second.client.close();
});

test("a revoked token stops the client, and its pending sends reject", { timeout: TEST_TIMEOUT_MS }, async () => {
  const { token, uid } = await broker().token("dave@t4", "d-phone");
  const d = await device(ws(), token);
  await d.client.whenLive();
  const closed = d.client.once("closed");
  await broker().backend({ op: "tokendel", uid });
  const err = await within("the final close", closed);
  assert.equal(err.reason, "revoked");
  assert.equal(err.code, 4004);
  await sleep(500);
  assert.equal(d.welcomes, 1);
  await assert.rejects(d.client.send("bob@t1", "x"), ClosedError);
});
