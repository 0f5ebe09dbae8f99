// Test helpers: a daemon (and a tansu broker) per test, free ports, a cutting proxy, waiting
// on conditions, and reading a stream back from the daemon.

import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, closeSync } from "node:fs";
import { createServer, connect, type Server, type Socket } from "node:net";
import { homedir, tmpdir } from "node:os";
import { delimiter, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import type { StreamFrame } from "../src/index.js";

/** clients/typescript (this file is build/test/helpers.js once compiled). */
export const PACKAGE_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
/** The repository. */
export const REPO_ROOT = resolve(PACKAGE_ROOT, "..", "..");

export const KEY = "alice-key-0123456789";

export const STREAMCTL = process.env["STREAMCTL_BIN"] ?? join(REPO_ROOT, "target", "debug", "streamctl");

/** The tansu binary, or `undefined` when there is none. */
export function tansuBin(): string | undefined {
  const env = process.env["TANSU_BIN"];
  if (env) return env;
  for (const dir of (process.env["PATH"] ?? "").split(delimiter)) {
    if (dir && existsSync(join(dir, "tansu"))) return join(dir, "tansu");
  }
  const cargo = join(homedir(), ".cargo", "bin", "tansu");
  return existsSync(cargo) ? cargo : undefined;
}

// Every process started here is ended when the test process ends, whatever happens.
const children = new Set<ChildProcess>();
process.on("exit", () => {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  }
});

/** A port that was free a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolvePort(port));
    });
  });
}

export function sleepMs(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Waits until `condition` holds (checked every `everyMs`), or fails saying `what`. */
export async function waitFor(
  what: string,
  condition: () => boolean | Promise<boolean>,
  timeoutMs = 30_000,
  everyMs = 20,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await condition()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleepMs(everyMs);
  }
}

export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `streamgate-ts-${prefix}-`));
}

/** Waits for a child to exit; SIGKILL after `timeoutMs`. */
function exited(child: ChildProcess, timeoutMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((done) => {
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.once("exit", () => {
      clearTimeout(timer);
      done();
    });
  });
}

export interface DaemonOptions {
  /** `embedded` (the default) or a broker address. */
  brokers?: string;
  /** The `rate_limits` YAML value. */
  rateLimits?: string;
  /** More top-level YAML. */
  extra?: string;
  /** Wait for /readyz (the default). */
  ready?: boolean;
}

/** One `streamctl serve` with a config of its own, on a port of its own. */
export class Daemon {
  child: ChildProcess | undefined;
  readonly dir: string;
  private starts = 0;

