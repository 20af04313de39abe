/** The rest of the API against the real broker: acks, read, history, files, calls, typing, presence. */

import assert from "node:assert/strict";
import { test } from "node:test";

import type { CallFrame, LoggedEvent, ReceiptFrame } from "../src/index.js";
import {
  Broker,
  TEST_TIMEOUT_MS,
  device,
  sleep,
  until,
  within,
  useBroker,
} from "./harness.js";

const { broker, ws } = useBroker();

test("ack only after the app's handler ran; read makes a read receipt and a marker", { timeout: TEST_TIMEOUT_MS }, async () => {
  const alice = await device(ws(), (await broker().token("alice@f1", "a")).token);
  const { token } = await broker().token("bob@f1", "b");
  const bob = await device(ws(), token, { ackDelayMs: 10 });
  await Promise.all([alice.client.whenLive(), bob.client.whenLive()]);
  let open: () => void = () => {};
  const gate = new Promise<void>((resolve) => (open = resolve));
  bob.client.on("message", () => gate);
  const receipts: ReceiptFrame[] = [];
  alice.client.on("receipt", (r) => void receipts.push(r));

  const sent = await alice.client.send("bob@f1", "hello");
  await sleep(500);
  assert.equal(receipts.length, 0, "no `delivered` while bob's handler still runs");
  open();
  await until("delivered", () => receipts.length === 1);
  assert.equal(receipts[0]?.status, "delivered");
  assert.equal(receipts[0]?.mid, sent.mid);

  bob.client.read("alice@f1", sent.mid);
  await until("read receipt", () => receipts.length === 2);
  assert.equal(receipts[1]?.status, "read");
  await until("bob's own read marker", () => bob.events.some((e) => e.op === "read"));
});

test("history pages backwards as an async iterator", { timeout: TEST_TIMEOUT_MS }, async () => {
  const alice = await device(ws(), (await broker().token("alice@f2", "a")).token);
  await alice.client.whenLive();
  await broker().token("bob@f2", "b");
  for (let i = 1; i <= 7; i++) await alice.client.send("bob@f2", i);
  const pages: LoggedEvent[][] = [];
  for await (const page of alice.client.history({ limit: 3 })) pages.push(page);
  assert.deepEqual(
    pages.map((p) => p.map((e) => e.seq)),
    [[5, 6, 7], [2, 3, 4], [1]],
  );
});

test("history and profile answers are matched by id: a refused read in flight is not taken for them", { timeout: TEST_TIMEOUT_MS }, async () => {
  const alice = await device(ws(), (await broker().token("alice@f9", "a")).token, { profileCache: false });
  await alice.client.whenLive();
  await broker().token("bob@f9", "b");
  await alice.client.send("bob@f9", "one");
  const errors: string[] = [];
  alice.client.on("error", (e) => void errors.push(e.code));
  // Each read is refused without an id (an unknown peer; a mid that is no message from bob),
  // with the same codes a refused profile get or history would have, and before their answers.
  alice.client.read("nobody@f9", 1);
  const profile = alice.client.getProfile("bob@f9");
  alice.client.read("bob@f9", 999);
  const pages = alice.client.history({ limit: 5 })[Symbol.asyncIterator]();
  const page = await within("the history page", pages.next());
  assert.deepEqual((page.value as LoggedEvent[]).map((e) => e.seq), [1]);
  const answer = await within("the profile", profile);
  assert.deepEqual(answer, { op: "profile", address: "bob@f9", profile: {}, version: 0 });
  await until("both refusals reach the app", () => errors.length === 2);
  assert.deepEqual(errors.sort(), ["bad_value", "unknown_recipient"]);
  // A refused request still gets its own refusal, by id.
  await assert.rejects(alice.client.getProfile("nobody@f9"), { name: "OctetError", code: "unknown_recipient" });
});

test("upload with progress, send with the file, fileUrl downloads it", { timeout: TEST_TIMEOUT_MS }, async () => {
  const alice = await device(ws(), (await broker().token("alice@f3", "a")).token);
  const bob = await device(ws(), (await broker().token("bob@f3", "b")).token);
  await Promise.all([alice.client.whenLive(), bob.client.whenLive()]);
  const bytes = new TextEncoder().encode("x".repeat(200_000));
  const progress: number[] = [];
  const file = await alice.client.upload(bytes, {
    name: "notes.txt",
    onProgress: (sent, total) => {
      assert.equal(total, bytes.length);
      progress.push(sent);
    },
  });
  assert.equal(file.name, "notes.txt");
  assert.equal(file.size, bytes.length);
  assert.ok(progress.length > 1, "progress was reported along the way");
  assert.equal(progress[progress.length - 1], bytes.length);

  await alice.client.send("bob@f3", "see attached", { files: [file.id] });
  await until("bob got the file", () => bob.messages.length === 1);
  assert.equal(bob.messages[0]?.files?.[0]?.id, file.id);
  const signed = await bob.client.fileUrl(file.id);
  const body = await (await fetch(signed.url)).text();
  assert.equal(body.length, bytes.length);
  await assert.rejects(bob.client.fileUrl("f_00000000000000000000000000000000"), /no_such_file/);
});

