/**
 * Every frame the broker sends (proto/frames.md, "Broker → client") has a type in `ServerFrame`,
 * and every type there is a documented frame: a frame added to the protocol without a type
 * here, or a type left over after a frame went, fails this test (and `tsc` checks the list).
 */

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";

import type { ServerFrame } from "../src/index.js";

/** The ops of `ServerFrame`; `tsc` refuses the file when one is missing or unknown. */
const TYPED = [
  "welcome",
  "synced",
  "sent",
  "message",
  "call",
  "call_record",
  "receipt",
  "read",
  "history",
  "profile",
  "file_url",
  "error",
  "typing",
  "presence",
  "devices_changed",
  "devices",
  "revoke",
] as const satisfies readonly ServerFrame["op"][];
type Unlisted = Exclude<ServerFrame["op"], (typeof TYPED)[number]>;
const everyOpListed: [Unlisted] extends [never] ? true : never = true;

test("every frame in proto/frames.md's Broker → client section has a type, and no type is undocumented", () => {
  assert.equal(everyOpListed, true);
  const doc = readFileSync(path.resolve(process.cwd(), "../../proto/frames.md"), "utf8");
  const section = doc.split(/^## /m).find((s) => s.startsWith("Broker → client"));
  assert.ok(section, "proto/frames.md has a Broker → client section");
  const documented = [...section.matchAll(/^### `([a-z_]+)`$/gm)].map((m) => m[1]);
  assert.deepEqual([...documented].sort(), [...TYPED].sort());
});
