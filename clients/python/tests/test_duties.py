"""A client's duties, each against a scripted stand-in for the daemon's ``/api/connect`` that
does exactly what a test needs (duplicates, gaps, lost answers, ``nack``, ``lagged``,
``refused``, ``4401``), so each duty is checked even where the real daemon rarely shows it."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Awaitable, Callable

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

import streamgate

SID = "00000000-0000-0000-0000-0000000000c1"
Script = Callable[[ServerConnection, int], Awaitable[None]]
#: Answers the n-th handshake (from 1) with a refusal, or ``None`` to accept it.
Refuse = Callable[[int], Response | None]


def outcome(kind: str, cursor: int, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "cursor": cursor, "stream_id": SID, "input_partition": 0,
            "input_offset": cursor, "received_ms": 1, "processed_ms": 2, **extra}


class FakeDaemon:
    """Serves ``/api/connect`` with ``script(connection, n)`` for the n-th connection (from 1),
    keeping every client frame and every handshake's headers."""

    def __init__(self, script: Script, refuse: Refuse | None = None) -> None:
        self.script = script
        self.refuse = refuse
        self.handshakes = 0
        self.frames: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.connections = 0

    async def __aenter__(self) -> FakeDaemon:
        self._server = await serve(self._handle, "127.0.0.1", 0,
                                   process_request=self._process_request)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        await self._server.wait_closed()

    def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        self.handshakes += 1
        return self.refuse(self.handshakes) if self.refuse is not None else None

    async def _handle(self, ws: ServerConnection) -> None:
        self.connections += 1
        assert ws.request is not None
        self.headers.append(dict(ws.request.headers))
        try:
            await self.script(ws, self.connections)
            await ws.wait_closed()
        except Exception:
            ws.transport.abort()

    async def recv(self, ws: ServerConnection) -> dict[str, Any]:
        frame: dict[str, Any] = json.loads(await ws.recv())
        self.frames.append(frame)
        return frame

    def sent(self, kind: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["type"] == kind]


def answer(status: int, body: str, **headers: str) -> Response:
    return Response(status, "", Headers({"Content-Type": "text/plain", **headers}),
                    body.encode())


async def put(ws: ServerConnection, *frames: dict[str, Any]) -> None:
    for frame in frames:
        await ws.send(json.dumps(frame))


def cut(ws: ServerConnection) -> None:
    """Drops the connection without a close frame."""
    ws.transport.abort()


async def frames_of(sub: streamgate.Subscription) -> list[streamgate.Frame]:
    return [f async for f in sub]


async def test_resumes_after_the_last_cursor_drops_repeats_and_yields_gaps() -> None:
    async def script(ws: ServerConnection, n: int) -> None:
        sub = await fake.recv(ws)
        await put(ws, {"type": "subscribed", "stream_id": SID})
        if n == 1:
            await put(ws, *(outcome("result", c, data=c) for c in range(3)))
            await asyncio.sleep(0.1)
            cut(ws)
        else:
            # A daemon replaying too much: 1 and 2 were delivered already.
            await put(ws, *(outcome("result", c, data=c) for c in (1, 2, 3, 4)))
            await put(ws, {"type": "gap", "stream_id": SID, "from_cursor": 5, "skipped": 2})
            await put(ws, outcome("result", 6, data=6))  # inside the gap: already reported
            await put(ws, outcome("result", 7, data=7), outcome("end", 8))
        assert sub["type"] == "subscribe"

    async with FakeDaemon(script) as fake, streamgate.Client(fake.url, api_key="k") as client:
        got = await asyncio.wait_for(frames_of(client.subscribe(SID, from_="earliest")), 10)
    assert [f.type for f in got] == ["result"] * 5 + ["gap", "result", "end"]
    assert [f.data for f in got if isinstance(f, streamgate.ResultFrame)] == [0, 1, 2, 3, 4, 7]
    assert [f.get("from") for f in fake.sent("subscribe")] == ["earliest", 3]
    assert fake.headers[0]["x-api-key"] == "k"


