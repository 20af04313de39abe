// Builds the web demo's client bundle: one ES module with the client and its IndexedDB store,
// checked in at src/demo/assets/octet-client.js and compiled into the broker (`--demo`).
// `npm run demo` writes it; `node demo/build.mjs --stdout` prints it (test/demo-bundle.test.ts
// compares that with the checked-in copy, so an edit to src/ without a rebuild fails).
import { build } from "esbuild";
import { fileURLToPath } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
export const OUT = path.join(here, "../../../src/demo/assets/octet-client.js");

const result = await build({
  entryPoints: [path.join(here, "entry.ts")],
  absWorkingDir: path.join(here, ".."),
  bundle: true,
  format: "esm",
  target: "es2022",
  legalComments: "none",
  write: false,
  outfile: OUT,
  logLevel: "warning",
});
const text = result.outputFiles[0].text;
if (process.argv.includes("--stdout")) {
  process.stdout.write(text);
} else {
  const { writeFileSync } = await import("node:fs");
  writeFileSync(OUT, text);
  console.log(`wrote ${path.relative(process.cwd(), OUT)} (${text.length} bytes)`);
}
