/**
 * The IndexedDB store's logic on fake-indexeddb (the real browser's is the end-to-end test's,
 * later work), and a reload against the real broker: cursor and unsent sends survive it.
 */

import assert from "node:assert/strict";
import { test } from "node:test";

import { IDBFactory } from "fake-indexeddb";

import { IdbStore } from "../src/idb.js";
import type { SentFrame } from "../src/index.js";
import {
  TEST_TIMEOUT_MS,
  device,
  sleep,
  until,
  useBroker,
} from "./harness.js";

const { broker } = useBroker();

test("IdbStore keeps cursor, pending sends in order and the newest seen keys across a reopen", { timeout: TEST_TIMEOUT_MS }, async () => {
  const factory = new IDBFactory();
  const store = await IdbStore.open("device-1", { factory, seenLimit: 3 });
  const empty = await store.load();
  assert.deepEqual(empty, { cursor: { epoch: null, held: 0 }, pending: [], seen: [] });
  await store.saveCursor({ epoch: "e1", held: 7 });
  for (const id of ["c", "a", "b"]) {
    await store.putPending({ id, to: "bob@x", bodyText: `"${id}"`, files: [], createdAt: 1 });
  }
  await store.deletePending("a");
  await store.addSeen(["m:1", "m:2"]);
  await store.addSeen(["m:3", "m:4", "m:5"]);
  store.close();

  const again = await IdbStore.open("device-1", { factory, seenLimit: 3 });
  const loaded = await again.load();
  assert.deepEqual(loaded.cursor, { epoch: "e1", held: 7 });
  assert.deepEqual(loaded.pending.map((p) => p.id), ["c", "b"], "oldest first, deleted gone");
  assert.deepEqual(loaded.pending[0], { id: "c", to: "bob@x", bodyText: '"c"', files: [], createdAt: 1 });
  assert.deepEqual(loaded.seen, ["m:3", "m:4", "m:5"], "the oldest keys forgotten past the limit");
  // A send queued after the reopen goes after the ones stored before it.
  await again.putPending({ id: "d", to: "bob@x", bodyText: null, files: ["f_1"], createdAt: 2 });
  assert.deepEqual((await again.load()).pending.map((p) => p.id), ["c", "b", "d"]);
  again.close();
});

test("a reload on IdbStore resumes the log and sends what a crashed tab had queued", { timeout: TEST_TIMEOUT_MS }, async () => {
  const factory = new IDBFactory();
  const ws = `ws://${broker().addr}/ws`;
  const alice = await device(ws, (await broker().token("alice@i", "a-phone")).token);
  const { token } = await broker().token("bob@i", "b-phone");
  const store = await IdbStore.open("bob", { factory });
  const tab = await device(ws, token, { store });
  await Promise.all([alice.client.whenLive(), tab.client.whenLive()]);
  for (let i = 1; i <= 3; i++) await alice.client.send("bob@i", `m${i}`);
  await until("the tab holds 3", () => tab.messages.length === 3);
  await tab.client.idle();
  tab.client.close();
  store.close();

  // The tab "crashed" with a send stored but never answered (and a message sent meanwhile).
  const crashed = await IdbStore.open("bob", { factory });
  await crashed.putPending({
    id: "queued-before-crash",
    to: "alice@i",
    bodyText: '{"text":"from the crashed tab"}',
    files: [],
    createdAt: Date.now(),
  });
  crashed.close();
  await alice.client.send("bob@i", "m4");

  const reopened = await IdbStore.open("bob", { factory });
  const sents: SentFrame[] = [];
  const reloaded = await device(ws, token, { store: reopened });
  reloaded.client.on("sent", (s) => void sents.push(s));
  await until("the queued send is answered", () => sents.length === 1);
  const incoming = () => alice.messages.filter((m) => !m.out);
  await until("alice got it", () => incoming().length === 1);
  await until("the reload got m4", () => reloaded.messages.some((m) => m.body === "m4"));
  await reloaded.client.idle();
  await sleep(300);
  assert.equal(sents[0]?.id, "queued-before-crash");
  assert.deepEqual(incoming().map((m) => m.body), [{ text: "from the crashed tab" }]);
  assert.deepEqual(
    reloaded.messages.map((m) => m.body),
    ["m4", { text: "from the crashed tab" }],
    "only what the tab had not handled yet, in seq order, once",
  );
  assert.deepEqual((await reopened.load()).pending, []);
  reloaded.client.close();
});