async def test_a_record_is_sent_again_with_its_key_until_acknowledged() -> None:
    async def script(ws: ServerConnection, n: int) -> None:
        while True:
            frame = await fake.recv(ws)
            attempt = len(fake.sent("send"))
            if attempt == 1:
                cut(ws)  # lost before its answer
                return
            if attempt == 2:
                await put(ws, {"type": "nack", "stream_id": SID, "seq": frame["seq"],
                               "error": {"code": "shutting_down", "message": "bye"}})
            elif attempt == 3:
                await put(ws, {"type": "ack", "stream_id": SID, "seq": frame["seq"],
                               "offset": 41, "replayed": True})
            else:
                await put(ws, {"type": "nack", "stream_id": SID, "seq": frame["seq"],
                               "error": {"code": "record_too_large", "message": "big"}})

    async with FakeDaemon(script) as fake, streamgate.Client(fake.url, api_key="k") as client:
        ack = await asyncio.wait_for(client.send(SID, {"b": 1.5, "a": [1, "x"]}), 10)
        with pytest.raises(streamgate.TooLargeError) as e:
            await asyncio.wait_for(client.send(SID, 2), 10)
    assert ack == streamgate.Ack(stream_id=SID, seq=ack.seq, offset=41, replayed=True)
    assert e.value.code == "record_too_large" and e.value.status is None
    sends = fake.sent("send")
    first_three = sends[:3]
    assert len({f["idempotency_key"] for f in first_three}) == 1, "the same key each time"
    assert all(f["data"] == {"b": 1.5, "a": [1, "x"]} for f in first_three)
    assert len({f["seq"] for f in first_three}) == 3
    assert sends[3]["idempotency_key"] != sends[0]["idempotency_key"], "a fresh key per record"


async def test_a_record_is_sent_again_with_its_traceparent() -> None:
    async def script(ws: ServerConnection, n: int) -> None:
        while True:
            frame = await fake.recv(ws)
            if len(fake.sent("send")) == 1:
                cut(ws)  # lost before its answer
                return
            await put(ws, {"type": "ack", "stream_id": SID, "seq": frame["seq"], "offset": 0})

    context = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    async with FakeDaemon(script) as fake, streamgate.Client(fake.url, api_key="k") as client:
        await asyncio.wait_for(client.send(SID, "traced", traceparent=context), 10)
        await asyncio.wait_for(client.send(SID, "plain"), 10)
    traced, again, plain = fake.sent("send")
    assert fake.connections == 2
    assert traced["traceparent"] == again["traceparent"] == context
    assert traced["idempotency_key"] == again["idempotency_key"]
    assert "traceparent" not in plain


async def test_lagged_unsubscribed_and_a_passing_refusal_subscribe_again() -> None:
    async def script(ws: ServerConnection, n: int) -> None:
        await fake.recv(ws)
        await put(ws, {"type": "refused", "stream_id": SID,
                       "error": {"code": "not_ready", "message": "starting"}})
        await fake.recv(ws)
        await put(ws, {"type": "subscribed", "stream_id": SID}, outcome("result", 0, data=0),
                  {"type": "lagged", "stream_id": SID, "resume_from": 5})
        await fake.recv(ws)
        await put(ws, {"type": "subscribed", "stream_id": SID}, outcome("result", 5, data=5),
                  {"type": "unsubscribed", "stream_id": SID,
                   "error": {"code": "internal", "message": "replay failed"}})
        await fake.recv(ws)
        await put(ws, {"type": "subscribed", "stream_id": SID}, outcome("end", 6))

    async with FakeDaemon(script) as fake, streamgate.Client(fake.url, api_key="k") as client:
        got = await asyncio.wait_for(frames_of(client.subscribe(SID, from_="earliest")), 10)
    assert [(f.type, getattr(f, "cursor", None)) for f in got] == [
        ("result", 0), ("result", 5), ("end", 6)]
    assert [f.get("from") for f in fake.sent("subscribe")] == ["earliest", "earliest", 5, 6]
    assert fake.connections == 1


