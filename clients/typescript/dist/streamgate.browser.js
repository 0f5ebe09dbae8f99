// streamgate 0.1.0: the Streamgate client for browsers, one ES module, no dependencies.
// Generated from clients/typescript/src by `npm run build`; do not edit.

// src/errors.ts
var TRANSIENT_CODES = [
  "rate_limited",
  "backlog_full",
  "not_ready",
  "shutting_down",
  "broker_unavailable",
  "too_many_connections",
  "idempotency_key_in_flight"
];
var StreamgateError = class _StreamgateError extends Error {
  constructor(code, message, details = {}) {
    super(message, details.cause === void 0 ? void 0 : { cause: details.cause });
    this.name = "StreamgateError";
    this.code = code;
    if (details.status !== void 0) this.status = details.status;
    if (details.retryAfter !== void 0) this.retryAfter = details.retryAfter;
    if (details.acknowledged !== void 0) this.acknowledged = details.acknowledged;
    if (details.line !== void 0) this.line = details.line;
    if (details.violations !== void 0) this.violations = details.violations;
    if (details.streamId !== void 0) this.streamId = details.streamId;
  }
  /** `Retry-After` in milliseconds. */
  get retryAfterMs() {
    return this.retryAfter === void 0 ? void 0 : this.retryAfter * 1e3;
  }
  /** Whether trying again later may succeed. */
  get transient() {
    return TRANSIENT_CODES.includes(this.code) || this.code === "connection_failed";
  }
  /** An error object of the wire (a `nack`, a `refused` frame, an HTTP body) as an error. */
  static fromObject(error, details = {}) {
    const extra = { ...details };
    if (typeof error.acknowledged === "number") extra.acknowledged = error.acknowledged;
    if (typeof error.line === "number") extra.line = error.line;
    if (Array.isArray(error.violations)) extra.violations = error.violations;
    const status = details.status === void 0 ? "" : ` (HTTP ${details.status})`;
    return new _StreamgateError(error.code, `${error.code}: ${error.message}${status}`, extra);
  }
};
function isStreamgateError(e, ...codes) {
  return e instanceof StreamgateError && (codes.length === 0 || codes.includes(e.code));
}
function parseRetryAfter(value) {
  if (value === null || value === void 0 || value.trim() === "") return void 0;
  const text = value.trim();
  if (/^\d+(\.\d+)?$/.test(text)) return Number(text);
  const at = Date.parse(text);
  if (Number.isNaN(at)) return void 0;
  return Math.max(0, (at - Date.now()) / 1e3);
}
function errorFromBody(status, text, retryAfter) {
  const details = { status };
  if (retryAfter !== void 0) details.retryAfter = retryAfter;
  try {
    const body = JSON.parse(text);
    if (body && typeof body === "object" && body.error && typeof body.error.code === "string") {
      return StreamgateError.fromObject(body.error, details);
    }
  } catch {
  }
  const snippet = text.length > 200 ? text.slice(0, 200) + "…" : text;
  return new StreamgateError("http_error", `HTTP ${status}: ${snippet}`, details);
}
function refusedForGood(error, renewable) {
  if (error.status === void 0) return false;
  if (error.status === 401 || error.status === 403) {
    return !(renewable && (error.code === "token_expired" || error.code === "invalid_token"));
  }
  return error.status >= 400 && error.status < 500 && error.status !== 408 && error.status !== 429;
}

// src/util.ts
var FIRST_BACKOFF_MS = 100;
var MAX_BACKOFF_MS = 5e3;
var Backoff = class {
  constructor(first = FIRST_BACKOFF_MS, max = MAX_BACKOFF_MS) {
    this.first = first;
    this.max = max;
    this.next = FIRST_BACKOFF_MS;
    this.next = first;
  }
  /** The pause before the next attempt, in milliseconds. */
  pause(retryAfterMs) {
    const step = this.next;
    this.next = Math.min(this.next * 2, this.max);
    if (retryAfterMs !== void 0) return retryAfterMs;
    return step + step * Math.random() / 5;
  }
  /** After a success: the next failure starts from the first step again. */
  reset() {
    this.next = this.first;
  }
};
function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const end = now() + ms;
    let timer;
    const onAbort = () => {
      if (timer !== void 0) clearTimeout(timer);
      reject(signal?.reason);
    };
    const tick = () => {
      const left = end - now();
      if (left <= 0) {
        signal?.removeEventListener("abort", onAbort);
        resolve();
        return;
      }
      timer = setTimeout(tick, Math.ceil(left));
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    tick();
  });
}
function now() {
  return globalThis.performance ? globalThis.performance.now() : Date.now();
}
function uuid() {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === "function") return c.randomUUID();
  const bytes = new Uint8Array(16);
  if (c && typeof c.getRandomValues === "function") c.getRandomValues(bytes);
  else for (let i = 0; i < 16; i++) bytes[i] = Math.floor(Math.random() * 256);
  bytes[6] = bytes[6] & 15 | 64;
  bytes[8] = bytes[8] & 63 | 128;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
