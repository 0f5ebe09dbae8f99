// The package for Node (and anything with a global WebSocket): `import { Client } from "streamgate"`.

import { ClientBase, type ClientOptions } from "./client.js";
import { standardTransport, wsTransport, type Transport, type WsClass } from "./transport.js";

export * from "./exports.js";

/**
 * A client of one Streamgate daemon: HTTP calls, and every subscription and send over one
 * `/api/connect` WebSocket that reconnects and resumes by itself.
 *
 * ```ts
 * const client = new Client({ url: "http://127.0.0.1:8080", apiKey: KEY });
 * const id = await client.start({ processor: "uppercase" });
 * for await (const frame of client.subscribe(id, { from: "earliest" })) { ... }
 * ```
 */
export class Client extends ClientBase {
  constructor(options: ClientOptions) {
    super(options, nodeTransport);
  }
}

/** The global WebSocket where there is one (Node 22, Deno, Bun), else the `ws` package. */
async function nodeTransport(): Promise<Transport> {
  const global = (globalThis as { WebSocket?: unknown }).WebSocket;
  if (typeof global === "function") return standardTransport(global as never);
  const name = "ws"; // not a literal: bundlers for browsers leave it alone
  let mod: { WebSocket?: WsClass; default?: WsClass };
  try {
    mod = (await import(name)) as typeof mod;
  } catch (e) {
    throw new TypeError(
      "this Node has no global WebSocket: install the `ws` package (npm install ws), or pass options.WebSocket",
      { cause: e },
    );
  }
  const ws = mod.WebSocket ?? mod.default;
  if (!ws) throw new TypeError("the `ws` package has no WebSocket export");
  return wsTransport(ws);
}
