// The one `/api/connect` socket of a Client: every subscription and every record sent goes
// over it. It opens when there is something to do, opens again when it drops (exponential
// back-off with jitter, or the daemon's Retry-After), subscribes every stream again from
// its last delivered cursor + 1, and sends again, with the same idempotency key (and
// `traceparent`), every record whose `ack` had not come.
//
// What each failure does:
// - a cut connection, a daemon restart (1001): reconnect and resume as above;
// - a frame already delivered (its cursor not above the last): dropped, nothing comes twice;
// - `gap`: handed on, nothing is skipped in silence;
// - `lagged`: subscribe again from `resume_from`;
// - `unsubscribed` with an error (the daemon ended it): subscribe again after a pause;
// - `refused`: the subscription's iterator throws (after a pause and another try, for codes
//   that pass: not_ready, shutting_down, broker_unavailable);
// - a consumer that does not read: unsubscribed while its queue is full, subscribed again
//   from its cursor once it reads on (the other streams are not held up);
// - `nack` shutting_down / broker_unavailable / backlog_full / rate_limited / not_ready /
//   idempotency_key_in_flight: sent again (same key) after a pause; any other: rejected;
// - a token about to expire: a new one from `getToken`, a new connection, then the old one
//   closed (nothing missed); a 4401 close: a new token, reconnect and resume;
// - a handshake refused for good (a bad key: 401, 403): every waiter is told;
// - a handshake answered 404 (a daemon without `/api/connect`): from then on, a socket per
//   stream and records over HTTP, with the same guarantees (fallback.ts).

import { Credentials, type Credential } from "./auth.js";
import { errorFromBody, parseRetryAfter, refusedForGood, StreamgateError } from "./errors.js";
import { Fallback } from "./fallback.js";
import { closedError, type Http } from "./http.js";
import type { Socket, Transport } from "./transport.js";
import { Subscription } from "./subscription.js";
import { Backoff, byteLength, now, sleep, uuid as uuidKey } from "./util.js";
import type {
  Ack,
  AnyErrorCode,
  DaemonFrame,
  ErrorObject,
  LagPolicy,
  StartFrom,
  StreamFrame,
} from "./wire.js";
import { CLOSE_TOKEN_EXPIRED } from "./wire.js";

/** Where a subscription starts and what it does on lag. */
export interface SubscribeOptions {
  /** Where the replay starts: `latest` (the default), `earliest`, a cursor, or `-N`. */
  from?: StartFrom;
  /** `close` (the daemon's default: the client resubscribes from `resume_from`) or `skip` (`gap` frames). */
  onLag?: LagPolicy;
  /** Only what exists at subscribe, then the iterator ends (`caught_up`). */
  untilNow?: boolean;
  /**
   * Frames queued for a consumer that does not read before the stream is unsubscribed (it is
   * subscribed again from its cursor once the consumer read half of them). Default 1024.
   */
  highWaterMark?: number;
}

/**
 * What the connection went through, for logs and dashboards. In the fallback (a daemon
 * without `/api/connect`), `streamId` names the stream whose own socket it is about.
 */
export type ConnectionEvent =
  | { type: "connected"; attempt: number; streamId?: string }
  | { type: "disconnected"; code: number; reason: string; streamId?: string }
  | { type: "reconnecting"; inMs: number; error: StreamgateError; streamId?: string }
  | { type: "token_renewed"; streamId?: string }
  /** The daemon has no `/api/connect` (`reason`: its answer): a socket per stream and sends over HTTP from now on. */
  | { type: "fallback"; reason: string }
  | { type: "resubscribing"; streamId: string; from: StartFrom | undefined; why: string }
  /** A record was `nack`ed with a code that passes: it is sent again (same key) in `inMs`. */
  | { type: "resending"; streamId: string; code: AnyErrorCode; inMs: number };

export interface ConnectionSettings {
  /** The daemon's WebSocket base, `ws://host:port[/prefix]`. */
  base: string;
  credentials: Credentials;
  transport: () => Promise<Transport>;
  http: Http;
  connectTimeoutMs: number;
  /** A connection silent this long (no frame, no ping) is dropped; where pings are seen. */
  idleTimeoutMs: number;
  signal: AbortSignal;
  onEvent?: ((event: ConnectionEvent) => void) | undefined;
}

