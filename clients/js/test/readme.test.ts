/** The README's example is short (15 lines) and compiles, with `tsc --strict`, against the package's own types. */

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";

test("the README's example is 15 lines and compiles against the package's types", () => {
  // npm runs the tests from the package's folder.
  const readme = readFileSync("README.md", "utf8");
  const example = /```ts\n([\s\S]*?)```/.exec(readme)?.[1];
  assert.ok(example, "README.md has a ```ts example");
  assert.equal(example.trimEnd().split("\n").length, 15, "the README's example is 15 lines");

  const dir = mkdtempSync(path.join(os.tmpdir(), "octet-readme-"));
  try {
    // The example's free names: what an app has around it.
    const prelude = [
      "declare const deviceId: string;",
      "declare const token: string;",
      "declare const ui: { show(m: unknown): Promise<void>; banner(text: string): void; signedOut(reason: string): void };",
    ].join("\n");
    writeFileSync(path.join(dir, "example.ts"), `${prelude}\n${example}`);
    writeFileSync(path.join(dir, "package.json"), JSON.stringify({ type: "module" }));
    const src = path.resolve("src");
    writeFileSync(
      path.join(dir, "tsconfig.json"),
      JSON.stringify({
        compilerOptions: {
          target: "ES2022",
          module: "NodeNext",
          moduleResolution: "NodeNext",
          lib: ["ES2022", "DOM"],
          strict: true,
          noEmit: true,
          types: [],
          // The package's names, as an app imports them, mapped to its sources.
          paths: { "octet-client": [path.join(src, "index.ts")], "octet-client/idb": [path.join(src, "idb.ts")] },
        },
        files: ["example.ts"],
      }),
    );
    const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");
    try {
      execFileSync(process.execPath, [tsc, "-p", dir], { encoding: "utf8" });
    } catch (err) {
      const out = (err as { stdout?: string }).stdout ?? String(err);
      assert.fail(`the README's example does not compile:\n${out}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
