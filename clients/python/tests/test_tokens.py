"""Tokens of 2 s: a client with a token source follows a stream for 8 s without missing a
result, replacing its token before it expires (and, with that turned off, after the daemon
closed the connection with 4401). Both run at once, each on a stream of its own."""

from __future__ import annotations

import asyncio
import time

import pytest

import streamgate
from support import KEY, Daemon, wait_for

RUN_FOR = 8.0
PACE = 0.05


async def _follow(daemon: Daemon, *, refresh_early: bool
                                  ) -> tuple[int, int, int]:
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

        async with streamgate.Client(daemon.url, token_source=source) as reader:
            reader._connection.refresh_early = refresh_early
            received: list[int] = []
            ended = asyncio.Event()

            async def consume() -> None:
                async for frame in reader.subscribe(sid, from_="earliest"):
                    if isinstance(frame, streamgate.ResultFrame):
                        received.append(frame.data["n"])
                    elif isinstance(frame, streamgate.EndFrame):
                        ended.set()
                    else:
                        raise AssertionError(f"unexpected {frame!r}")

            consumer = asyncio.create_task(consume())
            sent = 0
            deadline = time.monotonic() + RUN_FOR
            while time.monotonic() < deadline:
                await keyed.send(sid, {"n": sent})
                sent += 1
                await asyncio.sleep(PACE)
            await wait_for(lambda: len(received) >= sent, 30, "every result")
            await keyed.end(sid)
            await asyncio.wait_for(consumer, 30)
            assert ended.is_set()
            assert received == list(range(sent)), "a result was missed or repeated"
            conn = reader._connection
            return len(minted) - 1, conn.connects, conn.expired


async def test_token_source_renews_tokens_without_missing_a_result(daemon: Daemon) -> None:
    early, late = await asyncio.gather(_follow(daemon, refresh_early=True),
                                       _follow(daemon, refresh_early=False))
    # Before expiry: a 2 s token is replaced every ~1.5 s, before the daemon closes for it.
    asked, connects, expired = early
    assert asked >= 4 and connects >= 4, early
    assert expired == 0, f"{expired} connections outlived their token"
    # After expiry only: each token lived its 2 s, then 4401, a new token and a reconnect.
    asked, connects, expired = late
    assert expired >= 3 and asked >= 3 and connects >= 3, late


async def test_a_fixed_token_that_expires_ends_the_subscription(daemon: Daemon) -> None:
    async with streamgate.Client(daemon.url, api_key=KEY) as keyed:
        sid = await keyed.start()
        issued = await keyed.token([sid], scope=["subscribe"], ttl_s=1)
        async with streamgate.Client(daemon.url, token=issued.token) as reader:
            with pytest.raises(streamgate.TokenExpiredError):
                async for _ in reader.subscribe(sid, from_="earliest"):
                    pass
