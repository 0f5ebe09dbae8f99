"""What can go wrong talking to a daemon, typed by the daemon's own error codes.

Every exception is a :class:`StreamgateError`. An answer of the daemon (an HTTP error, a
``nack``, a ``refused`` subscription) is a :class:`ServerError` subclass chosen by its
``code``; failing to reach the daemon is :class:`ConnectError` (nothing was sent) or
:class:`TransportError` (the request may or may not have arrived).
"""

from __future__ import annotations

import enum
import json
from email.utils import parsedate_to_datetime
from datetime import datetime, timezone
from typing import Any, Mapping


class ErrorCode(enum.StrEnum):
    """Every ``code`` the daemon answers, in the order of ``docs/openapi.json``.

    A code this version does not know stays a plain ``str`` on the exception.
    """

    INVALID_INPUT = "invalid_input"
    MISSING_API_KEY = "missing_api_key"
    INVALID_API_KEY = "invalid_api_key"
    INVALID_TOKEN = "invalid_token"
    TOKEN_EXPIRED = "token_expired"
    FORBIDDEN = "forbidden"
    STREAM_NOT_FOUND = "stream_not_found"
    ROUTE_NOT_FOUND = "route_not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    ORIGIN_NOT_ALLOWED = "origin_not_allowed"
    STREAM_ENDED = "stream_ended"
    REQUEST_TIMEOUT = "request_timeout"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    RECORD_TOO_LARGE = "record_too_large"
    TOO_MANY_RECORDS = "too_many_records"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    RATE_LIMITED = "rate_limited"
    BACKLOG_FULL = "backlog_full"
    TOO_MANY_STREAMS = "too_many_streams"
    TOO_MANY_SUBSCRIBERS = "too_many_subscribers"
    TOO_MANY_SUBSCRIPTIONS = "too_many_subscriptions"
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"
    SCHEMA_VIOLATION = "schema_violation"
    IDEMPOTENCY_KEY_IN_FLIGHT = "idempotency_key_in_flight"
    TOO_MANY_CONNECTIONS = "too_many_connections"
    HTTP_VERSION_NOT_SUPPORTED = "http_version_not_supported"
    NOT_READY = "not_ready"
    SHUTTING_DOWN = "shutting_down"
    BROKER_UNAVAILABLE = "broker_unavailable"
    INTERNAL = "internal"
    PROCESSING_FAILED = "processing_failed"


def parse_code(code: str) -> ErrorCode | str:
    """The code as an :class:`ErrorCode`, or the text itself when this version does not know it."""
    try:
        return ErrorCode(code)
    except ValueError:
        return code


class StreamgateError(Exception):
    """Anything that went wrong. ``code`` is set when the daemon said why."""

    code: ErrorCode | str | None = None
    status: int | None = None
    retry_after: float | None = None
    acknowledged: int | None = None
    line: int | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def transient(self) -> bool:
        """Whether trying again later may succeed (the daemon was busy, starting, stopping or
        away, or could not be reached)."""
        return is_transient(self)


class ConnectError(StreamgateError):
    """The daemon could not be reached: nothing was sent."""


class TransportError(StreamgateError):
    """The request failed on its way: it may or may not have reached the daemon."""


class ProtocolError(StreamgateError):
    """The daemon answered with something this client cannot read (a version skew, a proxy)."""


class ClientClosedError(StreamgateError):
    """The client was closed while this call or subscription was waiting."""


class TokenSourceError(StreamgateError):
    """The token source failed or gave something that is not a token."""


class ServerError(StreamgateError):
    """The daemon refused: an HTTP error answer, a ``nack`` or a ``refused`` subscription.

    ``status`` is the HTTP status (``None`` for a frame), ``retry_after`` the seconds of a
    ``Retry-After`` header, ``acknowledged`` how many leading records of a batch were stored
    (on ``broker_unavailable``), ``line`` the NDJSON line at fault, ``violations`` (on
    ``schema_violation``) each way a record does not match its stream's schema: dicts with
    ``line``, ``pointer``, ``keyword`` and ``message``.
    """

    def __init__(
        self,
        code: ErrorCode | str,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        acknowledged: int | None = None,
        line: int | None = None,
        violations: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.retry_after = retry_after
        self.acknowledged = acknowledged
        self.line = line
        self.violations = violations or []

    def __str__(self) -> str:
        status = f" (HTTP {self.status})" if self.status is not None else ""
        return f"{self.code}: {self.message}{status}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={str(self.code)!r}, message={self.message!r}, "
            f"status={self.status!r}, retry_after={self.retry_after!r})"
        )


class InvalidRequestError(ServerError):
    """The request means nothing to the daemon: a bad body, parameter, route or method."""


class AuthenticationError(ServerError):
    """No credential, or one the daemon does not accept."""


class TokenExpiredError(AuthenticationError):
    """The stream token expired."""


class ForbiddenError(ServerError):
    """A token used beyond its scope, for what only a key may do, or from a foreign origin."""


class StreamNotFoundError(ServerError):
    """Unknown, or another key's stream (the same answer, so ids cannot be probed)."""


class StreamEndedError(ServerError):
    """The stream has ended: it takes no more records."""


class IdempotencyKeyError(ServerError):
    """An idempotency key sent again with another body, or while its first use is stored."""


class TooLargeError(ServerError):
    """A body, record or batch past the daemon's limits."""


class RateLimitedError(ServerError):
    """Over a rate limit or the unprocessed backlog: waiting helps (see ``retry_after``)."""


