// Every shape that crosses the wire, as the daemon writes it (its `wire` crate:
// clients/rust/wire/src/lib.rs). Nothing here does I/O.

/**
 * Every error `code` this version knows, in the daemon's order. `test/codes.test.ts` checks
 * that it equals `components.schemas.ErrorCode.enum` of docs/openapi.json, so the two
 * cannot drift.
 */
export const ERROR_CODES = [
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
  "processing_failed",
] as const;

/** The stable, machine-readable `code` of every error the daemon answers. */
export type ErrorCode = (typeof ERROR_CODES)[number];

/**
 * A code as read from the wire: one of {@link ErrorCode}, or a code from a newer daemon (or
 * a proxy) that this version does not know.
 */
export type AnyErrorCode = ErrorCode | (string & {});

/** What went wrong: in HTTP error bodies (`{"error": ...}`), `nack`, `refused` and `error` frames. */
export interface ErrorObject {
  code: AnyErrorCode;
  message: string;
  /** For `broker_unavailable` on a batch: how many leading records were stored. */
  acknowledged?: number | null;
  /** For a refused NDJSON batch: the 1-based line of the record that was refused. */
  line?: number | null;
  /** For `schema_violation`: each way a record does not match its stream's schema. */
  violations?: Violation[];
}

/** One way a record does not match its stream's JSON Schema. */
export interface Violation {
  /** The record's NDJSON line (1-based); absent for one record. */
  line?: number;
  /** Where in the record, as a JSON pointer (`""`: the record itself). */
  pointer: string;
  /** The schema keyword that failed (`type`, `required`, `minimum`, `pattern`, ...). */
  keyword: string;
  /** What was expected, in words. */
  message: string;
}

export interface ErrorBody {
  error: ErrorObject;
}

// ---------------------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------------------

/** What the processing stage produced for one input record. */
export interface Outcome {
  /** The frame's offset in the results topic: resume after it with `from = cursor + 1`. */
  cursor: number;
  stream_id: string;
  /** Where the input record is in the input topic. */
  input_partition: number;
  input_offset: number;
  /** When the daemon accepted the input record (ms since the Unix epoch). */
  received_ms: number;
  /** When it was processed. */
  processed_ms: number;
  /** The idempotency key the input record was sent with, if any. */
  idempotency_key?: string;
  /** A traced record's result: W3C trace context of the span that processed it. */
  traceparent?: string;
}

/** A processed record's result (a record may have zero or many). */
export interface ResultFrame extends Outcome {
  type: "result";
  /** The result; `null` is a result too. */
  data: unknown;
}

/** Processing failed for one input record; the stream goes on. */
export interface ErrorFrame extends Outcome {
  type: "error";
  /** Its code is `processing_failed`. */
  error: ErrorObject;
}

/** The stream ended: every result before it was delivered, nothing follows. */
export interface EndFrame extends Outcome {
  type: "end";
}

/** Results that were not delivered (an `on_lag: "skip"` subscriber read too slowly). */
export interface GapFrame {
  type: "gap";
  stream_id: string;
  /** The first skipped result: subscribing `from` it replays what was skipped. */
  from_cursor: number;
  skipped: number;
}

/** What a subscription yields. */
export type StreamFrame = ResultFrame | ErrorFrame | GapFrame | EndFrame;

/** The answer to a record sent: it is stored at `offset` of the input topic. */
export interface Ack {
  stream_id: string;
  /** The client's number of the record on the connection that got the answer. */
  seq: number;
  /**
   * Where the record is in the input topic; `-1` for a repeat (`replayed`) when the instance
   * that answered does not know where the first one was stored.
   */
  offset: number;
  /** `true`: the record's idempotency key was sent before; nothing new was stored. */
  replayed?: boolean;
}

export interface AckFrame extends Ack {
  type: "ack";
}

export interface NackFrame {
  type: "nack";
  stream_id?: string;
  seq: number;
  error: ErrorObject;
}

export interface SubscribedFrame {
  type: "subscribed";
  stream_id: string;
}

export interface RefusedFrame {
  type: "refused";
  stream_id: string;
  error?: ErrorObject;
}

