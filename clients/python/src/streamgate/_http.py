"""One HTTP helper for every call: the base URL, the credential on every request, the
daemon's JSON errors as typed exceptions, and patience: a 429 or 503 is waited out as
``Retry-After`` says (or with back-off where it says nothing) and tried again, for at most
``patience`` seconds in all. It never tries again without waiting."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Literal, Mapping

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

#: Which failures a call tries again:
#:
#: - ``"refused"``: only those that say nothing was done (any 429; a 503 ``not_ready``,
#:   ``shutting_down`` or ``too_many_connections``; a connection refused): for a call that
#:   must not be done twice (``start``);
#: - ``"idempotent"``: any 429 or 503, ``idempotency_key_in_flight``, and a request whose
#:   answer was lost: for reads, ``end``, tokens, and sends with an ``Idempotency-Key``.
Retry = Literal["refused", "idempotent"]

#: 503 codes that say the request was refused before anything was done.
_REFUSED_503 = frozenset(
    {ErrorCode.NOT_READY, ErrorCode.SHUTTING_DOWN, ErrorCode.TOO_MANY_CONNECTIONS}
)


def _may_retry(error: ServerError, retry: Retry) -> bool:
    if error.status == 429:
        return True
    if error.status == 503:
        return retry == "idempotent" or error.code in _REFUSED_503
    return retry == "idempotent" and error.code == ErrorCode.IDEMPOTENCY_KEY_IN_FLIGHT


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
        retry: Retry,
        json: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Sends a request and returns the successful response, or raises the daemon's error.

        A failure that ``retry`` allows is tried again after ``Retry-After`` (the back-off
        when there is none) while the total stays within ``patience``; never without waiting.
        """
        deadline = time.monotonic() + self.patience
        backoff = Backoff()
        renewed = False
        while True:
            auth = await self.credentials.headers()
            try:
                resp = await self._client.request(
                    method, self.url(path), json=json, content=content,
                    headers={**auth, **(headers or {})},
                )
            except httpx.ConnectError as e:
                # No connection was made, so nothing was sent: any call may try again.
                error: StreamgateError = ConnectError(
                    f"cannot connect to {self.base} ({e}); is `streamctl serve` running there?"
                )
                error.__cause__ = e
            except httpx.TransportError as e:
                error = TransportError(f"{method} {path} failed on its way: {e!r}")
                error.__cause__ = e
                if retry != "idempotent":
                    raise error from e
            else:
                if resp.is_success:
                    return resp
                error = from_http(resp.status_code, resp.content,
                                  parse_retry_after(resp.headers.get("retry-after")))
                if (error.code == ErrorCode.TOKEN_EXPIRED and self.credentials.refreshable
                        and not renewed):
                    # It ran out between the check and the answer: once more with a new one.
                    renewed = True
                    await self.credentials.token(fresh=True)
                    continue
                if not _may_retry(error, retry):
                    raise error
            pause = backoff.pause(error.retry_after)
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
