"""One HTTP helper for every call: the base URL, the credential on every request, the
daemon's JSON errors as typed exceptions, and patience: a 429 or 503 is waited out as
``Retry-After`` says (or with back-off where it says nothing) and tried again, for at most
``patience`` seconds in all."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Mapping

import httpx

from ._auth import Credentials
from ._retry import PATIENCE, Backoff
from .errors import (
    ConnectError,
    ErrorCode,
    ProtocolError,
    ServerError,
    StreamgateError,
    TransportError,
    from_http,
    parse_retry_after,
)

log = logging.getLogger("streamgate")

#: Refusals made before anything was done: any call may be tried again after them.
_REFUSED_BEFORE = frozenset(
    {
        ErrorCode.RATE_LIMITED,
        ErrorCode.NOT_READY,
        ErrorCode.SHUTTING_DOWN,
        ErrorCode.TOO_MANY_CONNECTIONS,
    }
)
#: Refusals after which an idempotent call (a read, an end, a keyed batch) may be tried again.
_PASSING = _REFUSED_BEFORE | {
    ErrorCode.BACKLOG_FULL,
    ErrorCode.BROKER_UNAVAILABLE,
    ErrorCode.IDEMPOTENCY_KEY_IN_FLIGHT,
}


class Http:
    """The daemon's HTTP API, authenticated."""

    def __init__(
        self,
        base_url: str,
        credentials: Credentials,
        *,
        client: httpx.AsyncClient | None = None,
        patience: float = PATIENCE,
    ) -> None:
        base = base_url.rstrip("/")
        if not base.startswith(("http://", "https://")):
            raise ValueError(f"the URL must start with http:// or https://, not {base_url!r}")
        self.base = base
        self.credentials = credentials
        self.patience = patience
        self._owned = client is None
        self._client = client or httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=10.0))

    def url(self, path: str) -> str:
        return self.base + path

    def ws_url(self, path: str) -> str:
        if self.base.startswith("https://"):
            return "wss://" + self.base[len("https://"):] + path
        return "ws://" + self.base[len("http://"):] + path

    async def aclose(self) -> None:
        if self._owned:
            await self._client.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        idempotent: bool = False,
        retry_ambiguous: bool = False,
    ) -> httpx.Response:
        """Sends a request and returns the successful response, or raises the daemon's error.

        A 429 or 503 that may pass is tried again after ``Retry-After`` (back-off when absent)
        while the total stays within ``patience``; after a 503 that may have done part of the
        work (``broker_unavailable``) only when ``idempotent``. ``retry_ambiguous``: a
        request lost on its way (no answer) or refused at connect is tried again too: for
        calls that are safe to repeat (an ``Idempotency-Key``).
        """
        deadline = time.monotonic() + self.patience
        backoff = Backoff()
        refreshed = False
        retryable = _PASSING if idempotent else _REFUSED_BEFORE
        while True:
            auth = await self.credentials.headers()
            all_headers = {**auth, **(headers or {})}
            try:
                resp = await self._client.request(
                    method,
                    self.url(path),
                    json=json,
                    content=content,
                    headers=all_headers,
                    params=params,
                )
            except httpx.ConnectError as e:
                error: StreamgateError = ConnectError(
                    f"cannot connect to {self.base} ({e}); is `streamctl serve` running there?"
                )
                retry_after = None
                if not retry_ambiguous:
                    raise error from e
            except httpx.TransportError as e:
                error = TransportError(f"{method} {path} failed on its way: {e!r}")
                retry_after = None
                if not retry_ambiguous:
                    raise error from e
            else:
                if resp.is_success:
                    return resp
                retry_after = parse_retry_after(resp.headers.get("retry-after"))
                error = from_http(resp.status_code, resp.content, retry_after)
                assert isinstance(error, ServerError)
                if (
                    error.code == ErrorCode.TOKEN_EXPIRED
                    and self.credentials.refreshable
                    and not refreshed
                ):
                    refreshed = True
                    await self.credentials.token(fresh=True)
                    continue
                # A code that says "not now", or a 429/503 the daemon put a time on.
                waits = error.code in retryable or (
                    idempotent and resp.status_code in (429, 503) and retry_after is not None
                )
                if not waits:
                    raise error
            pause = backoff.pause(retry_after)
            if time.monotonic() + pause > deadline:
                raise error
            log.debug("streamgate: %s %s: %s; trying again in %.1f s", method, path, error, pause)
            await asyncio.sleep(pause)

    async def json(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = await self.request(method, path, **kwargs)
        try:
            return resp.json()
        except ValueError as e:
            raise ProtocolError(f"unreadable answer to {method} {path}: {e}") from e
