// The client's duties (docs/connect.md), frame by frame against a scripted daemon: resume
// from the last cursor + 1, drop what was delivered, yield gaps, resubscribe on `lagged` and
// on `unsubscribed` with an error, resend unanswered records with the same key, retry nacks
// that pass, renew the token on 4401, wait out a refused handshake, pause a slow consumer.

import assert from "node:assert/strict";
import { afterEach, beforeEach, test } from "node:test";

import { Client, StreamgateError, type ConnectionEvent, type StreamFrame } from "../src/index.js";
import { FakeDaemon } from "./fake.js";
import { cursorOf, waitFor } from "./helpers.js";

const S = "11111111-1111-4111-8111-111111111111";

let fake: FakeDaemon;
let client: Client | undefined;

beforeEach(async () => {
  fake = new FakeDaemon();
  await fake.start();
});

afterEach(async () => {
  await client?.close();
  client = undefined;
  await fake.stop();
});

function outcome(type: "result" | "end" | "error", cursor: number, data?: unknown): Record<string, unknown> {
  const frame: Record<string, unknown> = {
    type,
    cursor,
    stream_id: S,
    input_partition: 0,
    input_offset: cursor,
    received_ms: 1,
    processed_ms: 2,
  };
  if (type === "result") frame["data"] = data ?? cursor;
  if (type === "error") frame["error"] = { code: "processing_failed", message: "boom" };
  return frame;
}

function collect(sub: AsyncIterable<StreamFrame>): { frames: StreamFrame[]; done: Promise<void> } {
  const frames: StreamFrame[] = [];
  const done = (async () => {
    for await (const f of sub) frames.push(f);
  })();
  return { frames, done };
}

const at = (frames: StreamFrame[]) => frames.map((f) => (f.type === "gap" ? `gap@${f.from_cursor}+${f.skipped}` : `${f.type}@${f.cursor}`));

test("resumes from the last cursor + 1, drops repeats, yields gaps, follows lagged and unsubscribed", async () => {
  const events: ConnectionEvent[] = [];
  client = new Client({ url: fake.url, apiKey: "k-123456789", WebSocket: (await import("ws")).WebSocket, onEvent: (e) => events.push(e) });
  const { frames, done } = collect(client.subscribe(S, { from: "earliest", onLag: "close" }));

  const c1 = await fake.connection(0);
  assert.equal(c1.request.headers["x-api-key"], "k-123456789", "Node: the key in a header");
  assert.deepEqual(await c1.next("subscribe"), { type: "subscribe", stream_id: S, from: "earliest", on_lag: "close" });
  c1.send(outcome("result", 0)); // before `subscribed`: not this subscription's
  c1.send({ type: "subscribed", stream_id: S });
  c1.send(outcome("result", 5));
  c1.send(outcome("result", 6));
  c1.send({ type: "gap", stream_id: S, from_cursor: 7, skipped: 2 });
  c1.send(outcome("error", 9));
  c1.send(outcome("result", 6)); // delivered before: dropped
  c1.send(outcome("result", 10));
  await waitFor("frames", () => frames.length >= 5);

  c1.send({ type: "lagged", stream_id: S, resume_from: 11 });
  assert.deepEqual(await c1.next("subscribe"), { type: "subscribe", stream_id: S, from: 11, on_lag: "close" });
  c1.send({ type: "subscribed", stream_id: S });
  c1.send(outcome("result", 11));

  c1.send({ type: "unsubscribed", stream_id: S, error: { code: "internal", message: "replay failed" } });
  const before = performance.now();
  assert.deepEqual(await c1.next("subscribe"), { type: "subscribe", stream_id: S, from: 12, on_lag: "close" });
  assert.ok(performance.now() - before >= 90, "subscribed again after a pause");
  c1.send({ type: "subscribed", stream_id: S });
  c1.send(outcome("result", 12));
  await waitFor("result 12", () => frames.length >= 7);

  c1.cut();
  const c2 = await fake.connection(1);
  assert.deepEqual(await c2.next("subscribe"), { type: "subscribe", stream_id: S, from: 13, on_lag: "close" });
  c2.send({ type: "subscribed", stream_id: S });
  c2.send(outcome("result", 12)); // delivered on the last connection
  c2.send(outcome("result", 13));
  c2.send(outcome("end", 14));
  await done;
  assert.deepEqual(at(frames), [
    "result@5",
    "result@6",
    "gap@7+2",
    "error@9",
    "result@10",
    "result@11",
    "result@12",
    "result@13",
    "end@14",
  ]);
  assert.ok(events.some((e) => e.type === "disconnected"));
});

