// A subscription on tokens that live 2 s runs for 10 s without missing a result: the client
// gets a new token before each expires (and on a 4401 close), reconnects and resumes.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { Client, decodeToken, type ConnectionEvent, type StreamFrame } from "../src/index.js";
import { cursorOf, Daemon, KEY, sleepMs, waitFor } from "./helpers.js";

let daemon: Daemon;

before(async () => {
  daemon = await Daemon.start();
});

after(async () => {
  await daemon?.dispose();
});

test("2 s tokens from getToken: a 10 s subscription misses nothing", async (t) => {
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
    const started = Date.now();
    let sent = 0;
    while (Date.now() - started < 10_000) {
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
    const renewed = events.filter((e) => e.type === "token_renewed").length;
    const connects = events.filter((e) => e.type === "connected").length;
    // 10 s on 2 s tokens: at least one new token (and connection) per expiry.
    assert.ok(minted >= 5, `getToken was called ${minted} times`);
    assert.ok(connects >= 5, `${connects} connections`);
    // Shortly before each expiry, not after the daemon closed with 4401.
    assert.ok(renewed >= 3, `${renewed} connections renewed before their token expired`);
    t.diagnostic(
      `${sent} results; getToken ${minted}×, ${connects} connections, ${renewed} renewed before expiry, ` +
        `closes: ${JSON.stringify(events.filter((e) => e.type === "disconnected"))}`,
    );
  } finally {
    await reader.close();
    await owner.close();
  }
});
