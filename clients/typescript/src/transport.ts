// Opening the `/api/connect` WebSocket, with either kind of WebSocket there is: the
// standard one (browsers, Node 22's global), which carries the credential in the
// subprotocols, or the `ws` package (Node 20), which carries it in a header and shows why a
// handshake was refused.

import type { Credential } from "./auth.js";
import { errorFromBody, parseRetryAfter, StreamgateError } from "./errors.js";

/** The subprotocol the daemon answers with. */
export const PROTOCOL = "streamgate.v1";

/** What an open socket tells. */
export interface SocketHandlers {
  message(text: string): void;
  /** The daemon closed it, or it broke (not called for a close asked for here). */
  close(code: number, reason: string): void;
  /** The daemon pinged, where the WebSocket shows pings (`ws`). */
  ping(): void;
}

/** An open connection, whichever WebSocket is under it. */
export interface Socket {
  send(text: string): void;
  /** Closes it (the close handler is not called for a close asked for here). */
  close(code?: number, reason?: string): void;
  /**
   * Hands its events to `handlers` from now on, those since it opened first: the daemon may
   * send frames (and close) in the very packet that opened it.
   */
  listen(handlers: SocketHandlers): void;
  /** Whether `ping` is ever called. */
  readonly seesPings: boolean;
}

/** A socket's events, held until someone listens. */
class Events {
  private handlers: SocketHandlers | undefined;
  private readonly early: ((h: SocketHandlers) => void)[] = [];

  emit(event: (h: SocketHandlers) => void): void {
    if (this.handlers) event(this.handlers);
    else this.early.push(event);
  }

  listen(handlers: SocketHandlers): void {
    this.handlers = handlers;
    for (const event of this.early.splice(0)) event(handlers);
  }
}

/** Opens sockets. */
export interface Transport {
  /**
   * Resolves once open; rejects with a StreamgateError: the daemon's answer (with `status`)
   * when the handshake was refused and the WebSocket shows why, else `connection_failed`.
   */
  open(url: string, credential: Credential, timeoutMs: number): Promise<Socket>;
  /** Whether a refused handshake's answer is visible (else the client asks over HTTP). */
  readonly seesRefusals: boolean;
}

/** The standard WebSocket, as far as it is used here. */
export interface StandardWebSocket {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}
export type StandardWebSocketClass = new (url: string, protocols?: string[]) => StandardWebSocket;

/** The `ws` package's WebSocket, as far as it is used here. */
export interface WsSocket {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  terminate(): void;
  on(event: string, listener: (...args: any[]) => void): unknown;
  removeAllListeners(event?: string): unknown;
}
export type WsClass = new (
  url: string,
  protocols: string[],
  options: Record<string, unknown>,
) => WsSocket;

/** Whether a WebSocket class is the `ws` package's (which takes headers). */
export function isWsClass(impl: unknown): impl is WsClass {
  if (typeof impl !== "function") return false;
  const proto = (impl as { prototype?: Record<string, unknown> }).prototype;
  return !!proto && typeof proto["on"] === "function" && typeof proto["terminate"] === "function";
}

/** A transport over whichever class `impl` is. */
export function transportFor(impl: unknown): Transport {
  if (isWsClass(impl)) return wsTransport(impl);
  if (typeof impl === "function") return standardTransport(impl as StandardWebSocketClass);
  throw new TypeError("WebSocket must be a WebSocket class");
}

/** The subprotocols that carry a credential (for WebSockets that cannot set headers). */
export function protocolsFor(credential: Credential): string[] {
  return [
    PROTOCOL,
    credential.kind === "apikey" ? `apikey.${credential.key}` : `token.${credential.token}`,
  ];
}

function textOf(data: unknown): string {
  if (typeof data === "string") return data;
  if (data instanceof ArrayBuffer) return new TextDecoder().decode(data);
  if (ArrayBuffer.isView(data)) return new TextDecoder().decode(data as Uint8Array);
  if (Array.isArray(data)) return data.map(textOf).join("");
  return String(data);
}

