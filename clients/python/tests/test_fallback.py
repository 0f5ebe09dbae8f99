"""The fallback for a daemon without ``/api/connect``: a stand-in for an older daemon answers
404 there, serves each stream's ``/api/stream/{id}/results`` socket by script, and takes
``POST /api/stream/{id}/send`` (through an ``httpx.MockTransport``). The client keeps its API
and its guarantees: resume from the last cursor + 1, no repeat, gaps yielded, lagged and
shutdown closes resumed, tokens renewed, records sent again with their key until stored.
Last, the real daemon behind a proxy that hides its ``/api/connect`` and cuts connections."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qsl, urlsplit

import httpx
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

import streamgate
from support import KEY, CuttingProxy, Daemon, sse_replay, wait_for

A = "00000000-0000-0000-0000-00000000000a"
B = "00000000-0000-0000-0000-00000000000b"
C = "00000000-0000-0000-0000-00000000000c"

#: Serves the n-th socket (from 1) of a stream, opened with these query parameters.
Script = Callable[[ServerConnection, str, int, dict[str, str]], Awaitable[None]]
#: Answers the n-th handshake (from 1) of a stream's socket with a refusal, or ``None``.
Refuse = Callable[[str, int], Response | None]
#: Answers the n-th request (from 1) of ``POST /api/stream/{id}/send``.
Sends = Callable[[httpx.Request, int], Awaitable[httpx.Response]]


def outcome(sid: str, kind: str, cursor: int, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "cursor": cursor, "stream_id": sid, "input_partition": 0,
            "input_offset": cursor, "received_ms": 1, "processed_ms": 2, **extra}


def answer(status: int, code: str, **headers: str) -> Response:
    body = json.dumps({"error": {"code": code, "message": code}}).encode()
    return Response(status, "", Headers({"Content-Type": "application/json", **headers}), body)


def error_answer(status: int, code: str, **headers: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": code}},
                          headers=headers)


def stream_of(path: str) -> str:
    return path.split("/")[3]


@dataclass
class Socket:
    """One results socket the client opened."""

    sid: str
    params: dict[str, str]
    headers: dict[str, str]


class OldDaemon:
    """A daemon from before ``/api/connect``."""

    def __init__(self, script: Script, refuse: Refuse | None = None,
                 sends: Sends | None = None) -> None:
        self.script = script
        self.refuse = refuse
        self.sends = sends
        self.connect_handshakes = 0
        self.handshakes: dict[str, int] = {}
        self.sockets: list[Socket] = []
        self.posts: list[tuple[float, httpx.Request]] = []

    async def __aenter__(self) -> OldDaemon:
        self._server = await serve(self._handle, "127.0.0.1", 0,
                                   process_request=self._process_request)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        await self._server.wait_closed()

    def http(self) -> httpx.AsyncClient:
        """What the client's HTTP calls go through: ``sends`` answers the sends."""
        async def handle(request: httpx.Request) -> httpx.Response:
            assert request.method == "POST" and request.url.path.endswith("/send"), request
            assert self.sends is not None
            self.posts.append((time.monotonic(), request))
            return await self.sends(request, len(self.posts))

        return httpx.AsyncClient(transport=httpx.MockTransport(handle))

    def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        if request.path.startswith("/api/connect"):
            self.connect_handshakes += 1
            return answer(404, "route_not_found")
        sid = stream_of(request.path)
        n = self.handshakes[sid] = self.handshakes.get(sid, 0) + 1
        return self.refuse(sid, n) if self.refuse is not None else None

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        url = urlsplit(ws.request.path)
        sid = stream_of(url.path)
        params = dict(parse_qsl(url.query))
        self.sockets.append(Socket(sid, params, {k.lower(): v for k, v in ws.request.headers.raw_items()}))
        n = len(self.of(sid))
        try:
            await self.script(ws, sid, n, params)
            await ws.wait_closed()
        except Exception:
            ws.transport.abort()

    def of(self, sid: str) -> list[Socket]:
        return [s for s in self.sockets if s.sid == sid]


