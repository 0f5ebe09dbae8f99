// The README's example works as written: its first `ts` block, run against a daemon.

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { after, before, test } from "node:test";
import ts from "typescript";

import { Daemon, KEY, PACKAGE_ROOT, tempDir } from "./helpers.js";

let daemon: Daemon;
const dir = tempDir("readme");

before(async () => {
  daemon = await Daemon.start();
});

after(async () => {
  await daemon?.dispose();
  rmSync(dir, { recursive: true, force: true });
});

test("the README example runs as written", async () => {
  const readme = readFileSync(join(PACKAGE_ROOT, "README.md"), "utf8");
  await runsAsWritten(readme);
});

test("the repository README's TypeScript program runs as written", async () => {
  const readme = readFileSync(join(PACKAGE_ROOT, "..", "..", "README.md"), "utf8");
  await runsAsWritten(readme.slice(readme.indexOf("### From your code")));
});

/** Runs the first `ts` block of `readme` against this test's daemon. */
async function runsAsWritten(readme: string): Promise<void> {
  const block = /```ts\n([\s\S]*?)```/.exec(readme);
  assert.ok(block, "a ts block in the README");
  const source = block[1]!;
  assert.ok(source.includes('from "streamgate"') && source.includes("http://127.0.0.1:8080"));
  // The package as the tests built it, and this test's daemon.
  const lib = pathToFileURL(join(PACKAGE_ROOT, "build", "src", "index.js")).href;
  const program = source.replace('from "streamgate"', `from ${JSON.stringify(lib)}`).replace("http://127.0.0.1:8080", daemon.url);
  const js = ts.transpileModule(program, {
    compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
  }).outputText;
  const file = join(dir, "example.mjs");
  writeFileSync(file, js);
  const out = await new Promise<string>((resolve, reject) => {
    execFile(process.execPath, [file], { env: { ...process.env, STREAMGATE_KEY: KEY }, timeout: 60_000 }, (e, stdout, stderr) =>
      e ? reject(new Error(`${e.message}\n${stderr}`)) : resolve(stdout),
    );
  });
  assert.match(out, /^stored at offset \d+$/m);
  assert.match(out, /^\{ greeting: 'HELLO' \}$/m);
}
