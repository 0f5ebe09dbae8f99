"""What the ``/api/connect`` connection and its fallback (one socket per stream) share: a
subscription's state and queue, a record waiting for its answer, the counters, and how a
WebSocket is opened."""

from __future__ import annotations

import asyncio
import json
import re
from collections import deque
from typing import Any, Union

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol
from websockets.version import version as websockets_version

from ._retry import Backoff
from .errors import ErrorCode, ServerError, from_http, parse_retry_after
from .frames import Ack, EndFrame, Frame, GapFrame

#: The subprotocol the daemon answers with.
PROTOCOL = Subprotocol("streamgate.v1")
#: Close code of a connection whose token expired.
CLOSE_TOKEN_EXPIRED = 4401
#: Longest a connection attempt may take.
OPEN_TIMEOUT = 10.0


class End:
    """Marks the end of a subscription's frames."""


END = End()
Item = Union[Frame, BaseException, End]


class Sub:
    """One stream followed: where it is, and the frames waiting for its consumer."""

    def __init__(
        self,
        stream_id: str,
        from_: str | int | None,
        on_lag: str | None,
        until: str | None,
        max_queue: int,
    ) -> None:
        self.stream_id = stream_id
        self.from_ = from_
        self.on_lag = on_lag
        self.until = until
        self.max_queue = max_queue
        #: The last cursor handed to the consumer: resume after it.
        self.last: int | None = None
        self.items: deque[Item] = deque()
        self.ready = asyncio.Event()
        #: On the current connection: idle (not subscribed), opening, open, closing.
        self.state = "idle"
        #: The consumer's queue is full: not subscribed until it has read on.
        self.paused = False
        self.finished = False
        self.subscribed = asyncio.Event()
        self.backoff = Backoff()
        self.retry: asyncio.TimerHandle | None = None

    def start(self) -> str | int | None:
        """Where to subscribe from now."""
        return self.last + 1 if self.last is not None else self.from_

    def frame(self) -> str:
        frame: dict[str, Any] = {"type": "subscribe", "stream_id": self.stream_id}
        start = self.start()
        if start is not None:
            frame["from"] = start
        if self.on_lag is not None:
            frame["on_lag"] = self.on_lag
        if self.until is not None:
            frame["until"] = self.until
        return json.dumps(frame)

    def push(self, item: Item) -> None:
        self.items.append(item)
        self.ready.set()

    def offer(self, frame: Frame) -> bool:
        """Hands ``frame`` to the consumer, unless its cursor is not above the last delivered
        (delivered before: dropped). ``False`` when the consumer's queue is full: the frame
        was not taken, and the subscription should stop until the consumer reads on."""
        cursor = frame.last_cursor if isinstance(frame, GapFrame) else frame.cursor
        if self.last is not None and cursor <= self.last:
            return True
        if not isinstance(frame, EndFrame) and len(self.items) >= self.max_queue:
            self.paused = True
            return False
        self.last = cursor
        self.backoff.reset()
        self.push(frame)
        if isinstance(frame, EndFrame):
            self.finish(END)
        return True

    def finish(self, item: Item) -> None:
        """Nothing comes after ``item``."""
        if not self.finished:
            self.finished = True
            self.subscribed.set()
            if self.retry is not None:
                self.retry.cancel()
                self.retry = None
            self.push(item)


class PendingSend:
    """A record sent and not answered yet."""

    __slots__ = ("stream_id", "text", "key", "traceparent", "future", "order", "seq")

    def __init__(self, stream_id: str, text: str, key: str, future: asyncio.Future[Ack],
                 order: int, traceparent: str | None = None) -> None:
        self.stream_id = stream_id
        self.text = text
        self.key = key
        #: The W3C trace context it is sent under (as :func:`check_traceparent` let it by).
        self.traceparent = traceparent
        self.future = future
        self.order = order
        self.seq: int | None = None

    def frame(self, seq: int) -> str:
        # The record's text, key and trace context are kept as first written: a repeat
        # carries the same bytes under the same key (and in the same trace), so the daemon
        # stores and processes it once.
        trace = "" if self.traceparent is None else \
            f',"traceparent":{json.dumps(self.traceparent)}'
        return (
            f'{{"type":"send","stream_id":{json.dumps(self.stream_id)},"seq":{seq},'
            f'"idempotency_key":{json.dumps(self.key)}{trace},"data":{self.text}}}'
        )


class Shared:
    """The counters of a client's connections, whichever way they go (for diagnostics and
    tests), and whether a token is replaced before its ``exp``."""

    def __init__(self) -> None:
        #: Replace a token shortly before its ``exp`` (off: only after a ``4401``).
        self.refresh_early = True
        #: WebSockets opened, subscriptions the daemon detached as lagging, subscriptions
        #: paused for a slow consumer, connections closed because their token expired
        #: (``4401``), and records sent again (same key) after their answer was lost.
        self.connects = 0
        self.lagged = 0
        self.paused = 0
        self.expired = 0
        self.resent = 0


#: A W3C ``traceparent`` of version ``00``: lowercase hex, trace id and span id not all zeros.
_TRACEPARENT = re.compile(r"00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")
TRACEPARENT_FORMAT = "00-<32 hex trace id>-<16 hex span id>-<2 hex flags>"


def check_traceparent(traceparent: str | None) -> str | None:
    """``traceparent`` itself when it is a well-formed W3C trace context (or ``None``);
    ``ValueError`` naming the expected format otherwise. The daemon would ignore a malformed
    one in silence, so it is refused here, before anything is sent."""
    if traceparent is None:
        return None
    if not isinstance(traceparent, str) or _TRACEPARENT.fullmatch(traceparent) is None:
        raise ValueError(
            f"traceparent must be a W3C trace context, {TRACEPARENT_FORMAT} (lowercase hex, "
            f"trace id and span id not all zeros), not {traceparent!r}"
        )
    return traceparent


def encode_record(data: Any) -> str:
    """A record as compact JSON; ``TypeError`` when it is not JSON."""
    try:
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise TypeError(f"the record is not JSON: {e}") from e


async def open_socket(url: str, headers: dict[str, str]) -> ClientConnection:
    """Opens a WebSocket to the daemon; a refused handshake raises its
    :class:`~streamgate.ServerError` (with ``status`` and ``retry_after``)."""
    try:
        return await connect(
            url,
            additional_headers=headers,
            subprotocols=[PROTOCOL],
            open_timeout=OPEN_TIMEOUT,
            ping_interval=20,
            ping_timeout=20,
            close_timeout=2,
            max_size=None,
            user_agent_header=f"streamgate-python websockets/{websockets_version}",
        )
    except InvalidStatus as e:
        resp = e.response
        retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        raise from_http(resp.status_code, bytes(resp.body or b""), retry_after) from e


def refused_for_good(error: ServerError) -> bool:
    """Whether a refused handshake will be refused again: a 4xx but a timeout or a 429 (a
    renewable token's expiry is handled before)."""
    return error.status is not None and 400 <= error.status < 500 and \
        error.status not in (408, 429)