/** Codes of `nack`s a record is sent again after (with the same idempotency key). */
const RESEND_CODES = new Set([
  "shutting_down",
  "broker_unavailable",
  "backlog_full",
  "rate_limited",
  "not_ready",
  "idempotency_key_in_flight",
]);

/** Codes of refusals a subscription is tried again after. */
const RESUBSCRIBE_CODES = new Set(["not_ready", "shutting_down", "broker_unavailable"]);

/** The daemon's default `limits.ws_max_message_bytes`. */
const DEFAULT_MAX_MESSAGE = 1024 * 1024;

const DEFAULT_HIGH_WATER = 1024;

/** One stream followed, across connections. */
export interface Sub {
  id: string;
  options: SubscribeOptions;
  highWater: number;
  /** The last cursor handed to the consumer. */
  last: number | undefined;
  /** From `lagged`: every result before it was delivered. */
  resumeFrom: number | undefined;
  sink: Subscription;
  /** The consumer's queue is full: unsubscribed until it reads on. */
  paused: boolean;
  /** Pauses between attempts after the daemon ended or refused it. */
  retry: Backoff;
  retryTimer: ReturnType<typeof setTimeout> | undefined;
}

/** A record to be stored, until its `ack`. */
export interface Outgoing {
  streamId: string;
  /** The record's JSON text. */
  data: string;
  key: string;
  /** W3C trace context it is sent with, every time. */
  traceparent: string | undefined;
  resolve(ack: Ack): void;
  reject(error: unknown): void;
  /** Its place among every record of the client: the order records are sent again in. */
  order: number;
}

type SubState = "subscribing" | "active" | "unsubscribing";

/** One open socket. */
class Conn {
  seq = 0;
  /** Records sent on it and not answered, by `seq`. */
  readonly pending = new Map<number, Outgoing>();
  /** Its subscriptions, as far as the daemon knows them. */
  readonly subs = new Map<string, SubState>();
  /** Streams to subscribe again once their `unsubscribed` comes. */
  readonly resubscribe = new Set<string>();
  live = true;
  heard = false;
  lastHeard = now();
  refreshTimer: ReturnType<typeof setTimeout> | undefined;
  idleTimer: ReturnType<typeof setInterval> | undefined;

  constructor(
    readonly socket: Socket,
    readonly credential: Credential,
  ) {}

  /**
   * The daemon ended a stream's subscription (`lagged`, `caught_up`, `refused`, `unsubscribed`
   * with an error): whether it was the one in use. While an `unsubscribe` of ours waits for
   * its answer the stream stays `unsubscribing`, so nothing is subscribed again before that
   * answer comes (it would be taken for the end of the new subscription).
   */
  ended(streamId: string): boolean {
    const state = this.subs.get(streamId);
    if (state === "unsubscribing") return false;
    this.subs.delete(streamId);
    return state !== undefined;
  }
}

export class Connection {
  private readonly subs = new Map<string, Sub>();
  /** Records to send once connected, in order. */
  private waiting: Outgoing[] = [];
  /** Records `nack`ed with a code that passes, in `order`: sent again after a pause. */
  private later: Outgoing[] = [];
  private laterTimer: ReturnType<typeof setTimeout> | undefined;
  /** When `laterTimer` fires, on the `now()` clock. */
  private laterAt = 0;
  /** The pause before `later` is sent: grows while nacks come, from the first step after an ack. */
  private readonly laterBackoff = new Backoff();
  private sent = 0;
  private conn: Conn | undefined;
  /** Set once the daemon answered 404 to `/api/connect`. */
  private fallback: Fallback | undefined;
  private connecting = false;
  private readonly backoff = new Backoff();
  private closed = false;
  private maxMessageBytes: number | undefined;
  private attempts = 0;

  constructor(private readonly s: ConnectionSettings) {}

  /** Follows a stream. */
  subscribe(streamId: string, options: SubscribeOptions): Subscription {
    const sink = new Subscription(streamId, {
      read: (queued) => this.read(streamId, sink, queued),
      stop: () => this.stop(streamId, sink),
    });
    if (this.closed) {
      sink.finish();
      return sink;
    }
    if (this.subs.has(streamId)) {
      sink.fail(
        new StreamgateError(
          "invalid_input",
          `stream ${streamId} is already subscribed on this client; close that subscription first`,
          { streamId },
        ),
      );
      return sink;
    }
    const sub: Sub = {
      id: streamId,
      options,
      highWater: Math.max(1, options.highWaterMark ?? DEFAULT_HIGH_WATER),
      last: undefined,
      resumeFrom: undefined,
      sink,
      paused: false,
      retry: new Backoff(),
      retryTimer: undefined,
    };
    this.subs.set(streamId, sub);
    if (this.fallback) this.fallback.follow(sub);
    else if (this.conn) this.subscribeOn(this.conn, sub);
    else this.ensureConnected();
    return sink;
  }