var TRACEPARENT = /^00-(?!0{32}-)[0-9a-f]{32}-(?!0{16}-)[0-9a-f]{16}-[0-9a-f]{2}$/;
function isTraceparent(value) {
  return typeof value === "string" && TRACEPARENT.test(value);
}
function decodeToken(token) {
  const parts = token.split(".");
  if (parts.length !== 3) return void 0;
  try {
    let b64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    while (b64.length % 4 !== 0) b64 += "=";
    const binary = atob(b64);
    const bytes = Uint8Array.from(binary, (ch) => ch.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    const out = {};
    if (typeof claims["iat"] === "number") out.iat = claims["iat"];
    if (typeof claims["exp"] === "number") out.exp = claims["exp"];
    return out;
  } catch {
    return void 0;
  }
}
function byteLength(text) {
  return new TextEncoder().encode(text).length;
}

// src/auth.ts
var MAX_MARGIN_MS = 3e4;
var MIN_MARGIN_MS = 200;
var Credentials = class {
  constructor(apiKey, token, source) {
    this.apiKey = apiKey;
    this.token = token;
    this.source = source;
    const given = [apiKey, token, source].filter((x) => x !== void 0).length;
    if (given !== 1) {
      throw new TypeError("give exactly one of apiKey, token or getToken");
    }
    if (token !== void 0) this.cached = cache(token);
  }
  /** Whether new tokens can be had (from `getToken`). */
  get refreshable() {
    return this.source !== void 0;
  }
  /** The credential to use now: the key, or a token that is not about to expire. */
  async get() {
    if (this.apiKey !== void 0) return { kind: "apikey", key: this.apiKey };
    const c = this.cached;
    if (c && (!this.source || c.expiresAt === void 0 || now() < c.expiresAt - c.margin)) {
      return { kind: "token", token: c.token };
    }
    return { kind: "token", token: (await this.ask()).token };
  }
  /** A new token from the source (the key, or the one token, when there is none). */
  async fresh() {
    if (!this.source) return this.get();
    return { kind: "token", token: (await this.ask()).token };
  }
  /** The daemon said the token expired: the next `get` asks the source. */
  invalidate(token) {
    if (!this.source) return;
    if (token === void 0 || this.cached?.token === token) this.cached = void 0;
  }
  /** Milliseconds until the current token should be replaced; `undefined`: never. */
  refreshIn() {
    const c = this.cached;
    if (!this.source || !c || c.expiresAt === void 0) return void 0;
    return Math.max(0, c.expiresAt - c.margin - now());
  }
  /** The HTTP headers of a credential. */
  static headers(c) {
    return c.kind === "apikey" ? { "X-API-Key": c.key } : { Authorization: `Bearer ${c.token}` };
  }
  ask() {
    if (!this.asking) {
      const source = this.source;
      this.asking = (async () => {
        let token;
        try {
          token = await source();
        } catch (e) {
          throw new StreamgateError("token_unavailable", `getToken failed: ${String(e)}`, {
            cause: e
          });
        }
        if (typeof token !== "string" || token === "") {
          throw new StreamgateError("token_unavailable", "getToken gave no token");
        }
        this.cached = cache(token);
        return this.cached;
      })().finally(() => {
        this.asking = void 0;
      });
    }
    return this.asking;
  }
};
function cache(token) {
  const claims = decodeToken(token);
  if (claims?.exp === void 0) return { token, margin: MIN_MARGIN_MS };
  let remaining = claims.exp * 1e3 - Date.now();
  const lifetime = claims.iat !== void 0 && claims.exp > claims.iat ? (claims.exp - claims.iat) * 1e3 : void 0;
  if (lifetime !== void 0) {
    remaining = Math.min(Math.max(remaining, lifetime / 2), lifetime);
  } else if (remaining <= 0) {
    return { token, margin: MIN_MARGIN_MS };
  }
  const margin = Math.min(MAX_MARGIN_MS, Math.max(MIN_MARGIN_MS, (lifetime ?? remaining) / 4), remaining / 2);
  return { token, expiresAt: now() + remaining, margin };
}

// src/http.ts
var Http = class {
  constructor(s) {
    this.s = s;
  }
  url(path) {
    return this.s.base + path;
  }
  /** Sends a request and returns the body of a success, or throws the daemon's error. */
  async call(method, path, opts) {
    const deadline = now() + (opts.patienceMs ?? this.s.patienceMs);
    const backoff = new Backoff();
    let renewed = false;
    for (; ; ) {
      let error;
      let mayRetry;
      const credential = await this.s.credentials.get();
      try {
        const answer = await this.once(method, path, opts, Credentials.headers(credential));
        if (answer.status >= 200 && answer.status < 300) return parse(answer, this.url(path));
        error = errorFromBody(
          answer.status,
          answer.text,
          parseRetryAfter(answer.headers.get("retry-after"))
        );
        if (answer.status === 401 && error.code === "token_expired" && credential.kind === "token" && this.s.credentials.refreshable && !renewed) {
          this.s.credentials.invalidate(credential.token);
          renewed = true;
          continue;
        }
        mayRetry = retryableAnswer(answer.status, error.code, opts.retry);
      } catch (e) {
        if (!(e instanceof StreamgateError) || e.code !== "connection_failed") throw e;
        error = e;
        mayRetry = opts.retry === "idempotent" || opts.retry === "refused" && nothingSent(e.cause);
      }
      if (!mayRetry) throw error;
      const waitMs = backoff.pause(error.retryAfterMs);
      if (now() + waitMs > deadline) throw error;
      const notice = { method, path, code: error.code, waitMs };
      if (error.status !== void 0) notice.status = error.status;
      this.s.onWait?.(notice);
      await this.sleep(waitMs);
    }
  }
  /** One request, no retry; throws `connection_failed` when no answer came. */
  async once(method, path, opts, auth) {
    if (this.s.signal.aborted) throw closedError();
    const headers = { Accept: "application/json", ...auth, ...opts.headers };
    if (opts.body !== void 0) headers["Content-Type"] = opts.contentType ?? "application/json";
    const abort = new AbortController();
    const onClose = () => abort.abort();
    this.s.signal.addEventListener("abort", onClose, { once: true });
    const timer = setTimeout(() => abort.abort(), this.s.requestTimeoutMs);
    try {
      const init = { method, headers, signal: abort.signal };
      if (opts.body !== void 0) init.body = opts.body;
      const resp = await this.s.fetch(this.url(path), init);
      const text = await resp.text();
      return { status: resp.status, headers: resp.headers, text };
    } catch (e) {
      if (this.s.signal.aborted) throw closedError();
      const why = abort.signal.aborted ? `no answer in ${this.s.requestTimeoutMs} ms` : describe(e);
      throw new StreamgateError(
        "connection_failed",
        `${method} ${this.url(path)} failed: ${why}`,
        { cause: e }
      );
    } finally {
      clearTimeout(timer);
      this.s.signal.removeEventListener("abort", onClose);
    }
  }
  async sleep(ms) {
    try {
      await sleep(ms, this.s.signal);
    } catch {
      throw closedError();
    }
  }
};
function retryableAnswer(status, code, policy) {
  if (policy === "none") return false;
  if (status === 429) return true;
  if (status === 503) {
    return policy === "idempotent" || code === "not_ready" || code === "shutting_down" || code === "too_many_connections";
  }
  return policy === "idempotent" && status === 409 && code === "idempotency_key_in_flight";
}
function nothingSent(cause) {
  let e = cause;
  for (let depth = 0; e && typeof e === "object" && depth < 4; depth++) {
    const code = e.code;
    if (code === "ECONNREFUSED") return true;
    e = e.cause;
  }
  return false;
}
function describe(e) {
  const parts = [];
  let cur = e;
  for (let depth = 0; cur && depth < 4; depth++) {
    if (cur instanceof Error) parts.push(cur.message);
    else parts.push(String(cur));
    cur = cur.cause;
  }
  return parts.join(": ");
}
function parse(answer, url) {
  if (answer.text.trim() === "") return void 0;
  try {
    return JSON.parse(answer.text);
  } catch (e) {
    throw new StreamgateError("unreadable", `unreadable answer from ${url}: ${String(e)}`, {
      status: answer.status,
      cause: e
    });
  }
}
function closedError() {
  return new StreamgateError("closed", "the client is closed");
}

// src/wire.ts
var ERROR_CODES = [
  "invalid_input",
  "missing_api_key",
  "invalid_api_key",
  "invalid_token",
  "token_expired",
  "forbidden",
  "stream_not_found",
  "route_not_found",
  "method_not_allowed",
  "origin_not_allowed",
  "stream_ended",
  "request_timeout",
  "payload_too_large",
  "record_too_large",
  "too_many_records",
  "unsupported_media_type",
  "rate_limited",
  "backlog_full",
  "too_many_streams",
  "too_many_subscribers",
  "too_many_subscriptions",
  "idempotency_key_reused",
  "schema_violation",
  "idempotency_key_in_flight",
  "too_many_connections",
  "http_version_not_supported",
  "not_ready",
  "shutting_down",
  "broker_unavailable",
  "internal",
  "processing_failed"
];
var CLOSE_TOKEN_EXPIRED = 4401;
var CLOSE_LAGGED = 4008;

// src/fallback.ts
var Line = class {
  constructor(sub) {
    this.sub = sub;
    this.stopped = false;
    this.attempts = 0;
    this.lastHeard = now();
    this.abort = new AbortController();
  }
};
var Fallback = class {
  constructor(s) {
    this.s = s;
    this.lines = /* @__PURE__ */ new Map();
    /** Each stream's records not answered yet, in order; the first is on its way. */
    this.queues = /* @__PURE__ */ new Map();
    this.closed = false;
  }
  /** Opens the stream's socket (from where the subscription stands), unless it is open. */
  follow(sub) {
    if (this.closed || this.lines.has(sub.id)) return;
    const line = new Line(sub);
    this.lines.set(sub.id, line);
    void this.open(line, 0);
  }
  /** Closes the stream's socket. */
  unfollow(streamId) {
    const line = this.lines.get(streamId);
    if (!line) return;
    this.lines.delete(streamId);
    this.stop(line);
  }
  /** Sends a record once the stream's earlier ones are answered. */
  send(r) {
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
  close(error) {
    this.closed = true;
    for (const line of this.lines.values()) this.stop(line);
    this.lines.clear();
    for (const queue of this.queues.values()) for (const r of queue.splice(0)) r.reject(error);
    this.queues.clear();
  }
  // -------------------------------------------------------------------------------------
  // Records
  // -------------------------------------------------------------------------------------
  async drain(streamId, queue) {
    const path = `/api/stream/${encodeURIComponent(streamId)}/send`;
    for (let r = queue[0]; r; r = queue[0]) {
      const headers = { "Idempotency-Key": r.key };
      if (r.traceparent !== void 0) headers["traceparent"] = r.traceparent;
      try {
        const accepted = await this.s.http.call("POST", path, {
          body: r.data,
          headers,
          retry: "idempotent",
          patienceMs: Number.POSITIVE_INFINITY
        });
        const ack = { stream_id: streamId, seq: r.order, offset: accepted.offsets[0] ?? -1 };
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
  url(sub) {
    const query = new URLSearchParams();
    const from = this.s.fromOf(sub);
    if (from !== void 0) query.set("from", String(from));
    if (sub.options.onLag !== void 0) query.set("on_lag", sub.options.onLag);
    if (sub.options.untilNow) query.set("until", "now");
    const q = query.toString();
    return `${this.s.base}/api/stream/${encodeURIComponent(sub.id)}/results${q ? `?${q}` : ""}`;
  }
  /** Opens the line's socket, after `delayMs`, trying again until it opens or is refused for good. */
  async open(line, delayMs) {
    const { sub } = line;
    if (delayMs > 0 && !await this.pause(line, delayMs)) return;
    while (!line.stopped) {
      let credential;
      try {
        credential = await this.s.credentials.get();
        const socket = await this.connect(sub, credential);
        if (line.stopped) {
          socket.close(1e3, "bye");
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
        if (!await this.pause(line, inMs)) return;
      }
    }
  }
  async connect(sub, credential) {
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
  async explain(e, transport, streamId, credential) {
    if (!(e instanceof StreamgateError) || e.status !== void 0 || transport.seesRefusals) return e;
    try {
      const path = `/api/stream/${encodeURIComponent(streamId)}`;
      const answer = await this.s.http.once("GET", path, {}, Credentials.headers(credential));
      if (answer.status < 400) return e;
      return errorFromBody(answer.status, answer.text, parseRetryAfter(answer.headers.get("retry-after")));
    } catch {
      return e;
    }
  }
  attach(line, socket, credential) {
    line.socket = socket;
    line.credential = credential;
    line.attempts += 1;
    line.lastHeard = now();
    this.s.onEvent?.({ type: "connected", streamId: line.sub.id, attempt: line.attempts });
    const refreshIn = this.s.credentials.refreshIn();
    if (refreshIn !== void 0) line.renewTimer = setTimeout(() => void this.renew(line, socket), refreshIn);
    if (socket.seesPings && this.s.idleTimeoutMs > 0) {
      const every = Math.max(100, Math.floor(this.s.idleTimeoutMs / 4));
      line.idleTimer = setInterval(() => {
        if (now() - line.lastHeard > this.s.idleTimeoutMs) this.drop(line, socket, 4e3, "silent");
      }, every);
    }
    socket.listen({
      message: (text) => this.message(line, socket, text),
      close: (code, reason) => this.lost(line, socket, code, reason),
      ping: () => {
        line.lastHeard = now();
      }
    });
  }
  /** The line's socket is no longer the one: its timers stop. */
  detach(line) {
    line.socket = void 0;
    clearTimeout(line.renewTimer);
    clearInterval(line.idleTimer);
  }
  stop(line) {
    line.stopped = true;
    line.abort.abort();
    const socket = line.socket;
    this.detach(line);
    try {
      socket?.close(1e3, "bye");
    } catch {
    }
  }
  message(line, socket, text) {
    if (line.socket !== socket || line.stopped) return;
    line.lastHeard = now();
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return;
    }
    if (!frame || typeof frame !== "object") return;
    if (frame.type === "result" || frame.type === "error" || frame.type === "gap" || frame.type === "end") {
      this.s.deliver(line.sub, frame);
    }
  }
  /** Closes the socket from this side, and goes on as if the daemon had. */
  drop(line, socket, code, reason) {
    try {
      socket.close(code, reason);
    } catch {
    }
    this.lost(line, socket, code, reason);
  }
  /** The socket closed: the subscription is over, or the socket is opened again. */
  lost(line, socket, code, reason) {
    if (line.socket !== socket) return;
    this.detach(line);
    const { sub } = line;
    this.s.onEvent?.({ type: "disconnected", streamId: sub.id, code, reason });
    if (line.stopped) return;
    if (code === CLOSE_TOKEN_EXPIRED && line.credential?.kind === "token") {
      this.s.credentials.invalidate(line.credential.token);
    }
    if (code === 1e3 && sub.options.untilNow) {
      this.s.finish(sub);
      return;
    }
    const resume = code === CLOSE_LAGGED ? /from=(\d+)\s*$/.exec(reason) : null;
    if (resume) {
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
  async renew(line, old) {
    if (line.socket !== old || line.stopped) return;
    let credential;
    let socket;
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
      socket.close(1e3, "bye");
      return;
    }
    this.detach(line);
    this.attach(line, socket, credential);
    try {
      old.close(1e3, "token renewed");
    } catch {
    }
    this.s.onEvent?.({ type: "token_renewed", streamId: line.sub.id });
  }
  async pause(line, ms) {
    try {
      await sleep(ms, line.abort.signal);
      return !line.stopped;
    } catch {
      return false;
    }
  }
};
function aboutStream(error, streamId) {
  const details = { streamId, cause: error };
  if (error.status !== void 0) details.status = error.status;
  if (error.retryAfter !== void 0) details.retryAfter = error.retryAfter;
  return new StreamgateError(error.code, error.message, details);
}

// src/subscription.ts
var Subscription = class {
  /** @internal */
  constructor(streamId, hooks) {
    this.streamId = streamId;
    this.hooks = hooks;
    this.queue = [];
    this.waiters = [];
    this.finished = false;
    this.failure = void 0;
    this.stopped = false;
  }
  /** Frames received and not read yet. */
  get queued() {
    return this.queue.length;
  }
  /** Whether nothing more will come. */
  get done() {
    return this.finished && this.queue.length === 0;
  }
  /** @internal A frame for the consumer. */
  push(frame) {
    if (this.finished) return;
    const waiter = this.waiters.shift();
    if (waiter) waiter.resolve({ value: frame, done: false });
    else this.queue.push(frame);
  }
  /** @internal Nothing follows what was pushed. */
  finish() {
    if (this.finished) return;
    this.finished = true;
    if (this.queue.length === 0) this.flushDone();
  }
  /** @internal The subscription failed: `error` is thrown once what was pushed is read. */
  fail(error) {
    if (this.finished) return;
    this.failure = error;
    this.finished = true;
    if (this.queue.length === 0) this.flushDone();
  }
  next() {
    const frame = this.queue.shift();
    if (frame !== void 0) {
      if (!this.finished) this.hooks.read(this.queue.length);
      return Promise.resolve({ value: frame, done: false });
    }
    if (this.finished) {
      if (this.failure !== void 0) {
        const failure = this.failure;
        this.failure = void 0;
        return Promise.reject(failure);
      }
      return Promise.resolve({ value: void 0, done: true });
    }
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }
  /** Stops following the stream (what `break` in a `for await` does). */
  return() {
    this.stop();
    return Promise.resolve({ value: void 0, done: true });
  }
  /** Stops following the stream. */
  async close() {
    this.stop();
  }
  [Symbol.asyncIterator]() {
    return this;
  }
  stop() {
    if (!this.stopped && !this.finished) this.hooks.stop();
    this.stopped = true;
    this.queue.length = 0;
    this.failure = void 0;
    this.finished = true;
    this.flushDone();
  }
  flushDone() {
    for (const waiter of this.waiters.splice(0)) {
      if (this.failure !== void 0) {
        const failure = this.failure;
        this.failure = void 0;
        waiter.reject(failure);
      } else {
        waiter.resolve({ value: void 0, done: true });
      }
    }
  }
};

// src/connection.ts
var RESEND_CODES = /* @__PURE__ */ new Set([
  "shutting_down",
  "broker_unavailable",
  "backlog_full",
  "rate_limited",
  "not_ready",
  "idempotency_key_in_flight"
]);
var RESUBSCRIBE_CODES = /* @__PURE__ */ new Set(["not_ready", "shutting_down", "broker_unavailable"]);
var DEFAULT_MAX_MESSAGE = 1024 * 1024;
var DEFAULT_HIGH_WATER = 1024;
var Conn = class {
  constructor(socket, credential) {
    this.socket = socket;
    this.credential = credential;
    this.seq = 0;
    /** Records sent on it and not answered, by `seq`. */
    this.pending = /* @__PURE__ */ new Map();
    /** Its subscriptions, as far as the daemon knows them. */
    this.subs = /* @__PURE__ */ new Map();
    /** Streams to subscribe again once their `unsubscribed` comes. */
    this.resubscribe = /* @__PURE__ */ new Set();
    this.live = true;
    this.heard = false;
    this.lastHeard = now();
  }
  /**
   * The daemon ended a stream's subscription (`lagged`, `caught_up`, `refused`, `unsubscribed`
   * with an error): whether it was the one in use. While an `unsubscribe` of ours waits for
   * its answer the stream stays `unsubscribing`, so nothing is subscribed again before that
   * answer comes (it would be taken for the end of the new subscription).
   */
  ended(streamId) {
    const state = this.subs.get(streamId);
    if (state === "unsubscribing") return false;
    this.subs.delete(streamId);
    return state !== void 0;
  }
};
var Connection = class {
  constructor(s) {
    this.s = s;
    this.subs = /* @__PURE__ */ new Map();
    /** Records to send once connected, in order. */
    this.waiting = [];
    /** Records `nack`ed with a code that passes, in `order`: sent again after a pause. */
    this.later = [];
    /** When `laterTimer` fires, on the `now()` clock. */
    this.laterAt = 0;
    /** The pause before `later` is sent: grows while nacks come, from the first step after an ack. */
    this.laterBackoff = new Backoff();
    this.sent = 0;
    this.connecting = false;
    this.backoff = new Backoff();
    this.closed = false;
    this.attempts = 0;
  }
  /** Follows a stream. */
  subscribe(streamId, options) {
    const sink = new Subscription(streamId, {
      read: (queued) => this.read(streamId, sink, queued),
      stop: () => this.stop(streamId, sink)
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
          { streamId }
        )
      );
      return sink;
    }
    const sub = {
      id: streamId,
      options,
      highWater: Math.max(1, options.highWaterMark ?? DEFAULT_HIGH_WATER),
      last: void 0,
      resumeFrom: void 0,
      sink,
      paused: false,
      retry: new Backoff(),
      retryTimer: void 0
    };
    this.subs.set(streamId, sub);
    if (this.fallback) this.fallback.follow(sub);
    else if (this.conn) this.subscribeOn(this.conn, sub);
    else this.ensureConnected();
    return sink;
  }
  /** Sends one record (with `traceparent`, a checked W3C trace context); resolves with its `ack`. */
  send(streamId, value, traceparent) {
    let data;
    try {
      data = JSON.stringify(value);
    } catch (e) {
      return Promise.reject(
        new StreamgateError("invalid_input", `the record is not JSON: ${String(e)}`, { streamId })
      );
    }
    if (data === void 0) {
      return Promise.reject(
        new StreamgateError("invalid_input", "the record is not JSON (undefined)", { streamId })
      );
    }
    const text = data;
    return new Promise((resolve, reject) => {
      this.dispatch({
        streamId,
        data: text,
        key: uuid(),
        traceparent,
        resolve,
        reject,
        order: ++this.sent
      });
    });
  }
  /** Closes the socket; every iterator ends and every unanswered send is rejected. */
  async close() {
    if (this.closed) return;
    this.closed = true;
    const conn = this.conn;
    this.conn = void 0;
    const error = closedError();
    if (conn) {
      this.retire(conn);
      for (const r of conn.pending.values()) r.reject(error);
      conn.pending.clear();
      try {
        conn.socket.close(1e3, "bye");
      } catch {
      }
    }
    for (const r of this.waiting) r.reject(error);
    this.waiting = [];
    clearTimeout(this.laterTimer);
    this.laterTimer = void 0;
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
  hasWork() {
    return this.subs.size > 0 || this.waiting.length > 0 || this.later.length > 0;
  }
  ensureConnected(delayMs = 0) {
    if (this.closed || this.fallback || this.conn || this.connecting) return;
    this.connecting = true;
    void this.connectLoop(delayMs).finally(() => {
      this.connecting = false;
    });
  }
  async connectLoop(delayMs) {
    if (delayMs > 0 && !await this.wait(delayMs)) return;
    while (!this.closed && this.hasWork()) {
      let credential;
      try {
        credential = await this.s.credentials.get();
        const transport = await this.s.transport();
        let socket;
        try {
          socket = await transport.open(this.connectUrl, credential, this.s.connectTimeoutMs);
        } catch (e) {
          throw await this.explain(e, transport, credential);
        }
        if (this.closed) {
          socket.close(1e3, "bye");
          return;
        }
        this.attach(socket, credential);
        return;
      } catch (e) {
        const error = e instanceof StreamgateError ? e : new StreamgateError("connection_failed", String(e), { cause: e });
        if (this.closed) return;
        if (error.status === 404) {
          this.useFallback(error);
          return;
        }
        if (refusedForGood(error, this.s.credentials.refreshable)) {
          this.failAll(error);
          return;
        }
        if (credential?.kind === "token" && (error.code === "token_expired" || error.code === "invalid_token")) {
          this.s.credentials.invalidate(credential.token);
        }
        const inMs = this.backoff.pause(error.retryAfterMs);
        this.s.onEvent?.({ type: "reconnecting", inMs, error });
        if (!await this.wait(inMs)) return;
      }
    }
  }
  /** Why a handshake failed, asked over HTTP when the WebSocket does not show it. */
  async explain(e, transport, credential) {
    if (!(e instanceof StreamgateError) || e.status !== void 0 || transport.seesRefusals) return e;
    try {
      const answer = await this.s.http.once("GET", "/api/connect", {}, Credentials.headers(credential));
      if (answer.status === 400 || answer.status < 400) return e;
      return errorFromBody(answer.status, answer.text, parseRetryAfter(answer.headers.get("retry-after")));
    } catch {
      return e;
    }
  }
  get connectUrl() {
    return `${this.s.base}/api/connect`;
  }
  /**
   * The daemon has no `/api/connect`: from now on every stream is followed on a socket of
   * its own and every record sent over HTTP, those waiting first, in the order of `send`.
   */
  useFallback(why) {
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
      }
    });
    this.fallback = fallback;
    this.s.onEvent?.({ type: "fallback", reason: why.message });
    for (const sub of this.subs.values()) {
      clearTimeout(sub.retryTimer);
      sub.retryTimer = void 0;
      if (!sub.paused) fallback.follow(sub);
    }
    clearTimeout(this.laterTimer);
    this.laterTimer = void 0;
    const records = [...this.waiting, ...this.later].sort((a, b) => a.order - b.order);
    this.waiting = [];
    this.later = [];
    for (const r of records) fallback.send(r);
  }
  async wait(ms) {
    try {
      await sleep(ms, this.s.signal);
      return !this.closed;
    } catch {
      return false;
    }
  }
  /** A new socket becomes the connection: every stream subscribed, every record sent. */
  attach(socket, credential) {
    const conn = new Conn(socket, credential);
    this.conn = conn;
    this.attempts += 1;
    this.s.onEvent?.({ type: "connected", attempt: this.attempts });
    for (const sub of this.subs.values()) {
      clearTimeout(sub.retryTimer);
      sub.retryTimer = void 0;
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
      }
    });
  }
  /** The timers of a connection: a new token before this one expires; a silent peer dropped. */
  watch(conn) {
    const refreshIn = this.s.credentials.refreshIn();
    if (refreshIn !== void 0) {
      conn.refreshTimer = setTimeout(() => void this.renew(conn), refreshIn);
    }
    if (conn.socket.seesPings && this.s.idleTimeoutMs > 0) {
      const every = Math.max(100, Math.floor(this.s.idleTimeoutMs / 4));
      conn.idleTimer = setInterval(() => {
        if (now() - conn.lastHeard > this.s.idleTimeoutMs) {
          this.drop(conn, 4e3, "silent");
        }
      }, every);
    }
  }
  /** A connection is no longer the one: its timers stop and it is not heard any more. */
  retire(conn) {
    conn.live = false;
    clearTimeout(conn.refreshTimer);
    clearInterval(conn.idleTimer);
  }
  /** Closes a connection from this side, and goes on as if the daemon had. */
  drop(conn, code, reason) {
    try {
      conn.socket.close(code === 1e3 || code >= 3e3 && code <= 4999 ? code : 1e3, reason);
    } catch {
    }
    this.lost(conn, code, reason);
  }
  /** A connection ended: what it had not got answered waits for the next one. */
  lost(conn, code, reason) {
    if (!conn.live) return;
    this.retire(conn);
    if (this.conn === conn) this.conn = void 0;
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
  async renew(old) {
    if (old !== this.conn || this.closed) return;
    let credential;
    let socket;
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
      socket.close(1e3, "bye");
      return;
    }
    this.retire(old);
    this.waiting = [...byseq(old.pending), ...this.waiting];
    old.pending.clear();
    this.attach(socket, credential);
    try {
      old.socket.close(1e3, "token renewed");
    } catch {
    }
    this.s.onEvent?.({ type: "token_renewed" });
  }
  /** Fails every subscription and every record with `error`. */
  failAll(error) {
    for (const sub of this.subs.values()) {
      clearTimeout(sub.retryTimer);
      sub.sink.fail(error);
    }
    this.subs.clear();
    for (const r of this.waiting) r.reject(error);
    this.waiting = [];
    clearTimeout(this.laterTimer);
    this.laterTimer = void 0;
    for (const r of this.later) r.reject(error);
    this.later = [];
  }
  // -------------------------------------------------------------------------------------
  // Subscriptions
  // -------------------------------------------------------------------------------------
  fromOf(sub) {
    if (sub.last !== void 0) {
      return sub.resumeFrom !== void 0 ? Math.max(sub.last + 1, sub.resumeFrom) : sub.last + 1;
    }
    return sub.resumeFrom ?? sub.options.from;
  }
  subscribeOn(conn, sub) {
    const state = conn.subs.get(sub.id);
    if (state === "unsubscribing") {
      conn.resubscribe.add(sub.id);
      return;
    }
    if (state !== void 0) return;
    const frame = { type: "subscribe", stream_id: sub.id };
    const from = this.fromOf(sub);
    if (from !== void 0) frame["from"] = from;
    if (sub.options.onLag !== void 0) frame["on_lag"] = sub.options.onLag;
    if (sub.options.untilNow) frame["until"] = "now";
    conn.subs.set(sub.id, "subscribing");
    this.write(conn, JSON.stringify(frame));
  }
  unsubscribeOn(conn, streamId) {
    conn.resubscribe.delete(streamId);
    const state = conn.subs.get(streamId);
    if (state === "subscribing" || state === "active") {
      conn.subs.set(streamId, "unsubscribing");
      this.write(conn, JSON.stringify({ type: "unsubscribe", stream_id: streamId }));
    }
  }
  /** Subscribes again after a pause (the daemon ended or refused it for a while). */
  retryLater(sub, why) {
    clearTimeout(sub.retryTimer);
    const inMs = sub.retry.pause();
    this.s.onEvent?.({ type: "resubscribing", streamId: sub.id, from: this.fromOf(sub), why });
    sub.retryTimer = setTimeout(() => {
      sub.retryTimer = void 0;
      if (this.subs.get(sub.id) !== sub || sub.paused) return;
      if (this.conn) this.subscribeOn(this.conn, sub);
    }, inMs);
  }
  /** The consumer read a frame: one paused is subscribed again once half its queue is read. */
  read(streamId, sink, queued) {
    const sub = this.subs.get(streamId);
    if (!sub || sub.sink !== sink || !sub.paused || queued > sub.highWater / 2) return;
    sub.paused = false;
    this.s.onEvent?.({
      type: "resubscribing",
      streamId,
      from: this.fromOf(sub),
      why: "the consumer read on"
    });
    if (this.fallback) this.fallback.follow(sub);
    else if (this.conn) this.subscribeOn(this.conn, sub);
    else this.ensureConnected();
  }
  /** The consumer stopped. */
  stop(streamId, sink) {
    const sub = this.subs.get(streamId);
    if (!sub || sub.sink !== sink) return;
    clearTimeout(sub.retryTimer);
    this.subs.delete(streamId);
    this.fallback?.unfollow(streamId);
    if (this.conn) this.unsubscribeOn(this.conn, streamId);
  }
  /** The subscription is over (its `end`, `caught_up`, a refusal). */
  over(sub) {
    clearTimeout(sub.retryTimer);
    if (this.subs.get(sub.id) !== sub) return;
    this.subs.delete(sub.id);
    this.fallback?.unfollow(sub.id);
  }
  /** A stream's frame from the connection, for its consumer. */
  deliver(conn, frame) {
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
  hand(sub, frame) {
    if (sub.paused) return false;
    const cursor = frame.type === "gap" ? frame.from_cursor + frame.skipped - 1 : frame.cursor;
    if (typeof cursor === "number" && sub.last !== void 0 && cursor <= sub.last) return false;
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
  dispatch(r) {
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
  transmit(conn, r) {
    const seq = ++conn.seq;
    const text = `{"type":"send","stream_id":${JSON.stringify(r.streamId)},"seq":${seq},"data":${r.data},"idempotency_key":${JSON.stringify(r.key)}` + (r.traceparent === void 0 ? "}" : `,"traceparent":${JSON.stringify(r.traceparent)}}`);
    if (this.maxMessageBytes !== void 0 && byteLength(text) > this.maxMessageBytes) {
      r.reject(
        new StreamgateError(
          "record_too_large",
          `the record does not fit in one message (limits.ws_max_message_bytes=${this.maxMessageBytes}); send it with sendBatch`,
          { streamId: r.streamId }
        )
      );
      return;
    }
    conn.pending.set(seq, r);
    this.write(conn, text);
  }
  write(conn, text) {
    try {
      conn.socket.send(text);
    } catch {
      this.drop(conn, 1006, "write failed");
    }
  }
  answered(conn, seq, streamId) {
    const r = conn.pending.get(seq);
    if (!r || streamId !== void 0 && streamId !== r.streamId) return void 0;
    conn.pending.delete(seq);
    return r;
  }
  nacked(r, error) {
    if (!RESEND_CODES.has(error.code)) {
      r.reject(StreamgateError.fromObject(error, { streamId: r.streamId }));
      return;
    }
    let at = this.later.length;
    while (at > 0 && this.later[at - 1].order > r.order) at--;
    this.later.splice(at, 0, r);
    if (this.laterTimer === void 0) {
      const inMs = this.laterBackoff.pause();
      this.laterAt = now() + inMs;
      this.laterTimer = setTimeout(() => {
        this.laterTimer = void 0;
        const records = this.later;
        this.later = [];
        for (const record of records) this.dispatch(record);
      }, inMs);
    }
    this.s.onEvent?.({
      type: "resending",
      streamId: r.streamId,
      code: error.code,
      inMs: Math.max(0, Math.round(this.laterAt - now()))
    });
  }
  // -------------------------------------------------------------------------------------
  // Frames
  // -------------------------------------------------------------------------------------
  onMessage(conn, text) {
    if (!conn.live) return;
    conn.lastHeard = now();
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return;
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
        const ack = { stream_id: r.streamId, seq: frame.seq, offset: frame.offset };
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
          if (conn.ended(frame.stream_id) && sub && !sub.paused) {
            this.retryLater(sub, `${frame.error.code}: ${frame.error.message}`);
          }
          return;
        }
        if (conn.subs.get(frame.stream_id) !== "unsubscribing") return;
        conn.subs.delete(frame.stream_id);
        if (conn.resubscribe.delete(frame.stream_id) && sub && !sub.paused) this.subscribeOn(conn, sub);
        return;
      }
      case "lagged": {
        const sub = this.subs.get(frame.stream_id);
        if (!conn.ended(frame.stream_id) || !sub) return;
        sub.resumeFrom = Math.max(sub.resumeFrom ?? frame.resume_from, frame.resume_from);
        this.s.onEvent?.({
          type: "resubscribing",
          streamId: sub.id,
          from: this.fromOf(sub),
          why: "lagged"
        });
        if (!sub.paused) this.subscribeOn(conn, sub);
        return;
      }
      case "caught_up": {
        const sub = this.subs.get(frame.stream_id);
        if (!conn.ended(frame.stream_id) || !sub) return;
        this.over(sub);
        sub.sink.finish();
        return;
      }
      case "invalid":
        return;
      default:
        return;
    }
  }
};
function byseq(pending) {
  return [...pending.entries()].sort((a, b) => a[0] - b[0]).map(([, r]) => r);
}

// src/transport.ts
var PROTOCOL = "streamgate.v1";
var Events = class {
  constructor() {
    this.early = [];
  }
  emit(event) {
    if (this.handlers) event(this.handlers);
    else this.early.push(event);
  }
  listen(handlers) {
    this.handlers = handlers;
    for (const event of this.early.splice(0)) event(handlers);
  }
};
function isWsClass(impl) {
  if (typeof impl !== "function") return false;
  const proto = impl.prototype;
  return !!proto && typeof proto["on"] === "function" && typeof proto["terminate"] === "function";
}
function transportFor(impl) {
  if (isWsClass(impl)) return wsTransport(impl);
  if (typeof impl === "function") return standardTransport(impl);
  throw new TypeError("WebSocket must be a WebSocket class");
}
function protocolsFor(credential) {
  return [
    PROTOCOL,
    credential.kind === "apikey" ? `apikey.${credential.key}` : `token.${credential.token}`
  ];
}
function textOf(data) {
  if (typeof data === "string") return data;
  if (data instanceof ArrayBuffer) return new TextDecoder().decode(data);
  if (ArrayBuffer.isView(data)) return new TextDecoder().decode(data);
  if (Array.isArray(data)) return data.map(textOf).join("");
  return String(data);
}
function standardTransport(Impl) {
  return {
    seesRefusals: false,
    open(url, credential, timeoutMs) {
      return new Promise((resolve, reject) => {
        let ws;
        try {
          ws = new Impl(url, protocolsFor(credential));
        } catch (e) {
          reject(new StreamgateError("connection_failed", `cannot open ${url}: ${String(e)}`, { cause: e }));
          return;
        }
        let settled = false;
        const fail = (why) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          ws.onopen = ws.onclose = ws.onerror = ws.onmessage = null;
          try {
            ws.close();
          } catch {
          }
          reject(new StreamgateError("connection_failed", `cannot connect to ${url}: ${why}`));
        };
        const timer = setTimeout(() => fail(`no answer in ${timeoutMs} ms`), timeoutMs);
        ws.onerror = () => fail("the WebSocket failed");
        ws.onclose = (ev) => fail(`closed ${ev.code} ${ev.reason}`.trim());
        ws.onopen = () => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          let closed = false;
          const events = new Events();
          const socket = {
            seesPings: false,
            listen: (handlers) => events.listen(handlers),
            send: (text) => ws.send(text),
            close: (code, reason) => {
              closed = true;
              try {
                ws.close(code ?? 1e3, reason);
              } catch {
                ws.close();
              }
            }
          };
          ws.onmessage = (ev) => {
            const text = textOf(ev.data);
            events.emit((h) => h.message(text));
          };
          ws.onerror = () => {
          };
          ws.onclose = (ev) => {
            if (!closed) events.emit((h) => h.close(ev.code, ev.reason));
          };
          resolve(socket);
        };
      });
    }
  };
}
function wsTransport(Impl) {
  return {
    seesRefusals: true,
    open(url, credential, timeoutMs) {
      return new Promise((resolve, reject) => {
        const headers = credential.kind === "apikey" ? { "X-API-Key": credential.key } : { Authorization: `Bearer ${credential.token}` };
        let ws;
        try {
          ws = new Impl(url, [PROTOCOL], { headers, handshakeTimeout: timeoutMs });
        } catch (e) {
          reject(new StreamgateError("connection_failed", `cannot open ${url}: ${String(e)}`, { cause: e }));
          return;
        }
        let settled = false;
        const settle = (error) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          try {
            ws.terminate();
          } catch {
          }
          reject(error);
        };
        const timer = setTimeout(
          () => settle(new StreamgateError("connection_failed", `cannot connect to ${url}: no answer in ${timeoutMs} ms`)),
          timeoutMs + 1e3
        );
        ws.on("error", (e) => {
          settle(new StreamgateError("connection_failed", `cannot connect to ${url}: ${e.message}`, { cause: e }));
        });
        ws.on("unexpected-response", (_req, res) => {
          let body = "";
          res.setEncoding?.("utf8");
          res.on("data", (chunk) => {
            if (body.length < 65536) body += chunk;
          });
          const done = () => {
            const retryAfter = parseRetryAfter(headerOf(res.headers["retry-after"]));
            settle(errorFromBody(res.statusCode ?? 0, body, retryAfter));
          };
          res.on("end", done);
          res.on("error", done);
          res.on("close", done);
        });
        ws.on("open", () => {
          if (settled) {
            ws.terminate();
            return;
          }
          settled = true;
          clearTimeout(timer);
          let closed = false;
          const events = new Events();
          const socket = {
            seesPings: true,
            listen: (handlers) => events.listen(handlers),
            send: (text) => ws.send(text),
            close: (code, reason) => {
              closed = true;
              try {
                ws.close(code ?? 1e3, reason);
              } catch {
                ws.terminate();
              }
              setTimeout(() => ws.terminate(), 2e3).unref?.();
            }
          };
          ws.removeAllListeners("error");
          ws.on("error", () => {
          });
          ws.on("message", (data) => {
            const text = textOf(data);
            events.emit((h) => h.message(text));
          });
          ws.on("ping", () => events.emit((h) => h.ping()));
          ws.on("close", (code, reason) => {
            if (closed) return;
            const why = textOf(reason);
            events.emit((h) => h.close(code, why));
          });
          resolve(socket);
        });
      });
    }
  };
}
function headerOf(value) {
  return Array.isArray(value) ? value[0] : value;
}

