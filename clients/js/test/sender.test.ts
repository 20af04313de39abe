/** The send queue's matching of a replayed own message to a pending send (no broker needed). */

import assert from "node:assert/strict";
import { test } from "node:test";

import type { MessageFrame } from "../src/frames.js";
import { Sender } from "../src/sender.js";
import { MemoryStore, type PendingSend } from "../src/store.js";

function sender(pending: PendingSend[]): Sender {
  const s = new Sender({
    store: new MemoryStore(),
    maxQueue: 10,
    maxInFlight: 10,
    write: () => {},
    isLive: () => false,
    self: () => "alice@x",
    onSent: () => {},
    onThrottle: () => {},
  });
  s.restore(pending);
  return s;
}

function pending(id: string, to: string): PendingSend {
  return { id, to, bodyText: '"hi"', files: [], createdAt: 0 };
}

function replay(mid: number, to: string): MessageFrame {
  return { op: "message", mid, seq: mid, ts: 1, from: "alice@x", to, body: "hi", out: true } as MessageFrame;
}

test("a replayed own message is matched only to an unambiguous pending send", () => {
  // One pending send with that body: it is the one.
  assert.equal(sender([pending("a", "bob@x")]).claimReplay(replay(1, "bob@x")), "a");
  // Two with the same body: the one to the copy's recipient, not the oldest.
  assert.equal(
    sender([pending("a", "bob@x"), pending("b", "carol@x")]).claimReplay(replay(2, "carol@x")),
    "b",
  );
  // Still ambiguous: none is taken; each waits for its own `sent`.
  assert.equal(
    sender([pending("a", "bob@x"), pending("b", "bob@x")]).claimReplay(replay(3, "bob@x")),
    undefined,
  );
});