  /** Sends one record (with `traceparent`, a checked W3C trace context); resolves with its `ack`. */
  send(streamId: string, value: unknown, traceparent?: string): Promise<Ack> {
    let data: string | undefined;
    try {
      data = JSON.stringify(value);
    } catch (e) {
      return Promise.reject(
        new StreamgateError("invalid_input", `the record is not JSON: ${String(e)}`, { streamId }),
      );
    }
    if (data === undefined) {
      return Promise.reject(
        new StreamgateError("invalid_input", "the record is not JSON (undefined)", { streamId }),
      );
    }
    const text = data;
    return new Promise<Ack>((resolve, reject) => {
      this.dispatch({
        streamId,
        data: text,
        key: uuidKey(),
        traceparent,
        resolve,
        reject,
        order: ++this.sent,
      });
    });
  }

  /** Closes the socket; every iterator ends and every unanswered send is rejected. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const conn = this.conn;
    this.conn = undefined;
    const error = closedError();
    if (conn) {
      this.retire(conn);
      for (const r of conn.pending.values()) r.reject(error);
      conn.pending.clear();
      try {
        conn.socket.close(1000, "bye");
      } catch {
        // already closed
      }
    }
    for (const r of this.waiting) r.reject(error);
    this.waiting = [];
    clearTimeout(this.laterTimer);
    this.laterTimer = undefined;
    for (const r of this.later) r.reject(error);
    this.later = [];
    this.fallback?.close(error);
    for (const sub of this.subs.values()) {
      clearTimeout(sub.retryTimer);
      sub.sink.finish();
    }
    this.subs.clear();
  }

  // -------------------------------------------------------------------------------------
  // Connecting
  // -------------------------------------------------------------------------------------

  private hasWork(): boolean {
    return this.subs.size > 0 || this.waiting.length > 0 || this.later.length > 0;
  }

  private ensureConnected(delayMs = 0): void {
    if (this.closed || this.fallback || this.conn || this.connecting) return;
    this.connecting = true;
    void this.connectLoop(delayMs).finally(() => {
      this.connecting = false;
    });
  }

  private async connectLoop(delayMs: number): Promise<void> {
    if (delayMs > 0 && !(await this.wait(delayMs))) return;
    while (!this.closed && this.hasWork()) {
      let credential: Credential | undefined;
      try {
        credential = await this.s.credentials.get();
        const transport = await this.s.transport();
        let socket: Socket;
        try {
          socket = await transport.open(this.connectUrl, credential, this.s.connectTimeoutMs);
        } catch (e) {
          throw await this.explain(e, transport, credential);
        }
        if (this.closed) {
          socket.close(1000, "bye");
          return;
        }
        this.attach(socket, credential);
        return;
      } catch (e) {
        const error =
          e instanceof StreamgateError
            ? e
            : new StreamgateError("connection_failed", String(e), { cause: e });
        if (this.closed) return;
        if (error.status === 404) {
          this.useFallback(error);
          return;
        }
        if (refusedForGood(error, this.s.credentials.refreshable)) {
          this.failAll(error);
          return;
        }
        if (
          credential?.kind === "token" &&
          (error.code === "token_expired" || error.code === "invalid_token")
        ) {
          this.s.credentials.invalidate(credential.token);
        }
        const inMs = this.backoff.pause(error.retryAfterMs);
        this.s.onEvent?.({ type: "reconnecting", inMs, error });
        if (!(await this.wait(inMs))) return;
      }
    }
  }

  /** Why a handshake failed, asked over HTTP when the WebSocket does not show it. */
  private async explain(e: unknown, transport: Transport, credential: Credential): Promise<unknown> {
    if (!(e instanceof StreamgateError) || e.status !== undefined || transport.seesRefusals) return e;
    try {
      const answer = await this.s.http.once("GET", "/api/connect", {}, Credentials.headers(credential));
      // 400 "not a WebSocket upgrade": the credential is good, the failure was the network's.
      if (answer.status === 400 || answer.status < 400) return e;
      return errorFromBody(answer.status, answer.text, parseRetryAfter(answer.headers.get("retry-after")));
    } catch {
      return e;
    }
  }

