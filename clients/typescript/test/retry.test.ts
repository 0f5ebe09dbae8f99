// 429 (a per-key rate limit) and 503 (`not_ready` while the daemon waits for its broker):
// the client waits as Retry-After says, with a handful of requests, never spinning, and
// gives up when its patience runs out.

import assert from "node:assert/strict";
import { after, test } from "node:test";

import { Client, StreamgateError, type ConnectionEvent } from "../src/index.js";
import { Daemon, freePort, KEY, loggingFetch, Tansu, tansuBin, waitFor, type Logged } from "./helpers.js";

const disposers: (() => Promise<void>)[] = [];
after(async () => {
  for (const dispose of disposers.reverse()) await dispose();
});

/** Every request that followed an answer with Retry-After came no sooner than it said. */
function assertWaited(log: Logged[]): number {
  let waits = 0;
  for (let i = 0; i + 1 < log.length; i++) {
    const answer = log[i]!;
    if (answer.status !== 429 && answer.status !== 503) continue;
    assert.ok(answer.retryAfter !== undefined && answer.retryAfter >= 1, `a ${answer.status} with Retry-After`);
    const waited = log[i + 1]!.at - answer.answeredAt;
    assert.ok(
      waited >= answer.retryAfter * 1000,
      `request ${i + 2} came ${waited.toFixed(1)} ms after a ${answer.status} that said Retry-After: ${answer.retryAfter}`,
    );
    waits += 1;
  }
  return waits;
}

test("429 from a per-key rate limit: HTTP calls and the connection wait as Retry-After says", async (t) => {
  const daemon = await Daemon.start({
    rateLimits: "{per_ip: null, per_key: {per_second: 1, burst: 2}, per_ip_public: null}",
  });
  disposers.push(() => daemon.dispose());
  const log: Logged[] = [];
  const events: ConnectionEvent[] = [];
  const client = new Client({ url: daemon.url, apiKey: KEY, fetch: loggingFetch(log), onEvent: (e) => events.push(e) });
  try {
    const calls = 6;
    const started = performance.now();
    for (let i = 0; i < calls; i++) await client.list();
    const elapsed = performance.now() - started;
    const limited = log.filter((l) => l.status === 429).length;
    assert.ok(limited >= 2, `the limit was hit (${limited} × 429)`);
    assert.equal(assertWaited(log), limited);
    assert.ok(log.length <= calls + limited && limited <= calls, `${log.length} requests for ${calls} calls`);
    assert.ok(elapsed >= limited * 1000, `${elapsed.toFixed(0)} ms for ${limited} waits of 1 s`);

    // The WebSocket handshake is a request too: refused with 429, it waits the same way.
    const id = await client.start();
    const before = performance.now();
    const ack = await client.send(id, { n: 1 });
    assert.equal(ack.stream_id, id);
    const refusals = events.filter((e) => e.type === "reconnecting");
    assert.ok(refusals.length >= 1, "the handshake was refused");
    for (const e of refusals) {
      assert.ok(e.type === "reconnecting" && e.error.code === "rate_limited" && e.error.status === 429);
      assert.ok(e.type === "reconnecting" && e.inMs === e.error.retryAfterMs, "waited what Retry-After said");
    }
    assert.ok(refusals.length <= 3, `${refusals.length} refused handshakes`);
    assert.ok(performance.now() - before >= refusals.length * 1000);
    t.diagnostic(`${log.length} requests for ${calls} calls (${limited} × 429) in ${elapsed.toFixed(0)} ms; ${refusals.length} handshakes refused`);
  } finally {
    await client.close();
  }
});

test("503 not_ready while the daemon waits for its broker: waits, then gives up after its patience", async () => {
  const daemon = await Daemon.start({ brokers: `127.0.0.1:${await freePort()}`, ready: false });
  disposers.push(() => daemon.dispose());
  const log: Logged[] = [];
  const client = new Client({ url: daemon.url, apiKey: KEY, fetch: loggingFetch(log), patienceMs: 3500 });
  try {
    const started = performance.now();
    await assert.rejects(client.list(), (e: unknown) => {
      return e instanceof StreamgateError && e.code === "not_ready" && e.status === 503 && e.retryAfter === 1;
    });
    const elapsed = performance.now() - started;
    assert.equal(assertWaited(log), log.length - 1);
    // Retry-After 1 s within 3.5 s: 4 requests and 3 waits (3 and 2 when answers are slow),
    // then no wait that would end past the patience.
    assert.ok(log.length === 3 || log.length === 4, `${log.length} requests`);
    assert.ok(elapsed >= (log.length - 1) * 1000 && elapsed < 3500 + 1000, `gave up after ${elapsed.toFixed(0)} ms`);
  } finally {
    await client.close();
  }
});

const bin = tansuBin();
test("503 not_ready until the broker comes: start() succeeds once it does", { skip: bin ? false : "no tansu (set TANSU_BIN)" }, async (t) => {
  const tansu = new Tansu(bin!, await freePort());
  disposers.push(() => tansu.dispose());
  const daemon = await Daemon.start({ brokers: tansu.address, ready: false });
  disposers.push(() => daemon.dispose());
  const log: Logged[] = [];
  const client = new Client({ url: daemon.url, apiKey: KEY, fetch: loggingFetch(log) });
  try {
    const started = performance.now();
    const starting = client.start({ processor: "uppercase" });
    await waitFor("two 503s", () => log.filter((l) => l.status === 503).length >= 2, 10_000);
    await tansu.start();
    const id = await starting;
    const elapsed = performance.now() - started;
    assert.match(id, /^[0-9a-f-]{36}$/);
    const unready = log.filter((l) => l.status === 503).length;
    assert.equal(assertWaited(log), unready);
    assert.equal(log.at(-1)!.status, 201);
    // One request per Retry-After second, and the one that worked.
    assert.ok(log.length <= Math.ceil(elapsed / 1000) + 1, `${log.length} requests in ${elapsed.toFixed(0)} ms`);
    t.diagnostic(`${log.length} requests (${unready} × 503) over ${elapsed.toFixed(0)} ms`);
  } finally {
    await client.close();
  }
});
