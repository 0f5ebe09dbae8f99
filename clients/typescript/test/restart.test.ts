// On a tansu broker, while records flow into a stream the client follows: the daemon is
// stopped (SIGTERM) and started again on the same port, then the broker is stopped and
// started again once a send was refused for it. The subscription resumes, sends refused
// while the broker is away are sent again with their keys, nothing is lost or delivered
// twice, and the daemon stored each record once.

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
  // Sends the broker does not acknowledge are refused (broker_unavailable) within 2 s.
  daemon = await Daemon.start({ brokers: tansu.address, extra: "limits: {send_timeout_ms: 2000}" });
});

after(async () => {
  await daemon?.dispose();
  await tansu?.dispose();
});

test(
  "daemon restarted, then broker restarted, mid-stream: nothing lost or twice",
  { skip: bin ? false : "no tansu (set TANSU_BIN)" },
  async (t) => {
    const d = daemon!;
    const broker = tansu!;
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

      await waitFor("results before the daemon's restart", () => results() >= 30, 60_000);
      await d.stop("SIGTERM");
      const daemonStopped = sent;
      await d.spawn(); // same port, same broker
      await waitFor("results after the daemon's restart", () => results() >= daemonStopped + 30, 60_000);

      await broker.stop();
      const brokerStopped = sent;
      const seen = events.length;
      const refused = () =>
        events
          .slice(seen)
          .some((e) => e.type === "resending" && (e.code === "broker_unavailable" || e.code === "not_ready"));
      await waitFor("a send refused for the broker's absence", refused, 30_000);
      await broker.start(); // same port, same data
      await waitFor("results after the broker's restart", () => results() >= brokerStopped + 30, 90_000);

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
        `${sent} records (${daemonStopped} when the daemon stopped, ${brokerStopped} when the broker did); closes: ` +
          JSON.stringify(closes.map((e) => (e.type === "disconnected" ? `${e.code} ${e.reason}` : ""))) +
          `; ${acks.filter((a) => a.replayed).length} acks replayed`,
      );
    } finally {
      await client.close();
    }
  },
);
