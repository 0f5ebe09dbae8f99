"""The client: the key holder's calls over HTTP, sends and subscriptions over one
``/api/connect`` WebSocket that reconnects and resumes by itself (against a daemon without
that route: one WebSocket per stream, and sends over HTTP)."""

from __future__ import annotations

import contextlib
import json
import uuid
from types import TracebackType
from typing import Any, AsyncIterator, Iterable, Literal, Mapping, Sequence

import httpx

from ._auth import Credentials, TokenSource
from ._connection import Connection
from ._shared import End, Sub, check_traceparent
from ._http import Http
from ._retry import PATIENCE
from .errors import ClientClosedError, ProtocolError
from .frames import Accepted, Ack, Frame, StreamInfo, TokenIssued

#: Where a subscription starts: ``"latest"``, ``"earliest"``, a cursor (0 or more), or
#: ``-N`` for the last N results.
From = Literal["latest", "earliest"] | int
Scope = Literal["send", "subscribe"]


class Subscription(AsyncIterator[Frame]):
    """One stream's frames (``result``, ``error``, ``gap``, ``end``), each once, in order,
    across reconnects. Iteration ends after ``end`` (or ``caught_up`` with ``until="now"``);
    a refused subscription raises its :class:`~streamgate.ServerError`.

    Use it as an async iterator. ``aclose()``, leaving ``async with``, or dropping the last
    reference (a ``break`` out of ``async for frame in client.subscribe(...)``) unsubscribes.
    """

    def __init__(self, connection: Connection, sub: Sub) -> None:
        self._connection = connection
        self._sub = sub
        self._done = False

    @property
    def stream_id(self) -> str:
        return self._sub.stream_id

    @property
    def last_cursor(self) -> int | None:
        """The cursor of the last frame delivered (``None``: none yet)."""
        return self._sub.last

    async def wait_subscribed(self) -> None:
        """Returns once the daemon confirmed the subscription (results produced after it
        reach this subscription), or it ended."""
        await self._sub.subscribed.wait()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Frame:
        if self._done:
            raise StopAsyncIteration
        sub = self._sub
        while not sub.items:
            sub.ready.clear()
            await sub.ready.wait()
        item = sub.items.popleft()
        self._connection.consumed(sub)
        if isinstance(item, End):
            self._done = True
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            self._done = True
            raise item
        return item

    async def aclose(self) -> None:
        """Unsubscribes: nothing more of the stream comes."""
        self._done = True
        self._connection.unsubscribe(self._sub)

    def __del__(self) -> None:
        # Unreachable, so nobody will read it: stop the daemon sending its frames.
        if not self._done:
            self._done = True
            with contextlib.suppress(RuntimeError):  # its event loop is closed already
                self._connection.unsubscribe(self._sub)

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class Client:
    """A client of one Streamgate daemon.

    ``url`` is the daemon's base URL (``http://`` or ``https://``). Authenticate with exactly
    one of ``api_key``, ``token`` (a fixed stream token) or ``token_source`` (an async
    callable giving a fresh token, or a :class:`TokenIssued`; asked before connecting,
    shortly before the token's ``exp`` and when the daemon says it expired).

    ``patience`` bounds how long an HTTP call waits out 429 and 503 answers in all;
    ``queue_size`` is how many frames a subscription holds for a slow consumer before it is
    paused; ``http_client`` an ``httpx.AsyncClient`` of your own (its settings, hooks,
    transport) for the HTTP calls.
    """

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        *,
        token: str | None = None,
        token_source: TokenSource | None = None,
        patience: float = PATIENCE,
        queue_size: int = 1024,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self._credentials = Credentials(api_key=api_key, token=token, token_source=token_source)
        self._http = Http(url, self._credentials, client=http_client, patience=patience)
        self._connection = Connection(self._http, self._credentials, queue_size=queue_size)
        self._closed = False

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Closes the connection; subscriptions and sends still waiting raise
        :class:`ClientClosedError`."""
        if self._closed:
            return
        self._closed = True
        await self._connection.aclose()
        await self._http.aclose()

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosedError("the client is closed")

    # ------------------------------------------------------------------ HTTP

    async def start(self, processor: str | Mapping[str, Any] | None = None) -> str:
        """Opens a stream and returns its id. ``processor``: ``"identity"`` (the default),
        ``"uppercase"``, or a spec such as ``{"type": "jq", "filter": ".a"}``."""
        self._check_open()
        body = None if processor is None else {"processor": processor}
        answer = await self._http.json("POST", "/api/stream/start", json=body, retry="refused")
        try:
            return str(answer["stream_id"])
        except (KeyError, TypeError) as e:
            raise ProtocolError(f"unreadable start answer: {answer!r}") from e

    async def end(self, stream_id: str) -> StreamInfo:
        """Ends a stream: later sends are refused; subscribers get every result, then ``end``."""
        self._check_open()
        answer = await self._http.json("DELETE", f"/api/stream/{stream_id}", retry="idempotent")
        return StreamInfo.from_json(answer)

    async def describe(self, stream_id: str) -> StreamInfo:
        """One stream: its owner, processor, state and this instance's counters."""
        self._check_open()
        answer = await self._http.json("GET", f"/api/stream/{stream_id}", retry="idempotent")
        return StreamInfo.from_json(answer)

    async def list(self) -> list[StreamInfo]:
        """The key's streams (all of them for an admin key), newest first."""
        self._check_open()
        answer = await self._http.json("GET", "/api/streams", retry="idempotent")
        try:
            rows = answer["streams"]
        except (KeyError, TypeError) as e:
            raise ProtocolError(f"unreadable stream list: {answer!r}") from e
        return [StreamInfo.from_json(row) for row in rows]

    async def stats(self) -> dict[str, Any]:
        """What ``streamctl top`` shows: uptime, broker, totals and the key's open streams
        (all of them for an admin key), as the daemon's JSON."""
        self._check_open()
        answer = await self._http.json("GET", "/api/stats", retry="idempotent")
        if not isinstance(answer, dict):
            raise ProtocolError(f"unreadable stats: {answer!r}")
        return answer

    async def token(
        self,
        streams: str | Sequence[str],
        scope: Sequence[Scope] = ("subscribe",),
        ttl_s: int | None = None,
    ) -> TokenIssued:
        """A stream token for one to 100 of the key's streams, with ``scope``, for ``ttl_s``
        seconds (default: the daemon's, an hour)."""
        self._check_open()
        ids = [streams] if isinstance(streams, str) else list(streams)
        body: dict[str, Any] = {"streams": ids, "scope": list(scope)}
        if ttl_s is not None:
            body["ttl_s"] = ttl_s
        answer = await self._http.json("POST", "/api/tokens", json=body, retry="idempotent")
        return TokenIssued.from_json(answer)

    async def send_batch(
        self,
        stream_id: str,
        values: Iterable[Any],
        *,
        idempotency_key: str | None = None,
        traceparent: str | None = None,
    ) -> Accepted:
        """Sends records as one NDJSON request, answered once the broker stored every one.

        The request carries an ``Idempotency-Key`` (``idempotency_key``, or a fresh one):
        a failure that may pass (no answer, a refused connection, 429, 503) is tried again
        with the same key within the client's patience, and the daemon stores and processes
        the records once however often it saw them.

        ``traceparent``: a W3C trace context (``00-<32 hex trace id>-<16 hex span id>-<2 hex
        flags>``), sent as the request's ``traceparent`` header, so every record of the
        batch is processed in that trace (when the daemon traces: ``telemetry``); the
        results of a sampled one carry the ``traceparent`` of the span that processed them.
        A malformed one raises ``ValueError`` before anything is sent.
        """
        self._check_open()
        traceparent = check_traceparent(traceparent)
        lines = [json.dumps(v, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
                 for v in values]
        body = ("\n".join(lines) + "\n").encode()
        key = idempotency_key or str(uuid.uuid4())
        headers = {"Content-Type": "application/x-ndjson", "Idempotency-Key": key}
        if traceparent is not None:
            headers["traceparent"] = traceparent
        resp = await self._http.request(
            "POST",
            f"/api/stream/{stream_id}/send",
            content=body,
            headers=headers,
            retry="idempotent",
        )
        try:
            return Accepted.from_json(resp.json())
        except ValueError as e:
            raise ProtocolError(f"unreadable send answer: {e}") from e

    # ------------------------------------------------------------------ the connection

    async def send(self, stream_id: str, data: Any, *, traceparent: str | None = None) -> Ack:
        """Sends one record over the connection; returns once the broker stored it.

        It carries an idempotency key of its own and is sent again with it when the answer
        was lost (a cut connection, a daemon restart) or the daemon asked to try later, so it
        is stored and processed once. Other refusals raise a
        :class:`~streamgate.ServerError` subclass.

        ``traceparent``: a W3C trace context (``00-<32 hex trace id>-<16 hex span id>-<2 hex
        flags>``) the record is sent under: the ``traceparent`` field of its ``send`` frame
        (the ``traceparent`` header of its HTTP send on the fallback), kept on every repeat.
        When the daemon traces (``telemetry``) and the context is sampled, the record's
        results carry the ``traceparent`` of the span that processed it, in the same trace.
        A malformed one raises ``ValueError`` before anything is sent.
        """
        self._check_open()
        return await self._connection.send(stream_id, data, traceparent=traceparent)

    def subscribe(
        self,
        stream_id: str,
        from_: From | None = None,
        *,
        on_lag: Literal["close", "skip"] | None = None,
        until: Literal["now"] | None = None,
    ) -> Subscription:
        """Follows a stream over the connection, from ``from_`` (default ``"latest"``), then
        live. The subscription is made at once; iterate it for the frames.

        ``on_lag="skip"``: when this client reads too slowly, the daemon drops results and
        says so in ``gap`` frames; ``"close"`` (the daemon's default): the client is told
        where to resume and resumes there by itself. ``until="now"``: only what exists now;
        iteration ends once it was delivered.
        """
        self._check_open()
        sub = self._connection.subscribe(stream_id, from_, on_lag, until)
        return Subscription(self._connection, sub)
