// A scripted stand-in for the daemon's `/api/connect`: each test says what the daemon sends
// and checks what the client sends, frame by frame, to reach the cases a real daemon shows
// only by chance (lagged, gap, a nack that passes, a 4401, a refused handshake).

import { createServer, type IncomingMessage, type Server } from "node:http";
import type { Duplex } from "node:stream";
import { WebSocketServer, type WebSocket } from "ws";

export interface Refusal {
  status: number;
  body: unknown;
  headers?: Record<string, string>;
}

export class FakeConn {
  private readonly inbox: Record<string, unknown>[] = [];
  private waiter: (() => void) | undefined;
  closed = false;
  closeCode: number | undefined;

  constructor(
    readonly ws: WebSocket,
    readonly request: IncomingMessage,
    readonly openedAt: number,
  ) {
    ws.on("message", (data) => {
      this.inbox.push(JSON.parse(data.toString()) as Record<string, unknown>);
      this.waiter?.();
    });
    ws.on("close", (code) => {
      this.closed = true;
      this.closeCode = code;
      this.waiter?.();
    });
  }

  /** The next frame the client sent (of `type`, when given: others before it fail). */
  async next(type?: string, timeoutMs = 5000): Promise<Record<string, unknown>> {
    const deadline = Date.now() + timeoutMs;
    while (this.inbox.length === 0) {
      if (this.closed) throw new Error(`connection closed while waiting for ${type ?? "a frame"}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no ${type ?? "frame"} from the client in ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.waiter = undefined;
    }
    const frame = this.inbox.shift()!;
    if (type !== undefined && frame["type"] !== type) {
      throw new Error(`expected a ${type} frame, got ${JSON.stringify(frame)}`);
    }
    return frame;
  }

  /** Frames the client sent that were not read yet. */
  get unread(): number {
    return this.inbox.length;
  }

  send(frame: Record<string, unknown>): void {
    this.ws.send(JSON.stringify(frame));
  }

  /** The connection dropped without a goodbye. */
  cut(): void {
    this.ws.terminate();
  }

  close(code: number, reason: string): void {
    this.ws.close(code, reason);
  }
}

export class FakeDaemon {
  private readonly server: Server;
  private readonly wss = new WebSocketServer({ noServer: true });
  private readonly conns: FakeConn[] = [];
  private waiter: (() => void) | undefined;
  /** Handshakes to refuse, in turn, before any is accepted. */
  readonly refusals: Refusal[] = [];
  /** When each handshake came, and its headers. */
  readonly handshakes: { at: number; headers: IncomingMessage["headers"] }[] = [];
  /** Plain HTTP requests (the client's probe of a failed handshake). */
  readonly requests: { method: string; url: string; headers: IncomingMessage["headers"] }[] = [];
  port = 0;
  /** The last refusal, which plain requests get too (as the daemon would answer them). */
  private lastRefusal: Refusal | undefined;

  constructor() {
    this.server = createServer((req, res) => {
      this.requests.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers });
      const refusal = this.lastRefusal;
      const status = refusal ? refusal.status : 400;
      const body = refusal ? refusal.body : { error: { code: "invalid_input", message: "not an upgrade" } };
      res.writeHead(status, { "content-type": "application/json", ...(refusal?.headers ?? {}) });
      res.end(JSON.stringify(body));
    });
    this.server.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      this.handshakes.push({ at: performance.now(), headers: req.headers });
      const refusal = this.refusals.shift();
      if (refusal) {
        this.lastRefusal = refusal;
        const body = JSON.stringify(refusal.body);
        const headers = Object.entries({ "content-type": "application/json", ...(refusal.headers ?? {}) })
          .map(([k, v]) => `${k}: ${v}\r\n`)
          .join("");
        socket.end(
          `HTTP/1.1 ${refusal.status} Refused\r\n${headers}content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
        );
        return;
      }
      this.wss.handleUpgrade(req, socket, head, (ws) => {
        this.conns.push(new FakeConn(ws, req, performance.now()));
        this.waiter?.();
      });
    });
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    const address = this.server.address();
    this.port = typeof address === "object" && address ? address.port : 0;
  }

  /** The `n`-th connection (0-based), once it is open. */
  async connection(n: number, timeoutMs = 10_000): Promise<FakeConn> {
    const deadline = Date.now() + timeoutMs;
    while (this.conns.length <= n) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no connection #${n + 1} in ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.waiter = undefined;
    }
    return this.conns[n]!;
  }

  get connections(): number {
    return this.conns.length;
  }

  async stop(): Promise<void> {
    for (const c of this.conns) c.cut();
    this.wss.close();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
