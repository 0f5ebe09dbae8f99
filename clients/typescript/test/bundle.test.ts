// dist/streamgate.browser.js is committed (the daemon's console page includes it at compile
// time): `npm run build` must reproduce it byte for byte, and it must stand alone.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { after, before, test } from "node:test";

import * as node from "../src/index.js";
import { Daemon, KEY, PACKAGE_ROOT, standardWebSocket, tempDir } from "./helpers.js";

const committed = join(PACKAGE_ROOT, "dist", "streamgate.browser.js");
const dir = tempDir("bundle");

after(() => rmSync(dir, { recursive: true, force: true }));

test("the build reproduces the committed dist/streamgate.browser.js byte for byte", () => {
  const rebuilt = join(dir, "streamgate.browser.js");
  execFileSync(process.execPath, [join(PACKAGE_ROOT, "scripts", "build-browser.mjs"), rebuilt], {
    cwd: PACKAGE_ROOT,
    stdio: ["ignore", "ignore", "inherit"],
  });
  const want = readFileSync(committed);
  const got = readFileSync(rebuilt);
  assert.ok(
    want.equals(got),
    "dist/streamgate.browser.js is stale: run `npm run build` in clients/typescript and commit it",
  );
});

test("the bundle stands alone: no import, no require, nothing of Node", () => {
  const text = readFileSync(committed, "utf8");
  assert.doesNotMatch(text, /^\s*import\s/m, "no static import");
  assert.doesNotMatch(text, /\bimport\s*\(/, "no dynamic import");
  assert.doesNotMatch(text, /\brequire\s*\(/, "no require");
  assert.doesNotMatch(text, /node:|\bBuffer\b|\bprocess\./, "nothing of Node");
  assert.doesNotMatch(text, /from\s*["']ws["']|import\(["']ws["']\)/, "no ws");
});

let daemon: Daemon;
before(async () => {
  daemon = await Daemon.start();
});
after(async () => {
  await daemon?.dispose();
});

test("the bundle exports what the package does and works with a standard WebSocket", async () => {
  const bundle = (await import(pathToFileURL(committed).href)) as typeof node;
  assert.deepEqual(Object.keys(bundle).sort(), Object.keys(node).sort());
  assert.deepEqual(bundle.ERROR_CODES, node.ERROR_CODES);
  const g = globalThis as { WebSocket?: unknown };
  const had = g.WebSocket;
  g.WebSocket = await standardWebSocket(); // as in a browser
  const client = new bundle.Client({ url: daemon.url, apiKey: KEY });
  try {
    const id = await client.start({ processor: "uppercase" });
    const ack = await client.send(id, { s: "browser" });
    assert.equal(ack.stream_id, id);
    await client.end(id);
    const data: unknown[] = [];
    for await (const frame of client.subscribe(id, { from: "earliest" })) {
      if (frame.type === "result") data.push(frame.data);
    }
    assert.deepEqual(data, [{ s: "BROWSER" }]);
    await assert.rejects(client.describe("00000000-0000-4000-8000-000000000000"), (e: unknown) => {
      return e instanceof bundle.StreamgateError && e.code === "stream_not_found";
    });
  } finally {
    await client.close();
    if (had === undefined) delete g.WebSocket;
    else g.WebSocket = had;
  }
});