async def put(ws: ServerConnection, *frames: dict[str, Any]) -> None:
    for frame in frames:
        await ws.send(json.dumps(frame))


async def frames_of(sub: streamgate.Subscription) -> list[streamgate.Frame]:
    return [f async for f in sub]


def summary(frames: list[streamgate.Frame]) -> list[tuple[str, Any]]:
    return [(f.type, f.data if isinstance(f, streamgate.ResultFrame)
             else f.from_cursor if isinstance(f, streamgate.GapFrame) else f.cursor)
            for f in frames]


async def test_subscriptions_fall_back_to_a_socket_per_stream_and_resume() -> None:
    async def script(ws: ServerConnection, sid: str, n: int, params: dict[str, str]) -> None:
        if sid == B:  # a replay of the last 2 results, until now
            await put(ws, *(outcome(B, "result", c, data=c) for c in (5, 6)))
            await ws.close(1000, "caught up")
        elif n == 1:
            await put(ws, *(outcome(A, "result", c, data=c) for c in range(3)))
            await wait_for(lambda: len(got_a) == 3, 10, "the first results")
            ws.transport.abort()  # cut
        elif n == 2:
            # Too much replayed (1 and 2 came before), a gap, a result inside the gap.
            await put(ws, *(outcome(A, "result", c, data=c) for c in (1, 2, 3, 4)))
            await put(ws, {"type": "gap", "stream_id": A, "from_cursor": 5, "skipped": 2})
            await put(ws, outcome(A, "result", 6, data=6), outcome(A, "result", 7, data=7))
            await ws.close(4008, "lagged: too slow; resume with from=10")
        elif n == 3:
            await put(ws, outcome(A, "result", 10, data=10))
            await ws.close(1001, "server shutting down")
        else:
            await put(ws, outcome(A, "result", 11, data=11), outcome(A, "end", 12))
            await ws.close(1000, "stream ended")

    def refuse(sid: str, n: int) -> Response | None:
        if sid == B and n == 1:
            return answer(503, "not_ready", **{"Retry-After": "1"})
        if sid == C:
            return answer(404, "stream_not_found")
        return None

    got_a: list[streamgate.Frame] = []

    async def follow_a(client: streamgate.Client) -> None:
        async for frame in client.subscribe(A, from_="earliest"):
            got_a.append(frame)

    async with OldDaemon(script, refuse) as old, \
            streamgate.Client(old.url, api_key="k") as client:
        started = time.monotonic()
        _, got_b = await asyncio.wait_for(asyncio.gather(
            follow_a(client),
            frames_of(client.subscribe(B, from_=-2, on_lag="skip", until="now"))), 10)
        b_took = time.monotonic() - started
        # A refused subscription raises in its iterator; /api/connect is not asked again.
        try:
            await asyncio.wait_for(frames_of(client.subscribe(C)), 10)
            raise AssertionError("no StreamNotFoundError")
        except streamgate.StreamNotFoundError as e:
            assert e.status == 404
        assert client._connection.lagged == 1

    assert summary(got_a) == [("result", 0), ("result", 1), ("result", 2), ("result", 3),
                              ("result", 4), ("gap", 5), ("result", 7), ("result", 10),
                              ("result", 11), ("end", 12)]
    assert summary(got_b) == [("result", 5), ("result", 6)]  # ended by "caught up"
    assert [s.params.get("from") for s in old.of(A)] == ["earliest", "3", "10", "11"]
    assert old.of(B)[0].params == {"from": "-2", "on_lag": "skip", "until": "now"}
    assert b_took >= 1.0, "Retry-After: 1 on the handshake was not waited out"
    assert old.connect_handshakes == 1
    assert all(s.headers["x-api-key"] == "k" for s in old.sockets)
    assert all(s.headers["sec-websocket-protocol"] == "streamgate.v1" for s in old.sockets)


