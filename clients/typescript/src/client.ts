// The client: the key holder's calls over HTTP, sends and subscriptions over the one
// `/api/connect` connection (against a daemon without it: a socket per stream and sends over
// HTTP, see fallback.ts). The entry points (index.ts for Node, browser.ts for browsers) give
// it the WebSocket to use.

import { Credentials, type TokenSource } from "./auth.js";
import { Connection, type ConnectionEvent, type SubscribeOptions } from "./connection.js";
import { StreamgateError } from "./errors.js";
import { Http, type FetchLike, type WaitNotice } from "./http.js";
import type { Subscription } from "./subscription.js";
import { transportFor, type Transport } from "./transport.js";
import { isTraceparent, uuid } from "./util.js";
import type {
  Accepted,
  Ack,
  ProcessorArg,
  Scope,
  Started,
  Stats,
  StreamList,
  StreamView,
  TokenIssued,
} from "./wire.js";

export interface ClientOptions {
  /** The daemon, `http://host:port` or `https://…` (a path prefix is kept). */
  url: string;
  /** An API key: its streams, and what only a key may do (start, end, list, tokens). */
  apiKey?: string;
  /** A stream token, as it is (it is not renewed: use `getToken` for that). */
  token?: string;
  /**
   * Gives a stream token: asked before connecting, again shortly before each token's `exp`
   * and whenever the daemon says one expired.
   */
  getToken?: TokenSource;
  /** `fetch` to use (default: the global one). */
  fetch?: FetchLike;
  /**
   * The WebSocket class to use: a standard one (the credential goes in the subprotocols) or
   * the `ws` package's (the credential goes in a header). Default: the global WebSocket, else
   * (Node 20) the `ws` package.
   */
  WebSocket?: unknown;
  /** Longest an HTTP call waits on 429/503 answers before it gives up. Default 60 000. */
  patienceMs?: number;
  /** Longest one HTTP request may take. Default 30 000. */
  requestTimeoutMs?: number;
  /** Longest a WebSocket handshake may take. Default 10 000. */
  connectTimeoutMs?: number;
  /** A connection that heard nothing (not even a ping) this long is opened again. Default 60 000. */
  idleTimeoutMs?: number;
  /** Told each time an HTTP call waits before trying again. */
  onWait?: WaitNotice;
  /** Told what the connection goes through (connected, disconnected, reconnecting, …). */
  onEvent?: (event: ConnectionEvent) => void;
}

export interface StartOptions {
  /** `identity` (the default), `uppercase`, or a spec (`{type: "jq", filter}`, `{type: "window", …}`). */
  processor?: ProcessorArg;
}

export interface TokenOptions {
  /** Default `["subscribe"]`. */
  scope?: Scope[];
  /** Lifetime in seconds (the daemon's default: an hour). */
  ttlS?: number;
}

export interface SendOptions {
  /**
   * W3C trace context of the caller's span, `00-<32 hex trace id>-<16 hex span id>-<2 hex
   * flags>` (lowercase). With the daemon's `telemetry` on and the flags sampled (`01`), the
   * record is traced: its results' `traceparent` names the span that processed it, in the
   * same trace. Sent again with the record. A malformed one is refused (`invalid_input`)
   * before anything is sent.
   */
  traceparent?: string;
}

export interface BatchOptions extends SendOptions {
  /** Names the batch: sent again with it, it is stored and processed once. Default: a new UUID. */
  idempotencyKey?: string;
  /** Overrides the client's patience for this batch. */
  patienceMs?: number;
}

/** @internal How an entry point finds its WebSocket. */
export type TransportResolver = () => Promise<Transport>;

/** A client of one Streamgate daemon. */
export class ClientBase {
  /** The daemon's base URL. */
  readonly url: string;
  private readonly http: Http;
  private readonly connection: Connection;
  private readonly abort = new AbortController();

