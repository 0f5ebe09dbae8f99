// The way to a daemon without `/api/connect` (its handshake answered 404): each subscription
// gets a WebSocket of its own on `/api/stream/{id}/results`, and each record is sent with
// `POST /api/stream/{id}/send`, named by its idempotency key. The guarantees are the
// connection's:
// - a socket that drops is opened again (exponential back-off with jitter, or Retry-After)
//   from the last delivered cursor + 1; the connection drops repeats, and hands `gap` on;
// - 4008 (lagged): opened again at once from the cursor in the reason ("… from=N");
// - 4401 (token expired): a new token, then opened again; a token about to expire: a new
//   socket with a new token, then the old one closed (nothing missed);
// - 1000 after `end`: over; 1000 with `untilNow`: caught up, over;
// - a refused handshake: 404/401/403 (and other 4xx) fail the subscription, 429/503 wait;
// - a record: sent again with the same `Idempotency-Key` (and `traceparent` header) on 429,
//   503, 409 in flight or a lost answer, after what Retry-After says, until it is stored or
//   refused for good. One record of a stream at a time, in the order `send` was called.

import { Credentials, type Credential } from "./auth.js";
import type { ConnectionEvent, Outgoing, Sub } from "./connection.js";
import { errorFromBody, parseRetryAfter, refusedForGood, StreamgateError, type ErrorDetails } from "./errors.js";
import { closedError, type Http } from "./http.js";
import type { Socket, Transport } from "./transport.js";
import { now, sleep } from "./util.js";
import type { Accepted, Ack, StartFrom, StreamFrame } from "./wire.js";
import { CLOSE_LAGGED, CLOSE_TOKEN_EXPIRED } from "./wire.js";

export interface FallbackSettings {
  /** The daemon's WebSocket base, `ws://host:port[/prefix]`. */
  base: string;
  credentials: Credentials;
  transport: () => Promise<Transport>;
  http: Http;
  connectTimeoutMs: number;
  idleTimeoutMs: number;
  onEvent?: ((event: ConnectionEvent) => void) | undefined;
  /** Where a subscription starts now: its last cursor + 1, else where it was asked to. */
  fromOf(sub: Sub): StartFrom | undefined;
  /** A frame of a stream's socket, for its consumer (what was delivered before is dropped there). */
  deliver(sub: Sub, frame: StreamFrame): void;
  /** The subscription is over: caught up (no `error`), or refused for good. */
  finish(sub: Sub, error?: StreamgateError): void;
}

/** One stream's own socket, opened again until the subscription is over. */
class Line {
  socket: Socket | undefined;
  credential: Credential | undefined;
  stopped = false;
  attempts = 0;
  lastHeard = now();
  readonly abort = new AbortController();
  renewTimer: ReturnType<typeof setTimeout> | undefined;
  idleTimer: ReturnType<typeof setInterval> | undefined;

  constructor(readonly sub: Sub) {}
}

export class Fallback {
  private readonly lines = new Map<string, Line>();
  /** Each stream's records not answered yet, in order; the first is on its way. */
  private readonly queues = new Map<string, Outgoing[]>();
  private closed = false;

  constructor(private readonly s: FallbackSettings) {}

  /** Opens the stream's socket (from where the subscription stands), unless it is open. */
  follow(sub: Sub): void {
    if (this.closed || this.lines.has(sub.id)) return;
    const line = new Line(sub);
    this.lines.set(sub.id, line);
    void this.open(line, 0);
  }

  /** Closes the stream's socket. */
  unfollow(streamId: string): void {
    const line = this.lines.get(streamId);
    if (!line) return;
    this.lines.delete(streamId);
    this.stop(line);
  }

  /** Sends a record once the stream's earlier ones are answered. */
  send(r: Outgoing): void {
    if (this.closed) {
      r.reject(closedError());
      return;
    }
    const queue = this.queues.get(r.streamId);
    if (queue) {
      queue.push(r);
      return;
    }
    const fresh = [r];
    this.queues.set(r.streamId, fresh);
    void this.drain(r.streamId, fresh);
  }

  /** Closes every socket and rejects every record not answered. */
  close(error: StreamgateError): void {
    this.closed = true;
    for (const line of this.lines.values()) this.stop(line);
    this.lines.clear();
    for (const queue of this.queues.values()) for (const r of queue.splice(0)) r.reject(error);
    this.queues.clear();
  }

  // -------------------------------------------------------------------------------------
  // Records
  // -------------------------------------------------------------------------------------

