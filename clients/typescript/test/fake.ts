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

/** What the fake answers a `POST /api/stream/{id}/send`: an answer, or `"cut"` (no answer, the connection reset). */
export type SendAnswer = Refusal | "cut";

/** A `POST /api/stream/{id}/send` the client made. */
export interface SentRecord {
  at: number;
  streamId: string;
  key: string | undefined;
  contentType: string | undefined;
  authorization: string | undefined;
  traceparent: string | undefined;
  body: string;
}

/**
 * A daemon of before `/api/connect` (its handshake and a GET of it answer 404): each stream's
 * results on a WebSocket of its own (`/api/stream/{id}/results`, scripted by the test as a
 * FakeConn), records by `POST /api/stream/{id}/send` (answered as the test says, else 202),
 * and `GET /api/stream/{id}` (200, or as the test says).
 */
export class FakeLegacyDaemon {
  private readonly server: Server;
  private readonly wss = new WebSocketServer({ noServer: true });
  private readonly sockets = new Map<string, FakeConn[]>();
  private readonly all: FakeConn[] = [];
  /** `/api/connect` handshakes (each answered 404). */
  connectHandshakes = 0;
  /** Plain requests: method and URL. */
  readonly requests: { method: string; url: string }[] = [];
  /** Results handshakes to refuse, per stream, in turn. */
  readonly refusals = new Map<string, Refusal[]>();
  /** Answers to sends, per stream, in turn (then 202). */
  readonly answers = new Map<string, SendAnswer[]>();
  /** What `GET /api/stream/{id}` answers, per stream (else 200). */
  readonly descriptions = new Map<string, Refusal>();
  readonly sent: SentRecord[] = [];
  private offset = 0;
  port = 0;

  constructor() {
    this.server = createServer((req, res) => {
      const url = new URL(req.url ?? "/", "http://fake");
      this.requests.push({ method: req.method ?? "", url: req.url ?? "" });
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        const answer = (a: Refusal) => {
          res.writeHead(a.status, { "content-type": "application/json", ...(a.headers ?? {}) });
          res.end(JSON.stringify(a.body));
        };
        const send = /^\/api\/stream\/([^/]+)\/send$/.exec(url.pathname);
        const stream = /^\/api\/stream\/([^/]+)$/.exec(url.pathname);
        if (req.method === "POST" && send) {
          const streamId = decodeURIComponent(send[1]!);
          this.sent.push({
            at: performance.now(),
            streamId,
            key: header(req.headers["idempotency-key"]),
            contentType: header(req.headers["content-type"]),
            authorization: header(req.headers["authorization"]),
            traceparent: header(req.headers["traceparent"]),
            body: Buffer.concat(chunks).toString(),
          });
          const scripted = this.answers.get(streamId)?.shift();
          if (scripted === "cut") {
            req.socket.resetAndDestroy();
            return;
          }
          answer(scripted ?? { status: 202, body: { stream_id: streamId, records: 1, partition: 0, offsets: [this.offset++] } });
        } else if (req.method === "GET" && stream) {
          answer(this.descriptions.get(decodeURIComponent(stream[1]!)) ?? { status: 200, body: { stream_id: stream[1] } });
        } else {
          answer({ status: 404, body: { error: { code: "route_not_found", message: "no such route" } } });
        }
      });
    });
    this.server.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      const url = new URL(req.url ?? "/", "http://fake");
      const results = /^\/api\/stream\/([^/]+)\/results$/.exec(url.pathname);
      const refuse = (r: Refusal) => {
        const body = JSON.stringify(r.body);
        const headers = Object.entries({ "content-type": "application/json", ...(r.headers ?? {}) })
          .map(([k, v]) => `${k}: ${v}\r\n`)
          .join("");
        socket.end(
          `HTTP/1.1 ${r.status} Refused\r\n${headers}content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
        );
      };
      if (!results) {
        if (url.pathname === "/api/connect") this.connectHandshakes += 1;
        refuse({ status: 404, body: { error: { code: "route_not_found", message: "no such route" } } });
        return;
      }
      const streamId = decodeURIComponent(results[1]!);
      const refusal = this.refusals.get(streamId)?.shift();
      if (refusal) {
        refuse(refusal);
        return;
      }
      this.wss.handleUpgrade(req, socket, head, (ws) => {
        const conn = new FakeConn(ws, req, performance.now());
        this.all.push(conn);
        this.sockets.set(streamId, [...(this.sockets.get(streamId) ?? []), conn]);
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

  /** How many results sockets of the stream were opened. */
  opened(streamId: string): number {
    return this.sockets.get(streamId)?.length ?? 0;
  }

  /** The stream's `n`-th results socket (0-based), once it is open. */
  async socket(streamId: string, n: number, timeoutMs = 10_000): Promise<FakeConn> {
    const deadline = Date.now() + timeoutMs;
    while (this.opened(streamId) <= n) {
      if (Date.now() > deadline) throw new Error(`no results socket #${n + 1} of ${streamId} in ${timeoutMs} ms`);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    return this.sockets.get(streamId)![n]!;
  }

  /** The `from` (and the other parameters) a results socket was opened with. */
  static query(conn: FakeConn): Record<string, string> {
    return Object.fromEntries(new URL(conn.request.url ?? "/", "http://fake").searchParams);
  }

  async stop(): Promise<void> {
    for (const c of this.all) c.cut();
    this.wss.close();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

function header(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}
