"""Tokens of 2 s: a client with a token source follows a stream for 10 s without missing a
result, replacing its token before it expires (and, with that turned off, after the daemon
closed the connection with 4401); the same on the fallback's socket per stream (a proxy
hides ``/api/connect``). All four run at once, each on a stream of its own."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import pytest

import streamgate
from support import KEY, CuttingProxy, Daemon, wait_for

#: How long each subscription runs while records flow (the issue's 10 s).
RUN_FOR = 10.0
PACE = 0.05


@dataclass
class Run:
    """What one subscription went through."""

    sent: int
    received: int
    lasted: float
    asked: int
    connects: int
    expired: int


async def _follow(daemon: Daemon, url: str, *, refresh_early: bool) -> Run:
    async with streamgate.Client(daemon.url, api_key=KEY) as keyed:
        sid = await keyed.start(processor="uppercase")
        first = await keyed.token([sid], scope=["subscribe"], ttl_s=2)
        assert first.expires_at - time.time() <= 2
        minted = [first.token]

        async def source() -> str:
            if len(minted) == 1 and minted[0] == first.token:
                minted.append("")  # the first call gets the token minted above
                return first.token
            issued = await keyed.token([sid], scope=["subscribe"], ttl_s=2)
            minted.append(issued.token)
            return issued.token

        async with streamgate.Client(url, token_source=source) as reader:
            reader._connection.refresh_early = refresh_early
            received: list[int] = []
            ended = asyncio.Event()
            sub = reader.subscribe(sid, from_="earliest")
            opened = time.monotonic()

            async def consume() -> float:
                async for frame in sub:
                    if isinstance(frame, streamgate.ResultFrame):
                        received.append(frame.data["n"])
                    elif isinstance(frame, streamgate.EndFrame):
                        ended.set()
                    else:
                        raise AssertionError(f"unexpected {frame!r}")
                return time.monotonic() - opened

            consumer = asyncio.create_task(consume())
            await asyncio.wait_for(sub.wait_subscribed(), 10)
            sent = 0
            deadline = time.monotonic() + RUN_FOR
            while time.monotonic() < deadline:
                await keyed.send(sid, {"n": sent})
                sent += 1
                await asyncio.sleep(PACE)
            await wait_for(lambda: len(received) >= sent, 30, "every result")
            await keyed.end(sid)
            lasted = await asyncio.wait_for(consumer, 30)
            assert ended.is_set()
            assert received == list(range(sent)), "a result was missed or repeated"
            conn = reader._connection
            return Run(sent, len(received), lasted, len(minted) - 1, conn.connects,
                       conn.expired)


async def test_token_source_renews_tokens_without_missing_a_result(daemon: Daemon) -> None:
    async with CuttingProxy(daemon.port, every=0, hide_connect=True) as old:
        runs = await asyncio.gather(
            _follow(daemon, daemon.url, refresh_early=True),
            _follow(daemon, daemon.url, refresh_early=False),
            _follow(daemon, old.url, refresh_early=True),
            _follow(daemon, old.url, refresh_early=False))
    assert old.hidden == 2, "the fallback did not run"
    for run in runs:
        # Every result of 10 s of records, counted: none missed, none twice.
        assert run.lasted >= RUN_FOR and run.sent >= RUN_FOR / PACE / 2, run
        assert run.received == run.sent, run
    for early in runs[0::2]:
        # Before expiry: a 2 s token is replaced every ~1.5 s, before the daemon closes for it.
        assert early.asked >= 5 and early.connects >= 5, early
        assert early.expired == 0, f"connections outlived their token: {early}"
    for late in runs[1::2]:
        # After expiry only: each token lived its 2 s, then 4401, a new token and a reconnect.
        assert late.expired >= 4 and late.asked >= 4 and late.connects >= 4, late


@pytest.mark.parametrize("hide_connect", [False, True], ids=["connect", "fallback"])
async def test_a_fixed_token_that_expires_ends_the_subscription(daemon: Daemon,
                                                                hide_connect: bool) -> None:
    async with streamgate.Client(daemon.url, api_key=KEY) as keyed, \
            CuttingProxy(daemon.port, every=0, hide_connect=hide_connect) as proxy:
        sid = await keyed.start()
        issued = await keyed.token([sid], scope=["subscribe"], ttl_s=1)
        async with streamgate.Client(proxy.url, token=issued.token) as reader:
            with pytest.raises(streamgate.TokenExpiredError):
                async for _ in reader.subscribe(sid, from_="earliest"):
                    pass
        assert proxy.hidden == int(hide_connect)