  private async drain(streamId: string, queue: Outgoing[]): Promise<void> {
    const path = `/api/stream/${encodeURIComponent(streamId)}/send`;
    for (let r = queue[0]; r; r = queue[0]) {
      const headers: Record<string, string> = { "Idempotency-Key": r.key };
      if (r.traceparent !== undefined) headers["traceparent"] = r.traceparent;
      try {
        // Tried again with the same key for as long as the failure may pass (the client's
        // close ends it): the daemon stores and processes the record once.
        const accepted = await this.s.http.call<Accepted>("POST", path, {
          body: r.data,
          headers,
          retry: "idempotent",
          patienceMs: Number.POSITIVE_INFINITY,
        });
        const ack: Ack = { stream_id: streamId, seq: r.order, offset: accepted.offsets[0] ?? -1 };
        if (accepted.replayed) ack.replayed = true;
        r.resolve(ack);
      } catch (e) {
        r.reject(e);
      }
      if (queue[0] === r) queue.shift();
    }
    if (this.queues.get(streamId) === queue) this.queues.delete(streamId);
  }

  // -------------------------------------------------------------------------------------
  // Sockets
  // -------------------------------------------------------------------------------------

  private url(sub: Sub): string {
    const query = new URLSearchParams();
    const from = this.s.fromOf(sub);
    if (from !== undefined) query.set("from", String(from));
    if (sub.options.onLag !== undefined) query.set("on_lag", sub.options.onLag);
    if (sub.options.untilNow) query.set("until", "now");
    const q = query.toString();
    return `${this.s.base}/api/stream/${encodeURIComponent(sub.id)}/results${q ? `?${q}` : ""}`;
  }

  /** Opens the line's socket, after `delayMs`, trying again until it opens or is refused for good. */
  private async open(line: Line, delayMs: number): Promise<void> {
    const { sub } = line;
    if (delayMs > 0 && !(await this.pause(line, delayMs))) return;
    while (!line.stopped) {
      let credential: Credential | undefined;
      try {
        credential = await this.s.credentials.get();
        const socket = await this.connect(sub, credential);
        if (line.stopped) {
          socket.close(1000, "bye");
          return;
        }
        this.attach(line, socket, credential);
        return;
      } catch (e) {
        if (line.stopped) return;
        const error = e instanceof StreamgateError ? e : new StreamgateError("connection_failed", String(e), { cause: e });
        if (refusedForGood(error, this.s.credentials.refreshable)) {
          this.s.finish(sub, aboutStream(error, sub.id));
          return;
        }
        if (credential?.kind === "token" && (error.code === "token_expired" || error.code === "invalid_token")) {
          this.s.credentials.invalidate(credential.token);
        }
        const inMs = sub.retry.pause(error.retryAfterMs);
        this.s.onEvent?.({ type: "reconnecting", streamId: sub.id, inMs, error });
        if (!(await this.pause(line, inMs))) return;
      }
    }
  }

  private async connect(sub: Sub, credential: Credential): Promise<Socket> {
    const transport = await this.s.transport();
    try {
      return await transport.open(this.url(sub), credential, this.s.connectTimeoutMs);
    } catch (e) {
      throw await this.explain(e, transport, sub.id, credential);
    }
  }

  /**
   * Why a handshake failed, where the WebSocket does not show it (browsers): the stream's
   * description says whether it exists and the credential may read it.
   */
  private async explain(e: unknown, transport: Transport, streamId: string, credential: Credential): Promise<unknown> {
    if (!(e instanceof StreamgateError) || e.status !== undefined || transport.seesRefusals) return e;
    try {
      const path = `/api/stream/${encodeURIComponent(streamId)}`;
      const answer = await this.s.http.once("GET", path, {}, Credentials.headers(credential));
      if (answer.status < 400) return e; // the network's failure, not a refusal
      return errorFromBody(answer.status, answer.text, parseRetryAfter(answer.headers.get("retry-after")));
    } catch {
      return e;
    }
  }

  private attach(line: Line, socket: Socket, credential: Credential): void {
    line.socket = socket;
    line.credential = credential;
    line.attempts += 1;
    line.lastHeard = now();
    this.s.onEvent?.({ type: "connected", streamId: line.sub.id, attempt: line.attempts });
    const refreshIn = this.s.credentials.refreshIn();
    if (refreshIn !== undefined) line.renewTimer = setTimeout(() => void this.renew(line, socket), refreshIn);
    if (socket.seesPings && this.s.idleTimeoutMs > 0) {
      const every = Math.max(100, Math.floor(this.s.idleTimeoutMs / 4));
      line.idleTimer = setInterval(() => {
        if (now() - line.lastHeard > this.s.idleTimeoutMs) this.drop(line, socket, 4000, "silent");
      }, every);
    }
    socket.listen({
      message: (text) => this.message(line, socket, text),
      close: (code, reason) => this.lost(line, socket, code, reason),
      ping: () => {
        line.lastHeard = now();
      },
    });
  }

