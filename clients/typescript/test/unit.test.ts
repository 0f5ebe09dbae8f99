// The pieces with no I/O: back-off, Retry-After, tokens, ids, the iterator.

import assert from "node:assert/strict";
import { test } from "node:test";

import { Backoff, decodeToken, FIRST_BACKOFF_MS, MAX_BACKOFF_MS, StreamgateError } from "../src/index.js";
import { parseRetryAfter, errorFromBody } from "../src/errors.js";
import { Credentials } from "../src/auth.js";
import { Subscription } from "../src/subscription.js";
import { isTraceparent, sleep, uuid } from "../src/util.js";

test("back-off: 100 ms doubling to 5 s with up to a fifth of jitter; Retry-After exactly", () => {
  const b = new Backoff();
  const first = b.pause();
  assert.ok(first >= FIRST_BACKOFF_MS && first <= FIRST_BACKOFF_MS * 1.2);
  const second = b.pause();
  assert.ok(second >= 200 && second <= 240);
  for (let i = 0; i < 10; i++) b.pause();
  const capped = b.pause();
  assert.ok(capped >= MAX_BACKOFF_MS && capped <= MAX_BACKOFF_MS * 1.2);
  assert.equal(b.pause(3000), 3000);
  b.reset();
  assert.ok(b.pause() <= FIRST_BACKOFF_MS * 1.2);
});

test("sleep never wakes early", async () => {
  for (const ms of [1, 15, 40]) {
    const start = performance.now();
    await sleep(ms);
    assert.ok(performance.now() - start >= ms);
  }
  const abort = new AbortController();
  const sleeping = sleep(10_000, abort.signal);
  abort.abort(new Error("stop"));
  await assert.rejects(sleeping, /stop/);
});

test("Retry-After: seconds or a date; error bodies become typed errors", () => {
  assert.equal(parseRetryAfter("1"), 1);
  assert.equal(parseRetryAfter(" 2 "), 2);
  assert.equal(parseRetryAfter(null), undefined);
  assert.equal(parseRetryAfter("soon"), undefined);
  const later = parseRetryAfter(new Date(Date.now() + 30_000).toUTCString())!;
  assert.ok(later > 28 && later <= 30);
  const e = errorFromBody(503, '{"error":{"code":"broker_unavailable","message":"no ack","acknowledged":3}}', 1);
  assert.ok(e instanceof StreamgateError);
  assert.equal(e.code, "broker_unavailable");
  assert.equal(e.status, 503);
  assert.equal(e.retryAfter, 1);
  assert.equal(e.retryAfterMs, 1000);
  assert.equal(e.acknowledged, 3);
  assert.ok(e.transient);
  const proxy = errorFromBody(502, "<html>bad gateway</html>", undefined);
  assert.equal(proxy.code, "http_error");
  assert.equal(proxy.status, 502);
  assert.ok(!proxy.transient);
});

test("a JWT's iat and exp are read; anything else is not a JWT", () => {
  const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const token = `${b64({ alg: "HS256" })}.${b64({ sub: "alice", iat: 100, exp: 102, name: "é" })}.sig`;
  assert.deepEqual(decodeToken(token), { iat: 100, exp: 102 });
  assert.equal(decodeToken("opaque"), undefined);
  assert.equal(decodeToken("a.!!!.c"), undefined);
});

test("a token is renewed a quarter of its lifetime (at most 30 s) before it expires, whatever our clock says", async () => {
  const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const jwt = (iat: number, exp: number) => `${b64({ alg: "HS256" })}.${b64({ iat, exp })}.sig`;
  const at = Math.floor(Date.now() / 1000);
  const renewalIn = async (token: string) => {
    const credentials = new Credentials(undefined, undefined, () => token);
    await credentials.get();
    return credentials.refreshIn()!;
  };
  // iat and exp are whole seconds: within one of what is said.
  const near = (got: number, want: number) => assert.ok(Math.abs(got - want) < 1100, `${got} ms, not about ${want}`);
  near(await renewalIn(jwt(at, at + 600)), 570_000); // our clock agrees with the daemon's
  const short = await renewalIn(jwt(at, at + 2)); // short-lived: half a second (a quarter of its life) before
  assert.ok(Math.abs(short - (at * 1000 + 2000 - Date.now() - 500)) < 100, `${short} ms`);
  near(await renewalIn(jwt(at + 3600, at + 4200)), 570_000); // ours is an hour behind
  // Ours is 20 minutes ahead: expired by our clock, used for half its life all the same
  // (not renewed at once, again and again).
  near(await renewalIn(jwt(at - 1200, at - 600)), 270_000);
  // Not a JWT, or no iat and expired by our clock: used until the daemon says otherwise.
  assert.equal(await renewalIn("opaque"), undefined);
  assert.equal(await renewalIn(`${b64({})}.${b64({ exp: at - 10 })}.sig`), undefined);
});

test("uuid: v4, also without crypto.randomUUID (insecure browser contexts)", () => {
  const v4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
  assert.match(uuid(), v4);
  const c = globalThis.crypto as { randomUUID?: unknown };
  const saved = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(c), "randomUUID");
  Object.defineProperty(c, "randomUUID", { value: undefined, configurable: true });
  try {
    const ids = new Set(Array.from({ length: 100 }, () => uuid()));
    assert.equal(ids.size, 100);
    for (const id of ids) assert.match(id, v4);
  } finally {
    delete (c as Record<string, unknown>)["randomUUID"];
    if (saved) assert.equal(typeof c.randomUUID, "function");
  }
});

test("traceparent: W3C trace context, version 00, lowercase hex, ids not all zeros", () => {
  for (const good of [
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
    "00-00000000000000000000000000000001-0000000000000001-ff",
  ]) {
    assert.ok(isTraceparent(good), good);
  }
  for (const bad of [
    "",
    "00-nonsense-01",
    "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // another version
    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01", // upper case
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01", // no trace id
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", // no span id
    "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", // 31 digits
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
    "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
    " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\n",
    42,
    null,
  ]) {
    assert.ok(!isTraceparent(bad), JSON.stringify(bad));
  }
});

test("the iterator: frames in order, then done; a failure after what was queued; return stops", async () => {
  let stopped = 0;
  const sub = new Subscription("s", { read: () => {}, stop: () => stopped++ });
  const waiting = sub.next();
  sub.push({ type: "gap", stream_id: "s", from_cursor: 1, skipped: 2 });
  assert.deepEqual(await waiting, { value: { type: "gap", stream_id: "s", from_cursor: 1, skipped: 2 }, done: false });
  sub.push({ type: "gap", stream_id: "s", from_cursor: 3, skipped: 1 });
  sub.fail(new StreamgateError("forbidden", "no"));
  assert.equal((await sub.next()).done, false);
  await assert.rejects(sub.next(), (e: unknown) => e instanceof StreamgateError && e.code === "forbidden");
  assert.equal((await sub.next()).done, true);
  assert.equal(stopped, 0, "a failed subscription is not stopped again");

  const other = new Subscription("t", { read: () => {}, stop: () => stopped++ });
  other.push({ type: "gap", stream_id: "t", from_cursor: 1, skipped: 1 });
  for await (const _ of other) break; // `break` stops the subscription
  assert.equal(stopped, 1);
  const third = new Subscription("u", { read: () => {}, stop: () => stopped++ });
  const pending = third.next();
  await third.close();
  assert.equal(stopped, 2);
  assert.deepEqual(await pending, { value: undefined, done: true });
});
