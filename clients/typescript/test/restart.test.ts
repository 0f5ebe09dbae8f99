// On a tansu broker, while records flow into a stream the client follows: the daemon is
// stopped (SIGTERM) and started again on the same port; then the broker is stopped and
// started again once a send was refused for its absence. The subscription resumes, records
// refused or unanswered meanwhile are sent again with their keys, nothing is lost, no frame
// comes twice, and each record is stored once.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { Client, type Ack, type ConnectionEvent, type ResultFrame, type StreamFrame } from "../src/index.js";
import { cursorOf, Daemon, freePort, KEY, replay, sleepMs, Tansu, tansuBin, waitFor } from "./helpers.js";

const bin = tansuBin();
const skip = bin ? false : "no tansu (set TANSU_BIN)";
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

/** Records sent one after another into a new stream, and its results read, over one client. */
class Flow {
  readonly events: ConnectionEvent[] = [];
  readonly client: Client;
  readonly frames: StreamFrame[] = [];
  readonly acks: Ack[] = [];
  sent = 0;
  private sending = true;
  private sender: Promise<void> | undefined;
  private reader: Promise<void> | undefined;

  constructor(readonly daemon: Daemon) {
    this.client = new Client({ url: daemon.url, apiKey: KEY, onEvent: (e) => this.events.push(e) });
  }

  async start(): Promise<string> {
    const id = await this.client.start({ processor: "uppercase" });
    this.reader = (async () => {
      for await (const frame of this.client.subscribe(id, { from: "earliest" })) this.frames.push(frame);
    })();
    this.sender = (async () => {
      for (let n = 0; this.sending; n++) {
        this.sent = n + 1;
        this.acks.push(await this.client.send(id, { n, s: `r${n}` }));
        await sleepMs(20);
      }
    })();
    return id;
  }

  get results(): ResultFrame[] {
    return this.frames.filter((f): f is ResultFrame => f.type === "result");
  }

  /** Waits for `more` results past the `sent`-th record. */
  async resultsPast(sent: number, more: number, what: string): Promise<void> {
    await waitFor(what, () => this.results.filter((f) => (f.data as { n: number }).n >= sent).length >= more, 90_000);
  }

  /** Stops sending, waits for every result, ends the stream; its iterator ends. */
  async finish(id: string): Promise<void> {
    this.sending = false;
    await this.sender;
    await waitFor("every result", () => new Set(this.results.map((f) => (f.data as { n: number }).n)).size >= this.sent, 60_000);
    await this.client.end(id);
    await this.reader;
  }

  /** What every test checks: the end last, cursors growing (no frame twice), one ack per send. */
  assertDelivered(): void {
    assert.equal(this.frames.at(-1)!.type, "end");
    const cursors = this.frames.map(cursorOf);
    assert.ok(cursors.every((c, k) => k === 0 || c > cursors[k - 1]!), "cursors grow: no frame twice");
    assert.equal(this.acks.length, this.sent, "one ack per send");
  }

  expected(): { n: number; s: string }[] {
    return Array.from({ length: this.sent }, (_, k) => ({ n: k, s: `R${k}` }));
  }

  closes(): string {
    return JSON.stringify(this.events.flatMap((e) => (e.type === "disconnected" ? [`${e.code} ${e.reason}`] : [])));
  }
}

test("daemon restarted mid-stream: the subscription resumes, nothing lost or twice", { skip }, async (t) => {
  const d = daemon!;
  const flow = new Flow(d);
  try {
    const id = await flow.start();
    await flow.resultsPast(0, 10, "results before the restart");
    await d.stop("SIGTERM");
    const stopped = flow.sent;
    await d.spawn(); // same port, same broker
    await flow.resultsPast(stopped, 10, "results after the restart");
    await flow.finish(id);

    flow.assertDelivered();
    // A planned stop re-processes nothing: each result exactly once.
    assert.deepEqual(flow.results.map((f) => f.data), flow.expected(), "each result once, in order");
    assert.equal(flow.frames.length, flow.sent + 1, "nothing but the results and the end");
    const stored = await replay(d.url, id);
    assert.deepEqual(
      stored.filter((f) => f.type === "result").map((f) => f.data),
      flow.expected(),
      "the daemon stored each record once",
    );
    assert.ok(flow.events.some((e) => e.type === "disconnected"), "the connection was lost");
    assert.ok(flow.events.filter((e) => e.type === "connected").length >= 2, "and opened again");
    t.diagnostic(`${flow.sent} records (${stopped} when the daemon stopped); closes: ${flow.closes()}`);
  } finally {
    await flow.client.close();
  }
});

test("broker restarted mid-stream: refused sends are sent again with their keys, each stored once", { skip }, async (t) => {
  const broker = tansu!;
  const flow = new Flow(daemon!);
  try {
    const id = await flow.start();
    await flow.resultsPast(0, 10, "results before the outage");
    await broker.stop();
    const stopped = flow.sent;
    const refused = () =>
      flow.events.some((e) => e.type === "resending" && (e.code === "broker_unavailable" || e.code === "not_ready"));
    await waitFor("a send refused for the broker's absence", refused, 30_000);
    await broker.start(); // same port, same data
    await flow.resultsPast(stopped, 10, "results after the outage");
    await flow.finish(id);

    flow.assertDelivered();
    // Each record stored once (one input offset, whatever was sent again), and its result
    // delivered. Records processed just before the broker went may be processed again after
    // (at least once): such a repeat is a new frame, with its record's input offset and key.
    const offsets = new Map<number, Set<number>>();
    for (const f of flow.results) {
      const n = (f.data as { n: number }).n;
      offsets.set(n, (offsets.get(n) ?? new Set()).add(f.input_offset));
      assert.ok(f.idempotency_key, "every record was sent with a key");
    }
    assert.deepEqual([...offsets.keys()].sort((a, b) => a - b), flow.expected().map((r) => r.n), "every record's result");
    const twice = [...offsets].filter(([, o]) => o.size > 1);
    assert.deepEqual(twice, [], "each record stored once: one input offset");
    const stored = await replay(daemon!.url, id);
    assert.deepEqual(
      [...new Set(stored.filter((f) => f.type === "result").map((f) => JSON.stringify(f.data)))],
      flow.expected().map((r) => JSON.stringify(r)),
      "the daemon holds every result, in order",
    );
    const repeats = flow.results.length - flow.sent;
    t.diagnostic(
      `${flow.sent} records (${stopped} when the broker stopped); ${repeats} processed again after the outage; ` +
        `closes: ${flow.closes()}; ${flow.acks.filter((a) => a.replayed).length} acks replayed`,
    );
  } finally {
    await flow.client.close();
  }
});