  private get connectUrl(): string {
    return `${this.s.base}/api/connect`;
  }

  /**
   * The daemon has no `/api/connect`: from now on every stream is followed on a socket of
   * its own and every record sent over HTTP, those waiting first, in the order of `send`.
   */
  private useFallback(why: StreamgateError): void {
    const fallback = new Fallback({
      base: this.s.base,
      credentials: this.s.credentials,
      transport: this.s.transport,
      http: this.s.http,
      connectTimeoutMs: this.s.connectTimeoutMs,
      idleTimeoutMs: this.s.idleTimeoutMs,
      onEvent: this.s.onEvent,
      fromOf: (sub) => this.fromOf(sub),
      deliver: (sub, frame) => {
        if (this.subs.get(sub.id) === sub && this.hand(sub, frame) && sub.paused) fallback.unfollow(sub.id);
      },
      finish: (sub, error) => {
        if (this.subs.get(sub.id) !== sub) return;
        this.over(sub);
        if (error) sub.sink.fail(error);
        else sub.sink.finish();
      },
    });
    this.fallback = fallback;
    this.s.onEvent?.({ type: "fallback", reason: why.message });
    for (const sub of this.subs.values()) {
      clearTimeout(sub.retryTimer);
      sub.retryTimer = undefined;
      if (!sub.paused) fallback.follow(sub);
    }
    clearTimeout(this.laterTimer);
    this.laterTimer = undefined;
    const records = [...this.waiting, ...this.later].sort((a, b) => a.order - b.order);
    this.waiting = [];
    this.later = [];
    for (const r of records) fallback.send(r);
  }

  private async wait(ms: number): Promise<boolean> {
    try {
      await sleep(ms, this.s.signal);
      return !this.closed;
    } catch {
      return false;
    }
  }

  /** A new socket becomes the connection: every stream subscribed, every record sent. */
  private attach(socket: Socket, credential: Credential): void {
    const conn = new Conn(socket, credential);
    this.conn = conn;
    this.attempts += 1;
    this.s.onEvent?.({ type: "connected", attempt: this.attempts });
    for (const sub of this.subs.values()) {
      clearTimeout(sub.retryTimer);
      sub.retryTimer = undefined;
      if (!sub.paused) this.subscribeOn(conn, sub);
    }
    const records = this.waiting;
    this.waiting = [];
    for (const r of records) this.transmit(conn, r);
    this.watch(conn);
    socket.listen({
      message: (text) => this.onMessage(conn, text),
      close: (code, reason) => this.lost(conn, code, reason),
      ping: () => {
        conn.lastHeard = now();
      },
    });
  }

  /** The timers of a connection: a new token before this one expires; a silent peer dropped. */
  private watch(conn: Conn): void {
    const refreshIn = this.s.credentials.refreshIn();
    if (refreshIn !== undefined) {
      conn.refreshTimer = setTimeout(() => void this.renew(conn), refreshIn);
    }
    if (conn.socket.seesPings && this.s.idleTimeoutMs > 0) {
      const every = Math.max(100, Math.floor(this.s.idleTimeoutMs / 4));
      conn.idleTimer = setInterval(() => {
        if (now() - conn.lastHeard > this.s.idleTimeoutMs) {
          this.drop(conn, 4000, "silent");
        }
      }, every);
    }
  }

  /** A connection is no longer the one: its timers stop and it is not heard any more. */
  private retire(conn: Conn): void {
    conn.live = false;
    clearTimeout(conn.refreshTimer);
    clearInterval(conn.idleTimer);
  }

  /** Closes a connection from this side, and goes on as if the daemon had. */
  private drop(conn: Conn, code: number, reason: string): void {
    try {
      conn.socket.close(code === 1000 || (code >= 3000 && code <= 4999) ? code : 1000, reason);
    } catch {
      // already closed
    }
    this.lost(conn, code, reason);
  }

