// How the client authenticates: an API key, a stream token, or a source of stream tokens that
// is asked again shortly before each token expires (and whenever the daemon says one did).

import { StreamgateError } from "./errors.js";
import { decodeToken, now } from "./util.js";

/** Gives a fresh stream token when asked. */
export type TokenSource = () => Promise<string> | string;

/** A credential as presented on one request or connection. */
export type Credential = { kind: "apikey"; key: string } | { kind: "token"; token: string };

interface Cached {
  token: string;
  /** When it stops working, on the `now()` clock; `undefined` when it says nothing. */
  expiresAt?: number;
  /** How long before `expiresAt` a new one is asked for. */
  margin: number;
}

/** Longest margin before a token's expiry at which a new one is asked for. */
const MAX_MARGIN_MS = 30_000;
/** Shortest margin. */
const MIN_MARGIN_MS = 200;

export class Credentials {
  private cached: Cached | undefined;
  private asking: Promise<Cached> | undefined;

  constructor(
    private readonly apiKey: string | undefined,
    private readonly token: string | undefined,
    private readonly source: TokenSource | undefined,
  ) {
    const given = [apiKey, token, source].filter((x) => x !== undefined).length;
    if (given !== 1) {
      throw new TypeError("give exactly one of apiKey, token or getToken");
    }
    if (token !== undefined) this.cached = cache(token);
  }

  /** Whether new tokens can be had (from `getToken`). */
  get refreshable(): boolean {
    return this.source !== undefined;
  }

  /** The credential to use now: the key, or a token that is not about to expire. */
  async get(): Promise<Credential> {
    if (this.apiKey !== undefined) return { kind: "apikey", key: this.apiKey };
    const c = this.cached;
    if (c && (!this.source || c.expiresAt === undefined || now() < c.expiresAt - c.margin)) {
      return { kind: "token", token: c.token };
    }
    return { kind: "token", token: (await this.ask()).token };
  }

  /** A new token from the source (the key, or the one token, when there is none). */
  async fresh(): Promise<Credential> {
    if (!this.source) return this.get();
    return { kind: "token", token: (await this.ask()).token };
  }

  /** The daemon said the token expired: the next `get` asks the source. */
  invalidate(token?: string): void {
    if (!this.source) return;
    if (token === undefined || this.cached?.token === token) this.cached = undefined;
  }

  /** Milliseconds until the current token should be replaced; `undefined`: never. */
  refreshIn(): number | undefined {
    const c = this.cached;
    if (!this.source || !c || c.expiresAt === undefined) return undefined;
    return Math.max(0, c.expiresAt - c.margin - now());
  }

  /** The HTTP headers of a credential. */
  static headers(c: Credential): Record<string, string> {
    return c.kind === "apikey" ? { "X-API-Key": c.key } : { Authorization: `Bearer ${c.token}` };
  }

  private ask(): Promise<Cached> {
    if (!this.asking) {
      const source = this.source!;
      this.asking = (async () => {
        let token: string;
        try {
          token = await source();
        } catch (e) {
          throw new StreamgateError("token_unavailable", `getToken failed: ${String(e)}`, {
            cause: e,
          });
        }
        if (typeof token !== "string" || token === "") {
          throw new StreamgateError("token_unavailable", "getToken gave no token");
        }
        this.cached = cache(token);
        return this.cached;
      })().finally(() => {
        this.asking = undefined;
      });
    }
    return this.asking;
  }
}

/** A token with its expiry read from its payload. */
function cache(token: string): Cached {
  const claims = decodeToken(token);
  if (claims?.exp === undefined) return { token, margin: MIN_MARGIN_MS };
  let remaining = claims.exp * 1000 - Date.now();
  const lifetime =
    claims.iat !== undefined && claims.exp > claims.iat ? (claims.exp - claims.iat) * 1000 : undefined;
  if (lifetime !== undefined) {
    // The daemon's clock says when it expires, and ours may be off either way: a token just
    // given is counted on for no more than its lifetime, and for at least half of it (a clock
    // ahead of the daemon's would otherwise have it renewed at once, again and again; one
    // that did expire is refused, and a new one is asked for).
    remaining = Math.min(Math.max(remaining, lifetime / 2), lifetime);
  } else if (remaining <= 0) {
    // Expired by our clock, which may be wrong: used until the daemon refuses it.
    return { token, margin: MIN_MARGIN_MS };
  }
  const margin = Math.min(MAX_MARGIN_MS, Math.max(MIN_MARGIN_MS, (lifetime ?? remaining) / 4), remaining / 2);
  return { token, expiresAt: now() + remaining, margin };
}
