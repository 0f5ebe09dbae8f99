// W3C trace context through a real daemon with tracing on (exporting to an address where
// nothing listens: spans are dropped, frames still name their trace): a record sent with a
// `traceparent` has results whose `traceparent` is in its trace, one sent without has none;
// over `/api/connect` and over the fallback (a proxy answering 404 to `/api/connect`), for
// `send` and `sendBatch`. A malformed context is refused before anything is sent.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { Client, StreamgateError, type ConnectionEvent, type ResultFrame, type StreamFrame } from "../src/index.js";
import { CuttingProxy, Daemon, freePort, KEY } from "./helpers.js";

/** The caller's span: each result names the daemon's processing span instead. */
const CALLER = "00f067aa0ba902b7";
const SENT = "4bf92f3577b34da6a3ce929d0e0e4736";
const BATCHED = "0af7651916cd43dd8448eb211c80319c";

let daemon: Daemon;
let proxy: CuttingProxy;

before(async () => {
  const nobody = await freePort();
  daemon = await Daemon.start({ extra: `telemetry: {otlp_endpoint: "http://127.0.0.1:${nobody}"}` });
  proxy = new CuttingProxy(daemon.port, { noConnect: true });
  await proxy.start();
});

after(async () => {
  await proxy?.stop();
  await daemon?.dispose();
});

/** The trace id a result frame names (the second field of its `traceparent`), if any. */
const traceOf = (frame: ResultFrame) => frame.traceparent?.split("-")[1];

async function tracedRoundTrip(url: string): Promise<ConnectionEvent[]> {
  const events: ConnectionEvent[] = [];
  const client = new Client({ url, apiKey: KEY, onEvent: (e) => events.push(e) });
  try {
    const id = await client.start();
    const frames: StreamFrame[] = [];
    const reading = (async () => {
      for await (const frame of client.subscribe(id, { from: "earliest" })) frames.push(frame);
    })();
    await client.send(id, { n: 1 }, { traceparent: `00-${SENT}-${CALLER}-01` });
    await client.send(id, { n: 2 });
    await assert.rejects(
      client.send(id, { n: 0 }, { traceparent: "00-nonsense-01" }),
      (e: unknown) => e instanceof StreamgateError && e.code === "invalid_input" && e.message.includes("traceparent"),
    );
    await client.sendBatch(id, [{ n: 3 }, { n: 4 }], { traceparent: `00-${BATCHED}-${CALLER}-01` });
    await client.end(id);
    await reading;

    const results = frames.filter((f): f is ResultFrame => f.type === "result");
    assert.deepEqual(
      results.map((f) => f.data),
      [{ n: 1 }, { n: 2 }, { n: 3 }, { n: 4 }],
      "every record once; the refused one was not sent",
    );
    const [sent, plain, ...batched] = results;
    assert.match(String(sent!.traceparent), /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    assert.equal(traceOf(sent!), SENT, "the result is in the record's trace");
    assert.notEqual(sent!.traceparent!.split("-")[2], CALLER, "it names the span that processed the record");
    assert.ok(plain!.traceparent === undefined || traceOf(plain!) !== SENT, `untraced: ${plain!.traceparent}`);
    assert.deepEqual(batched.map(traceOf), [BATCHED, BATCHED], "every record of the batch is in its trace");
    return events;
  } finally {
    await client.close();
  }
}

test("over /api/connect: a result is in the trace its record was sent with, one sent without has none", async () => {
  const events = await tracedRoundTrip(daemon.url);
  assert.ok(!events.some((e) => e.type === "fallback"));
});

test("over the fallback (/api/connect answered 404): the same, through the traceparent header", async () => {
  const events = await tracedRoundTrip(proxy.url);
  assert.ok(events.some((e) => e.type === "fallback"), "in the fallback");
  assert.equal(proxy.refusedConnects, 1);
});
