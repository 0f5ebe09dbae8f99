"""Pieces that need no daemon: the code list against the OpenAPI document, back-off,
Retry-After, token expiry, frame parsing, and which HTTP failures each call tries again."""

from __future__ import annotations

import base64
import json
import time

import httpx
import pytest

import streamgate
from streamgate._auth import Credentials, refresh_lead, token_expiry
from streamgate._retry import FIRST_BACKOFF, MAX_BACKOFF, Backoff
from streamgate.errors import from_http, parse_retry_after
from streamgate.frames import parse_frame
from support import REPO


def test_error_codes_match_the_openapi_document() -> None:
    spec = json.loads((REPO / "docs" / "openapi.json").read_text())
    documented = spec["components"]["schemas"]["ErrorCode"]["enum"]
    assert [c.value for c in streamgate.ErrorCode] == documented
    # Every code has its exception class.
    assert set(streamgate.ERROR_CLASSES) == set(streamgate.ErrorCode)


def test_errors_are_typed_by_code() -> None:
    body = b'{"error":{"code":"broker_unavailable","message":"no ack","acknowledged":3}}'
    e = from_http(503, body, 1.0)
    assert isinstance(e, streamgate.UnavailableError)
    assert (e.code, e.status, e.retry_after, e.acknowledged) == ("broker_unavailable", 503, 1.0, 3)
    assert isinstance(from_http(401, b'{"error":{"code":"token_expired","message":""}}', None),
                      streamgate.TokenExpiredError)
    unknown = from_http(418, b'{"error":{"code":"teapot","message":"short"}}', None)
    assert type(unknown) is streamgate.ServerError and unknown.code == "teapot"
    proxy = from_http(502, b"<html>bad gateway</html>", None)
    assert proxy.code == "http_502" and "bad gateway" in proxy.message


def test_backoff_doubles_to_five_seconds_with_jitter() -> None:
    b = Backoff()
    pauses = [b.pause() for _ in range(12)]
    assert FIRST_BACKOFF <= pauses[0] <= FIRST_BACKOFF * 1.2
    assert FIRST_BACKOFF * 2 <= pauses[1] <= FIRST_BACKOFF * 2.4
    assert all(MAX_BACKOFF <= p <= MAX_BACKOFF * 1.2 for p in pauses[-3:])
    assert b.pause(3.0) == 3.0
    assert b.pause(0.0) >= MAX_BACKOFF, "Retry-After: 0 is no reason to try again at once"
    b.reset()
    assert b.pause() <= FIRST_BACKOFF * 1.2


def test_retry_after_seconds_and_dates() -> None:
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 28 <= (parse_retry_after(date) or 0) <= 31