class LimitExceededError(ServerError):
    """Over a count limit (streams, subscribers, subscriptions, connections)."""


class UnavailableError(ServerError):
    """The daemon or its broker cannot serve now: starting, stopping or away."""


class InternalError(ServerError):
    """Something failed inside the daemon, or processing failed for one record."""


#: The exception class of every code.
ERROR_CLASSES: dict[ErrorCode, type[ServerError]] = {
    ErrorCode.INVALID_INPUT: InvalidRequestError,
    ErrorCode.MISSING_API_KEY: AuthenticationError,
    ErrorCode.INVALID_API_KEY: AuthenticationError,
    ErrorCode.INVALID_TOKEN: AuthenticationError,
    ErrorCode.TOKEN_EXPIRED: TokenExpiredError,
    ErrorCode.FORBIDDEN: ForbiddenError,
    ErrorCode.STREAM_NOT_FOUND: StreamNotFoundError,
    ErrorCode.ROUTE_NOT_FOUND: InvalidRequestError,
    ErrorCode.METHOD_NOT_ALLOWED: InvalidRequestError,
    ErrorCode.ORIGIN_NOT_ALLOWED: ForbiddenError,
    ErrorCode.STREAM_ENDED: StreamEndedError,
    ErrorCode.REQUEST_TIMEOUT: InvalidRequestError,
    ErrorCode.PAYLOAD_TOO_LARGE: TooLargeError,
    ErrorCode.RECORD_TOO_LARGE: TooLargeError,
    ErrorCode.TOO_MANY_RECORDS: TooLargeError,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: InvalidRequestError,
    ErrorCode.RATE_LIMITED: RateLimitedError,
    ErrorCode.BACKLOG_FULL: RateLimitedError,
    ErrorCode.TOO_MANY_STREAMS: LimitExceededError,
    ErrorCode.TOO_MANY_SUBSCRIBERS: LimitExceededError,
    ErrorCode.TOO_MANY_SUBSCRIPTIONS: LimitExceededError,
    ErrorCode.IDEMPOTENCY_KEY_REUSED: IdempotencyKeyError,
    ErrorCode.IDEMPOTENCY_KEY_IN_FLIGHT: IdempotencyKeyError,
    ErrorCode.SCHEMA_VIOLATION: InvalidRequestError,
    ErrorCode.TOO_MANY_CONNECTIONS: LimitExceededError,
    ErrorCode.HTTP_VERSION_NOT_SUPPORTED: InvalidRequestError,
    ErrorCode.NOT_READY: UnavailableError,
    ErrorCode.SHUTTING_DOWN: UnavailableError,
    ErrorCode.BROKER_UNAVAILABLE: UnavailableError,
    ErrorCode.INTERNAL: InternalError,
    ErrorCode.PROCESSING_FAILED: InternalError,
}

#: Codes that say "not now": a call or record refused with one is tried again later.
TRANSIENT_CODES: frozenset[ErrorCode] = frozenset(
    {
        ErrorCode.RATE_LIMITED,
        ErrorCode.BACKLOG_FULL,
        ErrorCode.NOT_READY,
        ErrorCode.SHUTTING_DOWN,
        ErrorCode.BROKER_UNAVAILABLE,
        ErrorCode.TOO_MANY_CONNECTIONS,
        ErrorCode.IDEMPOTENCY_KEY_IN_FLIGHT,
    }
)


def server_error(
    code: str,
    message: str,
    *,
    status: int | None = None,
    retry_after: float | None = None,
    acknowledged: int | None = None,
    line: int | None = None,
    violations: list[dict[str, Any]] | None = None,
) -> ServerError:
    """The exception for a code the daemon answered."""
    parsed = parse_code(code)
    cls = ERROR_CLASSES.get(parsed, ServerError) if isinstance(parsed, ErrorCode) else ServerError
    return cls(
        parsed,
        message,
        status=status,
        retry_after=retry_after,
        acknowledged=acknowledged,
        line=line,
        violations=violations,
    )


def from_error_object(obj: Mapping[str, Any], *, status: int | None = None,
                      retry_after: float | None = None) -> ServerError:
    """An ``error`` object (of a body, ``nack``, ``refused`` or ``unsubscribed``) as an exception."""
    return server_error(
        str(obj.get("code", "internal")),
        str(obj.get("message", "")),
        status=status,
        retry_after=retry_after,
        acknowledged=obj.get("acknowledged"),
        line=obj.get("line"),
        violations=obj.get("violations"),
    )


def from_http(status: int, body: bytes, retry_after: float | None) -> ServerError:
    """An HTTP error answer as an exception; a body that is not the daemon's (from a proxy,
    say) becomes the message, with the code ``http_<status>``."""
    try:
        parsed = json.loads(body)
        error = parsed["error"]
        if not isinstance(error, dict) or "code" not in error:
            raise ValueError("no error object")
    except (ValueError, KeyError, TypeError):
        text = body.decode("utf-8", "replace").strip()
        return ServerError(f"http_{status}", text or f"HTTP {status}", status=status,
                           retry_after=retry_after)
    return from_error_object(error, status=status, retry_after=retry_after)


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds: whole seconds as the daemon sends it, or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def is_transient(error: BaseException) -> bool:
    """Whether trying again later may succeed."""
    if isinstance(error, (ConnectError, TransportError)):
        return True
    return isinstance(error, ServerError) and error.code in TRANSIENT_CODES
