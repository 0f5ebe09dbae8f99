// What both entry points export besides `Client`.

export type { ClientOptions, StartOptions, TokenOptions, SendOptions, BatchOptions } from "./client.js";
export type { SubscribeOptions, ConnectionEvent } from "./connection.js";
export type { TokenSource } from "./auth.js";
export type { FetchLike, WaitNotice } from "./http.js";
export { Subscription } from "./subscription.js";
export {
  StreamgateError,
  isStreamgateError,
  TRANSIENT_CODES,
  type ClientErrorCode,
  type ErrorDetails,
} from "./errors.js";
export { Backoff, FIRST_BACKOFF_MS, MAX_BACKOFF_MS, decodeToken } from "./util.js";
export * from "./wire.js";
