/** The close-code map agrees with proto/close-codes.md, row by row, and backoff is full jitter. */

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";

import { backoffDelay, closeMeaning } from "../src/index.js";

test("every close code in proto/close-codes.md maps to final or reconnect as the table says", () => {
  const doc = readFileSync(path.resolve(process.cwd(), "../../proto/close-codes.md"), "utf8");
  const rows = [...doc.matchAll(/^\| (\d{4}) \| [^|]+ \| [^|]+ \| ([^|]+) \|$/gm)];
  assert.ok(rows.length >= 14, `found only ${rows.length} close codes in the table`);
  for (const [, code, advice] of rows) {
    const text = (advice ?? "").trim();
    // "Yes …" reconnects; 1000 is "Only if the device wants to" (this client does, with
    // backoff); every other answer (No, Not with the same token, Fix the client) is final.
    const reconnects = text.startsWith("Yes") || text.startsWith("Only if the device wants to");
    const meaning = closeMeaning(Number(code), "");
    assert.equal(meaning.action !== "final", reconnects, `close ${code}: "${text}"`);
  }
  // 4004 after a relink: the old token still works.
  assert.equal(closeMeaning(4004, "linked to another person: log in again").action, "now");
  // No close frame at all (the network or the broker died): like 1001.
  assert.equal(closeMeaning(1006, "").action, "backoff");
  assert.equal(closeMeaning(4008, "slow consumer: reconnect and resync").action, "now");
});

test("backoff is full jitter under an exponential cap", () => {
  assert.equal(backoffDelay(0, 500, 30_000, () => 0.999), 499);
  assert.equal(backoffDelay(3, 500, 30_000, () => 0.5), 2000);
  assert.equal(backoffDelay(20, 500, 30_000, () => 0.999), 29_970);
  assert.equal(backoffDelay(5, 500, 30_000, () => 0), 0);
});