def _jwt(claims: dict[str, int]) -> str:
    def part(obj: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256'})}.{part(claims)}.c2ln"


async def test_token_source_is_asked_again_before_exp() -> None:
    now = int(time.time())
    tokens = [_jwt({"iat": now, "exp": now + 3600}), _jwt({"iat": now - 10, "exp": now + 1})]
    asked = []

    async def source() -> str:
        asked.append(1)
        return tokens[len(asked) - 1] if len(asked) <= 2 else _jwt({"iat": now, "exp": now + 60})

    assert token_expiry(tokens[0]) == (now, now + 3600)
    assert token_expiry("not-a-jwt") == (None, None)
    assert refresh_lead(now, now + 3600) == 30
    assert refresh_lead(now, now + 2) == 0.5
    creds = Credentials(token_source=source)
    first = await creds.token()
    assert await creds.token() == first and len(asked) == 1  # an hour left: kept
    second = await creds.token(fresh=True)
    assert second == tokens[1]
    await creds.token()  # one second left of an 11 s token: due, asked again
    assert len(asked) == 3
    with pytest.raises(ValueError):
        Credentials(api_key="k", token="t")


def test_frames_parse() -> None:
    base = {"stream_id": "s", "cursor": 4, "input_partition": 1, "input_offset": 2,
            "received_ms": 5, "processed_ms": 6}
    result = parse_frame({"type": "result", **base, "data": None, "later_field": 1})
    assert isinstance(result, streamgate.ResultFrame) and result.data is None
    assert result.type == "result" and result.cursor == 4
    error = parse_frame({"type": "error", **base,
                         "error": {"code": "processing_failed", "message": "boom"}})
    assert isinstance(error, streamgate.ErrorFrame) and error.error is not None
    assert error.error.code == streamgate.ErrorCode.PROCESSING_FAILED
    gap = parse_frame({"type": "gap", "stream_id": "s", "from_cursor": 10, "skipped": 5})
    assert isinstance(gap, streamgate.GapFrame) and gap.last_cursor == 14
    assert parse_frame({"type": "subscribed", "stream_id": "s"}) is None
    with pytest.raises(streamgate.ProtocolError):
        parse_frame({"type": "result", "stream_id": "s"})


def _answers(*steps: int | str) -> tuple[httpx.MockTransport, list[str]]:
    """A transport answering each request with the next step: a status with the daemon's
    error body for it (``Retry-After: 0``), or ``"lost"`` (no answer) or ``"refused"`` (no
    connection). Past the steps, 200 with a stream's body."""
    seen: list[str] = []
    codes = {429: "rate_limited", 404: "stream_not_found", 409: "idempotency_key_in_flight"}

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        step = steps[len(seen) - 1] if len(seen) <= len(steps) else 200
        if step == "lost":
            raise httpx.ReadError("connection reset", request=request)
        if step == "refused":
            raise httpx.ConnectError("connection refused", request=request)
        if step == 200:
            return httpx.Response(200, json={"stream_id": "s", "processor": {"type": "identity"},
                                             "records": 1, "partition": 0, "offsets": [0]})
        assert isinstance(step, int)
        code = codes.get(step, "broker_unavailable")
        return httpx.Response(step, headers={"Retry-After": "0"},
                              json={"error": {"code": code, "message": "no"}})

    return httpx.MockTransport(handle), seen


@pytest.mark.parametrize(("steps", "requests"), [
    ((429, 429), 3),           # any 429: nothing was done
    (("refused",), 2),         # no connection: nothing was sent
    ((404,), 1),
    (("lost",), 1),            # it may have been done: not twice
])
async def test_start_tries_again_only_what_was_not_done(steps: tuple[int | str, ...],
                                                        requests: int) -> None:
    transport, seen = _answers(*steps)
    async with httpx.AsyncClient(transport=transport) as http, \
            streamgate.Client("http://daemon", api_key="k", http_client=http) as client:
        if requests > len(steps):
            assert await client.start() == "s"
        else:
            with pytest.raises(streamgate.StreamgateError):
                await client.start()
    assert len(seen) == requests


@pytest.mark.parametrize(("code", "again"), [
    ("not_ready", True), ("shutting_down", True), ("broker_unavailable", False),
    ("backlog_full", False),
])
async def test_start_tries_a_503_again_only_when_it_says_nothing_was_done(code: str,
                                                                          again: bool) -> None:
    seen: list[float] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(time.monotonic())
        return httpx.Response(503, headers={"Retry-After": "0.1"},
                              json={"error": {"code": code, "message": "no"}})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as http, \
            streamgate.Client("http://daemon", api_key="k", http_client=http,
                              patience=0.35) as client:
        with pytest.raises(streamgate.ServerError) as e:
            await client.start()
    assert e.value.code == code and e.value.status == 503
    # Tried again each Retry-After (0.1 s) within its patience (0.35 s), or not at all.
    assert len(seen) == (4 if again else 1), seen
    assert all(b - a >= 0.1 for a, b in zip(seen, seen[1:]))


async def test_idempotent_calls_try_again_after_a_lost_answer_and_any_503() -> None:
    transport, seen = _answers("lost", 503, "refused", 200)
    async with httpx.AsyncClient(transport=transport) as http, \
            streamgate.Client("http://daemon", api_key="k", http_client=http) as client:
        accepted = await client.send_batch("s", [1], idempotency_key="key-1")
    assert accepted.records == 1 and len(seen) == 4

    transport, seen = _answers(409, 200)  # idempotency_key_in_flight: waited out
    async with httpx.AsyncClient(transport=transport) as http, \
            streamgate.Client("http://daemon", api_key="k", http_client=http) as client:
        await client.send_batch("s", [1])
    assert len(seen) == 2
