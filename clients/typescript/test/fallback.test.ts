// Against a daemon without `/api/connect` (its handshake answers 404) the client follows each
// stream on a WebSocket of its own (`/api/stream/{id}/results`) and sends each record with
// `POST /api/stream/{id}/send` and an `Idempotency-Key`, with the connection's guarantees:
// frame by frame against a scripted daemon (resume from the last cursor + 1, repeats
// dropped, gaps yielded, 4008/1001/4401 followed, tokens renewed, the same key after 503,
// 429 and a lost answer), then against a real daemon behind a proxy that answers 404 to
// `/api/connect` and cuts every connection again and again.

import assert from "node:assert/strict";
import { after, afterEach, before, beforeEach, describe, test } from "node:test";

import { Client, StreamgateError, type Ack, type ConnectionEvent, type StreamFrame } from "../src/index.js";
import { FakeLegacyDaemon } from "./fake.js";
import { cursorOf, CuttingProxy, Daemon, KEY, replay, sleepMs, standardWebSocket, waitFor } from "./helpers.js";

const A = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa";
const B = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb";
const MISSING = "00000000-0000-4000-8000-000000000000";

function outcome(stream: string, type: "result" | "end" | "error", cursor: number): Record<string, unknown> {
  const frame: Record<string, unknown> = {
    type,
    cursor,
    stream_id: stream,
    input_partition: 0,
    input_offset: cursor,
    received_ms: 1,
    processed_ms: 2,
  };
  if (type === "result") frame["data"] = cursor;
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

const at = (frames: StreamFrame[]) =>
  frames.map((f) => (f.type === "gap" ? `gap@${f.from_cursor}+${f.skipped}` : `${f.type}@${f.cursor}`));

/** A JWT-shaped token (the fake does not check signatures) living `ttlS` seconds. */
function jwt(n: number, ttlS: number): string {
  const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const iat = Math.floor(Date.now() / 1000);
  return `${b64({ alg: "HS256" })}.${b64({ n, iat, exp: iat + ttlS })}.sig`;
}

describe("against a scripted daemon without /api/connect", () => {
  let fake: FakeLegacyDaemon;
  let client: Client | undefined;
  let WebSocket: unknown;

  beforeEach(async () => {
    WebSocket = (await import("ws")).WebSocket;
    fake = new FakeLegacyDaemon();
    await fake.start();
  });

  afterEach(async () => {
    await client?.close();
    client = undefined;
    await fake.stop();
  });

  test("a socket per stream, resumed from the last cursor + 1; repeats dropped, gaps yielded, 4008 and 1001 followed", async () => {
    const events: ConnectionEvent[] = [];
    client = new Client({ url: fake.url, apiKey: "k-123456789", WebSocket, onEvent: (e) => events.push(e) });
    const a = collect(client.subscribe(A, { from: "earliest", onLag: "close" }));
    const b = collect(client.subscribe(B, { from: -2 }));

    const a1 = await fake.socket(A, 0);
    const b1 = await fake.socket(B, 0);
    assert.equal(fake.connectHandshakes, 1, "/api/connect was tried once");
    assert.ok(events.some((e) => e.type === "fallback"), "the fallback is told");
    assert.equal(a1.request.headers["x-api-key"], "k-123456789", "Node: the key in a header");
    assert.deepEqual(FakeLegacyDaemon.query(a1), { from: "earliest", on_lag: "close" });
    assert.deepEqual(FakeLegacyDaemon.query(b1), { from: "-2" });

    a1.send(outcome(A, "result", 5));
    a1.send(outcome(A, "result", 6));
    a1.send({ type: "gap", stream_id: A, from_cursor: 7, skipped: 2 });
    a1.send(outcome(A, "error", 9));
    a1.send(outcome(A, "result", 6)); // delivered before: dropped
    a1.send(outcome(A, "result", 10));
    b1.send(outcome(B, "result", 3));
    await waitFor("A's first frames", () => a.frames.length === 5);

    // Lagged: opened again at once from the cursor the reason names.
    a1.close(4008, "lagged: too slow; resume with from=11");
    const a2 = await fake.socket(A, 1);
    assert.deepEqual(FakeLegacyDaemon.query(a2), { from: "11", on_lag: "close" });
    a2.send(outcome(A, "result", 11));
    await waitFor("result 11", () => a.frames.length === 6);

    // Cut: opened again after a pause, from the last cursor + 1.
    const cutAt = performance.now();
    a2.cut();
    const a3 = await fake.socket(A, 2);
    assert.ok(a3.openedAt - cutAt >= 90, `opened again ${(a3.openedAt - cutAt).toFixed(0)} ms after the cut`);
    assert.deepEqual(FakeLegacyDaemon.query(a3), { from: "12", on_lag: "close" });
    a3.send(outcome(A, "result", 11)); // delivered on the last socket: dropped
    a3.send(outcome(A, "result", 12));
    await waitFor("result 12", () => a.frames.length === 7);

    // The daemon shuts down: opened again (on the next instance) from the last cursor + 1.
    a3.close(1001, "server shutting down");
    const a4 = await fake.socket(A, 3);
    assert.deepEqual(FakeLegacyDaemon.query(a4), { from: "13", on_lag: "close" });
    a4.send(outcome(A, "end", 13));
    a4.close(1000, "stream ended");
    b1.send(outcome(B, "end", 4));
    b1.close(1000, "stream ended");
    await Promise.all([a.done, b.done]);

    assert.deepEqual(at(a.frames), [
      "result@5",
      "result@6",
      "gap@7+2",
      "error@9",
      "result@10",
      "result@11",
      "result@12",
      "end@13",
    ]);
    assert.deepEqual(at(b.frames), ["result@3", "end@4"]);
    assert.equal(fake.opened(A), 4, "no socket after the end");
    assert.equal(fake.opened(B), 1);
    assert.equal(fake.connectHandshakes, 1, "/api/connect is not tried again");
  });

  test("a consumer that does not read: its socket closed, opened again from its cursor once it reads on", async () => {
    client = new Client({ url: fake.url, apiKey: "k-123456789", WebSocket });
    const sub = client.subscribe(A, { from: 0, highWaterMark: 4 });
    const a1 = await fake.socket(A, 0);
    for (let cursor = 0; cursor < 10; cursor++) a1.send(outcome(A, "result", cursor));
    await waitFor("the full queue's socket closed", () => a1.closed);
    assert.equal(a1.closeCode, 1000);
    assert.equal(sub.queued, 4);
    const read: number[] = [];
    for (let i = 0; i < 2; i++) {
      const r = await sub.next();
      if (!r.done) read.push(cursorOf(r.value));
    }
    const a2 = await fake.socket(A, 1);
    assert.deepEqual(FakeLegacyDaemon.query(a2), { from: "4" });
    a2.send(outcome(A, "result", 4));
    a2.send(outcome(A, "end", 5));
    for await (const f of sub) read.push(cursorOf(f));
    assert.deepEqual(read, [0, 1, 2, 3, 4, 5]);
  });

  test("records over HTTP: one at a time per stream, the same Idempotency-Key after 503, 429 and a lost answer", async () => {
    client = new Client({ url: fake.url, apiKey: "k-123456789", WebSocket });
    fake.answers.set(A, [
      { status: 503, headers: { "retry-after": "1" }, body: { error: { code: "broker_unavailable", message: "no ack" } } },
      "cut",
      { status: 202, body: { stream_id: A, records: 1, partition: 0, offsets: [7], replayed: true } },
      { status: 202, body: { stream_id: A, records: 1, partition: 0, offsets: [8] } },
      { status: 409, body: { error: { code: "stream_ended", message: "ended" } } },
    ]);
    fake.answers.set(B, [
      { status: 429, headers: { "retry-after": "1" }, body: { error: { code: "rate_limited", message: "slow down" } } },
      { status: 202, body: { stream_id: B, records: 1, partition: 1, offsets: [3] } },
    ]);
    const first = client.send(A, { a: 1 });
    const second = client.send(A, { a: 2 });
    const other = client.send(B, "b");
    const acks = await Promise.all([first, second, other]);
    assert.deepEqual(acks, [
      { stream_id: A, seq: 1, offset: 7, replayed: true },
      { stream_id: A, seq: 2, offset: 8 },
      { stream_id: B, seq: 3, offset: 3 },
    ] satisfies Ack[]);

    const ofA = fake.sent.filter((s) => s.streamId === A);
    const ofB = fake.sent.filter((s) => s.streamId === B);
    assert.deepEqual(
      ofA.map((s) => s.body),
      ['{"a":1}', '{"a":1}', '{"a":1}', '{"a":2}'],
      "A's records in order, the second once the first was stored",
    );
    assert.ok(ofA.every((s) => s.contentType === "application/json"));
    const key = ofA[0]!.key;
    assert.match(String(key), /^[0-9a-f-]{36}$/);
    assert.deepEqual(ofA.slice(0, 3).map((s) => s.key), [key, key, key], "the same key after a 503 and a lost answer");
    assert.notEqual(ofA[3]!.key, key, "a key per record");
    assert.ok(ofA[1]!.at - ofA[0]!.at >= 1000, "Retry-After: 1 after the 503");
    assert.deepEqual(ofB.map((s) => s.body), ['"b"', '"b"']);
    assert.equal(ofB[1]!.key, ofB[0]!.key);
    assert.ok(ofB[1]!.at - ofB[0]!.at >= 1000, "Retry-After: 1 after the 429");
    assert.ok(ofB[0]!.at < ofA[1]!.at, "B's record is not held up by A's");

    await assert.rejects(client.send(A, 3), (e: unknown) => {
      return e instanceof StreamgateError && e.code === "stream_ended" && e.status === 409;
    });
  });

  test("traceparent: the header of the record's POST, sent again with its key after a lost answer; a malformed one is refused before anything is sent", async () => {
    const TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    client = new Client({ url: fake.url, apiKey: "k-123456789", WebSocket });
    const refused = (e: unknown) =>
      e instanceof StreamgateError && e.code === "invalid_input" && e.streamId === A && e.message.includes("traceparent");
    await assert.rejects(client.send(A, 1, { traceparent: "00-nonsense-01" }), refused);
    assert.equal(fake.connectHandshakes, 0, "nothing was sent");
    assert.equal(fake.requests.length, 0, "nothing was sent");

    fake.answers.set(A, ["cut"]);
    await client.send(A, { a: 1 }, { traceparent: TRACE });
    await client.send(A, { a: 2 });
    assert.equal(fake.connectHandshakes, 1, "in the fallback");
    await assert.rejects(client.send(A, { a: 3 }, { traceparent: TRACE.replace("00f067aa0ba902b7", "0".repeat(16)) }), refused);
    const ofA = fake.sent.filter((s) => s.streamId === A);
    assert.deepEqual(
      ofA.map((s) => [s.body, s.traceparent]),
      [
        ['{"a":1}', TRACE],
        ['{"a":1}', TRACE],
        ['{"a":2}', undefined],
      ],
      "the context sent again with the record after a lost answer; none when none was given",
    );
    assert.equal(ofA[1]!.key, ofA[0]!.key);
  });

  test("tokens: each socket gets a new one before its token expires (then the old one closes), and after a 4401", async () => {
    let asked = 0;
    const events: ConnectionEvent[] = [];
    client = new Client({ url: fake.url, getToken: () => jwt(++asked, 2), WebSocket, onEvent: (e) => events.push(e) });
    const a = collect(client.subscribe(A, { from: "earliest" }));
    const a1 = await fake.socket(A, 0);
    assert.match(String(a1.request.headers["authorization"]), /^Bearer ey/);
    a1.send(outcome(A, "result", 0));
    await waitFor("result 0", () => a.frames.length === 1);

    // Half a second before the 2 s token expires: a new token, a new socket from cursor 1.
    const a2 = await fake.socket(A, 1, 5000);
    const token2 = String(a2.request.headers["authorization"]);
    assert.notEqual(token2, a1.request.headers["authorization"]);
    assert.deepEqual(FakeLegacyDaemon.query(a2), { from: "1" });
    await waitFor("the old socket closed", () => a1.closed);
    assert.equal(a1.closeCode, 1000);
    assert.ok(events.some((e) => e.type === "token_renewed" && e.streamId === A));
    a2.send(outcome(A, "result", 1));
    await waitFor("result 1", () => a.frames.length === 2);

    // A send carries the token of the moment.
    await client.send(A, { n: 1 });
    assert.match(String(fake.sent[0]!.authorization), /^Bearer ey/);
    assert.notEqual(fake.sent[0]!.authorization, a1.request.headers["authorization"]);

    // The daemon says the token expired: a new one, and the socket opened again.
    a2.close(4401, "token expired");
    const a3 = await fake.socket(A, 2);
    assert.notEqual(String(a3.request.headers["authorization"]), token2);
    assert.deepEqual(FakeLegacyDaemon.query(a3), { from: "2" });
    a3.send(outcome(A, "end", 2));
    await a.done;
    assert.deepEqual(at(a.frames), ["result@0", "result@1", "end@2"]);
    assert.equal(asked, 3);
  });

  test("refused sockets: 503 waits Retry-After, 404 fails the subscription; a browser's WebSocket asks over HTTP", async () => {
    client = new Client({ url: fake.url, apiKey: "k-123456789", WebSocket });
    fake.refusals.set(A, [
      { status: 503, headers: { "retry-after": "1" }, body: { error: { code: "not_ready", message: "starting" } } },
    ]);
    fake.refusals.set(MISSING, [{ status: 404, body: { error: { code: "stream_not_found", message: "no such stream" } } }]);
    const started = performance.now();
    const a = collect(client.subscribe(A));
    await assert.rejects(client.subscribe(MISSING).next(), (e: unknown) => {
      return e instanceof StreamgateError && e.code === "stream_not_found" && e.status === 404 && e.streamId === MISSING;
    });
    const a1 = await fake.socket(A, 0);
    assert.ok(a1.openedAt - started >= 1000, "opened once Retry-After passed");
    a1.send(outcome(A, "end", 0));
    await a.done;
    await client.close();

    // A standard WebSocket (a browser's): the credential in the subprotocols; why /api/connect
    // and a stream's socket were refused is asked over HTTP.
    client = new Client({ url: fake.url, apiKey: "k-123456789", WebSocket: await standardWebSocket() });
    fake.refusals.set(MISSING, [{ status: 404, body: { error: { code: "stream_not_found", message: "no such stream" } } }]);
    fake.descriptions.set(MISSING, { status: 404, body: { error: { code: "stream_not_found", message: "no such stream" } } });
    const b = collect(client.subscribe(B));
    const b1 = await fake.socket(B, 0);
    assert.deepEqual(
      String(b1.request.headers["sec-websocket-protocol"]).split(",").map((p) => p.trim()),
      ["streamgate.v1", "apikey.k-123456789"],
    );
    assert.ok(fake.requests.some((r) => r.method === "GET" && r.url === "/api/connect"), "the 404 learned with a GET");
    await assert.rejects(client.subscribe(MISSING).next(), (e: unknown) => {
      return e instanceof StreamgateError && e.code === "stream_not_found" && e.status === 404;
    });
    assert.ok(fake.requests.some((r) => r.method === "GET" && r.url === `/api/stream/${MISSING}`));
    b1.send(outcome(B, "end", 0));
    await b.done;
  });
});

describe("against a real daemon whose /api/connect answers 404, through cuts", () => {
  const STREAMS = 5;
  const CUTS = 3;
  let daemon: Daemon;
  let proxy: CuttingProxy;

  before(async () => {
    daemon = await Daemon.start();
    proxy = new CuttingProxy(daemon.port, { noConnect: true });
    await proxy.start();
  });

  after(async () => {
    await proxy?.stop();
    await daemon?.dispose();
  });

  test("every result once per stream, in order; every send acknowledged once and stored once", async (t) => {
    const events: ConnectionEvent[] = [];
    const client = new Client({ url: proxy.url, apiKey: KEY, onEvent: (e) => events.push(e) });
    try {
      const ids: string[] = [];
      for (let i = 0; i < STREAMS; i++) ids.push(await client.start({ processor: "uppercase" }));
      const frames = new Map<string, StreamFrame[]>(ids.map((id) => [id, []]));
      const readers = ids.map(async (id) => {
        for await (const frame of client.subscribe(id, { from: "earliest" })) frames.get(id)!.push(frame);
      });
      const acks = new Map<string, Ack[]>(ids.map((id) => [id, []]));
      const sent = new Map<string, number>(ids.map((id) => [id, 0]));
      const acked = () => [...acks.values()].reduce((sum, a) => sum + a.length, 0);
      let sending = true;
      const senders = ids.map(async (id) => {
        for (let n = 0; sending; n++) {
          sent.set(id, n + 1);
          acks.get(id)!.push(await client.send(id, { n, s: `r${n}` }));
          await sleepMs(10);
        }
      });
      for (let cut = 0; cut <= CUTS; cut++) {
        const before = acked();
        await waitFor(`acks after cut ${cut}`, () => acked() >= before + STREAMS * 10, 60_000);
        if (cut === CUTS) break;
        // Answers of stored records the client never gets: sent again with their keys.
        proxy.hold();
        await waitFor(`answers held back before cut ${cut + 1}`, () => proxy.heldCount('"offsets"') >= 2, 30_000);
        proxy.cut();
      }
      sending = false;
      await Promise.all(senders);
      const results = (id: string) => frames.get(id)!.filter((f) => f.type === "result");
      await waitFor("every result", () => ids.every((id) => results(id).length >= sent.get(id)!), 60_000);
      for (const id of ids) await client.end(id);
      await Promise.all(readers);

      let total = 0;
      for (const id of ids) {
        const n = sent.get(id)!;
        total += n;
        const expected = Array.from({ length: n }, (_, k) => ({ n: k, s: `R${k}` }));
        const got = frames.get(id)!;
        assert.equal(got.at(-1)!.type, "end", `${id} ended`);
        assert.ok(got.every((f) => f.type === "result" || f.type === "end"), `${id}: only results and the end`);
        assert.deepEqual(results(id).map((f) => (f.type === "result" ? f.data : undefined)), expected, `${id}: each result once, in order`);
        const cursors = got.map(cursorOf);
        assert.ok(cursors.every((c, k) => k === 0 || c > cursors[k - 1]!), `${id}: cursors grow`);
        assert.equal(acks.get(id)!.length, n, `${id}: one ack per send`);
        const stored = await replay(daemon.url, id);
        assert.deepEqual(stored.filter((f) => f.type === "result").map((f) => f.data), expected, `${id}: stored once`);
      }
      const replayed = [...acks.values()].flat().filter((a) => a.replayed).length;
      const sockets = events.filter((e) => e.type === "connected").length;
      t.diagnostic(
        `${total} records into ${STREAMS} streams over HTTP, ${proxy.cuts} cuts, ${sockets} results sockets, ${replayed} acks replayed`,
      );
      assert.equal(proxy.refusedConnects, 1, "/api/connect tried once");
      assert.equal(events.filter((e) => e.type === "fallback").length, 1);
      assert.ok(sockets >= STREAMS * (CUTS + 1), `every stream's socket opened again after each cut: ${sockets}`);
      assert.ok(replayed >= 2 * CUTS, `each cut lost answers of stored records, sent again with their keys: ${replayed}`);
    } finally {
      await client.close();
    }
  });
});
