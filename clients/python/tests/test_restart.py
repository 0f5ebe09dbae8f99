"""The daemon, on tansu, is restarted (SIGTERM, then started again on the same port and
broker) while records flow: the subscription resumes, nothing is lost or duplicated."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Iterator

import pytest

import streamgate
from support import KEY, Daemon, Tansu, in_thread, sse_replay, tansu_bin, wait_for

RECORDS = 60
RESTART_AT = 20
PACE = 0.05


@pytest.fixture
def tansu(tmp_path: Path) -> Iterator[Tansu]:
    if tansu_bin() is None:
        pytest.fail("tansu is needed: set TANSU_BIN or put it on PATH")
    broker = Tansu(tmp_path)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def tansu_daemon(tmp_path: Path, tansu: Tansu) -> Iterator[Daemon]:
    d = Daemon(tmp_path, brokers=tansu.address, name="tansu-daemon")
    d.start()
    try:
        yield d
    finally:
        d.stop()


async def test_subscription_resumes_across_a_daemon_restart(tansu_daemon: Daemon) -> None:
    daemon = tansu_daemon
    async with streamgate.Client(daemon.url, api_key=KEY) as client:
        sid = await client.start(processor="uppercase")
        received: list[int] = []
        cursors: list[int] = []
        ended = asyncio.Event()

        async def consume() -> None:
            async for frame in client.subscribe(sid, from_="earliest"):
                if isinstance(frame, streamgate.ResultFrame):
                    assert frame.data["s"] == f"V{frame.data['n']}"
                    received.append(frame.data["n"])
                    cursors.append(frame.cursor)
                elif isinstance(frame, streamgate.EndFrame):
                    ended.set()

        acks: list[streamgate.Ack] = []

        async def produce() -> None:
            for n in range(RECORDS):
                acks.append(await client.send(sid, {"n": n, "s": f"v{n}"}))
                await asyncio.sleep(PACE)

        consumer = asyncio.create_task(consume())
        producer = asyncio.create_task(produce())
        await wait_for(lambda: len(received) >= RESTART_AT, 60, f"{RESTART_AT} results")
        connects_before = client._connection.connects
        assert len(acks) < RECORDS, "the restart must come while records flow"
        await in_thread(daemon.restart)  # SIGTERM, wait for its exit, start, wait until ready
        await asyncio.wait_for(producer, 120)
        await wait_for(lambda: len(received) >= RECORDS, 120, "every result")

        assert len(acks) == RECORDS
        assert received == list(range(RECORDS)), "lost or duplicated results"
        assert cursors == sorted(set(cursors))
        assert client._connection.connects > connects_before

        results, _ = await sse_replay(daemon.url, sid)
        assert [r["data"]["n"] for r in results] == list(range(RECORDS))

        await client.end(sid)
        await asyncio.wait_for(consumer, 60)
        assert ended.is_set()
        assert received == list(range(RECORDS))
