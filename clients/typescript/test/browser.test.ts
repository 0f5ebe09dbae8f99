// The library itself in headless Chromium: a page served from 127.0.0.1 (another origin than
// the daemon's, which allows it in `http.allowed_origins`) loads dist/streamgate.browser.js,
// follows several streams over one connection and sends into them (test/browser/library.html,
// driven by test/browser/library.py with selenium). Every stream's results arrive in the
// page once each, in order, and every send is acknowledged. Skipped when Chromium,
// chromedriver or Python's selenium is missing.

import assert from "node:assert/strict";
import { execFile, spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { delimiter, join } from "node:path";
import { after, before, test } from "node:test";

import type { Ack } from "../src/index.js";
import { Daemon, KEY, PACKAGE_ROOT, replay } from "./helpers.js";

const STREAMS = 5;
const RECORDS = 20;

/** An executable on the PATH (or the given path), or `undefined`. */
function onPath(...names: string[]): string | undefined {
  for (const name of names) {
    if (name.includes("/")) {
      if (existsSync(name)) return name;
      continue;
    }
    for (const dir of (process.env["PATH"] ?? "").split(delimiter)) {
      if (dir && existsSync(join(dir, name))) return join(dir, name);
    }
  }
  return undefined;
}

const chromium = onPath(process.env["CHROMIUM_BIN"] ?? "chromium", "chromium-browser");
const chromedriver = onPath(process.env["CHROMEDRIVER_BIN"] ?? "chromedriver");
const selenium = spawnSync("python3", ["-c", "import selenium"], { stdio: "ignore" }).status === 0;
const skip = !chromium
  ? "no chromium (set CHROMIUM_BIN)"
  : !chromedriver
    ? "no chromedriver (set CHROMEDRIVER_BIN)"
    : !selenium
      ? "no python3 with selenium"
      : false;

const PAGE = join(PACKAGE_ROOT, "test", "browser", "library.html");
const BUNDLE = join(PACKAGE_ROOT, "dist", "streamgate.browser.js");
const SCRIPT = join(PACKAGE_ROOT, "test", "browser", "library.py");

let pages: Server | undefined;
let origin = "";
let daemon: Daemon | undefined;

before(async () => {
  if (skip) return;
  // The page and the bundle, from an origin of their own.
  pages = createServer((req, res) => {
    const path = new URL(req.url ?? "/", "http://page").pathname;
    const file = path === "/" ? PAGE : path === "/streamgate.browser.js" ? BUNDLE : undefined;
    if (!file) {
      res.writeHead(404).end();
      return;
    }
    const type = file === PAGE ? "text/html; charset=utf-8" : "text/javascript; charset=utf-8";
    res.writeHead(200, { "content-type": type, "cache-control": "no-store" }).end(readFileSync(file));
  });
  await new Promise<void>((resolve) => pages!.listen(0, "127.0.0.1", resolve));
  const address = pages.address();
  origin = `http://127.0.0.1:${typeof address === "object" && address ? address.port : 0}`;
  daemon = await Daemon.start({ extra: `http: {allowed_origins: ["${origin}"]}` });
});

after(async () => {
  await daemon?.dispose();
  await new Promise<void>((resolve) => (pages ? pages.close(() => resolve()) : resolve()));
});

interface Report {
  ids: string[];
  frames: Record<string, { type: string; cursor: number; data?: unknown }[]>;
  acks: Record<string, Ack[]>;
  events: string[];
  userAgent: string;
}

/** Runs library.py on the page; its stdout is the page's report. */
function drive(url: string): Promise<Report> {
  const args = [SCRIPT, url, "--chromium", chromium!, "--chromedriver", chromedriver!, "--timeout", "90"];
  return new Promise((resolve, reject) => {
    execFile("python3", args, { timeout: 150_000, maxBuffer: 16 << 20 }, (error, stdout, stderr) => {
      if (error) reject(new Error(`library.py failed (${error.code ?? error.signal}): ${stderr.trim()}`));
      else resolve(JSON.parse(stdout) as Report);
    });
  });
}

test("headless Chromium: the bundle follows several streams over one connection and sends", { skip }, async (t) => {
  const query = new URLSearchParams({
    daemon: daemon!.url,
    key: KEY,
    streams: String(STREAMS),
    records: String(RECORDS),
  });
  const report = await drive(`${origin}/?${query}`);
  assert.match(report.userAgent, /HeadlessChrome|Chrome/);
  assert.equal(report.ids.length, STREAMS);

  const seqs: number[] = [];
  for (const [i, id] of report.ids.entries()) {
    const frames = report.frames[id]!;
    const expected = Array.from({ length: RECORDS }, (_, n) => ({ n, s: `S${i}R${n}` }));
    assert.equal(frames.at(-1)!.type, "end", `${id}: ended`);
    assert.deepEqual(
      frames.filter((f) => f.type === "result").map((f) => f.data),
      expected,
      `${id}: each result once, in order`,
    );
    assert.equal(frames.length, RECORDS + 1, `${id}: nothing but the results and the end`);
    assert.ok(frames.every((f, k) => k === 0 || f.cursor > frames[k - 1]!.cursor), `${id}: cursors grow`);

    const acks = report.acks[id]!;
    assert.equal(acks.length, RECORDS, `${id}: every send acknowledged`);
    assert.ok(acks.every((a) => a.stream_id === id && a.replayed === undefined));
    assert.ok(acks.every((a, k) => k === 0 || a.offset > acks[k - 1]!.offset), `${id}: acked offsets grow`);
    seqs.push(...acks.map((a) => a.seq));

    // The daemon's own record: each record stored and processed once.
    const stored = await replay(daemon!.url, id);
    assert.deepEqual(stored.filter((f) => f.type === "result").map((f) => f.data), expected, `${id}: stored once`);
  }
  // Every send and every subscription went over the one connection, which never dropped.
  assert.deepEqual(
    seqs.sort((a, b) => a - b),
    Array.from({ length: STREAMS * RECORDS }, (_, k) => k + 1),
    "the sends numbered 1.. on one connection",
  );
  assert.deepEqual(report.events, ["connected"], "one connection, never lost, no fallback");
  t.diagnostic(`${STREAMS} streams × ${RECORDS} records in ${report.userAgent.match(/(HeadlessChrome|Chrome)\/[\d.]+/)?.[0]}`);
});
