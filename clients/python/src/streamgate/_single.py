"""The fallback for a daemon without ``/api/connect`` (its handshake answered 404): one
WebSocket per stream on ``/api/stream/{id}/results``, and each record sent by
``POST /api/stream/{id}/send`` with an ``Idempotency-Key`` of its own, with the guarantees of
the shared connection:

- each stream's socket is opened again whenever it drops, with exponential back-off and
  jitter, from the last delivered cursor + 1 (or the original ``from``); a frame whose cursor
  is not above the last delivered is dropped, so nothing comes twice; ``gap`` frames are
  handed on;
- close ``4008`` (lagged): open again at once from the cursor the reason names; ``1001`` (the
  daemon stops) and any other drop: after the back-off; ``1000`` after ``end``, or
  ``caught up`` with ``until="now"``: the iteration ends;
- a token about to expire (with a token source): a new token, a new socket from the last
  cursor + 1, then the old one closed (a frame both deliver is dropped as a repeat);
  ``4401``: a new token and open again;
- a refused handshake: 429 (but ``too_many_subscribers``), 503, 408 and 5xx are waited out as
  ``Retry-After`` says (else the back-off); any other 4xx is raised in the iterator;
- a consumer that does not read: its socket is closed while its queue is full and opened
  again from its cursor once it has read half of it;
- a record: sent again with the same key (and ``traceparent`` header, when it has one) after
  a lost answer, a refused connection, 429, 503 or ``idempotency_key_in_flight``, as
  ``Retry-After`` says, within the client's patience (the daemon stores and processes it
  once); other refusals are raised by ``send``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from typing import Any, Coroutine
from urllib.parse import quote, urlencode

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
    open_socket,
    refused_for_good,
)
from .errors import (
    ClientClosedError,
    ErrorCode,
    ProtocolError,
    ServerError,
    StreamgateError,
    TokenSourceError,
    is_transient,
)
from .frames import Accepted, Ack, parse_frame

log = logging.getLogger("streamgate")

#: Close code of a subscriber that read too slowly (the reason names where to resume).
CLOSE_LAGGED = 4008
#: Close reason of a socket opened with ``until=now`` once it sent what existed.
CAUGHT_UP = "caught up"


class Follower:
    """One stream's socket: the task that keeps it open, and what it is doing."""

    def __init__(self, sub: Sub) -> None:
        self.sub = sub
        self.ws: ClientConnection | None = None
        #: A socket opened with a renewed token, to be read once the old one closed.
        self.successor: ClientConnection | None = None
        #: Set once a paused consumer has read half its queue.
        self.resume = asyncio.Event()
        #: Ask the token source for a new token before opening again.
        self.fresh = False
        self.task: asyncio.Task[None] | None = None