@dataclass
class Store:
    """What the stand-in stored, by idempotency key."""

    offsets: dict[str, int] = field(default_factory=dict)
    bodies: dict[str, bytes] = field(default_factory=dict)

    def put(self, request: httpx.Request) -> tuple[int, bool]:
        key = request.headers["idempotency-key"]
        if key in self.offsets:
            assert self.bodies[key] == request.content, "a key sent again with another body"
            return self.offsets[key], True
        self.offsets[key] = len(self.offsets)
        self.bodies[key] = request.content
        return self.offsets[key], False


async def test_sends_go_over_http_sent_again_with_their_key_until_stored() -> None:
    store = Store()

    async def sends(request: httpx.Request, n: int) -> httpx.Response:
        if n == 1:
            raise httpx.ConnectError("connection refused")  # nothing sent
        if n == 2:
            return error_answer(503, "broker_unavailable", **{"Retry-After": "1"})
        if n == 3:
            store.put(request)
            raise httpx.ReadError("connection reset")  # stored, the answer lost
        if n == 4:
            return error_answer(429, "rate_limited", **{"Retry-After": "1"})
        if n == 7:
            return error_answer(409, "stream_ended")
        offset, replayed = store.put(request)
        return httpx.Response(202, json={
            "stream_id": A, "records": 1, "partition": 0,
            "offsets": [] if replayed else [offset], **({"replayed": True} if replayed else {})})

    async def script(ws: ServerConnection, sid: str, n: int, params: dict[str, str]) -> None:
        raise AssertionError("no subscription in this test")

    old = OldDaemon(script, sends=sends)
    async with old, old.http() as http, \
            streamgate.Client(old.url, api_key="k", http_client=http) as client:
        first = await asyncio.wait_for(client.send(A, {"n": 1, "s": "é"}), 20)
        second = await asyncio.wait_for(client.send(A, [2]), 10)
        try:
            await asyncio.wait_for(client.send(A, 3), 10)
            raise AssertionError("no StreamEndedError")
        except streamgate.StreamEndedError as e:
            assert e.status == 409
    assert old.connect_handshakes == 1
    assert first.replayed and first.offset == -1 and first.stream_id == A
    assert not second.replayed and second.offset == 1 and second.seq > first.seq
    requests = [r for _, r in old.posts]
    assert len(requests) == 7, "stream_ended is not sent again"
    keys = [r.headers["idempotency-key"] for r in requests]
    assert len(set(keys[:5])) == 1, "one key for each attempt of a record"
    assert len(set(keys[4:])) == 3, "a fresh key for each record"
    assert all(json.loads(r.content) == {"n": 1, "s": "é"} for r in requests[:5])
    assert all(r.url.path == f"/api/stream/{A}/send" for r in requests)
    assert all(r.headers["content-type"] == "application/json" for r in requests)
    assert all(r.headers["x-api-key"] == "k" for r in requests)
    assert len(store.offsets) == 2, "each record stored once"
    # After the 503 and the 429, the next attempt went no sooner than Retry-After said.
    times = [t for t, _ in old.posts]
    assert times[2] - times[1] >= 0.99 and times[4] - times[3] >= 0.99, times


async def test_a_traceparent_goes_as_a_header_on_every_attempt() -> None:
    store = Store()

    async def sends(request: httpx.Request, n: int) -> httpx.Response:
        if n == 1:
            store.put(request)
            raise httpx.ReadError("connection reset")  # stored, the answer lost
        offset, replayed = store.put(request)
        return httpx.Response(202, json={
            "stream_id": A, "records": 1, "partition": 0,
            "offsets": [] if replayed else [offset], **({"replayed": True} if replayed else {})})

    async def script(ws: ServerConnection, sid: str, n: int, params: dict[str, str]) -> None:
        raise AssertionError("no subscription in this test")

    context = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    old = OldDaemon(script, sends=sends)
    async with old, old.http() as http, \
            streamgate.Client(old.url, api_key="k", http_client=http) as client:
        first = await asyncio.wait_for(client.send(A, "traced", traceparent=context), 10)
        await asyncio.wait_for(client.send(A, "plain"), 10)
    assert first.replayed
    traced, again, plain = (r for _, r in old.posts)
    assert traced.headers["traceparent"] == again.headers["traceparent"] == context
    assert traced.headers["idempotency-key"] == again.headers["idempotency-key"]
    assert "traceparent" not in plain.headers