test("calls: ring on every callee device, answered on one, answered_elsewhere on the other", { timeout: TEST_TIMEOUT_MS }, async () => {
  const alice = await device(ws(), (await broker().token("alice@f4", "a")).token);
  const b1 = await device(ws(), (await broker().token("bob@f4", "b1")).token);
  const b2 = await device(ws(), (await broker().token("bob@f4", "b2")).token);
  await Promise.all([alice, b1, b2].map((d) => d.client.whenLive()));
  const calls = new Map<string, CallFrame[]>([["alice", []], ["b1", []], ["b2", []]]);
  alice.client.on("call", (c) => void calls.get("alice")?.push(c));
  b1.client.on("call", (c) => void calls.get("b1")?.push(c));
  b2.client.on("call", (c) => void calls.get("b2")?.push(c));
  const id = alice.client.ring("bob@f4", { data: { sdp: "offer" } });
  await until("both ring", () => calls.get("b1")?.length === 1 && calls.get("b2")?.length === 1);
  b1.client.answer(id, { sdp: "answer" });
  await until("answered", () => calls.get("alice")?.some((c) => c.action === "answer") ?? false);
  await until("elsewhere", () => calls.get("b2")?.some((c) => c.action === "answered_elsewhere") ?? false);
  alice.client.signal(id, { candidate: "c" });
  await until("signal", () => calls.get("b1")?.some((c) => c.action === "signal") ?? false);
  b1.client.hangup(id);
  await until("the call record", () => alice.events.some((e) => e.op === "call_record"));
  const record = alice.events.find((e) => e.op === "call_record");
  assert.equal(record?.op === "call_record" && record.status, "answered");
});

test("typing and presence reach the other person", { timeout: TEST_TIMEOUT_MS }, async () => {
  const alice = await device(ws(), (await broker().token("alice@f5", "a")).token);
  const bob = await device(ws(), (await broker().token("bob@f5", "b")).token);
  await Promise.all([alice.client.whenLive(), bob.client.whenLive()]);
  await alice.client.send("bob@f5", "hi"); // contacts may see each other's presence
  const typing: string[] = [];
  bob.client.on("typing", (t) => void typing.push(`${t.from}:${t.state}`));
  alice.client.typing("bob@f5", "start");
  await until("typing", () => typing.includes("alice@f5:start"));
  const presence: string[] = [];
  alice.client.on("presence", (p) => void presence.push(`${p.address}:${p.status}`));
  alice.client.subscribePresence(["bob@f5"]);
  await until("presence", () => presence.includes("bob@f5:online"));
});

test("rate_limited slows the sends down; every send is still stored once", { timeout: TEST_TIMEOUT_MS }, async () => {
  const slow = await Broker.start(["--send-rate", "20", "--send-burst", "5"]);
  try {
    const url = `ws://${slow.addr}/ws`;
    const alice = await device(url, (await slow.token("alice@f6", "a")).token);
    const bob = await device(url, (await slow.token("bob@f6", "b")).token);
    await Promise.all([alice.client.whenLive(), bob.client.whenLive()]);
    const pauses: number[] = [];
    alice.client.on("throttled", (t) => void pauses.push(t.pauseMs));
    const sends = [];
    for (let i = 0; i < 40; i++) sends.push(alice.client.send("bob@f6", i));
    const sent = await Promise.all(sends);
    assert.equal(new Set(sent.map((s) => s.mid)).size, 40);
    await until("bob holds all 40", () => bob.messages.length === 40);
    assert.ok(pauses.length > 0, "the broker refused some sends for the rate");
    alice.client.close();
    bob.client.close();
  } finally {
    await slow.stop();
  }
});

test("a refused send rejects with its code and leaves the queue", { timeout: TEST_TIMEOUT_MS }, async () => {
  const alice = await device(ws(), (await broker().token("alice@f7", "a")).token);
  await alice.client.whenLive();
  await assert.rejects(alice.client.send("nobody@f7", "hi"), { code: "unknown_recipient" });
  assert.deepEqual(alice.client.pendingSends(), []);
});

test("a message with a newer profile version makes the client fetch the sender's profile once", { timeout: TEST_TIMEOUT_MS }, async () => {
  const alice = await device(ws(), (await broker().token("alice@f8", "a")).token);
  const bob = await device(ws(), (await broker().token("bob@f8", "b")).token);
  await Promise.all([alice.client.whenLive(), bob.client.whenLive()]);
  const fetched: string[] = [];
  bob.client.on("peer_profile", (p) => void fetched.push(`${p.address}:${p.version}:${p.profile.name ?? ""}`));
  await alice.client.send("bob@f8", "before");
  await until("the first fetch (unknown sender)", () => fetched.length === 1);
  assert.equal(fetched[0], "alice@f8:0:");
  await alice.client.send("bob@f8", "same version");
  await alice.client.setProfile({ name: "Alice" });
  await until("alice's own profile event", () => alice.events.some((e) => e.op === "profile"));
  await alice.client.send("bob@f8", "after");
  await until("the refetch", () => fetched.length === 2);
  assert.equal(fetched[1], "alice@f8:1:Alice");
  assert.equal(bob.client.profileOf("alice@f8")?.profile.name, "Alice");
  await sleep(300);
  assert.equal(fetched.length, 2, "no fetch for a version already held");
});