  private constructor(
    public port: number,
    readonly options: DaemonOptions,
  ) {
    this.dir = tempDir("daemon");
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  static async start(options: DaemonOptions = {}): Promise<Daemon> {
    for (let attempt = 0; ; attempt++) {
      const daemon = new Daemon(await freePort(), options);
      try {
        await daemon.spawn();
        return daemon;
      } catch (e) {
        await daemon.stop("SIGKILL");
        // Someone took the port between our look and the daemon's bind: another one.
        if (attempt >= 3) throw e;
      }
    }
  }

  config(): string {
    return [
      `listen: 127.0.0.1:${this.port}`,
      `brokers: ${this.options.brokers ?? "embedded"}`,
      `api_keys: [{name: alice, key: ${KEY}}]`,
      `rate_limits: ${this.options.rateLimits ?? "{per_ip: null, per_key: null, per_ip_public: null}"}`,
      `log: {level: warn}`,
      `topics: {partitions: 3}`,
      this.options.extra ?? "",
      "",
    ].join("\n");
  }

  /** Starts it (again, on the same port and broker). */
  async spawn(): Promise<void> {
    this.starts += 1;
    const config = join(this.dir, "config.yaml");
    writeFileSync(config, this.config());
    const log = openSync(join(this.dir, `daemon-${this.starts}.log`), "w");
    const child = spawn(STREAMCTL, ["serve", "--config", config, "--log-format", "json"], {
      stdio: ["ignore", log, log],
      env: { ...process.env, RUST_LOG: "" },
    });
    closeSync(log);
    children.add(child);
    child.once("exit", () => children.delete(child));
    this.child = child;
    await this.waitHealthy(60_000);
    if (this.options.ready ?? true) await this.waitReady(120_000);
  }

  /** GET /healthz answers 200 `ok`. */
  async waitHealthy(timeoutMs: number): Promise<void> {
    const child = this.child!;
    await waitFor(
      `${this.url}/healthz`,
      async () => {
        if (child.exitCode !== null) {
          throw new Error(`streamctl exited with ${child.exitCode}: ${this.log()}`);
        }
        try {
          const resp = await fetch(`${this.url}/healthz`);
          const body = (await resp.json()) as { status?: string };
          return resp.status === 200 && (body.status === "ok" || this.options.ready === false);
        } catch {
          return false;
        }
      },
      timeoutMs,
      50,
    );
  }

  /** The status GET /readyz answers; 0 when there is no answer. */
  async readyz(): Promise<number> {
    try {
      const resp = await fetch(`${this.url}/readyz`);
      await resp.arrayBuffer();
      return resp.status;
    } catch {
      return 0;
    }
  }

  /** GET /readyz answers 200. */
  async waitReady(timeoutMs: number): Promise<void> {
    await waitFor(`${this.url}/readyz`, async () => (await this.readyz()) === 200, timeoutMs, 50);
  }

  /** Stops it with `signal` and waits for it to exit. */
  async stop(signal: NodeJS.Signals = "SIGTERM", timeoutMs = 30_000): Promise<void> {
    const child = this.child;
    if (!child) return;
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    await exited(child, timeoutMs);
  }

  /** Everything the daemon logged (every start). */
  log(): string {
    let text = "";
    for (let i = 1; i <= this.starts; i++) {
      try {
        text += readFileSync(join(this.dir, `daemon-${i}.log`), "utf8");
      } catch {
        // not written
      }
    }
    return text;
  }

  async dispose(): Promise<void> {
    await this.stop("SIGTERM", 15_000);
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A tansu broker with sqlite storage in a directory of its own. */
export class Tansu {
  child: ChildProcess | undefined;
  readonly dir = tempDir("tansu");

  constructor(
    readonly bin: string,
    readonly port: number,
  ) {}

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    const log = openSync(join(this.dir, "tansu.log"), "a");
    const url = `tcp://127.0.0.1:${this.port}`;
    const child = spawn(
      this.bin,
      [
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        `sqlite:///${join(this.dir, "tansu.db")}`,
      ],
      { stdio: ["ignore", log, log] },
    );
    closeSync(log);
    children.add(child);
    child.once("exit", () => children.delete(child));
    this.child = child;
    await waitFor(
      `tansu on ${this.address}`,
      () =>
        new Promise<boolean>((done) => {
          if (child.exitCode !== null) {
            done(false);
            return;
          }
          const s = connect(this.port, "127.0.0.1");
          s.once("connect", () => {
            s.destroy();
            done(true);
          });
          s.once("error", () => done(false));
        }),
      30_000,
      50,
    );
  }

  async stop(): Promise<void> {
    const child = this.child;
    if (!child) return;
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGINT");
    await exited(child, 15_000);
  }

  async dispose(): Promise<void> {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** What a daemon of before `/api/connect` answers to it. */
const NO_CONNECT_BODY = JSON.stringify({ error: { code: "route_not_found", message: "no such route" } });
const NO_CONNECT =
  "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\n" +
  `content-length: ${NO_CONNECT_BODY.length}\r\nconnection: close\r\n\r\n${NO_CONNECT_BODY}`;

/**
 * A TCP proxy in front of a port that can cut every connection through it, and first hold
 * back what the daemon answers, so that a cut surely loses answers the daemon sent. With
 * `noConnect`, a connection whose first request is `GET /api/connect` is answered 404, as a
 * daemon without it would (a WebSocket handshake always comes on a connection of its own).
 */
export class CuttingProxy {
  private readonly sockets = new Set<Socket>();
  private server: Server | undefined;
  /** Answers held back (daemon → client) since `hold()`, as text. */
  private held: string | undefined;
  port = 0;
  cuts = 0;

  /** `/api/connect` handshakes answered 404 (with `noConnect`). */
  refusedConnects = 0;

  constructor(
    readonly target: number,
    readonly options: { noConnect?: boolean } = {},
  ) {}

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    this.server = createServer((client) => {
      this.sockets.add(client);
      client.on("error", () => {});
      client.once("close", () => this.sockets.delete(client));
      client.once("data", (first: Buffer) => {
        if (this.options.noConnect && /^GET \/api\/connect[ ?]/.test(first.toString("latin1", 0, 32))) {
          this.refusedConnects += 1;
          client.end(NO_CONNECT);
          return;
        }
        const upstream = connect(this.target, "127.0.0.1");
        for (const s of [client, upstream]) {
          this.sockets.add(s);
          s.on("error", () => {});
          s.once("close", () => {
            this.sockets.delete(s);
            client.destroy();
            upstream.destroy();
          });
        }
        upstream.write(first);
        client.pipe(upstream);
        upstream.on("data", (chunk: Buffer) => {
          if (this.held === undefined) client.write(chunk);
          else this.held += chunk.toString("latin1");
        });
      });
    });
    await new Promise<void>((done) => this.server!.listen(0, "127.0.0.1", done));
    const address = this.server.address();
    this.port = typeof address === "object" && address ? address.port : 0;
  }

  /** From now on what the daemon sends is not passed on, until the next `cut()`. */
  hold(): void {
    this.held = "";
  }

  /** How often `text` occurs in what was held back (WebSocket frames from a server are not masked). */
  heldCount(text: string): number {
    return this.held === undefined ? 0 : this.held.split(text).length - 1;
  }

  /** Cuts every open connection (a reset, no goodbye); what was held back is lost. */
  cut(): void {
    this.cuts += 1;
    this.held = undefined;
    // A socket still connecting or already shutting down (the other side ended) is destroyed:
    // a reset is refused on a shutting-down handle, which Node then leaks, and a test process
    // with a leaked handle spins when it exits.
    for (const s of this.sockets) {
      if (s.connecting || s.writableEnded) s.destroy();
      else s.resetAndDestroy();
    }
    this.sockets.clear();
  }

  async stop(): Promise<void> {
    this.cut();
    await new Promise<void>((done) => (this.server ? this.server.close(() => done()) : done()));
  }
}

export interface Replayed {
  type: string;
  data: unknown;
  cursor?: number;
}

/**
 * Reads a stream back from the daemon: `GET /api/stream/{id}/results?from=earliest&until=now`
 * as Server-Sent Events, every frame until the `close` event.
 */
export async function replay(url: string, id: string): Promise<Replayed[]> {
  const resp = await fetch(`${url}/api/stream/${id}/results?from=earliest&until=now`, {
    headers: { "X-API-Key": KEY, Accept: "text/event-stream" },
  });
  if (resp.status !== 200) throw new Error(`replay: HTTP ${resp.status}: ${await resp.text()}`);
  const text = await resp.text();
  const frames: Replayed[] = [];
  for (const block of text.split(/\n\n+/)) {
    let event = "message";
    const data: string[] = [];
    for (const line of block.split("\n")) {
      if (line.startsWith("event:")) event = line.slice(6).trim();
      else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
    }
    if (data.length === 0 || event === "close") continue;
    const frame = JSON.parse(data.join("\n")) as { type?: string; data?: unknown; cursor?: number };
    const r: Replayed = { type: frame.type ?? event, data: frame.data };
    if (frame.cursor !== undefined) r.cursor = frame.cursor;
    frames.push(r);
  }
  return frames;
}

/**
 * The stream's stored frames once its `end` is among them: `end` follows every result, and a
 * stream just ended may still have records in processing.
 */
export async function replayEnded(url: string, id: string, timeoutMs = 30_000): Promise<Replayed[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const frames = await replay(url, id);
    if (frames.some((f) => f.type === "end")) return frames;
    if (Date.now() > deadline) throw new Error(`replay: no end frame for ${id} within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** A `fetch` that writes down every request and its answer. */
export interface Logged {
  at: number;
  method: string;
  url: string;
  status: number;
  retryAfter: number | undefined;
  answeredAt: number;
}

export function loggingFetch(log: Logged[]): (input: string, init: RequestInit) => Promise<Response> {
  return async (input, init) => {
    const at = performance.now();
    const resp = await fetch(input, init);
    const retryAfter = resp.headers.get("retry-after");
    log.push({
      at,
      method: init.method ?? "GET",
      url: input,
      status: resp.status,
      retryAfter: retryAfter === null ? undefined : Number(retryAfter),
      answeredAt: performance.now(),
    });
    return resp;
  };
}

/** The cursor a frame stands at (a gap: its first skipped result). */
export function cursorOf(frame: StreamFrame): number {
  return frame.type === "gap" ? frame.from_cursor : frame.cursor;
}

/**
 * A WebSocket class that behaves as a browser's (no `on`/`terminate`: the client puts the
 * credential in the subprotocols), over the `ws` package.
 */
export async function standardWebSocket(): Promise<new (url: string, protocols?: string[]) => unknown> {
  const { WebSocket } = await import("ws");
  return class StandardWebSocket {
    constructor(url: string, protocols?: string[]) {
      return new WebSocket(url, protocols);
    }
  };
}