  /** @internal */
  constructor(options: ClientOptions, defaultTransport: TransportResolver) {
    if (!options || typeof options.url !== "string") throw new TypeError("options.url is required");
    const base = options.url.replace(/\/+$/, "");
    if (!/^https?:\/\//i.test(base)) throw new TypeError("options.url must start with http:// or https://");
    this.url = base;
    const credentials = new Credentials(options.apiKey, options.token, options.getToken);
    const fetchImpl: FetchLike | undefined =
      options.fetch ?? (typeof fetch === "function" ? (input, init) => fetch(input, init) : undefined);
    if (!fetchImpl) throw new TypeError("no fetch: pass options.fetch");
    this.http = new Http({
      base,
      credentials,
      fetch: fetchImpl,
      patienceMs: options.patienceMs ?? 60_000,
      requestTimeoutMs: options.requestTimeoutMs ?? 30_000,
      signal: this.abort.signal,
      onWait: options.onWait,
    });
    let transport: Promise<Transport> | undefined;
    const given = options.WebSocket;
    const resolve: TransportResolver =
      given === undefined ? defaultTransport : () => Promise.resolve(transportFor(given));
    this.connection = new Connection({
      base: base.replace(/^http/i, "ws"),
      credentials,
      transport: () => (transport ??= resolve().catch((e) => {
        transport = undefined;
        throw e;
      })),
      http: this.http,
      connectTimeoutMs: options.connectTimeoutMs ?? 10_000,
      idleTimeoutMs: options.idleTimeoutMs ?? 60_000,
      signal: this.abort.signal,
      onEvent: options.onEvent,
    });
  }

  /** Opens a stream; returns its id. {@link startStream} returns the whole answer. */
  async start(options: StartOptions = {}): Promise<string> {
    return (await this.startStream(options)).stream_id;
  }

  /** Opens a stream; returns the daemon's answer (`stream_id`, `processor`). */
  startStream(options: StartOptions = {}): Promise<Started> {
    const body = options.processor === undefined ? {} : { processor: options.processor };
    return this.http.call<Started>("POST", "/api/stream/start", {
      body: JSON.stringify(body),
      retry: "refused",
    });
  }

  /** Ends a stream: later sends are refused (`stream_ended`); subscribers get every result, then `end`. */
  end(streamId: string): Promise<StreamView> {
    return this.http.call<StreamView>("DELETE", `/api/stream/${encodeURIComponent(streamId)}`, {
      retry: "idempotent",
    });
  }

  /** One stream: owner, processor, state and counters. */
  describe(streamId: string): Promise<StreamView> {
    return this.http.call<StreamView>("GET", `/api/stream/${encodeURIComponent(streamId)}`, {
      retry: "idempotent",
    });
  }

  /** The key's streams (all of them for an admin key), newest first. */
  async list(): Promise<StreamView[]> {
    const list = await this.http.call<StreamList>("GET", "/api/streams", { retry: "idempotent" });
    return list.streams;
  }

  /** What `streamctl top` shows. */
  stats(): Promise<Stats> {
    return this.http.call<Stats>("GET", "/api/stats", { retry: "idempotent" });
  }

  /** One stream token for 1 to 100 of the key's streams (`POST /api/tokens`). */
  token(streams: string[], options: TokenOptions = {}): Promise<TokenIssued> {
    const body: Record<string, unknown> = { streams, scope: options.scope ?? ["subscribe"] };
    if (options.ttlS !== undefined) body["ttl_s"] = options.ttlS;
    return this.http.call<TokenIssued>("POST", "/api/tokens", {
      body: JSON.stringify(body),
      retry: "idempotent",
    });
  }

  /**
   * Sends one record over the connection; resolves once the broker stored it. It carries an
   * idempotency key of its own and is sent again with it after a lost connection (or a
   * `nack` that passes), so it is stored and processed once.
   */
  send(streamId: string, value: unknown, options: SendOptions = {}): Promise<Ack> {
    const refused = badTraceparent(options.traceparent, streamId);
    if (refused) return Promise.reject(refused);
    return this.connection.send(streamId, value, options.traceparent);
  }

  /**
   * Sends records as one NDJSON request named by an `Idempotency-Key`; resolves once every
   * record is stored. A failure that may pass (no answer, 429, 503 even with `acknowledged`)
   * is tried again with the same key, which the daemon stores and processes once.
   */
  sendBatch(streamId: string, values: unknown[], options: BatchOptions = {}): Promise<Accepted> {
    const refused = badTraceparent(options.traceparent, streamId);
    if (refused) return Promise.reject(refused);
    const lines: string[] = [];
    for (const [i, value] of values.entries()) {
      const line = JSON.stringify(value);
      if (line === undefined) {
        return Promise.reject(
          new StreamgateError("invalid_input", `record ${i + 1} is not JSON`, { streamId, line: i + 1 }),
        );
      }
      lines.push(line);
    }
    const headers: Record<string, string> = { "Idempotency-Key": options.idempotencyKey ?? uuid() };
    if (options.traceparent !== undefined) headers["traceparent"] = options.traceparent;
    const call: Parameters<Http["call"]>[2] = {
      body: lines.join("\n") + "\n",
      contentType: "application/x-ndjson",
      headers,
      retry: "idempotent",
    };
    if (options.patienceMs !== undefined) call.patienceMs = options.patienceMs;
    return this.http.call<Accepted>("POST", `/api/stream/${encodeURIComponent(streamId)}/send`, call);
  }

  /**
   * Follows a stream over the connection: replay from `options.from`, then live. Each frame
   * comes once, in order, across reconnects; `gap` frames say what was not delivered; the
   * iterator ends after `end`.
   */
  subscribe(streamId: string, options: SubscribeOptions = {}): Subscription {
    return this.connection.subscribe(streamId, options);
  }

  /** Closes the connection: iterators end, unanswered sends and waiting calls are rejected (`closed`). */
  async close(): Promise<void> {
    this.abort.abort();
    await this.connection.close();
  }
}

/** The refusal of a `traceparent` that is not W3C trace context; `undefined` for a good one, or none. */
function badTraceparent(traceparent: unknown, streamId: string): StreamgateError | undefined {
  if (traceparent === undefined || isTraceparent(traceparent)) return undefined;
  const given = typeof traceparent === "string" ? JSON.stringify(traceparent) : `a ${typeof traceparent}`;
  return new StreamgateError(
    "invalid_input",
    `traceparent ${given} is not W3C trace context: write 00-<32 hex trace id>-<16 hex span id>-<2 hex flags>, ` +
      "lowercase, the ids not all zeros (flags 01: sampled)",
    { streamId },
  );
}