  /** The line's socket is no longer the one: its timers stop. */
  private detach(line: Line): void {
    line.socket = undefined;
    clearTimeout(line.renewTimer);
    clearInterval(line.idleTimer);
  }

  private stop(line: Line): void {
    line.stopped = true;
    line.abort.abort();
    const socket = line.socket;
    this.detach(line);
    try {
      socket?.close(1000, "bye");
    } catch {
      // already closed
    }
  }

  private message(line: Line, socket: Socket, text: string): void {
    if (line.socket !== socket || line.stopped) return;
    line.lastHeard = now();
    let frame: StreamFrame;
    try {
      frame = JSON.parse(text) as StreamFrame;
    } catch {
      return; // not a frame of this protocol
    }
    if (!frame || typeof frame !== "object") return;
    // `ack`/`nack` answer records sent on the socket, which this client sends over HTTP.
    if (frame.type === "result" || frame.type === "error" || frame.type === "gap" || frame.type === "end") {
      this.s.deliver(line.sub, frame);
    }
  }

  /** Closes the socket from this side, and goes on as if the daemon had. */
  private drop(line: Line, socket: Socket, code: number, reason: string): void {
    try {
      socket.close(code, reason);
    } catch {
      // already closed
    }
    this.lost(line, socket, code, reason);
  }

  /** The socket closed: the subscription is over, or the socket is opened again. */
  private lost(line: Line, socket: Socket, code: number, reason: string): void {
    if (line.socket !== socket) return;
    this.detach(line);
    const { sub } = line;
    this.s.onEvent?.({ type: "disconnected", streamId: sub.id, code, reason });
    if (line.stopped) return;
    if (code === CLOSE_TOKEN_EXPIRED && line.credential?.kind === "token") {
      this.s.credentials.invalidate(line.credential.token);
    }
    if (code === 1000 && sub.options.untilNow) {
      // "caught up" (after an `end`, the subscription is over already).
      this.s.finish(sub);
      return;
    }
    const resume = code === CLOSE_LAGGED ? /from=(\d+)\s*$/.exec(reason) : null;
    if (resume) {
      // Every result before it was delivered.
      sub.resumeFrom = Math.max(sub.resumeFrom ?? 0, Number(resume[1]));
      this.s.onEvent?.({ type: "resubscribing", streamId: sub.id, from: this.s.fromOf(sub), why: "lagged" });
      void this.open(line, 0);
      return;
    }
    void this.open(line, sub.retry.pause());
  }

  /**
   * Replaces a socket whose token is about to expire: a new token, a new socket from where
   * the stream stands (what both deliver meanwhile is dropped once), then the old one closed.
   * When it cannot be had, the old socket runs until its 4401, and the usual reopening takes over.
   */
  private async renew(line: Line, old: Socket): Promise<void> {
    if (line.socket !== old || line.stopped) return;
    let credential: Credential;
    let socket: Socket;
    try {
      credential = await this.s.credentials.get();
      const used = line.credential;
      if (credential.kind === "token" && used?.kind === "token" && credential.token === used.token) {
        credential = await this.s.credentials.fresh();
      }
      socket = await this.connect(line.sub, credential);
    } catch (e) {
      const error = e instanceof StreamgateError ? e : new StreamgateError("connection_failed", String(e));
      this.s.onEvent?.({ type: "reconnecting", streamId: line.sub.id, inMs: 0, error });
      return;
    }
    if (line.socket !== old || line.stopped) {
      socket.close(1000, "bye");
      return;
    }
    this.detach(line);
    this.attach(line, socket, credential);
    try {
      old.close(1000, "token renewed");
    } catch {
      // already closed
    }
    this.s.onEvent?.({ type: "token_renewed", streamId: line.sub.id });
  }

  private async pause(line: Line, ms: number): Promise<boolean> {
    try {
      await sleep(ms, line.abort.signal);
      return !line.stopped;
    } catch {
      return false;
    }
  }
}

/** The refusal of a stream's socket, naming the stream (as a `refused` frame's error does). */
function aboutStream(error: StreamgateError, streamId: string): StreamgateError {
  const details: ErrorDetails = { streamId, cause: error };
  if (error.status !== undefined) details.status = error.status;
  if (error.retryAfter !== undefined) details.retryAfter = error.retryAfter;
  return new StreamgateError(error.code, error.message, details);
}