  /** A connection ended: what it had not got answered waits for the next one. */
  private lost(conn: Conn, code: number, reason: string): void {
    if (!conn.live) return;
    this.retire(conn);
    if (this.conn === conn) this.conn = undefined;
    this.waiting = [...byseq(conn.pending), ...this.waiting];
    conn.pending.clear();
    if (code === CLOSE_TOKEN_EXPIRED && conn.credential.kind === "token") {
      this.s.credentials.invalidate(conn.credential.token);
    }
    if (code === 1009) {
      const limit = /=(\d+)/.exec(reason);
      this.maxMessageBytes = limit ? Number(limit[1]) : DEFAULT_MAX_MESSAGE;
    }
    this.s.onEvent?.({ type: "disconnected", code, reason });
    if (!this.closed && this.hasWork()) this.ensureConnected(this.backoff.pause());
  }

  /**
   * Replaces a connection whose token is about to expire: a new token, a new connection
   * (everything subscribed and sent again there), then the old one closed. When it cannot
   * be had, the old connection runs until its 4401, and the usual reconnect takes over.
   */
  private async renew(old: Conn): Promise<void> {
    if (old !== this.conn || this.closed) return;
    let credential: Credential;
    let socket: Socket;
    try {
      credential = await this.s.credentials.fresh();
      const transport = await this.s.transport();
      socket = await transport.open(this.connectUrl, credential, this.s.connectTimeoutMs);
    } catch (e) {
      const error = e instanceof StreamgateError ? e : new StreamgateError("connection_failed", String(e));
      this.s.onEvent?.({ type: "reconnecting", inMs: 0, error });
      return;
    }
    if (old !== this.conn || this.closed) {
      socket.close(1000, "bye");
      return;
    }
    this.retire(old);
    this.waiting = [...byseq(old.pending), ...this.waiting];
    old.pending.clear();
    this.attach(socket, credential);
    try {
      old.socket.close(1000, "token renewed");
    } catch {
      // already closed
    }
    this.s.onEvent?.({ type: "token_renewed" });
  }

  /** Fails every subscription and every record with `error`. */
  private failAll(error: StreamgateError): void {
    for (const sub of this.subs.values()) {
      clearTimeout(sub.retryTimer);
      sub.sink.fail(error);
    }
    this.subs.clear();
    for (const r of this.waiting) r.reject(error);
    this.waiting = [];
    clearTimeout(this.laterTimer);
    this.laterTimer = undefined;
    for (const r of this.later) r.reject(error);
    this.later = [];
  }

  // -------------------------------------------------------------------------------------
  // Subscriptions
  // -------------------------------------------------------------------------------------

  private fromOf(sub: Sub): StartFrom | undefined {
    if (sub.last !== undefined) {
      return sub.resumeFrom !== undefined ? Math.max(sub.last + 1, sub.resumeFrom) : sub.last + 1;
    }
    return sub.resumeFrom ?? sub.options.from;
  }

  private subscribeOn(conn: Conn, sub: Sub): void {
    const state = conn.subs.get(sub.id);
    if (state === "unsubscribing") {
      conn.resubscribe.add(sub.id);
      return;
    }
    if (state !== undefined) return;
    const frame: Record<string, unknown> = { type: "subscribe", stream_id: sub.id };
    const from = this.fromOf(sub);
    if (from !== undefined) frame["from"] = from;
    if (sub.options.onLag !== undefined) frame["on_lag"] = sub.options.onLag;
    if (sub.options.untilNow) frame["until"] = "now";
    conn.subs.set(sub.id, "subscribing");
    this.write(conn, JSON.stringify(frame));
  }

  private unsubscribeOn(conn: Conn, streamId: string): void {
    conn.resubscribe.delete(streamId);
    const state = conn.subs.get(streamId);
    if (state === "subscribing" || state === "active") {
      conn.subs.set(streamId, "unsubscribing");
      this.write(conn, JSON.stringify({ type: "unsubscribe", stream_id: streamId }));
    }
  }

  /** Subscribes again after a pause (the daemon ended or refused it for a while). */
  private retryLater(sub: Sub, why: string): void {
    clearTimeout(sub.retryTimer);
    const inMs = sub.retry.pause();
    this.s.onEvent?.({ type: "resubscribing", streamId: sub.id, from: this.fromOf(sub), why });
    sub.retryTimer = setTimeout(() => {
      sub.retryTimer = undefined;
      if (this.subs.get(sub.id) !== sub || sub.paused) return;
      if (this.conn) this.subscribeOn(this.conn, sub);
    }, inMs);
  }

