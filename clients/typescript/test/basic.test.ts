// Against a daemon on the embedded broker: the basic round trip and every call of the API.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { Client, StreamgateError, type Ack, type ConnectionEvent, type StreamFrame } from "../src/index.js";
import { cursorOf, Daemon, KEY, replayEnded, standardWebSocket } from "./helpers.js";

/** The daemon's `limits.ws_max_message_bytes` here: small, so that a record can pass it. */
const MAX_MESSAGE = 65_536;

let daemon: Daemon;

before(async () => {
  daemon = await Daemon.start({ extra: `limits: {ws_max_message_bytes: ${MAX_MESSAGE}}` });
});

after(async () => {
  await daemon?.dispose();
});

test("start, subscribe from earliest, send 10, get 10 results in order, end ends the iterator", async () => {
  const client = new Client({ url: daemon.url, apiKey: KEY });
  try {
    const id = await client.start({ processor: "uppercase" });
    assert.match(id, /^[0-9a-f-]{36}$/);
    const frames: StreamFrame[] = [];
    const reading = (async () => {
      for await (const frame of client.subscribe(id, { from: "earliest" })) frames.push(frame);
    })();
    const acks: Ack[] = [];
    for (let n = 0; n < 10; n++) acks.push(await client.send(id, { n, word: `w${n}` }));
    assert.deepEqual(
      acks.map((a) => [a.stream_id, a.seq]),
      acks.map((_, i) => [id, i + 1]),
    );
    assert.ok(acks.every((a, i) => i === 0 || a.offset > acks[i - 1]!.offset), "offsets grow");
    assert.ok(acks.every((a) => a.replayed === undefined), "nothing was sent twice");
    const view = await client.end(id);
    assert.equal(view.state, "ended");
    await reading; // the iterator ends after `end`
    const results = frames.filter((f) => f.type === "result");
    assert.deepEqual(
      results.map((f) => (f.type === "result" ? f.data : null)),
      Array.from({ length: 10 }, (_, n) => ({ n, word: `W${n}` })),
    );
    assert.equal(frames.length, 11);
    assert.equal(frames.at(-1)!.type, "end");
    const cursors = frames.map(cursorOf);
    assert.ok(cursors.every((c, i) => i === 0 || c > cursors[i - 1]!), "cursors grow");
  } finally {
    await client.close();
  }
});

test("startStream, describe, list, token, sendBatch with an Idempotency-Key", async () => {
  const client = new Client({ url: daemon.url, apiKey: KEY });
  try {
    const started = await client.startStream({ processor: { type: "jq", filter: ".n * 2" } });
    assert.deepEqual(started.processor, { type: "jq", filter: ".n * 2" });
    const id = started.stream_id;
    const view = await client.describe(id);
    assert.equal(view.owner, "alice");
    assert.equal(view.state, "open");
    assert.ok((await client.list()).some((s) => s.stream_id === id));
    const token = await client.token([id], { scope: ["subscribe"], ttlS: 60 });
    assert.deepEqual(token.streams, [id]);
    assert.deepEqual(token.scope, ["subscribe"]);
    assert.ok(token.expires_at > Date.now() / 1000);

    const batch = [{ n: 1 }, { n: 2 }, { n: 3 }];
    const first = await client.sendBatch(id, batch, { idempotencyKey: "batch-1" });
    assert.equal(first.records, 3);
    assert.equal(first.replayed, undefined);
    const again = await client.sendBatch(id, batch, { idempotencyKey: "batch-1" });
    assert.equal(again.replayed, true);
    assert.deepEqual(again.offsets, first.offsets);
    await assert.rejects(
      client.sendBatch(id, [{ n: 9 }], { idempotencyKey: "batch-1" }),
      (e: unknown) => e instanceof StreamgateError && e.code === "idempotency_key_reused" && e.status === 422,
    );
    await client.end(id);
    const stored = await replayEnded(daemon.url, id);
    assert.deepEqual(
      stored.filter((f) => f.type === "result").map((f) => f.data),
      [2, 4, 6],
      "the batch sent twice is processed once",
    );
  } finally {
    await client.close();
  }
});