async def test_a_refusal_that_will_not_pass_raises_in_the_iterator() -> None:
    async def script(ws: ServerConnection, n: int) -> None:
        await fake.recv(ws)
        await put(ws, {"type": "refused", "stream_id": SID,
                       "error": {"code": "forbidden", "message": "no subscribe scope"}})

    async with FakeDaemon(script) as fake, streamgate.Client(fake.url, api_key="k") as client:
        with pytest.raises(streamgate.ForbiddenError):
            await asyncio.wait_for(frames_of(client.subscribe(SID)), 10)


async def test_4401_asks_the_token_source_again_and_resumes() -> None:
    async def script(ws: ServerConnection, n: int) -> None:
        await fake.recv(ws)
        await put(ws, {"type": "subscribed", "stream_id": SID})
        if n == 1:
            await put(ws, outcome("result", 10, data="a"))
            await ws.close(4401, "token expired")
        else:
            await put(ws, outcome("result", 11, data="b"), outcome("end", 12))

    tokens = iter(["first-token", "second-token"])

    async def source() -> str:
        return next(tokens)

    async with FakeDaemon(script) as fake, \
            streamgate.Client(fake.url, token_source=source) as client:
        got = await asyncio.wait_for(frames_of(client.subscribe(SID)), 10)
    assert [f.data for f in got if isinstance(f, streamgate.ResultFrame)] == ["a", "b"]
    assert [h["authorization"] for h in fake.headers] == ["Bearer first-token",
                                                          "Bearer second-token"]
    assert [f.get("from") for f in fake.sent("subscribe")] == [None, 11]


async def test_reconnects_back_off_and_never_spin() -> None:
    async def script(ws: ServerConnection, n: int) -> None:
        cut(ws)  # every connection dropped at once

    async with FakeDaemon(script) as fake, streamgate.Client(fake.url, api_key="k") as client:
        sub = client.subscribe(SID)
        await asyncio.sleep(2.0)
        await sub.aclose()
    # 100 ms doubling (with up to 20 % jitter): 0.1 + 0.2 + 0.4 + 0.8 = 1.5 s, so 5 attempts
    # within 2 s, and never more than 6.
    assert 3 <= fake.connections <= 6, fake.connections


async def test_records_nacked_for_a_while_are_sent_again_in_their_order() -> None:
    async def script(ws: ServerConnection, n: int) -> None:
        for _ in range(2):
            frame = await fake.recv(ws)
            await put(ws, {"type": "nack", "stream_id": SID, "seq": frame["seq"],
                           "error": {"code": "not_ready", "message": "starting"}})
        for offset in range(2):
            frame = await fake.recv(ws)
            await put(ws, {"type": "ack", "stream_id": SID, "seq": frame["seq"],
                           "offset": offset})

    async with FakeDaemon(script) as fake, streamgate.Client(fake.url, api_key="k") as client:
        acks = await asyncio.wait_for(
            asyncio.gather(client.send(SID, "first"), client.send(SID, "second")), 10)
    assert [a.offset for a in acks] == [0, 1]
    sends = fake.sent("send")
    assert [f["data"] for f in sends] == ["first", "second", "first", "second"]
    assert [f["idempotency_key"] for f in sends[:2]] == [f["idempotency_key"] for f in sends[2:]]


async def test_a_refused_handshake_is_tried_again_unless_it_will_not_pass() -> None:
    async def script(ws: ServerConnection, n: int) -> None:
        await fake.recv(ws)
        await put(ws, {"type": "subscribed", "stream_id": SID}, outcome("end", 0))

    def proxy_then_daemon(n: int) -> Response | None:
        if n == 1:
            return answer(502, "bad gateway")
        if n == 2:
            return answer(503, '{"error":{"code":"not_ready","message":"starting"}}',
                          **{"Retry-After": "1"})
        return None

    async with FakeDaemon(script, proxy_then_daemon) as fake, \
            streamgate.Client(fake.url, api_key="k") as client:
        start = asyncio.get_running_loop().time()
        got = await asyncio.wait_for(frames_of(client.subscribe(SID)), 10)
        waited = asyncio.get_running_loop().time() - start
    assert [f.type for f in got] == ["end"] and fake.handshakes == 3
    assert waited >= 1.0, "Retry-After: 1 was not waited out"

    def bad_key(n: int) -> Response | None:
        return answer(401, '{"error":{"code":"invalid_api_key","message":"unknown key"}}')

    async with FakeDaemon(script, bad_key) as fake, \
            streamgate.Client(fake.url, api_key="k") as client:
        with pytest.raises(streamgate.AuthenticationError):
            await asyncio.wait_for(frames_of(client.subscribe(SID)), 10)
        with pytest.raises(streamgate.AuthenticationError):
            await asyncio.wait_for(client.send(SID, 1), 10)
    assert fake.handshakes == 2  # once for each: no spinning on a bad key