def fake_token(lifetime: float) -> str:
    now = time.time()
    claims = base64.urlsafe_b64encode(json.dumps({"iat": now, "exp": now + lifetime}).encode())
    return "e30." + claims.decode().rstrip("=") + ".sig"


def expiry(headers: dict[str, str]) -> float:
    claims = headers["authorization"].removeprefix("Bearer ").split(".")[1]
    return float(json.loads(base64.urlsafe_b64decode(claims + "==="))["exp"])


class Feed:
    """One stream's results, produced as the test goes; ``ended``: its ``end`` follows."""

    def __init__(self, sid: str) -> None:
        self.sid = sid
        self.count = 0
        self.ended = False
        self._changed = asyncio.Condition()

    async def produce(self, every: float, duration: float) -> None:
        deadline = time.monotonic() + duration
        while time.monotonic() < deadline:
            await asyncio.sleep(every)
            async with self._changed:
                self.count += 1
                self._changed.notify_all()
        async with self._changed:
            self.ended = True
            self._changed.notify_all()

    async def serve(self, ws: ServerConnection, params: dict[str, str], exp: float) -> None:
        """Replays from ``from``, then live, until the end or the token's expiry (4401)."""
        cursor = int(params.get("from", "0"))
        while True:
            while cursor < self.count:
                await put(ws, outcome(self.sid, "result", cursor, data=cursor))
                cursor += 1
            if self.ended:
                await put(ws, outcome(self.sid, "end", cursor))
                await ws.close(1000, "stream ended")
                return
            async with self._changed:
                try:
                    await asyncio.wait_for(
                        self._changed.wait_for(lambda: self.count > cursor or self.ended),
                        max(0.0, exp - time.time()))
                except asyncio.TimeoutError:
                    await ws.close(4401, "token expired")
                    return


async def test_tokens_are_renewed_on_a_socket_per_stream() -> None:
    feeds = {A: Feed(A), B: Feed(B)}

    async def script(ws: ServerConnection, sid: str, n: int, params: dict[str, str]) -> None:
        await feeds[sid].serve(ws, params, expiry(old.sockets[-1].headers))

    async def follow(sid: str, early: bool) -> tuple[list[int], int, int, int]:
        asked = 0

        async def source() -> str:
            nonlocal asked
            asked += 1
            return fake_token(2.0)

        async with streamgate.Client(old.url, token_source=source) as client:
            client._connection.refresh_early = early
            got = await frames_of(client.subscribe(sid, from_=0))
            conn = client._connection
            assert got[-1].type == "end"
            data = [f.data for f in got if isinstance(f, streamgate.ResultFrame)]
            return data, asked, conn.connects, conn.expired

    async with OldDaemon(script) as old:
        results = await asyncio.wait_for(asyncio.gather(
            follow(A, True), follow(B, False),
            feeds[A].produce(0.05, 5.0), feeds[B].produce(0.05, 5.0)), 30)
    (early, asked, connects, expired), (late, asked_late, connects_late, expired_late) = \
        results[:2]
    assert early == list(range(feeds[A].count)), "a result missed or repeated"
    assert late == list(range(feeds[B].count)), "a result missed or repeated"
    # Before expiry: a 2 s token is replaced every ~1.5 s, on a new socket, before any 4401.
    assert asked >= 3 and connects >= 3 and expired == 0, (asked, connects, expired)
    # After expiry only: each socket lived its token's 2 s, then 4401 and a new token.
    assert expired_late >= 2 and asked_late >= 3, (asked_late, connects_late, expired_late)
    resumed = [s.params["from"] for s in old.of(B)][1:]
    assert all(int(f) > 0 for f in resumed), resumed