test("records: a nack that passes is sent again with the same key; a lost answer too; others reject", async () => {
  const events: ConnectionEvent[] = [];
  client = new Client({ url: fake.url, apiKey: "k-123456789", WebSocket: (await import("ws")).WebSocket, onEvent: (e) => events.push(e) });
  const first = client.send(S, { a: 1 });
  const c1 = await fake.connection(0);
  const s1 = await c1.next("send");
  assert.equal(s1["seq"], 1);
  assert.deepEqual(s1["data"], { a: 1 });
  assert.match(String(s1["idempotency_key"]), /^[0-9a-f-]{36}$/);
  c1.send({ type: "nack", stream_id: S, seq: 1, error: { code: "backlog_full", message: "full" } });
  const nackedAt = performance.now();
  const s2 = await c1.next("send");
  assert.ok(performance.now() - nackedAt >= 90, "sent again after a pause");
  assert.equal(s2["seq"], 2);
  assert.equal(s2["idempotency_key"], s1["idempotency_key"], "the same key");
  const resending = events.find((e) => e.type === "resending");
  assert.ok(resending?.type === "resending" && resending.code === "backlog_full" && resending.streamId === S && resending.inMs >= 90);
  assert.deepEqual(s2["data"], { a: 1 });
  c1.send({ type: "ack", stream_id: S, seq: 999, offset: 1 }); // no such record: ignored
  c1.send({ type: "ack", stream_id: S, seq: 2, offset: 7 });
  assert.deepEqual(await first, { stream_id: S, seq: 2, offset: 7 });

  const second = client.send(S, "two");
  const s3 = await c1.next("send");
  assert.equal(s3["seq"], 3);
  assert.notEqual(s3["idempotency_key"], s1["idempotency_key"], "a key per record");
  c1.cut(); // the answer is lost
  const c2 = await fake.connection(1);
  const s4 = await c2.next("send");
  assert.equal(s4["seq"], 1, "seq numbers each connection from 1");
  assert.equal(s4["idempotency_key"], s3["idempotency_key"], "sent again with the same key");
  c2.send({ type: "ack", stream_id: S, seq: 1, offset: 8, replayed: true });
  assert.deepEqual(await second, { stream_id: S, seq: 1, offset: 8, replayed: true });

  const third = client.send(S, { big: true });
  const s5 = await c2.next("send");
  c2.send({ type: "nack", stream_id: S, seq: s5["seq"], error: { code: "record_too_large", message: "too big" } });
  await assert.rejects(third, (e: unknown) => {
    return e instanceof StreamgateError && e.code === "record_too_large" && e.streamId === S && e.status === undefined;
  });
  await assert.rejects(client.send(S, undefined), (e: unknown) => e instanceof StreamgateError && e.code === "invalid_input");
});

