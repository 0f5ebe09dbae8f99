"""A proxy between the client and the daemon cuts every connection every 2 s while records
flow into 20 streams through the client: every result comes once per stream, in order,
every send is acknowledged once, and the daemon stored each record once."""

from __future__ import annotations

import asyncio
import time

import streamgate
from support import KEY, CuttingProxy, Daemon, sse_replay, wait_for

STREAMS = 20
CUTS = 4
#: Pause between two records of one stream: 20 streams make ~400 records/s.
PACE = 0.05
#: Records each stream gets at least.
MIN_RECORDS = 20


async def test_every_result_once_in_order_through_cuts(daemon: Daemon) -> None:
    async with streamgate.Client(daemon.url, api_key=KEY) as direct:
        sids = [await direct.start(processor="uppercase") for _ in range(STREAMS)]

        async with CuttingProxy(daemon.port, every=2.0) as proxy, \
                streamgate.Client(proxy.url, api_key=KEY) as client:
            received: dict[str, list[int]] = {sid: [] for sid in sids}
            cursors: dict[str, list[int]] = {sid: [] for sid in sids}
            ends: dict[str, int] = {sid: 0 for sid in sids}
            acks: dict[str, list[streamgate.Ack]] = {sid: [] for sid in sids}
            sent: dict[str, int] = {}
            stop = asyncio.Event()

            async def consume(sid: str) -> None:
                async for frame in client.subscribe(sid, from_="earliest"):
                    if isinstance(frame, streamgate.ResultFrame):
                        assert frame.data["s"] == f"V{frame.data['n']}"
                        received[sid].append(frame.data["n"])
                        cursors[sid].append(frame.cursor)
                    elif isinstance(frame, streamgate.EndFrame):
                        ends[sid] += 1
                    else:
                        raise AssertionError(f"unexpected {frame!r}")

            async def produce(sid: str) -> None:
                n = 0
                while not stop.is_set():
                    ack = await client.send(sid, {"n": n, "s": f"v{n}"})
                    assert ack.stream_id == sid
                    acks[sid].append(ack)
                    n += 1
                    await asyncio.sleep(PACE)
                sent[sid] = n

            consumers = [asyncio.create_task(consume(sid)) for sid in sids]
            producers = [asyncio.create_task(produce(sid)) for sid in sids]
            await wait_for(
                lambda: proxy.cuts >= CUTS and all(len(acks[s]) >= MIN_RECORDS for s in sids),
                90, f"{CUTS} cuts and {MIN_RECORDS} records in each stream",
            )
            stop.set()
            await asyncio.wait_for(asyncio.gather(*producers), 60)
            total = sum(sent.values())
            await wait_for(
                lambda: all(len(received[s]) >= sent[s] for s in sids), 60,
                "every result",
            )

            for sid in sids:
                assert received[sid] == list(range(sent[sid])), f"stream {sid}"
                assert cursors[sid] == sorted(set(cursors[sid]))
                assert len(acks[sid]) == sent[sid]
            # It was cut and resumed again and again (a cut may also fall on a handshake).
            assert client._connection.connects >= CUTS, (client._connection.connects, proxy.cuts)
            replayed = sum(a.replayed for s in sids for a in acks[s])

            # The daemon stored and processed each record once: its replay has as many.
            for sid in sids:
                results, kinds = await asyncio.wait_for(sse_replay(daemon.url, sid), 60)
                assert len(results) == sent[sid], f"stream {sid}: daemon has {len(results)}"
                assert [r["data"]["n"] for r in results] == list(range(sent[sid]))
                assert kinds[-1] == "close", kinds[-3:]

            # Ending each stream ends its iteration, after exactly one `end`.
            for sid in sids:
                await direct.end(sid)
            await asyncio.wait_for(asyncio.gather(*consumers), 60)
            assert all(ends[sid] == 1 for sid in sids)
            print(f"{total} records, {proxy.cuts} cuts, {client._connection.connects} "
                  f"connections, {replayed} acks replayed")
