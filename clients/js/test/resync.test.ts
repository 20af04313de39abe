/** Resuming a log that cannot be resumed as is: a replayed range, another epoch, a rewound log. */

import assert from "node:assert/strict";
import { test } from "node:test";

import { MemoryStore, type Cursor, type ResyncInfo } from "../src/index.js";
import {
  assertInOrderOnce,
  device,
  sleep,
  until,
  TEST_TIMEOUT_MS,
  useBroker,
} from "./harness.js";

const { broker, ws } = useBroker();

/** A store whose cursor stops being saved while `frozen`: a tab that crashed before it wrote. */
class LaggingStore extends MemoryStore {
  frozen = false;
  override async saveCursor(cursor: Cursor): Promise<void> {
    if (!this.frozen) await super.saveCursor(cursor);
  }
}

test("a replayed range the app already has is dropped (dedupe by mid across a reload)", { timeout: TEST_TIMEOUT_MS }, async () => {
  const sender = await device(ws(), (await broker().token("alice@r1", "a-phone")).token);
  const { token } = await broker().token("bob@r1", "b-phone");
  const store = new LaggingStore();
  const first = await device(ws(), token, { store });
  await Promise.all([sender.client.whenLive(), first.client.whenLive()]);
  for (let i = 1; i <= 3; i++) await sender.client.send("bob@r1", `m${i}`);
  await until("bob holds 3", () => first.messages.length === 3);
  await first.client.idle();
  store.frozen = true;
  for (let i = 4; i <= 6; i++) await sender.client.send("bob@r1", `m${i}`);
  await until("bob holds 6", () => first.messages.length === 6);
  await first.client.idle();
  first.client.close();
  assert.equal((await store.load()).cursor.held, 3, "the stored cursor lags the app");

  // A reload: a new client on the same store resumes from seq 3, the broker replays 4..6.
  store.frozen = false;
  const again = await device(ws(), token, { store });
  await again.client.whenLive();
  await again.client.idle();
  await sender.client.send("bob@r1", "m7");
  await until("the reloaded client gets m7", () => again.messages.length >= 1);
  await sleep(300);
  assert.deepEqual(
    again.messages.map((m) => m.body),
    ["m7"],
    "m4..m6 were handed over before the reload and are not handed over again",
  );
  assert.equal(again.client.position.held, 7);
  for (const d of [sender, again]) d.client.close();
});

test("recovered:false from another epoch: resync, then the log refilled from history, in order", { timeout: TEST_TIMEOUT_MS }, async () => {
  const sender = await device(ws(), (await broker().token("alice@r2", "a-phone")).token);
  const { token } = await broker().token("bob@r2", "b-phone");
  await sender.client.whenLive();
  for (let i = 1; i <= 5; i++) await sender.client.send("bob@r2", `m${i}`);

  const store = new MemoryStore();
  await store.saveCursor({ epoch: "e3b0c44298fc1c14", held: 2 }); // a log from another database
  const resyncs: ResyncInfo[] = [];
  let eventsBeforeResync = -1;
  const bob = await device(ws(), token, { store });
  bob.client.on("resync", (info) => {
    resyncs.push(info);
    eventsBeforeResync = bob.events.length;
  });
  await until("the refill hands over all 5", () => bob.messages.length === 5);
  assert.equal(resyncs.length, 1);
  assert.equal(resyncs[0]?.reason, "epoch_changed");
  assert.equal(resyncs[0]?.complete, true);
  assert.equal(resyncs[0]?.lost, undefined);
  assert.equal(eventsBeforeResync, 0, "the app learns of the resync before the new log's events");
  assertInOrderOnce("bob", bob);
  assert.deepEqual(bob.messages.map((m) => m.body), ["m1", "m2", "m3", "m4", "m5"]);
  assert.equal(bob.client.position.epoch, bob.client.welcome?.epoch);

  // Live events continue after the refill, and the next reconnect resumes normally.
  await sender.client.send("bob@r2", "m6");
  await until("m6", () => bob.messages.length === 6);
  assertInOrderOnce("bob", bob);
  for (const d of [sender, bob]) d.client.close();
});

test("recovered:false because the broker's log is behind the cursor: resync `rewound`, no duplicates", { timeout: TEST_TIMEOUT_MS }, async () => {
  const sender = await device(ws(), (await broker().token("alice@r3", "a-phone")).token);
  await sender.client.whenLive();
  const { token } = await broker().token("bob@r3", "b-phone");
  const store = new MemoryStore();
  const bob = await device(ws(), token, { store });
  await bob.client.whenLive();
  for (let i = 1; i <= 3; i++) await sender.client.send("bob@r3", `m${i}`);
  await until("bob holds 3", () => bob.messages.length === 3);
  await bob.client.idle();
  bob.client.close();

  // The device's store says it holds seq 9 of this epoch: the broker was restored from an
  // older backup. `welcome` says recovered:false and an error (bad_value) follows it.
  const epoch = (await store.load()).cursor.epoch;
  await store.saveCursor({ epoch, held: 9 });
  const resyncs: ResyncInfo[] = [];
  const errors: string[] = [];
  const again = await device(ws(), token, { store });
  again.client.on("resync", (info) => void resyncs.push(info));
  again.client.on("error", (e) => void errors.push(e.code));
  await until("the resync", () => resyncs.length === 1);
  await again.client.idle();
  assert.equal(resyncs[0]?.reason, "rewound");
  assert.equal(again.messages.length, 0, "m1..m3 were seen already (dedupe by mid)");
  assert.deepEqual(errors, [], "the expected bad_value is the resync, not an app error");
  await sender.client.send("bob@r3", "m4");
  await until("m4", () => again.messages.length === 1);
  assert.equal(again.messages[0]?.body, "m4");
  assert.equal(again.messages[0]?.seq, 4);
  for (const d of [sender, again]) d.client.close();
});
