"""The library against a daemon with nothing in the way: the HTTP calls, subscriptions, and
each refusal as its typed error."""

from __future__ import annotations

import asyncio

import pytest

import streamgate
from support import KEY, Daemon, replay_until


async def test_start_subscribe_send_end(daemon: Daemon) -> None:
    async with streamgate.Client(daemon.url, api_key=KEY) as client:
        sid = await client.start(processor="uppercase")
        sub = client.subscribe(sid, from_="earliest")
        acks = [await client.send(sid, {"n": i, "word": f"w{i}"}) for i in range(10)]
        assert [a.stream_id for a in acks] == [sid] * 10
        assert len({(a.seq) for a in acks}) == 10
        assert all(not a.replayed for a in acks)
        assert [a.offset for a in acks] == sorted(a.offset for a in acks)

        results: list[streamgate.ResultFrame] = []
        ended: list[streamgate.EndFrame] = []

        async def read() -> None:
            async for frame in sub:
                if isinstance(frame, streamgate.ResultFrame):
                    results.append(frame)
                    if len(results) == 10:
                        await client.end(sid)
                elif isinstance(frame, streamgate.EndFrame):
                    ended.append(frame)
                else:
                    raise AssertionError(f"unexpected frame {frame!r}")

        await asyncio.wait_for(read(), 30)  # returns only because iteration ends after `end`
        assert [r.data for r in results] == [{"n": i, "word": f"W{i}"} for i in range(10)]
        cursors = [r.cursor for r in results]
        assert cursors == sorted(cursors) and len(set(cursors)) == 10
        assert len(ended) == 1 and ended[0].cursor > cursors[-1]
        assert sub.last_cursor == ended[0].cursor
        # Iterating again after the end yields nothing.
        assert [f async for f in sub] == []

        info = await client.describe(sid)
        assert info.state == "ended" and info.owner == "alice"
        assert info.processor == {"type": "uppercase"}
        assert sid in [s.stream_id for s in await client.list()]
        stats = await client.stats()
        assert stats["uptime_s"] >= 0 and stats["broker"]["reachable"]


async def test_leaving_the_loop_unsubscribes(daemon: Daemon) -> None:
    async with streamgate.Client(daemon.url, api_key=KEY) as client:
        sid, other = await client.start(), await client.start()
        # Another stream followed on the connection: the daemon drops an unsubscribed feed
        # when it next reads its feeds, and reads none while none is open (see the report).
        following = client.subscribe(other)
        await following.wait_subscribed()
        await client.send_batch(sid, [1, 2, 3])
        async for frame in client.subscribe(sid, from_="earliest"):
            assert isinstance(frame, streamgate.ResultFrame) and frame.data == 1
            break
        # The daemon was told: it counts no subscriber of the stream any more.
        for _ in range(250):
            if (await client.describe(sid)).subscribers == 0:
                break
            await asyncio.sleep(0.02)
        assert (await client.describe(sid)).subscribers == 0
        # And the stream can be followed again at once.
        async with client.subscribe(sid, from_="earliest") as sub:
            again = await anext(sub)
        assert isinstance(again, streamgate.ResultFrame) and again.data == 1
        await following.aclose()


async def test_a_record_over_the_message_limit_is_refused_not_sent_again(daemon: Daemon) -> None:
    async with streamgate.Client(daemon.url, api_key=KEY) as client:
        sid = await client.start()
        huge = {"pad": "x" * (1024 * 1024 + 1)}  # over limits.ws_max_message_bytes (1 MiB)
        with pytest.raises(streamgate.TooLargeError) as e:
            await asyncio.wait_for(client.send(sid, huge), 20)
        assert e.value.code == streamgate.ErrorCode.RECORD_TOO_LARGE
        assert "ws_max_message_bytes=1048576" in e.value.message
        # The daemon closed the connection for it (1009) once; the next one carries on.
        assert (await client.send(sid, {"small": 1})).stream_id == sid
        assert client._connection.connects == 2