// src/client.ts
var ClientBase = class {
  /** @internal */
  constructor(options, defaultTransport) {
    this.abort = new AbortController();
    if (!options || typeof options.url !== "string") throw new TypeError("options.url is required");
    const base = options.url.replace(/\/+$/, "");
    if (!/^https?:\/\//i.test(base)) throw new TypeError("options.url must start with http:// or https://");
    this.url = base;
    const credentials = new Credentials(options.apiKey, options.token, options.getToken);
    const fetchImpl = options.fetch ?? (typeof fetch === "function" ? (input, init) => fetch(input, init) : void 0);
    if (!fetchImpl) throw new TypeError("no fetch: pass options.fetch");
    this.http = new Http({
      base,
      credentials,
      fetch: fetchImpl,
      patienceMs: options.patienceMs ?? 6e4,
      requestTimeoutMs: options.requestTimeoutMs ?? 3e4,
      signal: this.abort.signal,
      onWait: options.onWait
    });
    let transport;
    const given = options.WebSocket;
    const resolve = given === void 0 ? defaultTransport : () => Promise.resolve(transportFor(given));
    this.connection = new Connection({
      base: base.replace(/^http/i, "ws"),
      credentials,
      transport: () => transport ?? (transport = resolve().catch((e) => {
        transport = void 0;
        throw e;
      })),
      http: this.http,
      connectTimeoutMs: options.connectTimeoutMs ?? 1e4,
      idleTimeoutMs: options.idleTimeoutMs ?? 6e4,
      signal: this.abort.signal,
      onEvent: options.onEvent
    });
  }
  /** Opens a stream; returns its id. {@link startStream} returns the whole answer. */
  async start(options = {}) {
    return (await this.startStream(options)).stream_id;
  }
  /** Opens a stream; returns the daemon's answer (`stream_id`, `processor`). */
  startStream(options = {}) {
    const body = options.processor === void 0 ? {} : { processor: options.processor };
    return this.http.call("POST", "/api/stream/start", {
      body: JSON.stringify(body),
      retry: "refused"
    });
  }
  /** Ends a stream: later sends are refused (`stream_ended`); subscribers get every result, then `end`. */
  end(streamId) {
    return this.http.call("DELETE", `/api/stream/${encodeURIComponent(streamId)}`, {
      retry: "idempotent"
    });
  }
  /** One stream: owner, processor, state and counters. */
  describe(streamId) {
    return this.http.call("GET", `/api/stream/${encodeURIComponent(streamId)}`, {
      retry: "idempotent"
    });
  }
  /** The key's streams (all of them for an admin key), newest first. */
  async list() {
    const list = await this.http.call("GET", "/api/streams", { retry: "idempotent" });
    return list.streams;
  }
  /** What `streamctl top` shows. */
  stats() {
    return this.http.call("GET", "/api/stats", { retry: "idempotent" });
  }
  /** One stream token for 1 to 100 of the key's streams (`POST /api/tokens`). */
  token(streams, options = {}) {
    const body = { streams, scope: options.scope ?? ["subscribe"] };
    if (options.ttlS !== void 0) body["ttl_s"] = options.ttlS;
    return this.http.call("POST", "/api/tokens", {
      body: JSON.stringify(body),
      retry: "idempotent"
    });
  }
  /**
   * Sends one record over the connection; resolves once the broker stored it. It carries an
   * idempotency key of its own and is sent again with it after a lost connection (or a
   * `nack` that passes), so it is stored and processed once.
   */
  send(streamId, value, options = {}) {
    const refused = badTraceparent(options.traceparent, streamId);
    if (refused) return Promise.reject(refused);
    return this.connection.send(streamId, value, options.traceparent);
  }
  /**
   * Sends records as one NDJSON request named by an `Idempotency-Key`; resolves once every
   * record is stored. A failure that may pass (no answer, 429, 503 even with `acknowledged`)
   * is tried again with the same key, which the daemon stores and processes once.
   */
  sendBatch(streamId, values, options = {}) {
    const refused = badTraceparent(options.traceparent, streamId);
    if (refused) return Promise.reject(refused);
    const lines = [];
    for (const [i, value] of values.entries()) {
      const line = JSON.stringify(value);
      if (line === void 0) {
        return Promise.reject(
          new StreamgateError("invalid_input", `record ${i + 1} is not JSON`, { streamId, line: i + 1 })
        );
      }
      lines.push(line);
    }
    const headers = { "Idempotency-Key": options.idempotencyKey ?? uuid() };
    if (options.traceparent !== void 0) headers["traceparent"] = options.traceparent;
    const call = {
      body: lines.join("\n") + "\n",
      contentType: "application/x-ndjson",
      headers,
      retry: "idempotent"
    };
    if (options.patienceMs !== void 0) call.patienceMs = options.patienceMs;
    return this.http.call("POST", `/api/stream/${encodeURIComponent(streamId)}/send`, call);
  }
  /**
   * Follows a stream over the connection: replay from `options.from`, then live. Each frame
   * comes once, in order, across reconnects; `gap` frames say what was not delivered; the
   * iterator ends after `end`.
   */
  subscribe(streamId, options = {}) {
    return this.connection.subscribe(streamId, options);
  }
  /** Closes the connection: iterators end, unanswered sends and waiting calls are rejected (`closed`). */
  async close() {
    this.abort.abort();
    await this.connection.close();
  }
};
function badTraceparent(traceparent, streamId) {
  if (traceparent === void 0 || isTraceparent(traceparent)) return void 0;
  const given = typeof traceparent === "string" ? JSON.stringify(traceparent) : `a ${typeof traceparent}`;
  return new StreamgateError(
    "invalid_input",
    `traceparent ${given} is not W3C trace context: write 00-<32 hex trace id>-<16 hex span id>-<2 hex flags>, lowercase, the ids not all zeros (flags 01: sampled)`,
    { streamId }
  );
}

// src/browser.ts
var Client = class extends ClientBase {
  constructor(options) {
    super(options, browserTransport);
  }
};
async function browserTransport() {
  const global = globalThis.WebSocket;
  if (typeof global !== "function") {
    throw new TypeError("no global WebSocket: pass options.WebSocket");
  }
  return standardTransport(global);
}
export {
  Backoff,
  CLOSE_LAGGED,
  CLOSE_TOKEN_EXPIRED,
  Client,
  ERROR_CODES,
  FIRST_BACKOFF_MS,
  MAX_BACKOFF_MS,
  StreamgateError,
  Subscription,
  TRANSIENT_CODES,
  decodeToken,
  isStreamgateError
};
