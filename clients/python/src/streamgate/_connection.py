"""The one ``/api/connect`` WebSocket of a client: a task that owns it and opens it again
whenever it drops, with exponential back-off and jitter.

What each failure does:

- a cut connection, or a daemon restart (``1001``): reconnect, subscribe every stream again
  from its last delivered cursor + 1 (or its original ``from`` when nothing was delivered
  yet), and send again, with the same idempotency key (and ``traceparent``), every record
  whose ``ack`` had not come; a frame whose cursor is not above the last delivered is
  dropped, so nothing comes twice;
- a token about to expire (with a token source): a new token, a new connection, then the
  old one closed, so nothing is missed; ``4401`` (it expired anyway): ask the token source
  for a new token, reconnect at once and resume;
- a handshake refused for good (a bad key: 401, 403; any other 4xx but 408 and 429): every
  subscription and send fails with that error; 429, 503 and the rest are waited out as
  ``Retry-After`` says (else the back-off);
- ``1009`` (a message over ``limits.ws_max_message_bytes``): the limit is read from the close
  reason; a record that does not fit is refused ``record_too_large`` instead of sent again;
- ``gap``: handed on, so nothing is skipped in silence;
- ``lagged``: subscribe again from ``resume_from``;
- ``unsubscribed`` with an error (the daemon ended the subscription): subscribe again from the
  last cursor + 1, after a back-off;
- ``refused``: raised in that subscription's iterator (after back-off and again, when the
  code says the daemon cannot serve *now*: ``not_ready``, ``shutting_down``,
  ``broker_unavailable``);
- a ``nack`` the daemon may take back later (``shutting_down``, ``broker_unavailable``,
  ``backlog_full``, ``rate_limited``, ``not_ready``, ``idempotency_key_in_flight``): sent
  again after a back-off, with the same key, in the order the records were first sent; any
  other ``nack`` is raised by ``send``;
- a consumer that does not read: its subscription is unsubscribed while its queue is full and
  subscribed again from its cursor once it has read half of it (the others go on);
- a handshake answered 404 (a daemon without ``/api/connect``): from then on one socket per
  stream and sends over HTTP, with the same guarantees (``_single.PerStream``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from ._auth import Credentials
from ._http import Http
from ._retry import Backoff
from ._shared import (
    CLOSE_TOKEN_EXPIRED,
    END,
    PendingSend,
    Shared,
    Sub,
    check_traceparent,
    encode_record,
    open_socket,
    refused_for_good,
)
from ._single import PerStream
from .errors import (
    ClientClosedError,
    ErrorCode,
    ServerError,
    StreamgateError,
    TokenSourceError,
    TooLargeError,
    from_error_object,
    is_transient,
)
from .frames import Ack, parse_frame

log = logging.getLogger("streamgate")

#: The daemon's default ``limits.ws_max_message_bytes``, for a 1009 whose reason names none.
DEFAULT_MAX_MESSAGE = 1024 * 1024

#: ``nack`` codes after which a record is sent again (same key) after a back-off.
RETRY_NACK = frozenset(
    {
        ErrorCode.SHUTTING_DOWN,
        ErrorCode.BROKER_UNAVAILABLE,
        ErrorCode.BACKLOG_FULL,
        ErrorCode.RATE_LIMITED,
        ErrorCode.NOT_READY,
        ErrorCode.IDEMPOTENCY_KEY_IN_FLIGHT,
    }
)
#: ``refused`` codes after which a subscription is tried again after a back-off.
RETRY_REFUSED = frozenset(
    {ErrorCode.NOT_READY, ErrorCode.SHUTTING_DOWN, ErrorCode.BROKER_UNAVAILABLE}
)


class Connection(Shared):
    """The connection of one client, shared by all its subscriptions and sends; against a
    daemon without ``/api/connect``, the front of its fallback (:class:`PerStream`)."""

    def __init__(self, http: Http, credentials: Credentials, *, queue_size: int = 1024) -> None:
        super().__init__()
        self._http = http
        self._credentials = credentials
        self._queue_size = queue_size
        self._subs: dict[str, Sub] = {}
        #: Streams the user unsubscribed from whose ``unsubscribed`` has not come yet.
        self._leaving: set[str] = set()
        self._unacked: dict[tuple[str, int], PendingSend] = {}
        self._outbox: list[PendingSend] = []
        #: Records ``nack``ed with a code that passes: sent again, in order, after a pause that
        #: grows while nacks come and starts over after an ``ack``.
        self._later: list[PendingSend] = []
        self._later_timer: asyncio.TimerHandle | None = None
        self._later_backoff = Backoff()
        #: ``limits.ws_max_message_bytes``, once a 1009 close told it.
        self._max_message: int | None = None
        self._seq = 0
        self._order = 0
        self._out: asyncio.Queue[str] | None = None
        self._ws: ClientConnection | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: Token renewals under way (a reference, so they are not collected mid-way).
        self._renewals: set[asyncio.Task[None]] = set()
        #: A connection opened with a renewed token, to be served once the old one closed.
        self._successor: ClientConnection | None = None
        self._closed = False
        self._force_refresh = False
        #: Once the daemon answered 404 to ``/api/connect``: one socket per stream instead.
        self._fallback: PerStream | None = None

    # ----------------------------------------------------------------- the public side

    def subscribe(self, stream_id: str, from_: str | int | None, on_lag: str | None,
                  until: str | None) -> Sub:
        if self._closed:
            raise ClientClosedError("the client is closed")
        if self._fallback is not None:
            return self._fallback.subscribe(stream_id, from_, on_lag, until)
        if stream_id in self._subs:
            raise ValueError(f"stream {stream_id} is already subscribed on this client")
        sub = Sub(stream_id, from_, on_lag, until, self._queue_size)
        self._subs[stream_id] = sub
        if stream_id not in self._leaving:
            self._subscribe(sub)
        self._ensure_running()
        return sub

    def unsubscribe(self, sub: Sub) -> None:
        if self._fallback is not None:
            self._fallback.unsubscribe(sub)
            return
        if self._subs.get(sub.stream_id) is not sub:
            return
        del self._subs[sub.stream_id]
        sub.finish(END)
        if sub.state in ("opening", "open", "closing") and self._write(
            json.dumps({"type": "unsubscribe", "stream_id": sub.stream_id})
        ):
            self._leaving.add(sub.stream_id)

    def consumed(self, sub: Sub) -> None:
        """The consumer took a frame: a paused subscription goes on once half its queue is read."""
        if self._fallback is not None:
            self._fallback.consumed(sub)
            return
        if sub.paused and len(sub.items) <= sub.max_queue // 2:
            sub.paused = False
            if sub.state == "idle" and self._subs.get(sub.stream_id) is sub:
                self._subscribe(sub)

    async def send(self, stream_id: str, data: Any, traceparent: str | None = None) -> Ack:
        if self._closed:
            raise ClientClosedError("the client is closed")
        text = encode_record(data)
        traceparent = check_traceparent(traceparent)
        self._order += 1
        pending = PendingSend(stream_id, text, str(uuid.uuid4()),
                              asyncio.get_running_loop().create_future(), self._order,
                              traceparent)
        if self._fallback is not None:
            self._fallback.post(pending)
        else:
            self._dispatch(pending)
            self._ensure_running()
        return await pending.future

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        ws = self._ws
        if ws is not None:
            try:
                await asyncio.wait_for(ws.close(), 2.0)
            except (asyncio.TimeoutError, ConnectionClosed, OSError):
                pass
        for task in [*self._renewals, *([self._task] if self._task else [])]:
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        if self._successor is not None:
            await self._successor.close()
            self._successor = None
        if self._fallback is not None:
            await self._fallback.aclose()
        self._fail_all(ClientClosedError("the client is closed"))

    # ----------------------------------------------------------------- the task

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="streamgate-connection"
            )
        self._wake.set()

    def _needed(self) -> bool:
        return bool(self._subs or self._unacked or self._outbox or self._later)

    async def _run(self) -> None:
        try:
            await self._loop()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a bug, or a failure no retry mends: nobody is left waiting
            log.exception("streamgate: the connection task failed")
            error = e if isinstance(e, StreamgateError) else StreamgateError(
                f"the connection failed: {e!r}")
            self._fail_all(error)

    async def _loop(self) -> None:
        backoff = Backoff()
        while not self._closed:
            if not self._needed():
                self._wake.clear()
                await self._wake.wait()
                continue
            ws, self._successor = self._successor, None
            if ws is None:
                try:
                    ws = await self._open(fresh=self._force_refresh)
                except Exception as e:
                    if isinstance(e, ServerError) and e.status == 404:
                        self._fall_back()
                        return
                    pause = self._pause_after_refusal(e, backoff)
                    if pause is not None:
                        log.debug("streamgate: cannot connect (%s); again in %.2f s", e, pause)
                        await asyncio.sleep(pause)
                    continue
            self._force_refresh = False
            heard = await self._serve(ws, backoff)
            code = ws.close_code
            log.debug("streamgate: connection closed (%s %s)", code, ws.close_reason)
            if self._closed:
                return
            if code == 1009:
                self._max_message = _message_limit(ws.close_reason or "")
            if self._successor is not None:
                continue  # renewed: the new connection is open already
            if code == CLOSE_TOKEN_EXPIRED:
                self.expired += 1
                self._force_refresh = True
                if heard:
                    continue
            pause = backoff.pause()
            log.debug("streamgate: resuming in %.2f s", pause)
            await asyncio.sleep(pause)

    def _pause_after_refusal(self, error: Exception, backoff: Backoff) -> float | None:
        """How long to wait after a connection attempt failed; ``None`` when it will not pass
        by itself, and every subscription and send was failed with it."""
        if isinstance(error, ServerError):
            if error.code in (ErrorCode.TOKEN_EXPIRED, ErrorCode.INVALID_TOKEN) and \
                    self._credentials.refreshable:
                self._force_refresh = True
            elif refused_for_good(error):
                log.warning("streamgate: the daemon refused the connection: %s", error)
                self._fail_all(error)
                return None
            return backoff.pause(error.retry_after)
        if isinstance(error, TokenSourceError):
            cause = error.__cause__
            if cause is not None and not is_transient(cause):
                self._fail_all(error)
                return None
            return backoff.pause()
        if isinstance(error, (OSError, asyncio.TimeoutError, InvalidHandshake, ConnectionClosed)):
            return backoff.pause()
        raise error

    async def _open(self, *, fresh: bool = False) -> ClientConnection:
        headers = await self._credentials.headers(fresh=fresh)
        return await open_socket(self._http.ws_url("/api/connect"), headers)

    def _fall_back(self) -> None:
        """The daemon has no ``/api/connect``: every subscription gets a socket of its own
        (from where it is), and every record not answered yet is sent over HTTP, with its
        key; so is everything after, for the client's life."""
        log.debug("streamgate: no /api/connect on the daemon; one socket per stream")
        fallback = PerStream(self._http, self._credentials, self, queue_size=self._queue_size)
        self._fallback = fallback
        subs, self._subs = list(self._subs.values()), {}
        for sub in subs:
            sub.state = "idle"
            if sub.retry is not None:
                sub.retry.cancel()
                sub.retry = None
            sub.paused = False
            fallback.follow(sub)
        pending = sorted([*self._unacked.values(), *self._outbox, *self._later],
                         key=lambda p: p.order)
        self._unacked.clear()
        self._outbox.clear()
        self._later.clear()
        if self._later_timer is not None:
            self._later_timer.cancel()
            self._later_timer = None
        for p in pending:
            fallback.post(p)

    async def _serve(self, ws: ClientConnection, backoff: Backoff) -> bool:
        """Serves one open connection until it drops; whether anything was heard on it."""
        self.connects += 1
        out: asyncio.Queue[str] = asyncio.Queue()
        self._out, self._ws = out, ws
        writer = asyncio.get_running_loop().create_task(self._writer(ws, out))
        refresh: asyncio.TimerHandle | None = None
        heard = False
        try:
            self._leaving.clear()
            # Records first, in the order they were sent (their answers then do not wait
            # behind the subscriptions' replays), then every subscription from its cursor.
            resend = sorted(self._outbox, key=lambda p: p.order)
            self._outbox = []
            for pending in resend:
                self._dispatch(pending)
            for sub in list(self._subs.values()):
                sub.state = "idle"
                if sub.retry is not None:
                    sub.retry.cancel()
                    sub.retry = None
                if not sub.paused:
                    self._subscribe(sub)
            at = self._credentials.refresh_at() if self.refresh_early else None
            if at is not None:
                refresh = asyncio.get_running_loop().call_later(
                    max(0.0, at - time.time()), self._start_renewal, ws
                )
            async for message in ws:
                if not heard:
                    heard = True
                    backoff.reset()
                self._on_message(message)
        except ConnectionClosed:
            pass
        finally:
            self._out = self._ws = None
            writer.cancel()
            if refresh is not None:
                refresh.cancel()
            for pending in self._unacked.values():
                pending.seq = None
                if not pending.future.done():
                    self.resent += 1
                    self._outbox.append(pending)
            self._unacked.clear()
            for sub in self._subs.values():
                sub.state = "idle"
            self._leaving.clear()
        return heard

    async def _writer(self, ws: ClientConnection, out: asyncio.Queue[str]) -> None:
        try:
            while True:
                await ws.send(await out.get())
        except ConnectionClosed:
            pass
        except OSError:
            await ws.close()

    def _start_renewal(self, ws: ClientConnection) -> None:
        task = asyncio.get_running_loop().create_task(self._renew(ws))
        self._renewals.add(task)
        task.add_done_callback(self._renewals.discard)

    async def _renew(self, old: ClientConnection) -> None:
        """Replaces a connection whose token is about to expire: a new token, a new
        connection, then the old one closed; the loop serves the new one at once (every
        stream subscribed and every unanswered record sent again there). When no new one can
        be had, the old one runs until its ``4401`` and the usual reconnect takes over."""
        try:
            new = await self._open(fresh=True)
        except (StreamgateError, OSError, asyncio.TimeoutError, InvalidHandshake,
                ConnectionClosed) as e:
            log.warning("streamgate: renewing the token failed (%s); "
                        "trying again when it expires", e)
            return
        if self._ws is not old or self._closed:
            await new.close()
            return
        self._successor = new
        await old.close(1000, "token renewed")

    def _write(self, text: str) -> bool:
        """Writes a frame on the open connection; ``False`` when there is none."""
        if self._out is None:
            return False
        self._out.put_nowait(text)
        return True

    def _subscribe(self, sub: Sub) -> None:
        if self._write(sub.frame()):
            sub.state = "opening"

    def _dispatch(self, pending: PendingSend) -> None:
        """Sends a record on the open connection, or keeps it for the next."""
        if pending.future.done():
            return  # its caller gave up
        if self._out is None:
            self._outbox.append(pending)
            return
        self._seq += 1
        text = pending.frame(self._seq)
        if self._max_message is not None and len(text.encode()) > self._max_message:
            pending.future.set_exception(TooLargeError(
                ErrorCode.RECORD_TOO_LARGE,
                "the record does not fit in one message (limits.ws_max_message_bytes="
                f"{self._max_message}); send it with send_batch",
            ))
            return
        pending.seq = self._seq
        self._unacked[(pending.stream_id, self._seq)] = pending
        self._write(text)

    def _send_later(self, pending: PendingSend) -> None:
        self._later.append(pending)
        if self._later_timer is None:
            self._later_timer = asyncio.get_running_loop().call_later(
                self._later_backoff.pause(), self._send_again)

    def _send_again(self) -> None:
        self._later_timer = None
        later, self._later = sorted(self._later, key=lambda p: p.order), []
        for pending in later:
            self._dispatch(pending)
        self._wake.set()

    def _resubscribe_later(self, sub: Sub) -> None:
        def again() -> None:
            sub.retry = None
            if self._subs.get(sub.stream_id) is sub and sub.state == "idle" and not sub.paused:
                self._subscribe(sub)

        if sub.retry is not None:
            sub.retry.cancel()
        sub.retry = asyncio.get_running_loop().call_later(sub.backoff.pause(), again)

    def _fail_all(self, error: StreamgateError) -> None:
        for sub in self._subs.values():
            sub.finish(error)
        self._subs.clear()
        for pending in [*self._unacked.values(), *self._outbox, *self._later]:
            if not pending.future.done():
                pending.future.set_exception(error)
        self._unacked.clear()
        self._outbox.clear()
        self._later.clear()
        if self._later_timer is not None:
            self._later_timer.cancel()
            self._later_timer = None

    # ----------------------------------------------------------------- frames

    def _on_message(self, message: str | bytes) -> None:
        try:
            obj = json.loads(message)
            kind = obj["type"]
        except (ValueError, KeyError, TypeError):
            log.warning("streamgate: unreadable frame from the daemon: %.200r", message)
            return
        stream_id = obj.get("stream_id")
        if kind in ("result", "error", "end", "gap"):
            self._on_stream_frame(stream_id, kind, obj)
        elif kind in ("ack", "nack"):
            pending = self._unacked.pop((stream_id, obj.get("seq")), None)
            if pending is None or pending.future.done():
                return
            if kind == "ack":
                self._later_backoff.reset()
                pending.future.set_result(Ack(
                    stream_id=stream_id,
                    seq=int(obj["seq"]),
                    offset=int(obj["offset"]),
                    replayed=bool(obj.get("replayed", False)),
                ))
                return
            error = from_error_object(obj.get("error") or {})
            if error.code in RETRY_NACK:
                log.debug("streamgate: record nacked (%s); sending it again", error)
                self._send_later(pending)
            else:
                pending.future.set_exception(error)
        elif kind == "subscribed":
            sub = self._subs.get(stream_id)
            if sub is not None and sub.state == "opening" and stream_id not in self._leaving:
                sub.state = "open"
                sub.subscribed.set()
        elif kind == "refused":
            sub = self._subs.get(stream_id)
            if sub is None or sub.state != "opening" or stream_id in self._leaving:
                return
            sub.state = "idle"
            error = from_error_object(obj.get("error") or {})
            if error.code in RETRY_REFUSED:
                log.debug("streamgate: subscription refused (%s); again later", error)
                self._resubscribe_later(sub)
            else:
                del self._subs[stream_id]
                sub.finish(error)
        elif kind == "unsubscribed":
            if stream_id in self._leaving:
                # The answer to the user's unsubscribe; a new subscription may wait for it.
                self._leaving.discard(stream_id)
                sub = self._subs.get(stream_id)
                if sub is not None and sub.state == "idle" and not sub.paused:
                    self._subscribe(sub)
                return
            sub = self._subs.get(stream_id)
            if sub is None:
                return
            if obj.get("error"):
                log.debug("streamgate: the daemon ended a subscription (%s); again from %s",
                          obj["error"], sub.start())
                sub.state = "idle"
                self._resubscribe_later(sub)
            elif sub.state == "closing":
                sub.state = "idle"
                if not sub.paused:
                    self._subscribe(sub)
        elif kind == "lagged":
            sub = self._subs.get(stream_id)
            if sub is None or sub.state != "open" or stream_id in self._leaving:
                return
            self.lagged += 1
            resume = int(obj["resume_from"]) - 1
            sub.last = resume if sub.last is None else max(sub.last, resume)
            sub.state = "idle"
            self._subscribe(sub)
        elif kind == "caught_up":
            # Believed of an open subscription only: one being unsubscribed (paused) dropped
            # frames before it, and is subscribed again from its cursor once answered.
            sub = self._subs.get(stream_id)
            if sub is None or sub.state != "open" or stream_id in self._leaving:
                return
            del self._subs[stream_id]
            sub.finish(END)
        elif kind == "invalid":
            log.warning("streamgate: the daemon could not read a frame: %s", obj.get("error"))

    def _on_stream_frame(self, stream_id: str, kind: str, obj: dict[str, Any]) -> None:
        sub = self._subs.get(stream_id)
        if sub is None or sub.state != "open" or stream_id in self._leaving:
            return
        frame = parse_frame(obj)
        if frame is None:
            return
        if not sub.offer(frame):
            # The consumer is behind: stop this subscription until it reads on.
            self.paused += 1
            sub.state = "closing"
            self._write(json.dumps({"type": "unsubscribe", "stream_id": stream_id}))
        elif sub.finished:
            del self._subs[stream_id]


def _message_limit(reason: str) -> int:
    """The limit a 1009 close names (``...limits.ws_max_message_bytes=N``)."""
    found = re.search(r"=(\d+)", reason)
    return int(found.group(1)) if found else DEFAULT_MAX_MESSAGE
