"""Slow readers. The daemon detaches a subscriber that falls behind (``lagged``: the client
subscribes again from ``resume_from`` by itself, nothing is missed) or skips results and
says so (``gap`` frames, yielded, never hidden); a consumer slower than the client's own
queue is paused and resumed from its cursor."""

from __future__ import annotations

import asyncio
from typing import Iterator, Literal

import pytest

import streamgate
from support import KEY, CuttingProxy, Daemon, wait_for

RECORDS = 300
#: Each record's padding: what the daemon writes soon fills a paused proxy's buffers.
PAD = "x" * 2000


@pytest.fixture(scope="module")
def small_queues(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(tmp_path_factory.mktemp("lag"), name="small-queues",
               extra="limits: {subscriber_queue: 4, socket_send_buffer_bytes: 4096}\n")
    d.start()
    try:
        yield d
    finally:
        d.stop()


@pytest.mark.parametrize("on_lag", ["close", "skip"])
async def test_a_lagging_subscription_resumes_or_reports_gaps(small_queues: Daemon,
                                                              on_lag: Literal["close", "skip"]) -> None:
    async with streamgate.Client(small_queues.url, api_key=KEY) as direct, \
            CuttingProxy(small_queues.port, every=0) as proxy, \
            streamgate.Client(proxy.url, api_key=KEY) as client:
        sid = await direct.start()
        frames: list[streamgate.Frame] = []
        sub = client.subscribe(sid, from_="latest", on_lag=on_lag)
        await asyncio.wait_for(sub.wait_subscribed(), 10)

        async def consume() -> None:
            async for frame in sub:
                frames.append(frame)

        consumer = asyncio.create_task(consume())
        lagged_before = client._connection.lagged
        proxy.flowing.clear()  # the daemon's writes to this client pile up
        await direct.send_batch(sid, [{"n": n, "pad": PAD} for n in range(RECORDS)])
        # Every result is produced while nothing is read.
        for _ in range(600):
            if (await direct.describe(sid)).records_out >= RECORDS:
                break
            await asyncio.sleep(0.05)
        proxy.flowing.set()
        await direct.end(sid)
        await asyncio.wait_for(consumer, 60)

        results = [f for f in frames if isinstance(f, streamgate.ResultFrame)]
        gaps = [f for f in frames if isinstance(f, streamgate.GapFrame)]
        assert isinstance(frames[-1], streamgate.EndFrame)
        numbers = [r.data["n"] for r in results]
        assert numbers == sorted(set(numbers)), "a result came twice or out of order"
        if on_lag == "close":
            assert client._connection.lagged > lagged_before, "the daemon never lagged"
            assert not gaps
            assert numbers == list(range(RECORDS)), "lagged, resumed, and missed nothing"
        else:
            assert gaps, "the daemon never skipped"
            assert len(results) + sum(g.skipped for g in gaps) == RECORDS


async def test_a_slow_consumer_is_paused_and_resumed(daemon: Daemon) -> None:
    async with streamgate.Client(daemon.url, api_key=KEY, queue_size=8) as client:
        sid = await client.start()
        sub = client.subscribe(sid, from_="earliest")
        await asyncio.wait_for(sub.wait_subscribed(), 10)
        await client.send_batch(sid, list(range(100)))
        await wait_for(lambda: client._connection.paused > 0, 30, "the subscription paused")
        await client.end(sid)
        numbers = [f.data async for f in sub if isinstance(f, streamgate.ResultFrame)]
        assert numbers == list(range(100))