class PerStream:
    """Every subscription and send of one client, against a daemon without ``/api/connect``."""

    def __init__(self, http: Http, credentials: Credentials, shared: Shared, *,
                 queue_size: int = 1024) -> None:
        self._http = http
        self._credentials = credentials
        self._shared = shared
        self._queue_size = queue_size
        self._followers: dict[str, Follower] = {}
        #: Tasks still running (followers being closed, sends, renewals): a reference each.
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    # ----------------------------------------------------------------- the public side

    def subscribe(self, stream_id: str, from_: str | int | None, on_lag: str | None,
                  until: str | None) -> Sub:
        if self._closed:
            raise ClientClosedError("the client is closed")
        if stream_id in self._followers:
            raise ValueError(f"stream {stream_id} is already subscribed on this client")
        sub = Sub(stream_id, from_, on_lag, until, self._queue_size)
        self.follow(sub)
        return sub

    def follow(self, sub: Sub) -> None:
        """Opens ``sub``'s socket, from where it is, and keeps it open."""
        follower = Follower(sub)
        self._followers[sub.stream_id] = follower
        follower.task = self._spawn(self._follow(follower))

    def unsubscribe(self, sub: Sub) -> None:
        follower = self._followers.get(sub.stream_id)
        if follower is None or follower.sub is not sub:
            return
        del self._followers[sub.stream_id]
        sub.finish(END)
        if follower.task is not None:
            follower.task.cancel()  # closes its socket

    def consumed(self, sub: Sub) -> None:
        """The consumer took a frame: a paused socket opens again once half its queue is read."""
        if sub.paused and len(sub.items) <= sub.max_queue // 2:
            sub.paused = False
            follower = self._followers.get(sub.stream_id)
            if follower is not None and follower.sub is sub:
                follower.resume.set()

    def post(self, pending: PendingSend) -> None:
        """Sends a record over HTTP; its future gets the answer."""
        if not pending.future.done():
            self._spawn(self._post(pending))

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        for follower in self._followers.values():
            follower.sub.finish(ClientClosedError("the client is closed"))
        self._followers.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ----------------------------------------------------------------- sends

    async def _post(self, pending: PendingSend) -> None:
        headers = {"Content-Type": "application/json", "Idempotency-Key": pending.key}
        if pending.traceparent is not None:
            headers["traceparent"] = pending.traceparent
        try:
            resp = await self._http.request(
                "POST",
                f"/api/stream/{quote(pending.stream_id, safe='')}/send",
                content=pending.text.encode(),
                headers=headers,
                retry="idempotent",
            )
            accepted = Accepted.from_json(resp.json())
        except asyncio.CancelledError:
            if not pending.future.done():
                pending.future.set_exception(ClientClosedError("the client is closed"))
            raise
        except ValueError as e:
            error: StreamgateError = ProtocolError(f"unreadable send answer: {e}")
            error.__cause__ = e
        except StreamgateError as e:
            error = e
        except Exception as e:  # a failure httpx has no class for: nothing to try again
            error = StreamgateError(f"the send failed: {e!r}")
            error.__cause__ = e
        else:
            if not pending.future.done():
                pending.future.set_result(Ack(
                    stream_id=pending.stream_id,
                    seq=pending.order,
                    offset=accepted.offsets[0] if accepted.offsets else -1,
                    replayed=accepted.replayed,
                ))
            return
        if not pending.future.done():
            pending.future.set_exception(error)

    # ----------------------------------------------------------------- a stream's socket

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _url(self, sub: Sub) -> str:
        params: dict[str, str] = {}
        start = sub.start()
        if start is not None:
            params["from"] = str(start)
        if sub.on_lag is not None:
            params["on_lag"] = sub.on_lag
        if sub.until is not None:
            params["until"] = sub.until
        path = f"/api/stream/{quote(sub.stream_id, safe='')}/results"
        return self._http.ws_url(path) + ("?" + urlencode(params) if params else "")

    async def _open(self, sub: Sub, *, fresh: bool = False) -> ClientConnection:
        return await open_socket(self._url(sub), await self._credentials.headers(fresh=fresh))

    async def _follow(self, follower: Follower) -> None:
        sub = follower.sub
        try:
            await self._keep_open(follower)
        except asyncio.CancelledError:
            raise
        except StreamgateError as e:  # an unreadable frame
            log.warning("streamgate: following %s failed: %s", sub.stream_id, e)
            sub.finish(e)
        except Exception as e:  # a bug: nobody is left waiting
            log.exception("streamgate: following %s failed", sub.stream_id)
            sub.finish(StreamgateError(f"following the stream failed: {e!r}"))
        finally:
            if self._followers.get(sub.stream_id) is follower:
                del self._followers[sub.stream_id]
            for ws in (follower.ws, follower.successor):
                if ws is not None:
                    await ws.close()

    async def _keep_open(self, follower: Follower) -> None:
        sub = follower.sub
        while not sub.finished:
            ws, follower.successor = follower.successor, None
            if sub.paused:
                if ws is not None:
                    await ws.close()
                follower.resume.clear()
                await follower.resume.wait()
                continue
            if ws is None:
                try:
                    ws = await self._open(sub, fresh=follower.fresh)
                except Exception as e:
                    pause = self._pause_after_refusal(follower, e)
                    if pause is None:
                        return
                    log.debug("streamgate: cannot open %s (%s); again in %.2f s",
                              sub.stream_id, e, pause)
                    await asyncio.sleep(pause)
                    continue
            follower.fresh = False
            heard = await self._read(follower, ws)
            code, reason = ws.close_code, ws.close_reason or ""
            log.debug("streamgate: socket of %s closed (%s %s)", sub.stream_id, code, reason)
            if sub.finished or sub.paused or follower.successor is not None:
                continue
            if code == 1000 and reason == CAUGHT_UP and sub.until is not None:
                sub.finish(END)
                return
            if code == CLOSE_LAGGED:
                resume = _resume_from(reason)
                if resume is not None:
                    self._shared.lagged += 1
                    sub.last = resume - 1 if sub.last is None else max(sub.last, resume - 1)
                    continue
            if code == CLOSE_TOKEN_EXPIRED:
                self._shared.expired += 1
                follower.fresh = True
                if heard:
                    continue
            pause = sub.backoff.pause()
            log.debug("streamgate: opening %s again in %.2f s", sub.stream_id, pause)
            await asyncio.sleep(pause)

    async def _read(self, follower: Follower, ws: ClientConnection) -> bool:
        """Reads one socket until it closes; whether any frame came on it."""
        sub = follower.sub
        self._shared.connects += 1
        follower.ws = ws
        sub.state = "open"
        sub.subscribed.set()
        at = self._credentials.refresh_at() if self._shared.refresh_early else None
        renewal = None if at is None else asyncio.get_running_loop().call_later(
            max(0.0, at - time.time()), lambda: self._spawn(self._renew(follower, ws)))
        heard = False
        try:
            async for message in ws:
                heard = True
                if not self._on_message(sub, message):
                    self._shared.paused += 1
                    break
                if sub.finished:
                    break
        except ConnectionClosed:
            pass
        finally:
            follower.ws = None
            sub.state = "idle"
            if renewal is not None:
                renewal.cancel()
            await ws.close()
        return heard

    def _on_message(self, sub: Sub, message: str | bytes) -> bool:
        """Hands a frame on; ``False`` when the consumer's queue is full."""
        try:
            obj = json.loads(message)
            kind = obj["type"]
        except (ValueError, KeyError, TypeError):
            log.warning("streamgate: unreadable frame from the daemon: %.200r", message)
            return True
        if kind not in ("result", "error", "gap", "end"):
            return True  # the answers to records sent on the socket: none are
        obj.setdefault("stream_id", sub.stream_id)
        frame = parse_frame(obj)
        return frame is None or sub.offer(frame)

    async def _renew(self, follower: Follower, old: ClientConnection) -> None:
        """Replaces a socket whose token is about to expire: a new token, a new socket from
        the last cursor + 1, then the old one closed. When no new one can be had, the old
        one runs until its ``4401`` and the usual reopening takes over."""
        try:
            new = await self._open(follower.sub, fresh=True)
        except (StreamgateError, OSError, asyncio.TimeoutError, InvalidHandshake,
                ConnectionClosed) as e:
            log.warning("streamgate: renewing the token failed (%s); "
                        "trying again when it expires", e)
            return
        if follower.ws is not old or follower.sub.finished:
            await new.close()
            return
        follower.successor = new
        await old.close(1000, "token renewed")

    def _pause_after_refusal(self, follower: Follower, error: Exception) -> float | None:
        """How long to wait after a socket could not be opened; ``None`` when it will not pass
        by itself (the subscription then ends with the error)."""
        sub = follower.sub
        if isinstance(error, ServerError):
            if error.code in (ErrorCode.TOKEN_EXPIRED, ErrorCode.INVALID_TOKEN) and \
                    self._credentials.refreshable:
                follower.fresh = True
            elif refused_for_good(error) or error.code == ErrorCode.TOO_MANY_SUBSCRIBERS:
                sub.finish(error)
                return None
            return sub.backoff.pause(error.retry_after)
        if isinstance(error, TokenSourceError):
            cause = error.__cause__
            if cause is not None and not is_transient(cause):
                sub.finish(error)
                return None
            return sub.backoff.pause()
        if isinstance(error, (OSError, asyncio.TimeoutError, InvalidHandshake, ConnectionClosed)):
            return sub.backoff.pause()
        raise error


def _resume_from(reason: str) -> int | None:
    """The cursor a ``4008`` close names (``...resume with from=N``)."""
    found = re.search(r"from=(-?\d+)", reason)
    return int(found.group(1)) if found else None
