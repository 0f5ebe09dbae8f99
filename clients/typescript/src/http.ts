// One HTTP helper for every call: the base URL, the credential on every request, the
// daemon's JSON errors as StreamgateError, and patience: over a rate limit, while the daemon
// starts or its broker is away, it waits as `Retry-After` says (else backs off) and tries
// again, for at most `patienceMs` in all. It never retries without waiting.

import { Credentials } from "./auth.js";
import { errorFromBody, parseRetryAfter, StreamgateError } from "./errors.js";
import type { AnyErrorCode } from "./wire.js";
import { Backoff, now, sleep } from "./util.js";

/** `fetch` as the platform has it (injectable, for tests or instrumentation). */
export type FetchLike = (input: string, init: RequestInit) => Promise<Response>;

/**
 * Which failures a call may try again:
 * - `none`: none;
 * - `refused`: only answers that say nothing was done (429, 503 `not_ready`/`shutting_down`,
 *   a connection refused): for calls that must not be done twice (`start`);
 * - `idempotent`: any 429 or 503, `idempotency_key_in_flight`, and a request whose answer
 *   was lost: for reads, `end`, tokens, and sends with an `Idempotency-Key`.
 */
export type RetryPolicy = "none" | "refused" | "idempotent";

/** Called each time a call waits before trying again. */
export type WaitNotice = (wait: {
  method: string;
  path: string;
  code: AnyErrorCode;
  status?: number;
  waitMs: number;
}) => void;

export interface CallOptions {
  body?: string;
  contentType?: string;
  headers?: Record<string, string>;
  retry: RetryPolicy;
  /** Overrides the client's patience for this call. */
  patienceMs?: number;
}

export interface HttpSettings {
  base: string;
  credentials: Credentials;
  fetch: FetchLike;
  patienceMs: number;
  requestTimeoutMs: number;
  signal: AbortSignal;
  onWait?: WaitNotice | undefined;
}

/** A raw answer of one request. */
export interface Answer {
  status: number;
  headers: Headers;
  text: string;
}

export class Http {
  constructor(private readonly s: HttpSettings) {}

  url(path: string): string {
    return this.s.base + path;
  }

  /** Sends a request and returns the body of a success, or throws the daemon's error. */
  async call<T>(method: string, path: string, opts: CallOptions): Promise<T> {
    const deadline = now() + (opts.patienceMs ?? this.s.patienceMs);
    const backoff = new Backoff();
    let renewed = false;
    for (;;) {
      let error: StreamgateError;
      let mayRetry: boolean;
      const credential = await this.s.credentials.get();
      try {
        const answer = await this.once(method, path, opts, Credentials.headers(credential));
        if (answer.status >= 200 && answer.status < 300) return parse<T>(answer, this.url(path));
        error = errorFromBody(
          answer.status,
          answer.text,
          parseRetryAfter(answer.headers.get("retry-after")),
        );
        if (
          answer.status === 401 &&
          error.code === "token_expired" &&
          credential.kind === "token" &&
          this.s.credentials.refreshable &&
          !renewed
        ) {
          // The token ran out between the check and the answer: once more with a new one.
          this.s.credentials.invalidate(credential.token);
          renewed = true;
          continue;
        }
        mayRetry = retryableAnswer(answer.status, error.code, opts.retry);
      } catch (e) {
        if (!(e instanceof StreamgateError) || e.code !== "connection_failed") throw e;
        error = e;
        mayRetry =
          opts.retry === "idempotent" || (opts.retry === "refused" && nothingSent(e.cause));
      }
      if (!mayRetry) throw error;
      const waitMs = backoff.pause(error.retryAfterMs);
      if (now() + waitMs > deadline) throw error;
      const notice: Parameters<WaitNotice>[0] = { method, path, code: error.code, waitMs };
      if (error.status !== undefined) notice.status = error.status;
      this.s.onWait?.(notice);
      await this.sleep(waitMs);
    }
  }

  /** One request, no retry; throws `connection_failed` when no answer came. */
  async once(
    method: string,
    path: string,
    opts: Pick<CallOptions, "body" | "contentType" | "headers">,
    auth: Record<string, string>,
  ): Promise<Answer> {
    if (this.s.signal.aborted) throw closedError();
    const headers: Record<string, string> = { Accept: "application/json", ...auth, ...opts.headers };
    if (opts.body !== undefined) headers["Content-Type"] = opts.contentType ?? "application/json";
    const abort = new AbortController();
    const onClose = () => abort.abort();
    this.s.signal.addEventListener("abort", onClose, { once: true });
    const timer = setTimeout(() => abort.abort(), this.s.requestTimeoutMs);
    try {
      const init: RequestInit = { method, headers, signal: abort.signal };
      if (opts.body !== undefined) init.body = opts.body;
      const resp = await this.s.fetch(this.url(path), init);
      const text = await resp.text();
      return { status: resp.status, headers: resp.headers, text };
    } catch (e) {
      if (this.s.signal.aborted) throw closedError();
      const why = abort.signal.aborted ? `no answer in ${this.s.requestTimeoutMs} ms` : describe(e);
      throw new StreamgateError(
        "connection_failed",
        `${method} ${this.url(path)} failed: ${why}`,
        { cause: e },
      );
    } finally {
      clearTimeout(timer);
      this.s.signal.removeEventListener("abort", onClose);
    }
  }

  private async sleep(ms: number): Promise<void> {
    try {
      await sleep(ms, this.s.signal);
    } catch {
      throw closedError();
    }
  }
}

/** Whether an error answer may be tried again under `policy`. */
function retryableAnswer(status: number, code: string, policy: RetryPolicy): boolean {
  if (policy === "none") return false;
  if (status === 429) return true;
  if (status === 503) {
    return (
      policy === "idempotent" ||
      code === "not_ready" ||
      code === "shutting_down" ||
      code === "too_many_connections"
    );
  }
  return policy === "idempotent" && status === 409 && code === "idempotency_key_in_flight";
}

/** Whether a failed request surely never reached the daemon (its connection was refused). */
function nothingSent(cause: unknown): boolean {
  let e: unknown = cause;
  for (let depth = 0; e && typeof e === "object" && depth < 4; depth++) {
    const code = (e as { code?: unknown }).code;
    if (code === "ECONNREFUSED") return true;
    e = (e as { cause?: unknown }).cause;
  }
  return false;
}

function describe(e: unknown): string {
  const parts: string[] = [];
  let cur: unknown = e;
  for (let depth = 0; cur && depth < 4; depth++) {
    if (cur instanceof Error) parts.push(cur.message);
    else parts.push(String(cur));
    cur = (cur as { cause?: unknown }).cause;
  }
  return parts.join(": ");
}

function parse<T>(answer: Answer, url: string): T {
  if (answer.text.trim() === "") return undefined as T;
  try {
    return JSON.parse(answer.text) as T;
  } catch (e) {
    throw new StreamgateError("unreadable", `unreadable answer from ${url}: ${String(e)}`, {
      status: answer.status,
      cause: e,
    });
  }
}

export function closedError(): StreamgateError {
  return new StreamgateError("closed", "the client is closed");
}