@pytest.mark.parametrize("ending", ["lagged", "caught_up"])
async def test_the_end_of_a_paused_subscription_is_not_believed(ending: str) -> None:
    """Frames the daemon sent before it read the unsubscribe of a paused subscription: the
    paused client dropped some, so "everything before was delivered" is not true of what
    its consumer got. It subscribes again from the consumer's cursor once answered."""
    until = {"until": "now"} if ending == "caught_up" else {}
    last = ({"type": "caught_up", "stream_id": SID} if ending == "caught_up"
            else outcome("end", 4))

    async def script(ws: ServerConnection, n: int) -> None:
        await fake.recv(ws)
        await put(ws, {"type": "subscribed", "stream_id": SID},
                  *(outcome("result", c, data=c) for c in range(3)))  # 2 finds the queue full
        assert (await fake.recv(ws))["type"] == "unsubscribe"
        paused.set()
        await put(ws, outcome("result", 3, data=3))
        await put(ws, {"type": "lagged", "stream_id": SID, "resume_from": 4} if ending == "lagged"
                  else {"type": "caught_up", "stream_id": SID})
        await put(ws, {"type": "unsubscribed", "stream_id": SID})
        assert await fake.recv(ws) == {"type": "subscribe", "stream_id": SID, "from": 2, **until}
        await put(ws, {"type": "subscribed", "stream_id": SID},
                  *(outcome("result", c, data=c) for c in (2, 3)), last)

    paused = asyncio.Event()
    async with FakeDaemon(script) as fake, \
            streamgate.Client(fake.url, api_key="k", queue_size=2) as client:
        sub = client.subscribe(SID, from_=0, **until)  # type: ignore[arg-type]
        await asyncio.wait_for(paused.wait(), 10)  # read nothing until the queue filled
        got = await asyncio.wait_for(frames_of(sub), 10)
    cursors = [f.cursor for f in got if not isinstance(f, streamgate.GapFrame)]
    assert cursors == ([0, 1, 2, 3] if ending == "caught_up" else [0, 1, 2, 3, 4])


async def test_subscribed_again_while_the_unsubscribe_is_unanswered() -> None:
    async def script(ws: ServerConnection, n: int) -> None:
        await fake.recv(ws)
        await put(ws, {"type": "subscribed", "stream_id": SID}, outcome("result", 0, data=0))
        assert (await fake.recv(ws))["type"] == "unsubscribe"
        await subscribed_again.wait()
        # The old subscription lagged before the daemon read the unsubscribe; then its answer.
        await put(ws, {"type": "lagged", "stream_id": SID, "resume_from": 1},
                  {"type": "unsubscribed", "stream_id": SID})
        assert await fake.recv(ws) == {"type": "subscribe", "stream_id": SID, "from": 0}
        await put(ws, {"type": "subscribed", "stream_id": SID}, outcome("result", 0, data=0),
                  outcome("end", 1))

    subscribed_again = asyncio.Event()
    async with FakeDaemon(script) as fake, streamgate.Client(fake.url, api_key="k") as client:
        async with client.subscribe(SID, from_=0) as first:
            assert (await asyncio.wait_for(anext(first), 10)).type == "result"
        second = client.subscribe(SID, from_=0)
        subscribed_again.set()
        got = await asyncio.wait_for(frames_of(second), 10)
    assert [(f.type, getattr(f, "cursor", None)) for f in got] == [("result", 0), ("end", 1)]
