"""429 and 503: the client waits as ``Retry-After`` says, sends few requests, never spins, and
gives up once its patience is spent."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import httpx
import pytest

import streamgate
from support import KEY, CuttingProxy, Daemon, Tansu, in_thread, tansu_bin

#: Seconds the clock may disagree between a response and the next request (none, really).
EPSILON = 0.01


@dataclass
class Recorder:
    """Every HTTP request a client made: when it went, and what came back."""

    sent: list[float] = field(default_factory=list)
    answers: list[tuple[float, int, float | None]] = field(default_factory=list)

    async def on_request(self, request: httpx.Request) -> None:
        self.sent.append(time.monotonic())

    async def on_response(self, response: httpx.Response) -> None:
        ra = response.headers.get("retry-after")
        self.answers.append((time.monotonic(), response.status_code,
                             float(ra) if ra is not None else None))

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(event_hooks={"request": [self.on_request],
                                              "response": [self.on_response]})

    def refused(self, status: int) -> list[tuple[float, int, float | None]]:
        return [a for a in self.answers if a[1] == status]

    def assert_waited_as_told(self) -> None:
        """After each 429/503, the next request went no sooner than Retry-After said."""
        for i, (at, status, retry_after) in enumerate(self.answers):
            if status in (429, 503) and i + 1 < len(self.sent):
                assert retry_after is not None, "the daemon sent no Retry-After"
                waited = self.sent[i + 1] - at
                assert waited >= retry_after - EPSILON, (
                    f"request {i + 2} went {waited:.3f} s after a {status} that said "
                    f"Retry-After: {retry_after}")


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A daemon allowing a key 1 request a second, 2 at once."""
    d = Daemon(tmp_path_factory.mktemp("limited"), name="limited",
               rate_limits="{per_ip: null, per_key: {per_second: 1, burst: 2}, "
                           "per_ip_public: null}")
    d.start()
    try:
        yield d
    finally:
        d.stop()


async def test_429_is_waited_out_as_retry_after_says(limited: Daemon) -> None:
    rec = Recorder()
    async with rec.http() as http, \
            streamgate.Client(limited.url, api_key=KEY, http_client=http) as client:
        start = time.monotonic()
        for _ in range(5):
            await client.list()
        elapsed = time.monotonic() - start
    limited_answers = rec.refused(429)
    assert len(limited_answers) >= 3, rec.answers  # a burst of 2, then 1 a second
    assert elapsed >= sum(a[2] or 0 for a in limited_answers) - EPSILON
    rec.assert_waited_as_told()
    # Few requests: one per call, plus one per 429 (each wait was long enough).
    assert len(rec.sent) <= 5 + len(limited_answers) <= 5 + 5, rec.answers


async def test_429_on_the_handshake_is_waited_out(limited: Daemon) -> None:
    async with streamgate.Client(limited.url, api_key=KEY) as direct:
        sid = await direct.start()
        async with CuttingProxy(limited.port, every=0) as proxy, \
                streamgate.Client(proxy.url, api_key=KEY) as client:
            # Spend the key's burst, then send over the connection: its handshake is a request.
            async with httpx.AsyncClient() as raw:
                answers = [
                    (await raw.get(f"{limited.url}/api/streams", headers={"X-API-Key": KEY}))
                    for _ in range(3)
                ]
            assert answers[-1].status_code == 429
            retry_after = float(answers[-1].headers["retry-after"])
            start = time.monotonic()
            ack = await asyncio.wait_for(client.send(sid, {"x": 1}), 30)
            elapsed = time.monotonic() - start
            assert ack.stream_id == sid
            # Refused at least once, then it waited as told: a handful of attempts, no spin.
            assert proxy.accepted >= 2, "the handshake was never refused"
            assert elapsed >= retry_after - EPSILON
            assert proxy.accepted <= 2 + int(elapsed / retry_after), proxy.accepted


@pytest.fixture
def starting(tmp_path: Path) -> Iterator[tuple[Daemon, Tansu]]:
    """A daemon whose broker (tansu) is not started yet: it answers 503 not_ready."""
    if tansu_bin() is None:
        pytest.skip("no tansu (set TANSU_BIN, or put it on PATH)")
    broker = Tansu(tmp_path)
    d = Daemon(tmp_path, brokers=broker.address, name="starting")
    d.start(wait_ready=False)
    try:
        yield d, broker
    finally:
        d.stop()
        broker.stop()


async def test_503_is_waited_out_within_patience(starting: tuple[Daemon, Tansu]) -> None:
    daemon, broker = starting

    # Patience spent: the call gives up with the daemon's answer, after a few requests.
    rec = Recorder()
    async with rec.http() as http, streamgate.Client(
            daemon.url, api_key=KEY, http_client=http, patience=2.5) as impatient:
        start = time.monotonic()
        with pytest.raises(streamgate.UnavailableError) as e:
            await impatient.list()
        elapsed = time.monotonic() - start
    assert e.value.code == streamgate.ErrorCode.NOT_READY and e.value.status == 503
    assert e.value.retry_after == 1
    assert 2.0 - EPSILON <= elapsed < 4.0
    assert len(rec.sent) == 3, rec.answers  # at 0, 1 and 2 s; a fourth would pass 2.5 s
    rec.assert_waited_as_told()

    # Patient: a call and a send wait until the daemon is ready, then go through. (No stream
    # can be started before: the send is for one that does not exist, which it learns then.)
    rec = Recorder()
    async with rec.http() as http, CuttingProxy(daemon.port, every=0) as proxy, \
            streamgate.Client(daemon.url, api_key=KEY, http_client=http) as client, \
            streamgate.Client(proxy.url, api_key=KEY) as sender:
        start = time.monotonic()
        listing = asyncio.create_task(client.list())
        sending = asyncio.create_task(sender.send("00000000-0000-0000-0000-0000000000aa", 1))
        await asyncio.sleep(2.0)  # the outage the client must wait out
        assert not listing.done() and not sending.done()
        await in_thread(broker.start)
        await asyncio.wait_for(listing, 60)
        elapsed = time.monotonic() - start
        unavailable = rec.refused(503)
        assert len(unavailable) >= 2
        assert elapsed >= sum(a[2] or 0 for a in unavailable) - EPSILON
        assert len(rec.sent) == len(unavailable) + 1
        rec.assert_waited_as_told()

        with pytest.raises(streamgate.StreamNotFoundError):
            await asyncio.wait_for(sending, 30)
        elapsed = time.monotonic() - start
        # One handshake a Retry-After (1 s) while refused, then the one that worked.
        assert 2 <= proxy.accepted <= 2 + int(elapsed), proxy.accepted

        sid = await client.start()
        ack = await asyncio.wait_for(sender.send(sid, {"ready": True}), 30)
        assert ack.stream_id == sid