export interface UnsubscribedFrame {
  type: "unsubscribed";
  stream_id: string;
  /** Present when the daemon ended the subscription (subscribe again from the last cursor + 1). */
  error?: ErrorObject;
}

export interface LaggedFrame {
  type: "lagged";
  stream_id: string;
  /** Every result before this cursor was delivered. */
  resume_from: number;
}

export interface CaughtUpFrame {
  type: "caught_up";
  stream_id: string;
}

export interface InvalidFrame {
  type: "invalid";
  error: ErrorObject;
}

/** Every frame the daemon sends on `/api/connect`. */
export type DaemonFrame =
  | StreamFrame
  | AckFrame
  | NackFrame
  | SubscribedFrame
  | RefusedFrame
  | UnsubscribedFrame
  | LaggedFrame
  | CaughtUpFrame
  | InvalidFrame;

/** Where a subscription starts: `latest`, `earliest`, a cursor (0 or more), or `-N` for the last N results. */
export type StartFrom = "latest" | "earliest" | number;

/** What happens to a subscriber that falls `limits.subscriber_queue` results behind. */
export type LagPolicy = "close" | "skip";

/** Every frame a client sends on `/api/connect`. */
export type ClientFrame =
  | { type: "subscribe"; stream_id: string; from?: StartFrom; on_lag?: LagPolicy; until?: "now" }
  | { type: "unsubscribe"; stream_id: string }
  | {
      type: "send";
      stream_id: string;
      seq: number;
      data: unknown;
      idempotency_key?: string;
      traceparent?: string;
    };

/** Close code of a connection whose stream token expired. */
export const CLOSE_TOKEN_EXPIRED = 4401;
/** Close code of a single-stream socket whose subscriber fell behind. */
export const CLOSE_LAGGED = 4008;

// ---------------------------------------------------------------------------------------
// HTTP bodies
// ---------------------------------------------------------------------------------------

/** What a stream token allows. */
export type Scope = "send" | "subscribe";

/** The processor of a stream. */
export type ProcessorSpec =
  | { type: "jq"; filter: string }
  | { type: "identity" }
  | { type: "uppercase" }
  | {
      type: "window";
      length_ms: number;
      value: string;
      group_by?: string | null;
      grace_ms?: number;
    };

/** A processor by name (`identity`, `uppercase`) or as a full spec. */
export type ProcessorArg = "identity" | "uppercase" | ProcessorSpec;

/** `201` answer of `POST /api/stream/start`. */
export interface Started {
  stream_id: string;
  processor: ProcessorSpec;
}

/** `201` answer of `POST /api/tokens` (and `POST /api/stream/{id}/tokens`). */
export interface TokenIssued {
  token: string;
  stream_id?: string | null;
  streams: string[];
  scope: Scope[];
  /** Unix time (seconds) at which it stops working, open connections included. */
  expires_at: number;
}

/** `202` answer of `POST /api/stream/{id}/send`: every record is stored. */
export interface Accepted {
  stream_id: string;
  records: number;
  partition: number;
  offsets: number[];
  /** `true`: this `Idempotency-Key` was sent before with the same body; nothing new was stored. */
  replayed?: boolean;
}

export type StreamState = "open" | "ended";

/** One stream as `GET /api/stream/{id}` shows it (the counters are that instance's). */
export interface StreamView {
  stream_id: string;
  owner: string;
  processor: ProcessorSpec;
  state: StreamState;
  created_ms: number;
  ended_ms?: number | null;
  records_in: number;
  records_out: number;
  subscribers: number;
  last_activity_ms: number;
}

export interface StreamList {
  streams: StreamView[];
}

export interface BrokerView {
  bootstrap: string;
  embedded?: boolean;
  reachable: boolean;
}

export interface Percentiles {
  count: number;
  p50: number;
  p99: number;
}

export interface Totals {
  streams: number;
  subscribers: number;
  records_in: number;
  records_out: number;
  latency_ms: Percentiles;
}

export interface StatsRow extends StreamView {
  backlog: number;
}

/** `GET /api/stats`. */
export interface Stats {
  now_ms: number;
  version: string;
  uptime_s: number;
  broker: BrokerView;
  totals: Totals;
  streams: StatsRow[];
}

/** `GET /healthz`, `GET /readyz`. */
export interface Status {
  status: string;
  version?: string;
}