  /** The consumer read a frame: one paused is subscribed again once half its queue is read. */
  private read(streamId: string, sink: Subscription, queued: number): void {
    const sub = this.subs.get(streamId);
    if (!sub || sub.sink !== sink || !sub.paused || queued > sub.highWater / 2) return;
    sub.paused = false;
    this.s.onEvent?.({
      type: "resubscribing",
      streamId,
      from: this.fromOf(sub),
      why: "the consumer read on",
    });
    if (this.fallback) this.fallback.follow(sub);
    else if (this.conn) this.subscribeOn(this.conn, sub);
    else this.ensureConnected();
  }

  /** The consumer stopped. */
  private stop(streamId: string, sink: Subscription): void {
    const sub = this.subs.get(streamId);
    if (!sub || sub.sink !== sink) return;
    clearTimeout(sub.retryTimer);
    this.subs.delete(streamId);
    this.fallback?.unfollow(streamId);
    if (this.conn) this.unsubscribeOn(this.conn, streamId);
  }

  /** The subscription is over (its `end`, `caught_up`, a refusal). */
  private over(sub: Sub): void {
    clearTimeout(sub.retryTimer);
    if (this.subs.get(sub.id) !== sub) return;
    this.subs.delete(sub.id);
    this.fallback?.unfollow(sub.id);
  }

  /** A stream's frame from the connection, for its consumer. */
  private deliver(conn: Conn, frame: StreamFrame): void {
    const sub = this.subs.get(frame.stream_id);
    if (!sub || conn.subs.get(frame.stream_id) !== "active" || !this.hand(sub, frame)) return;
    if (frame.type === "end") conn.subs.delete(sub.id);
    else if (sub.paused) this.unsubscribeOn(conn, sub.id);
  }

  /**
   * Hands a frame to its consumer, unless it was handed on before (or the consumer's queue
   * is full); whether it was. After `end` the subscription is over; once the queue is full,
   * it is `paused`.
   */
  private hand(sub: Sub, frame: StreamFrame): boolean {
    if (sub.paused) return false;
    const cursor = frame.type === "gap" ? frame.from_cursor + frame.skipped - 1 : frame.cursor;
    if (typeof cursor === "number" && sub.last !== undefined && cursor <= sub.last) return false;
    if (typeof cursor === "number") sub.last = cursor;
    sub.retry.reset();
    sub.sink.push(frame);
    if (frame.type === "end") {
      this.over(sub);
      sub.sink.finish();
    } else if (sub.sink.queued >= sub.highWater) {
      sub.paused = true;
    }
    return true;
  }

  // -------------------------------------------------------------------------------------
  // Records
  // -------------------------------------------------------------------------------------

  private dispatch(r: Outgoing): void {
    if (this.closed) {
      r.reject(closedError());
      return;
    }
    if (this.fallback) {
      this.fallback.send(r);
    } else if (this.conn) {
      this.transmit(this.conn, r);
    } else {
      this.waiting.push(r);
      this.ensureConnected();
    }
  }

  private transmit(conn: Conn, r: Outgoing): void {
    const seq = ++conn.seq;
    const text =
      `{"type":"send","stream_id":${JSON.stringify(r.streamId)},"seq":${seq},` +
      `"data":${r.data},"idempotency_key":${JSON.stringify(r.key)}` +
      (r.traceparent === undefined ? "}" : `,"traceparent":${JSON.stringify(r.traceparent)}}`);
    if (this.maxMessageBytes !== undefined && byteLength(text) > this.maxMessageBytes) {
      r.reject(
        new StreamgateError(
          "record_too_large",
          `the record does not fit in one message (limits.ws_max_message_bytes=${this.maxMessageBytes}); send it with sendBatch`,
          { streamId: r.streamId },
        ),
      );
      return;
    }
    conn.pending.set(seq, r);
    this.write(conn, text);
  }

  private write(conn: Conn, text: string): void {
    try {
      conn.socket.send(text);
    } catch {
      // The connection is going: what it had not got answered is sent again on the next.
      this.drop(conn, 1006, "write failed");
    }
  }

  private answered(conn: Conn, seq: number, streamId: string | undefined): Outgoing | undefined {
    const r = conn.pending.get(seq);
    if (!r || (streamId !== undefined && streamId !== r.streamId)) return undefined;
    conn.pending.delete(seq);
    return r;
  }