test("errors are typed by the daemon's codes", async () => {
  const client = new Client({ url: daemon.url, apiKey: KEY });
  const stranger = new Client({ url: daemon.url, apiKey: "not-a-key-at-all" });
  try {
    const missing = "00000000-0000-4000-8000-000000000000";
    await assert.rejects(client.describe(missing), (e: unknown) => {
      return e instanceof StreamgateError && e.code === "stream_not_found" && e.status === 404;
    });
    // A refused subscription throws from its iterator.
    await assert.rejects(
      (async () => {
        for await (const _ of client.subscribe(missing, { from: "earliest" })) void _;
      })(),
      (e: unknown) => e instanceof StreamgateError && e.code === "stream_not_found" && e.streamId === missing,
    );
    // A nack that will not pass rejects the send.
    const id = await client.start();
    await client.end(id);
    await assert.rejects(
      client.send(id, { late: true }),
      (e: unknown) => e instanceof StreamgateError && e.code === "stream_ended" && e.status === undefined,
    );
    await assert.rejects(
      client.sendBatch(id, [1]),
      (e: unknown) => e instanceof StreamgateError && e.code === "stream_ended" && e.status === 409,
    );
    // A bad key: the HTTP call, the connection's send and subscription are all told.
    await assert.rejects(stranger.list(), (e: unknown) => e instanceof StreamgateError && e.code === "invalid_api_key");
    await assert.rejects(
      stranger.send(id, 1),
      (e: unknown) => e instanceof StreamgateError && e.code === "invalid_api_key" && e.status === 401,
    );
    await assert.rejects(
      stranger.subscribe(id).next(),
      (e: unknown) => e instanceof StreamgateError && e.code === "invalid_api_key",
    );
    // A closed client rejects what waits and ends its iterators.
    const other = await client.start();
    const sub = client.subscribe(other);
    const pending = sub.next();
    await client.close();
    assert.deepEqual(await pending, { value: undefined, done: true });
    await assert.rejects(client.send(other, 1), (e: unknown) => e instanceof StreamgateError && e.code === "closed");
  } finally {
    await client.close();
    await stranger.close();
  }
});

test("a standard (browser) WebSocket: key and token in the subprotocols", async () => {
  const WebSocket = await standardWebSocket();
  const owner = new Client({ url: daemon.url, apiKey: KEY, WebSocket });
  const id = await owner.start({ processor: "uppercase" });
  const reader = new Client({
    url: daemon.url,
    WebSocket,
    getToken: async () => (await owner.token([id], { scope: ["subscribe"], ttlS: 60 })).token,
  });
  const stranger = new Client({ url: daemon.url, apiKey: "not-a-key-at-all", WebSocket });
  try {
    const data: unknown[] = [];
    const reading = (async () => {
      for await (const frame of reader.subscribe(id, { from: "earliest" })) {
        if (frame.type === "result") data.push(frame.data);
      }
    })();
    for (let n = 0; n < 5; n++) await owner.send(id, { s: `x${n}` });
    await owner.end(id);
    await reading;
    assert.deepEqual(data, [0, 1, 2, 3, 4].map((n) => ({ s: `X${n}` })));
    // The token cannot send: its scope is subscribe.
    await assert.rejects(reader.send(id, 1), (e: unknown) => e instanceof StreamgateError && e.code === "forbidden");
    // A browser cannot see why the handshake failed; the client asks and says.
    await assert.rejects(stranger.subscribe(id).next(), (e: unknown) => {
      return e instanceof StreamgateError && e.code === "invalid_api_key" && e.status === 401;
    });
  } finally {
    await stranger.close();
    await reader.close();
    await owner.close();
  }
});

test("a record over limits.ws_max_message_bytes is refused record_too_large; the others are stored once", async () => {
  const events: ConnectionEvent[] = [];
  const client = new Client({ url: daemon.url, apiKey: KEY, onEvent: (e) => events.push(e) });
  try {
    const id = await client.start();
    const tooLarge = (e: unknown) => e instanceof StreamgateError && e.code === "record_too_large" && e.streamId === id;
    const big = { pad: "x".repeat(MAX_MESSAGE) };
    const sends = [client.send(id, { n: 1 }), client.send(id, big), client.send(id, { n: 2 })];
    // The daemon closes with 1009 at the big one; the client learns the limit from the close.
    await assert.rejects(sends[1]!, tooLarge);
    const [first, , last] = await Promise.allSettled(sends);
    assert.equal(first!.status, "fulfilled");
    assert.equal(last!.status, "fulfilled");
    const closes = () => events.flatMap((e) => (e.type === "disconnected" ? [e.code] : []));
    assert.deepEqual(closes(), [1009]);
    // Known now: refused before it is sent, and the connection stays.
    await assert.rejects(client.send(id, big), tooLarge);
    await client.send(id, { n: 3 });
    assert.deepEqual(closes(), [1009], "no connection lost for it");
    await client.end(id);
    const stored = await replayEnded(daemon.url, id);
    assert.deepEqual(
      stored.filter((f) => f.type === "result").map((f) => f.data),
      [{ n: 1 }, { n: 2 }, { n: 3 }],
    );
  } finally {
    await client.close();
  }
});