async def test_send_batch_is_processed_once_per_key(daemon: Daemon) -> None:
    async with streamgate.Client(daemon.url, api_key=KEY) as client:
        sid = await client.start()
        first = await client.send_batch(sid, [{"i": 1}, {"i": 2}, "three"], idempotency_key="batch-1")
        again = await client.send_batch(sid, [{"i": 1}, {"i": 2}, "three"], idempotency_key="batch-1")
        assert first.records == 3 and not first.replayed
        assert again.replayed
        with pytest.raises(streamgate.IdempotencyKeyError) as e:
            await client.send_batch(sid, [{"i": 9}], idempotency_key="batch-1")
        assert e.value.code == streamgate.ErrorCode.IDEMPOTENCY_KEY_REUSED
        assert e.value.status == 422
        fresh = await client.send_batch(sid, [4])  # a key of its own
        assert fresh.records == 1 and not fresh.replayed
        # Once the last batch's result is there, every earlier one was processed: 4, never 7.
        results, _ = await replay_until(daemon.url, sid, 4)
        assert [r["data"] for r in results] == [{"i": 1}, {"i": 2}, "three", 4]


async def test_refusals_are_typed(daemon: Daemon) -> None:
    async with streamgate.Client(daemon.url, api_key=KEY) as client:
        missing = "00000000-0000-0000-0000-000000000001"
        with pytest.raises(streamgate.StreamNotFoundError) as nf:
            await client.describe(missing)
        assert nf.value.status == 404 and nf.value.code == "stream_not_found"

        # A refused subscription raises in its iterator; the connection goes on.
        with pytest.raises(streamgate.StreamNotFoundError):
            async for _ in client.subscribe(missing, from_="earliest"):
                pass

        sid = await client.start()
        await client.end(sid)
        with pytest.raises(streamgate.StreamEndedError) as ended:
            await client.send(sid, {"late": True})
        assert ended.value.code == streamgate.ErrorCode.STREAM_ENDED
        assert ended.value.status is None  # a nack, not an HTTP answer

        with pytest.raises(streamgate.InvalidRequestError):
            await client.start(processor="no-such-processor")
        with pytest.raises(TypeError):
            await client.send(sid, {"not json": object()})

    async with streamgate.Client(daemon.url, api_key="wrong-key-0123456789") as bad:
        with pytest.raises(streamgate.AuthenticationError) as auth:
            await bad.list()
        assert auth.value.code == streamgate.ErrorCode.INVALID_API_KEY
        # Over the connection too: a refused handshake fails the send, it does not spin.
        with pytest.raises(streamgate.AuthenticationError):
            await asyncio.wait_for(bad.send(sid, 1), 10)


async def test_scoped_token_cannot_send(daemon: Daemon) -> None:
    async with streamgate.Client(daemon.url, api_key=KEY) as client:
        sid = await client.start()
        issued = await client.token([sid], scope=["subscribe"], ttl_s=60)
        assert issued.streams == [sid] and issued.scope == ["subscribe"]
        async with streamgate.Client(daemon.url, token=issued.token) as reader:
            assert (await reader.describe(sid)).stream_id == sid
            with pytest.raises(streamgate.ForbiddenError):
                await asyncio.wait_for(reader.send(sid, {"x": 1}), 10)
            with pytest.raises(streamgate.ForbiddenError):
                await reader.list()


async def test_closing_the_client_ends_what_waits(daemon: Daemon) -> None:
    client = streamgate.Client(daemon.url, api_key=KEY)
    sid = await client.start()
    sub = client.subscribe(sid)
    await asyncio.wait_for(sub.wait_subscribed(), 10)
    reader = asyncio.ensure_future(sub.__anext__())
    await client.aclose()
    with pytest.raises(streamgate.ClientClosedError):
        await asyncio.wait_for(reader, 5)
    with pytest.raises(streamgate.ClientClosedError):
        await client.send(sid, 1)