test("traceparent: on the send frame, sent again with the record's key after a nack and a cut; a malformed one is refused before anything is sent", async () => {
  const TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  client = new Client({ url: fake.url, apiKey: "k-123456789", WebSocket: (await import("ws")).WebSocket });
  const refused = (e: unknown) =>
    e instanceof StreamgateError &&
    e.code === "invalid_input" &&
    e.streamId === S &&
    e.message.includes("traceparent") &&
    e.message.includes("00-<32 hex trace id>-<16 hex span id>-<2 hex flags>");
  for (const bad of ["00-nonsense-01", TRACE.toUpperCase(), TRACE.replace("4bf92f3577b34da6a3ce929d0e0e4736", "0".repeat(32))]) {
    await assert.rejects(client.send(S, 1, { traceparent: bad }), refused, bad);
    await assert.rejects(client.sendBatch(S, [1], { traceparent: bad }), refused, bad);
  }
  assert.equal(fake.handshakes.length, 0, "no connection for a refused send");
  assert.equal(fake.requests.length, 0, "no request for a refused batch");

  const traced = client.send(S, { a: 1 }, { traceparent: TRACE });
  const plain = client.send(S, { a: 2 });
  const c1 = await fake.connection(0);
  const s1 = await c1.next("send");
  assert.deepEqual(s1, { type: "send", stream_id: S, seq: 1, data: { a: 1 }, idempotency_key: s1["idempotency_key"], traceparent: TRACE });
  const s2 = await c1.next("send");
  assert.ok(!("traceparent" in s2), "none when none was given");
  c1.send({ type: "nack", stream_id: S, seq: 1, error: { code: "backlog_full", message: "full" } });
  const s3 = await c1.next("send");
  assert.equal(s3["seq"], 3);
  assert.equal(s3["idempotency_key"], s1["idempotency_key"]);
  assert.equal(s3["traceparent"], TRACE, "the same context after a nack");
  c1.send({ type: "ack", stream_id: S, seq: 2, offset: 2 });
  c1.cut(); // the traced record's answer is lost
  const c2 = await fake.connection(1);
  const s4 = await c2.next("send");
  assert.equal(s4["idempotency_key"], s1["idempotency_key"]);
  assert.equal(s4["traceparent"], TRACE, "the same context after a reconnect");
  c2.send({ type: "ack", stream_id: S, seq: 1, offset: 1, replayed: true });
  assert.deepEqual(await traced, { stream_id: S, seq: 1, offset: 1, replayed: true });
  assert.deepEqual(await plain, { stream_id: S, seq: 2, offset: 2 });
});

test("4401: a new token from getToken, then reconnect and resume", async () => {
  let asked = 0;
  client = new Client({
    url: fake.url,
    getToken: () => `opaque-token-${++asked}`,
    WebSocket: (await import("ws")).WebSocket,
  });
  const { frames, done } = collect(client.subscribe(S));
  const c1 = await fake.connection(0);
  assert.equal(c1.request.headers["authorization"], "Bearer opaque-token-1");
  assert.deepEqual(await c1.next("subscribe"), { type: "subscribe", stream_id: S });
  c1.send({ type: "subscribed", stream_id: S });
  c1.send(outcome("result", 3));
  await waitFor("result 3", () => frames.length === 1);
  c1.close(4401, "token expired");
  const c2 = await fake.connection(1);
  assert.equal(c2.request.headers["authorization"], "Bearer opaque-token-2");
  assert.deepEqual(await c2.next("subscribe"), { type: "subscribe", stream_id: S, from: 4 });
  c2.send({ type: "subscribed", stream_id: S });
  c2.send(outcome("end", 4));
  await done;
  assert.deepEqual(at(frames), ["result@3", "end@4"]);
  assert.equal(asked, 2);
});

test("a refused handshake: 503 waits Retry-After; 401 fails every waiter", async () => {
  client = new Client({ url: fake.url, apiKey: "k-123456789", WebSocket: (await import("ws")).WebSocket });
  fake.refusals.push(
    { status: 503, headers: { "retry-after": "1" }, body: { error: { code: "not_ready", message: "starting" } } },
    { status: 401, body: { error: { code: "invalid_api_key", message: "invalid API key" } } },
  );
  const sub = client.subscribe(S);
  const sent = client.send(S, 1);
  await assert.rejects(sent, (e: unknown) => e instanceof StreamgateError && e.code === "invalid_api_key" && e.status === 401);
  await assert.rejects(sub.next(), (e: unknown) => e instanceof StreamgateError && e.code === "invalid_api_key");
  assert.equal(fake.handshakes.length, 2);
  const waited = fake.handshakes[1]!.at - fake.handshakes[0]!.at;
  assert.ok(waited >= 1000, `the second handshake came ${waited.toFixed(0)} ms after a Retry-After: 1`);
  assert.equal(fake.connections, 0);
});

