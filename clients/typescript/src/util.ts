// Small helpers with no I/O: back-off, sleeping, ids, tokens, trace context.

/** First pause after a failure. */
export const FIRST_BACKOFF_MS = 100;
/** Longest pause between two attempts. */
export const MAX_BACKOFF_MS = 5000;

/**
 * The pauses between attempts of one operation: 100 ms doubling to 5 s, each with up to a
 * fifth added at random so clients that failed together do not come back together; or
 * exactly what the daemon asked for (`Retry-After`) when it asked.
 */
export class Backoff {
  private next = FIRST_BACKOFF_MS;

  constructor(
    private readonly first = FIRST_BACKOFF_MS,
    private readonly max = MAX_BACKOFF_MS,
  ) {
    this.next = first;
  }

  /** The pause before the next attempt, in milliseconds. */
  pause(retryAfterMs?: number): number {
    const step = this.next;
    this.next = Math.min(this.next * 2, this.max);
    if (retryAfterMs !== undefined) return retryAfterMs;
    return step + (step * Math.random()) / 5;
  }

  /** After a success: the next failure starts from the first step again. */
  reset(): void {
    this.next = this.first;
  }
}

/** Resolves after at least `ms` milliseconds (never early), or rejects when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const end = now() + ms;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const onAbort = () => {
      if (timer !== undefined) clearTimeout(timer);
      reject(signal?.reason);
    };
    const tick = () => {
      const left = end - now();
      if (left <= 0) {
        signal?.removeEventListener("abort", onAbort);
        resolve();
        return;
      }
      // Timers may fire a little early: wait again for what is left.
      timer = setTimeout(tick, Math.ceil(left));
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    tick();
  });
}

/** A monotonic clock in milliseconds. */
export function now(): number {
  return globalThis.performance ? globalThis.performance.now() : Date.now();
}

interface WebCrypto {
  randomUUID?: () => string;
  getRandomValues?: (array: Uint8Array) => Uint8Array;
}

/**
 * A random (v4) UUID: `crypto.randomUUID` where there is one (it needs a secure context in
 * browsers), else built from `crypto.getRandomValues`.
 */
export function uuid(): string {
  const c = (globalThis as { crypto?: WebCrypto }).crypto;
  if (c && typeof c.randomUUID === "function") return c.randomUUID();
  const bytes = new Uint8Array(16);
  if (c && typeof c.getRandomValues === "function") c.getRandomValues(bytes);
  else for (let i = 0; i < 16; i++) bytes[i] = Math.floor(Math.random() * 256);
  bytes[6] = (bytes[6]! & 0x0f) | 0x40;
  bytes[8] = (bytes[8]! & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** W3C trace context: version `00`, a trace id and a span id (lowercase hex, not all zeros), flags. */
const TRACEPARENT = /^00-(?!0{32}-)[0-9a-f]{32}-(?!0{16}-)[0-9a-f]{16}-[0-9a-f]{2}$/;

/** Whether `value` is a `traceparent` as this client sends it (W3C trace context, version `00`). */
export function isTraceparent(value: unknown): value is string {
  return typeof value === "string" && TRACEPARENT.test(value);
}

/** The claims of a JWT that matter here (the signature is the daemon's business). */
export interface TokenClaims {
  /** Issued at, Unix seconds. */
  iat?: number;
  /** Expires at, Unix seconds. */
  exp?: number;
}

/** Reads a JWT's payload without checking it; `undefined` when it is not a JWT. */
export function decodeToken(token: string): TokenClaims | undefined {
  const parts = token.split(".");
  if (parts.length !== 3) return undefined;
  try {
    let b64 = parts[1]!.replace(/-/g, "+").replace(/_/g, "/");
    while (b64.length % 4 !== 0) b64 += "=";
    const binary = atob(b64);
    const bytes = Uint8Array.from(binary, (ch) => ch.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes)) as Record<string, unknown>;
    const out: TokenClaims = {};
    if (typeof claims["iat"] === "number") out.iat = claims["iat"];
    if (typeof claims["exp"] === "number") out.exp = claims["exp"];
    return out;
  } catch {
    return undefined;
  }
}

/** UTF-8 length of a string, in bytes. */
export function byteLength(text: string): number {
  return new TextEncoder().encode(text).length;
}
