"""Restarts while records flow through the client, on a tansu broker: the daemon (SIGTERM,
then started again on the same port and broker), and the broker itself (SIGINT, then
started again on its port and storage). The subscription resumes and every record is
stored and processed once: no result is lost or repeated."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable, Iterator

import pytest

import streamgate
from support import KEY, Daemon, Tansu, in_thread, sse_replay, tansu_bin, wait_for

RECORDS = 60
RESTART_AT = 20
PACE = 0.05
#: How long the broker stays away: longer than the daemon's send timeout (1 s).
OUTAGE = 2.0

pytestmark = pytest.mark.skipif(tansu_bin() is None,
                                reason="no tansu (set TANSU_BIN, or put it on PATH)")


@pytest.fixture(scope="module")
def tansu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tansu]:
    broker = Tansu(tmp_path_factory.mktemp("tansu"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="module")
def tansu_daemon(tmp_path_factory: pytest.TempPathFactory, tansu: Tansu) -> Iterator[Daemon]:
    # A short send timeout: records sent while the broker is away are nacked
    # broker_unavailable soon, and the client must send them again (same key).
    d = Daemon(tmp_path_factory.mktemp("tansu-daemon"), brokers=tansu.address,
               name="tansu-daemon", extra="limits: {send_timeout_ms: 1000}\n")
    d.start()
    try:
        yield d
    finally:
        d.stop()


async def _flow_through(daemon: Daemon, restart: Callable[[], None]) -> int:
    """Sends RECORDS records through one client, one by one, calls ``restart`` (off the
    event loop) once RESTART_AT results came, and checks that every result came once, in
    order, and that the daemon holds each once. The connections the client opened."""
    async with streamgate.Client(daemon.url, api_key=KEY) as client:
        sid = await client.start(processor="uppercase")
        received: list[int] = []
        cursors: list[int] = []
        ends = 0

        async def consume() -> None:
            nonlocal ends
            async for frame in client.subscribe(sid, from_="earliest"):
                if isinstance(frame, streamgate.ResultFrame):
                    assert frame.data["s"] == f"V{frame.data['n']}"
                    received.append(frame.data["n"])
                    cursors.append(frame.cursor)
                elif isinstance(frame, streamgate.EndFrame):
                    ends += 1

        acks: list[streamgate.Ack] = []

        async def produce() -> None:
            for n in range(RECORDS):
                acks.append(await client.send(sid, {"n": n, "s": f"v{n}"}))
                await asyncio.sleep(PACE)

        consumer = asyncio.create_task(consume())
        producer = asyncio.create_task(produce())
        try:
            await wait_for(lambda: len(received) >= RESTART_AT, 60, f"{RESTART_AT} results")
            assert len(acks) < RECORDS, "the restart must come while records flow"
            await in_thread(restart)
            await asyncio.wait_for(producer, 120)
            await wait_for(lambda: len(received) >= RECORDS, 120, "every result")

            assert len(acks) == RECORDS
            assert received == list(range(RECORDS)), "lost or repeated results"
            assert cursors == sorted(set(cursors))
            results, _ = await sse_replay(daemon.url, sid)
            assert [r["data"]["n"] for r in results] == list(range(RECORDS))

            await client.end(sid)
            await asyncio.wait_for(consumer, 60)
            assert ends == 1 and received == list(range(RECORDS))
            return client._connection.connects
        finally:
            consumer.cancel()
            producer.cancel()
            await asyncio.gather(consumer, producer, return_exceptions=True)


async def test_a_daemon_restart_loses_and_repeats_nothing(tansu_daemon: Daemon) -> None:
    # SIGTERM (1001 to the client, then connections refused), start, wait until ready.
    connects = await _flow_through(tansu_daemon, tansu_daemon.restart)
    assert connects >= 2, "the client never reconnected"


async def test_a_broker_restart_loses_and_repeats_nothing(
        tansu_daemon: Daemon, tansu: Tansu, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="streamgate")

    def restart_broker() -> None:
        tansu.stop()
        time.sleep(OUTAGE)  # the outage itself: nothing to wait for
        tansu.start()

    await _flow_through(tansu_daemon, restart_broker)
    # The outage outlasted the daemon's send timeout: records were refused and sent again.
    assert "record nacked (broker_unavailable" in caplog.text
