/** The web demo's bundle checked in at src/demo/assets/ is what `npm run demo` builds now. */

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";

test("the checked-in demo bundle matches a fresh build", () => {
  // npm runs the tests from the package's folder.
  const fresh = execFileSync(process.execPath, ["demo/build.mjs", "--stdout"], { encoding: "utf8" });
  const checkedIn = readFileSync(path.join("..", "..", "src", "demo", "assets", "octet-client.js"), "utf8");
  assert.ok(fresh.includes("IdbStore"), "the bundle carries the IndexedDB store");
  assert.ok(
    fresh === checkedIn,
    "src/demo/assets/octet-client.js is stale: run `npm --prefix clients/js run demo` and commit it",
  );
});
