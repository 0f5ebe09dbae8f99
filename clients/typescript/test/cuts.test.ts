// A proxy between the client and the daemon cuts every connection, again and again, while
// records flow into 20 streams (as the issue asks): each cut comes once the new connection
// carried ten acks per stream and the daemon sent acks that the proxy held back, so every
// cut loses answers of stored records. Every result arrives once per stream, in order,
// every send is acknowledged once, and the daemon stored each record once (idempotency keys).

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { Client, type Ack, type ConnectionEvent, type StreamFrame } from "../src/index.js";
import { cursorOf, CuttingProxy, Daemon, KEY, replay, sleepMs, waitFor } from "./helpers.js";

const STREAMS = 20;
const CUTS = 4;
/** Acks the client gets between two cuts (and after the last). */
const ACKS_PER_CONNECTION = STREAMS * 10;

let daemon: Daemon;
let proxy: CuttingProxy;

before(async () => {
  daemon = await Daemon.start();
  proxy = new CuttingProxy(daemon.port);
  await proxy.start();
});

after(async () => {
  await proxy?.stop();
  await daemon?.dispose();
});

test("connections cut mid-flight: nothing lost, nothing twice, in order, stored once", async (t) => {
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
      await waitFor(`${ACKS_PER_CONNECTION} acks after cut ${cut}`, () => acked() >= before + ACKS_PER_CONNECTION, 60_000);
      if (cut === CUTS) break;
      // Acks the daemon sent that the client never gets: those records are stored, and are
      // sent again on the next connection.
      proxy.hold();
      await waitFor(`acks held back before cut ${cut + 1}`, () => proxy.heldCount('"type":"ack"') >= 2, 30_000);
      proxy.cut();
    }
    sending = false;
    await Promise.all(senders);

    const results = (id: string) => frames.get(id)!.filter((f) => f.type === "result");
    const sendingDone = performance.now();
    await waitFor(
      "every result",
      () => ids.every((id) => results(id).length >= sent.get(id)!),
      60_000,
    );
    const caughtUp = performance.now() - sendingDone;
    for (const id of ids) await client.end(id);
    await Promise.all(readers); // each iterator ends after its `end`

    let total = 0;
    for (const id of ids) {
      const n = sent.get(id)!;
      total += n;
      const expected = Array.from({ length: n }, (_, k) => ({ n: k, s: `R${k}` }));
      const got = frames.get(id)!;
      assert.equal(got.at(-1)!.type, "end", `${id} ended`);
      assert.ok(
        got.every((f) => f.type === "result" || f.type === "end"),
        `${id}: only results and the end (no gap, no error): ${JSON.stringify(got.filter((f) => f.type !== "result"))}`,
      );
      assert.deepEqual(
        results(id).map((f) => (f.type === "result" ? f.data : undefined)),
        expected,
        `${id}: each result once, in order`,
      );
      const cursors = got.map(cursorOf);
      assert.ok(cursors.every((c, k) => k === 0 || c > cursors[k - 1]!), `${id}: cursors grow`);

      const answered = acks.get(id)!;
      assert.equal(answered.length, n, `${id}: one ack per send`);
      assert.ok(answered.every((a) => a.stream_id === id));
      const offsets = answered.map((a) => a.offset);
      assert.ok(offsets.every((o, k) => k === 0 || o > offsets[k - 1]!), `${id}: acked offsets grow`);

      // The daemon's own record: each record processed once.
      const stored = await replay(daemon.url, id);
      assert.deepEqual(
        stored.filter((f) => f.type === "result").map((f) => f.data),
        expected,
        `${id}: the daemon stored each result once`,
      );
    }
    const connects = events.filter((e) => e.type === "connected").length;
    const replayed = [...acks.values()].flat().filter((a) => a.replayed).length;
    t.diagnostic(
      `${total} records into ${STREAMS} streams, ${proxy.cuts} cuts, ${connects} connections, ` +
        `${replayed} acks replayed, results caught up ${caughtUp.toFixed(0)} ms after the last send`,
    );
    assert.equal(connects, CUTS + 1, "one connection per cut, and the first");
    assert.ok(replayed >= 2 * CUTS, `each cut lost acks of stored records, sent again with their keys: ${replayed} replayed`);
  } finally {
    await client.close();
  }
});
