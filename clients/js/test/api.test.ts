/** The published declarations: no `any` in the public types, and both entry points load. */

import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";

test("the .d.ts files `tsc` emitted have no `any`", () => {
  const dist = path.resolve(process.cwd(), "dist");
  const files = readdirSync(dist).filter((f) => f.endsWith(".d.ts"));
  assert.ok(files.includes("index.d.ts") && files.includes("idb.d.ts"), "run `npm run build` first");
  for (const file of files) {
    const code = readFileSync(path.join(dist, file), "utf8")
      .replace(/\/\*[\s\S]*?\*\//g, "")
      .replace(/\/\/.*$/gm, "");
    assert.doesNotMatch(code, /\bany\b/, `${file} declares an any`);
  }
});

test("the package's exports `.` and `./idb` resolve", async () => {
  const main = await import("octet-client");
  const idb = await import("octet-client/idb");
  assert.equal(typeof main.connect, "function");
  assert.equal(typeof main.MemoryStore, "function");
  assert.equal(typeof idb.IdbStore.open, "function");
});