  private nacked(r: Outgoing, error: ErrorObject): void {
    if (!RESEND_CODES.has(error.code)) {
      r.reject(StreamgateError.fromObject(error, { streamId: r.streamId }));
      return;
    }
    // Sent again after a pause, all together and in the order they were first sent.
    let at = this.later.length;
    while (at > 0 && this.later[at - 1]!.order > r.order) at--;
    this.later.splice(at, 0, r);
    if (this.laterTimer === undefined) {
      const inMs = this.laterBackoff.pause();
      this.laterAt = now() + inMs;
      this.laterTimer = setTimeout(() => {
        this.laterTimer = undefined;
        const records = this.later;
        this.later = [];
        for (const record of records) this.dispatch(record);
      }, inMs);
    }
    this.s.onEvent?.({
      type: "resending",
      streamId: r.streamId,
      code: error.code,
      inMs: Math.max(0, Math.round(this.laterAt - now())),
    });
  }

  // -------------------------------------------------------------------------------------
  // Frames
  // -------------------------------------------------------------------------------------

  private onMessage(conn: Conn, text: string): void {
    if (!conn.live) return;
    conn.lastHeard = now();
    let frame: DaemonFrame;
    try {
      frame = JSON.parse(text) as DaemonFrame;
    } catch {
      return; // not a frame of this protocol
    }
    if (!frame || typeof frame !== "object") return;
    if (!conn.heard) {
      conn.heard = true;
      this.backoff.reset();
    }
    switch (frame.type) {
      case "result":
      case "error":
      case "end":
      case "gap":
        this.deliver(conn, frame);
        return;
      case "ack": {
        const r = this.answered(conn, frame.seq, frame.stream_id);
        if (!r) return;
        const ack: Ack = { stream_id: r.streamId, seq: frame.seq, offset: frame.offset };
        if (frame.replayed) ack.replayed = true;
        this.laterBackoff.reset();
        r.resolve(ack);
        return;
      }
      case "nack": {
        const r = this.answered(conn, frame.seq, frame.stream_id);
        if (r) this.nacked(r, frame.error);
        return;
      }
      case "subscribed":
        if (conn.subs.get(frame.stream_id) === "subscribing") conn.subs.set(frame.stream_id, "active");
        return;
      case "refused": {
        const sub = this.subs.get(frame.stream_id);
        if (!conn.ended(frame.stream_id) || !sub) return;
        const error = frame.error ?? { code: "internal", message: "refused" };
        if (RESUBSCRIBE_CODES.has(error.code)) {
          this.retryLater(sub, `refused: ${error.code}`);
          return;
        }
        this.over(sub);
        sub.sink.fail(StreamgateError.fromObject(error, { streamId: sub.id }));
        return;
      }
      case "unsubscribed": {
        const sub = this.subs.get(frame.stream_id);
        if (frame.error) {
          // The daemon ended it (its replay could not be read, say).
          if (conn.ended(frame.stream_id) && sub && !sub.paused) {
            this.retryLater(sub, `${frame.error.code}: ${frame.error.message}`);
          }
          return;
        }
        // The answer to our `unsubscribe`: the stream may be subscribed again on this connection.
        if (conn.subs.get(frame.stream_id) !== "unsubscribing") return;
        conn.subs.delete(frame.stream_id);
        if (conn.resubscribe.delete(frame.stream_id) && sub && !sub.paused) this.subscribeOn(conn, sub);
        return;
      }
      case "lagged": {
        const sub = this.subs.get(frame.stream_id);
        // Only from a live subscription is "every result before resume_from was delivered"
        // true of what the consumer got: one being unsubscribed had its frames dropped here.
        if (!conn.ended(frame.stream_id) || !sub) return;
        sub.resumeFrom = Math.max(sub.resumeFrom ?? frame.resume_from, frame.resume_from);
        this.s.onEvent?.({
          type: "resubscribing",
          streamId: sub.id,
          from: this.fromOf(sub),
          why: "lagged",
        });
        if (!sub.paused) this.subscribeOn(conn, sub);
        return;
      }
      case "caught_up": {
        // From a subscription being unsubscribed it says nothing of what the consumer got.
        const sub = this.subs.get(frame.stream_id);
        if (!conn.ended(frame.stream_id) || !sub) return;
        this.over(sub);
        sub.sink.finish();
        return;
      }
      case "invalid":
        // A frame of ours the daemon could not read: a bug here, or a daemon of another version.
        return;
      default:
        return;
    }
  }
}

function byseq(pending: Map<number, Outgoing>): Outgoing[] {
  return [...pending.entries()].sort((a, b) => a[0] - b[0]).map(([, r]) => r);
}