/** The standard WebSocket: the credential in the subprotocols. */
export function standardTransport(Impl: StandardWebSocketClass): Transport {
  return {
    seesRefusals: false,
    open(url, credential, timeoutMs) {
      return new Promise<Socket>((resolve, reject) => {
        let ws: StandardWebSocket;
        try {
          ws = new Impl(url, protocolsFor(credential));
        } catch (e) {
          reject(new StreamgateError("connection_failed", `cannot open ${url}: ${String(e)}`, { cause: e }));
          return;
        }
        let settled = false;
        const fail = (why: string) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          ws.onopen = ws.onclose = ws.onerror = ws.onmessage = null;
          try {
            ws.close();
          } catch {
            // not open
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
          const socket: Socket = {
            seesPings: false,
            listen: (handlers) => events.listen(handlers),
            send: (text) => ws.send(text),
            close: (code, reason) => {
              closed = true;
              try {
                ws.close(code ?? 1000, reason);
              } catch {
                ws.close();
              }
            },
          };
          ws.onmessage = (ev) => {
            const text = textOf(ev.data);
            events.emit((h) => h.message(text));
          };
          ws.onerror = () => {};
          ws.onclose = (ev) => {
            if (!closed) events.emit((h) => h.close(ev.code, ev.reason));
          };
          resolve(socket);
        };
      });
    },
  };
}

/** The `ws` package: the credential in a header; a refused handshake's answer is read. */
export function wsTransport(Impl: WsClass): Transport {
  return {
    seesRefusals: true,
    open(url, credential, timeoutMs) {
      return new Promise<Socket>((resolve, reject) => {
        const headers: Record<string, string> =
          credential.kind === "apikey"
            ? { "X-API-Key": credential.key }
            : { Authorization: `Bearer ${credential.token}` };
        let ws: WsSocket;
        try {
          ws = new Impl(url, [PROTOCOL], { headers, handshakeTimeout: timeoutMs });
        } catch (e) {
          reject(new StreamgateError("connection_failed", `cannot open ${url}: ${String(e)}`, { cause: e }));
          return;
        }
        let settled = false;
        const settle = (error: StreamgateError) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          try {
            ws.terminate();
          } catch {
            // already gone
          }
          reject(error);
        };
        const timer = setTimeout(
          () => settle(new StreamgateError("connection_failed", `cannot connect to ${url}: no answer in ${timeoutMs} ms`)),
          timeoutMs + 1000,
        );
        ws.on("error", (e: Error) => {
          settle(new StreamgateError("connection_failed", `cannot connect to ${url}: ${e.message}`, { cause: e }));
        });
        ws.on("unexpected-response", (_req: unknown, res: IncomingMessageLike) => {
          let body = "";
          res.setEncoding?.("utf8");
          res.on("data", (chunk: string) => {
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
          const socket: Socket = {
            seesPings: true,
            listen: (handlers) => events.listen(handlers),
            send: (text) => ws.send(text),
            close: (code, reason) => {
              closed = true;
              try {
                ws.close(code ?? 1000, reason);
              } catch {
                ws.terminate();
              }
              // A peer that does not answer the close is not waited for.
              setTimeout(() => ws.terminate(), 2000).unref?.();
            },
          };
          ws.removeAllListeners("error");
          ws.on("error", () => {}); // a close follows
          ws.on("message", (data: unknown) => {
            const text = textOf(data);
            events.emit((h) => h.message(text));
          });
          ws.on("ping", () => events.emit((h) => h.ping()));
          ws.on("close", (code: number, reason: unknown) => {
            if (closed) return;
            const why = textOf(reason);
            events.emit((h) => h.close(code, why));
          });
          resolve(socket);
        });
      });
    },
  };
}

interface IncomingMessageLike {
  statusCode?: number;
  headers: Record<string, string | string[] | undefined>;
  setEncoding?(encoding: string): void;
  on(event: string, listener: (...args: any[]) => void): unknown;
}

function headerOf(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}
