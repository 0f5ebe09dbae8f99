// What can go wrong, typed by the daemon's own error codes.

import type { AnyErrorCode, ErrorCode, ErrorObject, Violation } from "./wire.js";

/**
 * Codes of failures found by the client itself, not answered by the daemon:
 * - `closed`: the client was closed (or the subscription was);
 * - `connection_failed`: the daemon could not be reached (within the patience, for HTTP);
 * - `unreadable`: the daemon answered something this client cannot read;
 * - `token_unavailable`: `getToken` failed;
 * - `http_error`: an HTTP error whose body is not the daemon's (from a proxy, say).
 */
export type ClientErrorCode =
  | "closed"
  | "connection_failed"
  | "unreadable"
  | "token_unavailable"
  | "http_error";

/** Codes of answers that mean "try again later": the daemon is busy, starting, stopping or its broker is away. */
export const TRANSIENT_CODES: readonly ErrorCode[] = [
  "rate_limited",
  "backlog_full",
  "not_ready",
  "shutting_down",
  "broker_unavailable",
  "too_many_connections",
  "idempotency_key_in_flight",
];

export interface ErrorDetails {
  /** The HTTP status, for an HTTP answer. */
  status?: number;
  /** `Retry-After`, in seconds, as the daemon sent it. */
  retryAfter?: number;
  /** How many leading records of a batch were stored (503 `broker_unavailable`). */
  acknowledged?: number;
  /** The 1-based line of a refused NDJSON batch. */
  line?: number;
  /** For `schema_violation`: where each record does not match its stream's schema. */
  violations?: Violation[];
  /** The stream the error is about (a `nack`, a `refused` subscription). */
  streamId?: string;
  cause?: unknown;
}

/** An error the daemon answered (HTTP, `nack`, `refused`), or a failure to reach it. */
export class StreamgateError extends Error {
  override readonly name = "StreamgateError";
  /** The daemon's code ({@link ErrorCode}), or the client's own ({@link ClientErrorCode}). */
  readonly code: AnyErrorCode | ClientErrorCode;
  readonly status?: number;
  /** `Retry-After` in seconds. */
  readonly retryAfter?: number;
  readonly acknowledged?: number;
  readonly line?: number;
  readonly violations?: Violation[];
  readonly streamId?: string;

  constructor(code: AnyErrorCode | ClientErrorCode, message: string, details: ErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.code = code;
    if (details.status !== undefined) this.status = details.status;
    if (details.retryAfter !== undefined) this.retryAfter = details.retryAfter;
    if (details.acknowledged !== undefined) this.acknowledged = details.acknowledged;
    if (details.line !== undefined) this.line = details.line;
    if (details.violations !== undefined) this.violations = details.violations;
    if (details.streamId !== undefined) this.streamId = details.streamId;
  }

  /** `Retry-After` in milliseconds. */
  get retryAfterMs(): number | undefined {
    return this.retryAfter === undefined ? undefined : this.retryAfter * 1000;
  }

  /** Whether trying again later may succeed. */
  get transient(): boolean {
    return (
      (TRANSIENT_CODES as readonly string[]).includes(this.code) || this.code === "connection_failed"
    );
  }

  /** An error object of the wire (a `nack`, a `refused` frame, an HTTP body) as an error. */
  static fromObject(error: ErrorObject, details: ErrorDetails = {}): StreamgateError {
    const extra: ErrorDetails = { ...details };
    if (typeof error.acknowledged === "number") extra.acknowledged = error.acknowledged;
    if (typeof error.line === "number") extra.line = error.line;
    if (Array.isArray(error.violations)) extra.violations = error.violations;
    const status = details.status === undefined ? "" : ` (HTTP ${details.status})`;
    return new StreamgateError(error.code, `${error.code}: ${error.message}${status}`, extra);
  }
}

/** Whether `e` is a {@link StreamgateError}, optionally with one of `codes`. */
export function isStreamgateError(
  e: unknown,
  ...codes: (AnyErrorCode | ClientErrorCode)[]
): e is StreamgateError {
  return e instanceof StreamgateError && (codes.length === 0 || codes.includes(e.code));
}

/** `Retry-After` in seconds: whole seconds, or an HTTP date. */
export function parseRetryAfter(value: string | null | undefined): number | undefined {
  if (value === null || value === undefined || value.trim() === "") return undefined;
  const text = value.trim();
  if (/^\d+(\.\d+)?$/.test(text)) return Number(text);
  const at = Date.parse(text);
  if (Number.isNaN(at)) return undefined;
  return Math.max(0, (at - Date.now()) / 1000);
}

/** The daemon's error body (or whatever came instead, from a proxy say) as an error. */
export function errorFromBody(
  status: number,
  text: string,
  retryAfter: number | undefined,
): StreamgateError {
  const details: ErrorDetails = { status };
  if (retryAfter !== undefined) details.retryAfter = retryAfter;
  try {
    const body = JSON.parse(text) as { error?: ErrorObject };
    if (body && typeof body === "object" && body.error && typeof body.error.code === "string") {
      return StreamgateError.fromObject(body.error, details);
    }
  } catch {
    // not the daemon's JSON
  }
  const snippet = text.length > 200 ? text.slice(0, 200) + "…" : text;
  return new StreamgateError("http_error", `HTTP ${status}: ${snippet}`, details);
}

/**
 * Whether a refused WebSocket handshake will not pass by itself: a 4xx but 408 and 429,
 * and for 401/403 unless it is a token that a new one from `getToken` may replace.
 */
export function refusedForGood(error: StreamgateError, renewable: boolean): boolean {
  if (error.status === undefined) return false;
  if (error.status === 401 || error.status === 403) {
    return !(renewable && (error.code === "token_expired" || error.code === "invalid_token"));
  }
  return error.status >= 400 && error.status < 500 && error.status !== 408 && error.status !== 429;
}
