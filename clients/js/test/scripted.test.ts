/**
 * Cases a healthy broker cannot be made to produce on demand (a gap pruned by retention, a 4008
 * close), played by a scripted WebSocket that speaks the broker's frames from proto/frames.md.
 */

import assert from "node:assert/strict";
import { test } from "node:test";

import { MemoryStore, connect, type LoggedEvent, type ResyncInfo } from "../src/index.js";
import type { CloseEventLike, WebSocketLike } from "../src/index.js";
import { TEST_TIMEOUT_MS, until } from "./harness.js";

/** One scripted connection: the test reads what the client wrote and answers as the broker. */
class ScriptedSocket implements WebSocketLike {
  static all: ScriptedSocket[] = [];
  readyState = 0;
  onopen: ((event: unknown) => void) | null = null;
  onmessage: ((event: { data: unknown }) => void) | null = null;
  onclose: ((event: CloseEventLike) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;
  readonly written: Record<string, unknown>[] = [];

  constructor(readonly url: string) {
    ScriptedSocket.all.push(this);
    setTimeout(() => {
      this.readyState = 1;
      this.onopen?.({});
    }, 0);
  }

  send(data: string): void {
    this.written.push(JSON.parse(data) as Record<string, unknown>);
  }

  close(code = 1000, reason = ""): void {
    this.serverClose(code, reason);
  }

  /** A frame from the "broker". */
  frame(frame: object): void {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }

  serverClose(code: number, reason: string): void {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }

  ops(op: string): Record<string, unknown>[] {
    return this.written.filter((f) => f.op === op);
  }
}

const welcome = (seq: number, recovered: boolean) => ({
  op: "welcome",
  uid: 2,
  address: "bob@s",
  primary: { uid: 2, address: "bob@s" },
  seq,
  epoch: "ep1",
  recovered,
});
const message = (seq: number) => ({
  op: "message",
  mid: 100 + seq,
  seq,
  from: "alice@s",
  to: "bob@s",
  ts: 1,
  body: `m${seq}`,
});

test("a gap pruned by retention is reported as lost, never handed over as complete", { timeout: TEST_TIMEOUT_MS }, async () => {
  ScriptedSocket.all = [];
  const store = new MemoryStore();
  await store.saveCursor({ epoch: "ep1", held: 3 });
  const client = await connect({ url: "ws://scripted/ws", token: "t", appid: "a", store, WebSocket: ScriptedSocket });
  const seen: LoggedEvent[] = [];
  const resyncs: ResyncInfo[] = [];
  client.on("event", (e) => void seen.push(e));
  client.on("resync", (r) => void resyncs.push(r));
  await until("the login", () => ScriptedSocket.all[0]?.ops("login").length === 1);
  const ws = ScriptedSocket.all[0]!;
  assert.deepEqual(ws.ops("login")[0], { op: "login", token: "t", appid: "a", since: 3, epoch: "ep1" });
  // Events 4..6 were pruned: the log holds 7..10, and the catch-up is impossible.
  ws.frame(welcome(10, false));
  ws.frame({ op: "synced", seq: 10, replayed: 0 });
  ws.frame(message(11)); // a live event during the refill waits for it
  await until("a history request", () => ws.ops("history").length === 1);
  const { id, ...asked } = ws.ops("history")[0]!;
  assert.deepEqual(asked, { op: "history", before: 11, limit: 500 });
  assert.equal(typeof id, "string", "the request is tagged with an id");
  ws.frame({ op: "history", id, events: [7, 8, 9, 10].map(message), more: false });
  await until("all handed over", () => seen.length === 5);
  assert.deepEqual(seen.map((e) => e.seq), [7, 8, 9, 10, 11]);
  assert.equal(resyncs.length, 1);
  assert.deepEqual(resyncs[0], {
    reason: "pruned",
    previous: { epoch: "ep1", held: 3 },
    seq: 10,
    complete: false,
    lost: { from: 4, to: 6 },
  });
  await until("the ack", () => ws.ops("ack").length > 0);
  assert.equal(ws.ops("ack").at(-1)?.seq, 11);
  client.close();
});

test("4008 reconnects at once with since and epoch; a sent that overtakes live events waits its turn", { timeout: TEST_TIMEOUT_MS }, async () => {
  ScriptedSocket.all = [];
  const client = await connect({ url: "ws://scripted/ws", token: "t", appid: "a", WebSocket: ScriptedSocket });
  const seen: number[] = [];
  client.on("event", (e) => void seen.push(e.seq));
  await until("the login", () => ScriptedSocket.all.length === 1 && ScriptedSocket.all[0]!.written.length === 1);
  const first = ScriptedSocket.all[0]!;
  assert.equal(first.ops("login")[0]?.since, 0, "a first start replays the whole log");
  first.frame(welcome(1, true));
  first.frame(message(1));
  first.frame({ op: "synced", seq: 1, replayed: 1 });
  const sending = client.send("alice@s", "mine");
  await until("the send", () => first.ops("send").length === 1);
  const id = first.ops("send")[0]?.id as string;
  first.frame({ op: "sent", id, mid: 500, seq: 3, ts: 2 }); // before live seq 2
  assert.equal((await sending).seq, 3);
  await client.idle();
  assert.deepEqual(seen, [1], "seq 3 waits for seq 2");
  first.frame(message(2));
  await until("2 and 3", () => seen.length === 3);
  assert.deepEqual(seen, [1, 2, 3]);
  await client.idle();

  first.serverClose(4008, "slow consumer: reconnect and resync");
  await until("a reconnect", () => ScriptedSocket.all.length === 2);
  const second = ScriptedSocket.all[1]!;
  await until("the login", () => second.ops("login").length === 1);
  assert.deepEqual(second.ops("login")[0], { op: "login", token: "t", appid: "a", since: 3, epoch: "ep1" });
  client.close();
});

test("sends are refused before they leave when the queue is full or the frame too large", { timeout: TEST_TIMEOUT_MS }, async () => {
  ScriptedSocket.all = [];
  const store = new MemoryStore();
  const client = await connect({ url: "ws://scripted/ws", token: "t", appid: "a", store, maxQueue: 2, WebSocket: ScriptedSocket });
  // Offline (no welcome yet): two sends wait in the store, the third is refused.
  const waiting = [client.send("alice@s", 1), client.send("alice@s", 2)];
  await until("both stored", () => client.pendingSends().length === 2);
  await assert.rejects(client.send("alice@s", 3), { name: "OctetError", code: "queue_full" });
  await assert.rejects(client.send("alice@s", "x".repeat(70_000)), { code: "frame_too_large" });
  assert.equal((await store.load()).pending.length, 2, "refused sends are never stored");
  // A retry of the history request after a close: asked again on the next connection.
  const ws = ScriptedSocket.all[0]!;
  await until("the login", () => ws.ops("login").length === 1);
  ws.frame(welcome(0, true));
  ws.frame({ op: "synced", seq: 0, replayed: 0 });
  await until("both sends written", () => ws.ops("send").length === 2);
  const pages = client.history({ limit: 1 })[Symbol.asyncIterator]();
  const next = pages.next();
  await until("the history request", () => ws.ops("history").length === 1);
  ws.serverClose(1001, "server shutting down; reconnect");
  await until("a reconnect", () => ScriptedSocket.all.length === 2);
  const again = ScriptedSocket.all[1]!;
  await until("the login", () => again.ops("login").length === 1);
  again.frame(welcome(0, true));
  again.frame({ op: "synced", seq: 0, replayed: 0 });
  await until("the history asked again", () => again.ops("history").length === 1);
  await until("the sends written again, same ids", () => again.ops("send").length === 2);
  assert.deepEqual(again.ops("send").map((f) => f.id), ws.ops("send").map((f) => f.id));
  again.frame({ op: "history", id: again.ops("history")[0]?.id, events: [], more: false });
  assert.equal((await next).done, true);
  client.close();
  await Promise.allSettled(waiting);
});

test("a request refused for the rate is asked again after a pause: the refill's history and the app's get", { timeout: TEST_TIMEOUT_MS }, async () => {
  ScriptedSocket.all = [];
  const store = new MemoryStore();
  await store.saveCursor({ epoch: "ep1", held: 3 });
  const client = await connect({ url: "ws://scripted/ws", token: "t", appid: "a", store, WebSocket: ScriptedSocket });
  const seen: number[] = [];
  client.on("event", (e) => void seen.push(e.seq));
  await until("the login", () => ScriptedSocket.all[0]?.ops("login").length === 1);
  const ws = ScriptedSocket.all[0]!;
  ws.frame(welcome(5, false));
  ws.frame({ op: "synced", seq: 5, replayed: 0 });
  await until("the refill's history request", () => ws.ops("history").length === 1);
  // `rate_limited` drops the frame (proto/clients.md): the refill must ask again, not stall.
  ws.frame({ op: "error", code: "rate_limited", message: "slow down", id: ws.ops("history")[0]?.id });
  await until("the history asked again", () => ws.ops("history").length === 2);
  const again = ws.ops("history")[1]!;
  assert.equal(again.before, 6);
  ws.frame({ op: "history", id: again.id, events: [4, 5].map(message), more: true });
  await until("the refill handed over", () => seen.length === 2);
  assert.deepEqual(seen, [4, 5]);

  const profile = client.getProfile("alice@s");
  await until("the get", () => ws.ops("profile").length === 1);
  ws.frame({ op: "error", code: "rate_limited", message: "slow down", id: ws.ops("profile")[0]?.id });
  await until("the get asked again", () => ws.ops("profile").length === 2);
  ws.frame({ op: "profile", id: ws.ops("profile")[1]?.id, address: "alice@s", profile: {}, version: 0 });
  assert.deepEqual(await profile, { op: "profile", address: "alice@s", profile: {}, version: 0 });
  client.close();
});

test("devices() refused for the rate (by its id) is asked again, not left waiting", { timeout: TEST_TIMEOUT_MS }, async () => {
  ScriptedSocket.all = [];
  const client = await connect({ url: "ws://scripted/ws", token: "t", appid: "a", WebSocket: ScriptedSocket });
  await until("the login", () => ScriptedSocket.all[0]?.ops("login").length === 1);
  const ws = ScriptedSocket.all[0]!;
  ws.frame(welcome(0, true));
  ws.frame({ op: "synced", seq: 0, replayed: 0 });
  const devices = client.devices();
  await until("the request", () => ws.ops("devices").length === 1);
  const first = ws.ops("devices")[0]!.id;
  assert.equal(typeof first, "string", "devices is tagged with an id");
  ws.frame({ op: "error", code: "rate_limited", message: "slow down", id: first });
  await until("asked again", () => ws.ops("devices").length === 2);
  ws.frame({ op: "devices", id: ws.ops("devices")[1]!.id, devices: [] });
  assert.deepEqual(await devices, []);
  client.close();
});

// By order, the oldest revoke would take an id-less `no_such_user` refusing some other frame.
test("revoke() is matched by id: an id-less refusal in flight is not taken for it", { timeout: TEST_TIMEOUT_MS }, async () => {
  ScriptedSocket.all = [];
  const client = await connect({ url: "ws://scripted/ws", token: "t", appid: "a", WebSocket: ScriptedSocket });
  await until("the login", () => ScriptedSocket.all[0]?.ops("login").length === 1);
  const ws = ScriptedSocket.all[0]!;
  ws.frame(welcome(0, true));
  ws.frame({ op: "synced", seq: 0, replayed: 0 });
  const errors: string[] = [];
  client.on("error", (e) => void errors.push(e.code));
  const revoked = client.revoke(7);
  await until("the request", () => ws.ops("revoke").length === 1);
  const id = ws.ops("revoke")[0]!.id;
  assert.equal(typeof id, "string", "revoke is tagged with an id");
  ws.frame({ op: "error", code: "no_such_user", message: "not this request's" });
  ws.frame({ op: "revoke", id: "someone-else", uid: 8, revoked: 1 });
  ws.frame({ op: "revoke", id, uid: 7, revoked: 1 });
  assert.deepEqual(await revoked, { op: "revoke", uid: 7, revoked: 1 });
  assert.deepEqual(errors, ["no_such_user"]);
  client.close();
});
