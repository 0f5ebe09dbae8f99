// A subscription on tokens that live 2 s outlives three of them without missing a result: the
// client gets a new token shortly before each expires, opens a new connection with it,
// resumes there and closes the old one.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { Client, decodeToken, type ConnectionEvent, type StreamFrame } from "../src/index.js";
import { cursorOf, Daemon, KEY, sleepMs, waitFor } from "./helpers.js";

/** Connections replaced on a token's expiry before the test ends. */
const RENEWALS = 3;

let daemon: Daemon;

before(async () => {
  daemon = await Daemon.start();
});

after(async () => {
  await daemon?.dispose();
});

test("2 s tokens from getToken: a subscription outlives three of them and misses nothing", async (t) => {
  const owner = new Client({ url: daemon.url, apiKey: KEY });
  const events: ConnectionEvent[] = [];
  let minted = 0;
  const id = await owner.start({ processor: "uppercase" });
  const reader = new Client({
    url: daemon.url,
    getToken: async () => {
      minted += 1;
      const issued = await owner.token([id], { scope: ["subscribe"], ttlS: 2 });
      const claims = decodeToken(issued.token)!;
      assert.equal(claims.exp, issued.expires_at);
      return issued.token;
    },
    onEvent: (e) => events.push(e),
  });
  try {
    const frames: StreamFrame[] = [];
    const reading = (async () => {
      for await (const frame of reader.subscribe(id, { from: "earliest" })) frames.push(frame);
    })();
    const renewed = () => events.filter((e) => e.type === "token_renewed").length;
    // Records flow while the reader's connection is replaced on three tokens' expiry.
    const deadline = Date.now() + 30_000;
    let sent = 0;
    while (renewed() < RENEWALS) {
      assert.ok(Date.now() < deadline, `${renewed()} renewals in 30 s of 2 s tokens`);
      await owner.send(id, { n: sent, s: `r${sent}` });
      sent += 1;
      await sleepMs(25);
    }
    const results = () => frames.filter((f) => f.type === "result").length;
    await waitFor("every result", () => results() >= sent, 30_000);
    await owner.end(id);
    await reading;

    assert.equal(frames.at(-1)!.type, "end");
    assert.deepEqual(
      frames.filter((f) => f.type === "result").map((f) => (f.type === "result" ? f.data : undefined)),
      Array.from({ length: sent }, (_, k) => ({ n: k, s: `R${k}` })),
      "each result once, in order",
    );
    const cursors = frames.map(cursorOf);
    assert.ok(cursors.every((c, k) => k === 0 || c > cursors[k - 1]!), "cursors grow");
    const connects = events.filter((e) => e.type === "connected").length;
    // A new token (and connection) per expiry, shortly before it: the daemon closed none
    // with 4401.
    assert.ok(minted >= RENEWALS + 1, `getToken was called ${minted} times`);
    assert.ok(connects >= RENEWALS + 1, `${connects} connections`);
    t.diagnostic(
      `${sent} results; getToken ${minted}×, ${connects} connections, ${renewed()} renewed before expiry, ` +
        `closes: ${JSON.stringify(events.filter((e) => e.type === "disconnected"))}`,
    );
  } finally {
    await reader.close();
    await owner.close();
  }
});
