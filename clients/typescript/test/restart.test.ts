// The daemon, on a tansu broker, is stopped (SIGTERM) and started again on the same port
// while records flow: the subscription resumes, nothing is lost or delivered twice, and the
// daemon stored each record once.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { Client, type Ack, type ConnectionEvent, type StreamFrame } from "../src/index.js";
import { cursorOf, Daemon, freePort, KEY, replay, sleepMs, Tansu, tansuBin, waitFor } from "./helpers.js";

const bin = tansuBin();
let tansu: Tansu | undefined;
let daemon: Daemon | undefined;

before(async () => {
  if (!bin) return;
  tansu = new Tansu(bin, await freePort());
  await tansu.start();
  daemon = await Daemon.start({ brokers: tansu.address });
});

after(async () => {
  await daemon?.dispose();
  await tansu?.dispose();
});

test("daemon restarted mid-stream: the subscription resumes, nothing lost or twice", { skip: bin ? false : "no tansu (set TANSU_BIN)" }, async (t) => {
  const d = daemon!;
  const events: ConnectionEvent[] = [];
  const client = new Client({ url: d.url, apiKey: KEY, onEvent: (e) => events.push(e) });
  try {
    const id = await client.start({ processor: "uppercase" });
    const frames: StreamFrame[] = [];
    const reading = (async () => {
      for await (const frame of client.subscribe(id, { from: "earliest" })) frames.push(frame);
    })();
    const results = () => frames.filter((f) => f.type === "result").length;

    let sending = true;
    let sent = 0;
    const acks: Ack[] = [];
    const sender = (async () => {
      for (let n = 0; sending; n++) {
        sent = n + 1;
        acks.push(await client.send(id, { n, s: `r${n}` }));
        await sleepMs(20);
      }
    })();

    await waitFor("results before the restart", () => results() >= 30, 60_000);
    const before = sent;
    await d.stop("SIGTERM");
    const stoppedAt = sent;
    await d.spawn(); // same port, same broker
    await waitFor("results after the restart", () => results() >= stoppedAt + 30, 120_000);
    sending = false;
    await sender;
    await waitFor("every result", () => results() >= sent, 60_000);
    await client.end(id);
    await reading;

    const expected = Array.from({ length: sent }, (_, k) => ({ n: k, s: `R${k}` }));
    assert.equal(frames.at(-1)!.type, "end");
    assert.deepEqual(
      frames.filter((f) => f.type === "result").map((f) => (f.type === "result" ? f.data : undefined)),
      expected,
      "each result once, in order",
    );
    assert.equal(frames.length, sent + 1, "nothing but the results and the end");
    const cursors = frames.map(cursorOf);
    assert.ok(cursors.every((c, k) => k === 0 || c > cursors[k - 1]!), "cursors grow");
    assert.equal(acks.length, sent, "one ack per send");
    const stored = await replay(d.url, id);
    assert.deepEqual(
      stored.filter((f) => f.type === "result").map((f) => f.data),
      expected,
      "the daemon stored each record once",
    );
    const closes = events.filter((e) => e.type === "disconnected");
    assert.ok(closes.length >= 1, "the connection was lost");
    assert.ok(events.filter((e) => e.type === "connected").length >= 2, "and opened again");
    t.diagnostic(
      `${sent} records (${before} before the SIGTERM, ${stoppedAt} when it exited); closes: ` +
        JSON.stringify(closes.map((e) => (e.type === "disconnected" ? `${e.code} ${e.reason}` : ""))) +
        `; ${acks.filter((a) => a.replayed).length} acks replayed`,
    );
  } finally {
    await client.close();
  }
});