test("a standard WebSocket: the credential in the subprotocols, a refusal asked over HTTP", async () => {
  const { WebSocket } = await import("ws");
  // A standard-looking class (no `on`/`terminate` on its prototype) over `ws`.
  class StandardWebSocket {
    constructor(url: string, protocols?: string[]) {
      return new WebSocket(url, protocols);
    }
  }
  client = new Client({ url: fake.url, apiKey: "k-123456789", WebSocket: StandardWebSocket });
  const sent = client.send(S, 1);
  const c1 = await fake.connection(0);
  assert.deepEqual(
    String(c1.request.headers["sec-websocket-protocol"]).split(",").map((p) => p.trim()),
    ["streamgate.v1", "apikey.k-123456789"],
  );
  assert.equal(c1.request.headers["x-api-key"], undefined);
  const s1 = await c1.next("send");
  c1.send({ type: "ack", stream_id: S, seq: s1["seq"], offset: 1 });
  assert.equal((await sent).offset, 1);

  // A browser cannot see why a handshake failed: the client asks with a plain GET.
  fake.refusals.push({ status: 401, body: { error: { code: "invalid_api_key", message: "invalid API key" } } });
  c1.cut();
  const sub = client.subscribe(S);
  await assert.rejects(sub.next(), (e: unknown) => e instanceof StreamgateError && e.code === "invalid_api_key" && e.status === 401);
  assert.ok(fake.requests.some((r) => r.method === "GET" && r.url === "/api/connect" && r.headers["x-api-key"] === "k-123456789"));
});

test("a consumer that does not read is unsubscribed, then subscribed again from its cursor", async () => {
  client = new Client({ url: fake.url, apiKey: "k-123456789", WebSocket: (await import("ws")).WebSocket });
  const sub = client.subscribe(S, { from: 0, highWaterMark: 4 });
  const c1 = await fake.connection(0);
  assert.deepEqual(await c1.next("subscribe"), { type: "subscribe", stream_id: S, from: 0 });
  c1.send({ type: "subscribed", stream_id: S });
  for (let cursor = 0; cursor < 10; cursor++) c1.send(outcome("result", cursor));
  assert.deepEqual(await c1.next("unsubscribe"), { type: "unsubscribe", stream_id: S });
  await waitFor("the queue", () => sub.queued === 4);
  c1.send({ type: "unsubscribed", stream_id: S });
  const read: number[] = [];
  for (let i = 0; i < 2; i++) {
    const r = await sub.next();
    if (!r.done && r.value.type === "result") read.push(r.value.cursor);
  }
  assert.deepEqual(await c1.next("subscribe"), { type: "subscribe", stream_id: S, from: 4 });
  c1.send({ type: "subscribed", stream_id: S });
  c1.send(outcome("result", 4));
  c1.send(outcome("end", 5));
  for await (const f of sub) read.push(cursorOf(f));
  assert.deepEqual(read, [0, 1, 2, 3, 4, 5]);
});

