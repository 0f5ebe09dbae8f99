// One stream followed: an async iterator of its frames, fed by the connection.

import type { StreamFrame } from "./wire.js";

/** What the connection is told by a subscription. */
export interface SubscriptionHooks {
  /** The consumer took a frame; `queued` are left. */
  read(queued: number): void;
  /** The consumer stopped (`break`, `return()`, `close()`). */
  stop(): void;
}

interface Waiter {
  resolve(result: IteratorResult<StreamFrame>): void;
  reject(error: unknown): void;
}

/**
 * The frames of one stream (`result`, `error`, `gap`, `end`), each once, in order, across
 * reconnects. Iterate it with `for await`; it ends after `end` (or `caught_up` with
 * `untilNow`), and throws a StreamgateError when the subscription is refused.
 */
export class Subscription implements AsyncIterableIterator<StreamFrame> {
  private readonly queue: StreamFrame[] = [];
  private readonly waiters: Waiter[] = [];
  private finished = false;
  private failure: unknown = undefined;
  private stopped = false;

  /** @internal */
  constructor(
    /** The stream followed. */
    readonly streamId: string,
    private readonly hooks: SubscriptionHooks,
  ) {}

  /** Frames received and not read yet. */
  get queued(): number {
    return this.queue.length;
  }

  /** Whether nothing more will come. */
  get done(): boolean {
    return this.finished && this.queue.length === 0;
  }

  /** @internal A frame for the consumer. */
  push(frame: StreamFrame): void {
    if (this.finished) return;
    const waiter = this.waiters.shift();
    if (waiter) waiter.resolve({ value: frame, done: false });
    else this.queue.push(frame);
  }

  /** @internal Nothing follows what was pushed. */
  finish(): void {
    if (this.finished) return;
    this.finished = true;
    if (this.queue.length === 0) this.flushDone();
  }

  /** @internal The subscription failed: `error` is thrown once what was pushed is read. */
  fail(error: unknown): void {
    if (this.finished) return;
    this.failure = error;
    this.finished = true;
    if (this.queue.length === 0) this.flushDone();
  }

  next(): Promise<IteratorResult<StreamFrame>> {
    const frame = this.queue.shift();
    if (frame !== undefined) {
      if (!this.finished) this.hooks.read(this.queue.length);
      return Promise.resolve({ value: frame, done: false });
    }
    if (this.finished) {
      if (this.failure !== undefined) {
        const failure = this.failure;
        this.failure = undefined;
        return Promise.reject(failure);
      }
      return Promise.resolve({ value: undefined, done: true });
    }
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  /** Stops following the stream (what `break` in a `for await` does). */
  return(): Promise<IteratorResult<StreamFrame>> {
    this.stop();
    return Promise.resolve({ value: undefined, done: true });
  }

  /** Stops following the stream. */
  async close(): Promise<void> {
    this.stop();
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<StreamFrame> {
    return this;
  }

  private stop(): void {
    if (!this.stopped && !this.finished) this.hooks.stop();
    this.stopped = true;
    this.queue.length = 0;
    this.failure = undefined;
    this.finished = true;
    this.flushDone();
  }

  private flushDone(): void {
    for (const waiter of this.waiters.splice(0)) {
      if (this.failure !== undefined) {
        const failure = this.failure;
        this.failure = undefined;
        waiter.reject(failure);
      } else {
        waiter.resolve({ value: undefined, done: true });
      }
    }
  }
}
