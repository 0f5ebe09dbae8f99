"""A proxy between the client and the daemon cuts every connection every 2 s while records
flow into 20 streams through the client, holding back the daemon's answers just before each
cut: every result comes once per stream, in order, every send is acknowledged once, records
stored whose answer was cut off are sent again with their idempotency key (and acknowledged
as replayed), and the daemon stored and processed each record once."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import streamgate
from support import KEY, CuttingProxy, Daemon, sse_replay, wait_for

STREAMS = 20
CUTS = 4
#: Pause between two records of one stream: 20 streams make ~400 records/s.
PACE = 0.05
#: Records each stream gets at least.
MIN_RECORDS = 20
#: How long before each cut the proxy holds back what the daemon writes (acks included).
HOLD = 0.2


@dataclass
class Flow:
    """One stream's side of the test: what was sent, acknowledged and received."""

    sid: str
    sent: int = 0
    acks: list[streamgate.Ack] = field(default_factory=list)
    received: list[int] = field(default_factory=list)
    cursors: list[int] = field(default_factory=list)
    ends: int = 0

    async def consume(self, client: streamgate.Client) -> None:
        async for frame in client.subscribe(self.sid, from_="earliest"):
            if isinstance(frame, streamgate.ResultFrame):
                assert frame.data["s"] == f"V{frame.data['n']}"
                self.received.append(frame.data["n"])
                self.cursors.append(frame.cursor)
            elif isinstance(frame, streamgate.EndFrame):
                self.ends += 1
            else:
                raise AssertionError(f"unexpected {frame!r}")

    async def produce(self, client: streamgate.Client, stop: asyncio.Event) -> None:
        while not stop.is_set():
            ack = await client.send(self.sid, {"n": self.sent, "s": f"v{self.sent}"})
            assert ack.stream_id == self.sid
            self.acks.append(ack)
            self.sent += 1
            await asyncio.sleep(PACE)


async def test_every_result_once_in_order_through_cuts(daemon: Daemon) -> None:
    async with streamgate.Client(daemon.url, api_key=KEY) as direct, \
            CuttingProxy(daemon.port, every=2.0, hold=HOLD) as proxy, \
            streamgate.Client(proxy.url, api_key=KEY) as client:
        flows = [Flow(await direct.start(processor="uppercase")) for _ in range(STREAMS)]
        stop = asyncio.Event()
        consumers = [asyncio.create_task(f.consume(client)) for f in flows]
        producers = [asyncio.create_task(f.produce(client, stop)) for f in flows]
        try:
            await wait_for(
                lambda: proxy.cuts >= CUTS and all(len(f.acks) >= MIN_RECORDS for f in flows),
                90, f"{CUTS} cuts and {MIN_RECORDS} records in each stream",
            )
            stop.set()
            await asyncio.wait_for(asyncio.gather(*producers), 60)
            await wait_for(lambda: all(len(f.received) >= f.sent for f in flows), 60,
                           "every result")
            for f in flows:
                assert f.received == list(range(f.sent)), f"stream {f.sid}: lost or repeated"
                assert f.cursors == sorted(set(f.cursors))
                assert len(f.acks) == f.sent
            conn = client._connection
            # It was cut and resumed again and again (a cut may also fall on a handshake),
            # and records lost their answer in the cuts: they were sent again.
            assert conn.connects >= CUTS, (conn.connects, proxy.cuts)
            # Each cut lost the answers of records stored while it held the daemon's writes
            # back: sent again with their keys, they were acknowledged as replayed.
            replayed = sum(a.replayed for f in flows for a in f.acks)
            assert conn.resent >= replayed > 0, (conn.resent, replayed)

            # The daemon stored and processed each record once: its replay has as many.
            for f in flows:
                results, kinds = await asyncio.wait_for(sse_replay(daemon.url, f.sid), 60)
                assert [r["data"]["n"] for r in results] == list(range(f.sent)), f.sid
                assert kinds[-1] == "close", kinds[-3:]

            # Ending each stream ends its iteration, after exactly one `end`.
            for f in flows:
                await direct.end(f.sid)
            await asyncio.wait_for(asyncio.gather(*consumers), 60)
            assert all(f.ends == 1 for f in flows)
        finally:
            for task in consumers + producers:
                task.cancel()
            await asyncio.gather(*consumers, *producers, return_exceptions=True)