async def test_a_consumer_that_does_not_read_pauses_its_socket() -> None:
    closed = asyncio.Event()

    async def script(ws: ServerConnection, sid: str, n: int, params: dict[str, str]) -> None:
        if n == 1:
            await put(ws, *(outcome(A, "result", c, data=c) for c in range(4)))
            await ws.wait_closed()  # the client closed it: its queue (2) is full
            closed.set()
        else:
            await put(ws, *(outcome(A, "result", c, data=c) for c in (2, 3)),
                      outcome(A, "end", 4))
            await ws.close(1000, "stream ended")

    async with OldDaemon(script) as old, \
            streamgate.Client(old.url, api_key="k", queue_size=2) as client:
        sub = client.subscribe(A, from_=0)
        await asyncio.wait_for(closed.wait(), 10)  # nothing read until then
        got = await asyncio.wait_for(frames_of(sub), 10)
        assert client._connection.paused == 1
    assert summary(got) == [("result", 0), ("result", 1), ("result", 2), ("result", 3),
                            ("end", 4)]
    assert [s.params["from"] for s in old.of(A)] == ["0", "2"]


async def test_the_real_daemon_without_its_connect_route(daemon: Daemon) -> None:
    """Through a proxy that answers 404 to ``/api/connect`` and cuts every connection every
    2 s: the real single-stream sockets and HTTP sends, every result once, in order, every
    record stored once."""
    streams, at_least, cuts = 3, 30, 2
    async with streamgate.Client(daemon.url, api_key=KEY) as direct, \
            CuttingProxy(daemon.port, every=2.0, hide_connect=True) as proxy, \
            streamgate.Client(proxy.url, api_key=KEY) as client:
        sids = [await direct.start(processor="uppercase") for _ in range(streams)]
        received: dict[str, list[int]] = {sid: [] for sid in sids}
        sent = {sid: 0 for sid in sids}
        stop = asyncio.Event()

        async def consume(sid: str) -> None:
            async for frame in client.subscribe(sid, from_="earliest"):
                if isinstance(frame, streamgate.ResultFrame):
                    assert frame.data["s"] == f"V{frame.data['n']}"
                    received[sid].append(frame.data["n"])
                else:
                    assert isinstance(frame, streamgate.EndFrame), frame

        async def produce(sid: str) -> None:
            while not stop.is_set():
                n = sent[sid]
                ack = await client.send(sid, {"n": n, "s": f"v{n}"})
                assert ack.stream_id == sid
                sent[sid] += 1
                await asyncio.sleep(0.05)

        consumers = [asyncio.create_task(consume(sid)) for sid in sids]
        producers = [asyncio.create_task(produce(sid)) for sid in sids]
        try:
            await wait_for(lambda: proxy.cuts >= cuts and min(sent.values()) >= at_least, 60,
                           f"{cuts} cuts and {at_least} records in each stream")
            stop.set()
            await asyncio.wait_for(asyncio.gather(*producers), 60)
            await wait_for(lambda: all(len(received[s]) >= sent[s] for s in sids), 60,
                           "every result")
            for sid in sids:
                await direct.end(sid)
            await asyncio.wait_for(asyncio.gather(*consumers), 30)
        finally:
            for task in consumers + producers:
                task.cancel()
            await asyncio.gather(*consumers, *producers, return_exceptions=True)
        assert proxy.hidden == 1, "/api/connect was asked again"
        assert client._connection.connects > streams, "no socket was opened again"
        for sid in sids:
            assert received[sid] == list(range(sent[sid])), sid
            results, _ = await asyncio.wait_for(sse_replay(daemon.url, sid), 30)
            assert [r["data"]["n"] for r in results] == list(range(sent[sid])), sid
