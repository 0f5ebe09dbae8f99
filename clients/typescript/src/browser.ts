// The package for browsers: one file, no dependency (dist/streamgate.browser.js).

import { ClientBase, type ClientOptions } from "./client.js";
import { standardTransport, type Transport } from "./transport.js";

export * from "./exports.js";

/**
 * A client of one Streamgate daemon: HTTP calls, and every subscription and send over one
 * `/api/connect` WebSocket (the credential in its subprotocols) that reconnects and resumes
 * by itself.
 */
export class Client extends ClientBase {
  constructor(options: ClientOptions) {
    super(options, browserTransport);
  }
}

async function browserTransport(): Promise<Transport> {
  const global = (globalThis as { WebSocket?: unknown }).WebSocket;
  if (typeof global !== "function") {
    throw new TypeError("no global WebSocket: pass options.WebSocket");
  }
  return standardTransport(global as never);
}