test("the daemon ends a subscription being unsubscribed: its answer is awaited, its lagged not believed", async () => {
  client = new Client({ url: fake.url, apiKey: "k-123456789", WebSocket: (await import("ws")).WebSocket });
  const sub = client.subscribe(S, { from: 0, highWaterMark: 2 });
  const c1 = await fake.connection(0);
  await c1.next("subscribe");
  c1.send({ type: "subscribed", stream_id: S });
  c1.send(outcome("result", 0));
  c1.send(outcome("result", 1));
  assert.deepEqual(await c1.next("unsubscribe"), { type: "unsubscribe", stream_id: S });
  // Sent before the daemon read the unsubscribe: 2 and 3 are dropped by the paused client,
  // so "every result before 4 was delivered" is not true of what its consumer got.
  c1.send(outcome("result", 2));
  c1.send(outcome("result", 3));
  c1.send({ type: "lagged", stream_id: S, resume_from: 4 });
  const read: number[] = [];
  for (let i = 0; i < 2; i++) {
    const r = await sub.next();
    if (!r.done) read.push(cursorOf(r.value));
  }
  c1.send({ type: "unsubscribed", stream_id: S });
  assert.deepEqual(await c1.next("subscribe"), { type: "subscribe", stream_id: S, from: 2 }, "after the answer, from the consumer's cursor");
  c1.send({ type: "subscribed", stream_id: S });
  for (let cursor = 2; cursor < 4; cursor++) c1.send(outcome("result", cursor));
  c1.send(outcome("end", 4));
  for await (const f of sub) read.push(cursorOf(f));
  assert.deepEqual(read, [0, 1, 2, 3, 4]);
});

test("subscribed again while the last unsubscribe is unanswered: the new subscription is not lost", async () => {
  client = new Client({ url: fake.url, apiKey: "k-123456789", WebSocket: (await import("ws")).WebSocket });
  const first = client.subscribe(S, { from: 0 });
  const c1 = await fake.connection(0);
  await c1.next("subscribe");
  c1.send({ type: "subscribed", stream_id: S });
  c1.send(outcome("result", 0));
  assert.equal(cursorOf((await first.next()).value as StreamFrame), 0);
  await first.close();
  assert.deepEqual(await c1.next("unsubscribe"), { type: "unsubscribe", stream_id: S });
  const { frames, done } = collect(client.subscribe(S, { from: 0 }));
  // The old subscription lagged before the daemon read the unsubscribe; then its answer.
  c1.send({ type: "lagged", stream_id: S, resume_from: 1 });
  c1.send({ type: "unsubscribed", stream_id: S });
  assert.deepEqual(await c1.next("subscribe"), { type: "subscribe", stream_id: S, from: 0 });
  c1.send({ type: "subscribed", stream_id: S });
  c1.send(outcome("result", 0));
  c1.send(outcome("end", 1));
  await done;
  assert.deepEqual(at(frames), ["result@0", "end@1"]);
});

test("untilNow: a caught_up of a paused subscription is not believed (what was dropped meanwhile comes)", async () => {
  client = new Client({ url: fake.url, apiKey: "k-123456789", WebSocket: (await import("ws")).WebSocket });
  const sub = client.subscribe(S, { from: 0, untilNow: true, highWaterMark: 2 });
  const c1 = await fake.connection(0);
  assert.deepEqual(await c1.next("subscribe"), { type: "subscribe", stream_id: S, from: 0, until: "now" });
  c1.send({ type: "subscribed", stream_id: S });
  c1.send(outcome("result", 0));
  c1.send(outcome("result", 1));
  await c1.next("unsubscribe");
  c1.send(outcome("result", 2)); // dropped: the consumer's queue is full
  c1.send({ type: "caught_up", stream_id: S });
  c1.send({ type: "unsubscribed", stream_id: S });
  const read: number[] = [];
  for (let i = 0; i < 2; i++) {
    const r = await sub.next();
    if (!r.done) read.push(cursorOf(r.value));
  }
  assert.deepEqual(await c1.next("subscribe"), { type: "subscribe", stream_id: S, from: 2, until: "now" });
  c1.send({ type: "subscribed", stream_id: S });
  c1.send(outcome("result", 2));
  c1.send({ type: "caught_up", stream_id: S });
  for await (const f of sub) read.push(cursorOf(f));
  assert.deepEqual(read, [0, 1, 2]);
});
