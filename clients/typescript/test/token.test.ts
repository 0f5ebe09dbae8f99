// A token with a 2 s lifetime and a getToken callback: a subscription runs for 10 s (five
// tokens' lives) without a missed result. The client gets a new token shortly before each
// expires, opens a new connection with it, resumes there and closes the old one. A second
// reader does the same through a proxy whose `/api/connect` answers 404: on the fallback,
// each stream's own socket is renewed the same way.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { Client, decodeToken, type ConnectionEvent, type StreamFrame } from "../src/index.js";
import { cursorOf, CuttingProxy, Daemon, KEY, sleepMs, waitFor } from "./helpers.js";

const TOKEN_TTL_S = 2;
/** How long the subscription runs while records flow. */
const RUN_MS = 10_000;

let daemon: Daemon;
let legacy: CuttingProxy;

before(async () => {
  daemon = await Daemon.start();
  legacy = new CuttingProxy(daemon.port, { noConnect: true });
  await legacy.start();
});

after(async () => {
  await legacy?.stop();
  await daemon?.dispose();
});

/** A client on `getToken` (2 s tokens for one stream) following it from the earliest result. */
class Reader {
  readonly events: ConnectionEvent[] = [];
  readonly frames: StreamFrame[] = [];
  readonly client: Client;
  minted = 0;
  readonly reading: Promise<void>;

  constructor(url: string, owner: Client, id: string) {
    const client = new Client({
      url,
      getToken: async () => {
        this.minted += 1;
        const issued = await owner.token([id], { scope: ["subscribe"], ttlS: TOKEN_TTL_S });
        const claims = decodeToken(issued.token)!;
        assert.equal(claims.exp! - claims.iat!, TOKEN_TTL_S);
        return issued.token;
      },
      onEvent: (e) => this.events.push(e),
    });
    this.client = client;
    this.reading = (async () => {
      for await (const frame of client.subscribe(id, { from: "earliest" })) this.frames.push(frame);
    })();
  }

  get results(): number {
    return this.frames.filter((f) => f.type === "result").length;
  }

  count(type: ConnectionEvent["type"]): number {
    return this.events.filter((e) => e.type === type).length;
  }

  closes(): string {
    return JSON.stringify(this.events.flatMap((e) => (e.type === "disconnected" ? [`${e.code} ${e.reason}`] : [])));
  }
}

test("2 s tokens from getToken: a subscription runs 10 s without a missed result (over /api/connect and the fallback)", async (t) => {
  const owner = new Client({ url: daemon.url, apiKey: KEY });
  const id = await owner.start({ processor: "uppercase" });
  const readers = { connect: new Reader(daemon.url, owner, id), fallback: new Reader(legacy.url, owner, id) };
  try {
    // Records flow, one every 25 ms, for 10 s: five tokens' lives.
    const started = performance.now();
    let sent = 0;
    while (performance.now() - started < RUN_MS) {
      await owner.send(id, { n: sent, s: `r${sent}` });
      sent += 1;
      await sleepMs(25);
    }
    for (const reader of Object.values(readers)) {
      await waitFor("every result", () => reader.results >= sent, 30_000);
    }
    const ran = performance.now() - started;
    await owner.end(id);
    await Promise.all(Object.values(readers).map((r) => r.reading));

    const expected = Array.from({ length: sent }, (_, k) => ({ n: k, s: `R${k}` }));
    for (const [name, reader] of Object.entries(readers)) {
      const { frames } = reader;
      assert.equal(frames.at(-1)!.type, "end", `${name}: ended`);
      assert.equal(reader.results, sent, `${name}: ${reader.results} results of ${sent} records`);
      assert.deepEqual(
        frames.filter((f) => f.type === "result").map((f) => (f.type === "result" ? f.data : undefined)),
        expected,
        `${name}: each result once, in order, none missed`,
      );
      const cursors = frames.map(cursorOf);
      assert.ok(cursors.every((c, k) => k === 0 || c > cursors[k - 1]!), `${name}: cursors grow`);
      // A new token (and connection) before each expiry: at least one per 2 s of the run.
      const renewed = reader.count("token_renewed");
      assert.ok(renewed >= Math.floor(RUN_MS / (TOKEN_TTL_S * 1000)) - 1, `${name}: ${renewed} renewals`);
      assert.ok(reader.minted > renewed, `${name}: getToken was called ${reader.minted} times`);
      t.diagnostic(
        `${name}: ${reader.results} results in ${(ran / 1000).toFixed(1)} s; getToken ${reader.minted}×, ` +
          `${reader.count("connected")} connections, ${renewed} renewed before expiry, closes: ${reader.closes()}`,
      );
    }
    assert.equal(readers.connect.count("fallback"), 0);
    assert.equal(readers.fallback.count("fallback"), 1, "the second reader is on the fallback");
  } finally {
    for (const reader of Object.values(readers)) await reader.client.close();
    await owner.close();
  }
});
