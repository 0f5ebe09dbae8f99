"""How the client authenticates: an API key, a fixed stream token, or a token source asked
for a fresh token before connecting, shortly before the current one's ``exp``, and after the
daemon said it expired."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
from typing import Awaitable, Callable, Union

from .errors import TokenSourceError
from .frames import TokenIssued

#: An async callable giving a fresh stream token (the text, or what ``Client.token`` returns).
TokenSource = Callable[[], Awaitable[Union[str, TokenIssued]]]

#: Longest lead before ``exp`` at which a token is replaced.
MAX_LEAD = 30.0


def token_expiry(token: str) -> tuple[float | None, float | None]:
    """The JWT's ``iat`` and ``exp`` (Unix seconds) from its payload, without checking its
    signature (the daemon does that); ``None`` where the token does not say."""
    parts = token.split(".")
    if len(parts) != 3:
        return None, None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError):
        return None, None
    if not isinstance(claims, dict):
        return None, None
    iat, exp = claims.get("iat"), claims.get("exp")
    return (
        float(iat) if isinstance(iat, (int, float)) else None,
        float(exp) if isinstance(exp, (int, float)) else None,
    )


def refresh_lead(iat: float | None, exp: float) -> float:
    """How long before ``exp`` a token is replaced: a quarter of its lifetime, at most 30 s."""
    lifetime = exp - iat if iat is not None else MAX_LEAD * 4
    return min(MAX_LEAD, max(lifetime / 4, 0.2))


class Credentials:
    """The credential of one client, shared by its HTTP calls and its connection."""

    def __init__(
        self,
        api_key: str | None = None,
        token: str | None = None,
        token_source: TokenSource | None = None,
    ) -> None:
        given = [x is not None for x in (api_key, token, token_source)]
        if sum(given) != 1:
            raise ValueError("give exactly one of api_key, token or token_source")
        self.api_key = api_key
        self._token = token
        self._source = token_source
        self._lock = asyncio.Lock()

    @property
    def uses_token(self) -> bool:
        return self.api_key is None

    @property
    def refreshable(self) -> bool:
        return self._source is not None

    def current_token(self) -> str | None:
        return self._token

    def refresh_at(self) -> float | None:
        """Unix time at which the current token should be replaced (``None``: never)."""
        if self._source is None or self._token is None:
            return None
        iat, exp = token_expiry(self._token)
        if exp is None:
            return None
        return exp - refresh_lead(iat, exp)

    async def token(self, *, fresh: bool = False) -> str:
        """The token to present: the source is asked when there is none yet, when the one held
        is due for replacement, or when ``fresh`` (it was refused as expired)."""
        if self._source is None:
            assert self._token is not None
            return self._token
        held = self._token
        if not fresh and held is not None and not self._due(held):
            return held
        async with self._lock:
            # Another caller may have replaced it while this one waited.
            if self._token is not None and self._token != held and not self._due(self._token):
                return self._token
            try:
                got = await self._source()
            except Exception as e:  # the source's own failure, whatever it is
                raise TokenSourceError(f"the token source failed: {e!r}") from e
            text = got.token if isinstance(got, TokenIssued) else got
            if not isinstance(text, str) or not text:
                raise TokenSourceError(f"the token source gave {got!r}, not a token")
            self._token = text
            return text

    def _due(self, token: str) -> bool:
        iat, exp = token_expiry(token)
        if exp is None:
            return False
        return time.time() >= exp - refresh_lead(iat, exp)

    async def headers(self, *, fresh: bool = False) -> dict[str, str]:
        """The header that carries the credential."""
        if self.api_key is not None:
            return {"X-API-Key": self.api_key}
        return {"Authorization": f"Bearer {await self.token(fresh=fresh)}"}
