"""Trace context on sends, against a daemon that traces (``telemetry`` pointed at a port where
nothing listens: its spans are dropped, its frames still carry the trace context): a record
sent with a ``traceparent`` of trace T has results whose ``traceparent`` is in trace T, one
sent without has none in T; over ``/api/connect``, over ``send_batch``, and on the fallback
(a proxy answering 404 to ``/api/connect``). A malformed ``traceparent`` raises before
anything is sent."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any, Iterator

import pytest

import streamgate
from support import KEY, CuttingProxy, Daemon, free_port


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(tmp_path_factory.mktemp("traced"), name="traced",
               extra=f'telemetry: {{otlp_endpoint: "http://127.0.0.1:{free_port()}"}}\n')
    d.start()
    try:
        yield d
    finally:
        d.stop()


def traceparent() -> tuple[str, str]:
    """A fresh sampled context, and its trace id."""
    trace_id = secrets.token_hex(16)
    return f"00-{trace_id}-{secrets.token_hex(8)}-01", trace_id


def trace_of(frame: streamgate.ResultFrame) -> str | None:
    """The trace id (second dash-separated field) of a result's ``traceparent``."""
    return None if frame.traceparent is None else frame.traceparent.split("-")[1]


async def results(client: streamgate.Client, sid: str, count: int) -> list[streamgate.ResultFrame]:
    """The stream's first ``count`` results, from the earliest."""
    got: list[streamgate.ResultFrame] = []

    async def read() -> None:
        async with client.subscribe(sid, from_="earliest") as sub:
            async for frame in sub:
                assert isinstance(frame, streamgate.ResultFrame), frame
                got.append(frame)
                if len(got) == count:
                    return

    await asyncio.wait_for(read(), 30)
    return got


def by_data(frames: list[streamgate.ResultFrame]) -> dict[Any, streamgate.ResultFrame]:
    return {str(f.data): f for f in frames}


async def test_a_traced_send_gets_results_in_its_trace(traced: Daemon) -> None:
    context, trace_id = traceparent()
    async with streamgate.Client(traced.url, api_key=KEY) as client:
        sid = await client.start(processor="uppercase")
        await client.send(sid, "traced", traceparent=context)
        await client.send(sid, "plain")
        got = by_data(await results(client, sid, 2))
        assert client._connection._fallback is None, "not over /api/connect"
    assert trace_of(got["TRACED"]) == trace_id, got["TRACED"]
    # The processing span's, not the caller's: same trace, another span.
    assert got["TRACED"].traceparent != context
    assert trace_of(got["PLAIN"]) != trace_id, got["PLAIN"]


async def test_a_traced_batch_gets_results_in_its_trace(traced: Daemon) -> None:
    context, trace_id = traceparent()
    async with streamgate.Client(traced.url, api_key=KEY) as client:
        sid = await client.start(processor="uppercase")
        await client.send_batch(sid, ["a", "b"], traceparent=context)
        await client.send_batch(sid, ["c"])
        got = by_data(await results(client, sid, 3))
    assert trace_of(got["A"]) == trace_id and trace_of(got["B"]) == trace_id, got
    assert trace_of(got["C"]) != trace_id, got["C"]


async def test_a_traced_send_on_the_fallback_gets_results_in_its_trace(traced: Daemon) -> None:
    """Through a proxy that answers 404 to ``/api/connect``: the send goes over HTTP, its
    ``traceparent`` as a header."""
    context, trace_id = traceparent()
    async with CuttingProxy(traced.port, every=0, hide_connect=True) as proxy, \
            streamgate.Client(proxy.url, api_key=KEY) as client:
        sid = await client.start(processor="uppercase")
        await asyncio.wait_for(client.send(sid, "traced", traceparent=context), 30)
        await asyncio.wait_for(client.send(sid, "plain"), 30)
        got = by_data(await results(client, sid, 2))
        assert proxy.hidden == 1 and client._connection._fallback is not None
    assert trace_of(got["TRACED"]) == trace_id, got["TRACED"]
    assert trace_of(got["PLAIN"]) != trace_id, got["PLAIN"]


MALFORMED = [
    "",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",          # no flags
    "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",       # another version
    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",       # uppercase
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",       # trace id all zeros
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",       # span id all zeros
    "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",        # trace id too short
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",  # a field too many
    " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",      # padded
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\n",     # a newline after
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bg-01",       # not hex
]


async def test_a_malformed_traceparent_raises_before_anything_is_sent(traced: Daemon) -> None:
    async with streamgate.Client(traced.url, api_key=KEY) as direct, \
            streamgate.Client(traced.url, api_key=KEY) as client:
        sid = await direct.start()
        for bad in MALFORMED:
            with pytest.raises(ValueError, match="traceparent") as e:
                await client.send(sid, {"bad": bad}, traceparent=bad)
            assert "00-<32 hex trace id>-<16 hex span id>-<2 hex flags>" in str(e.value)
            with pytest.raises(ValueError, match="traceparent"):
                await client.send_batch(sid, [{"bad": bad}], traceparent=bad)
        with pytest.raises(ValueError, match="traceparent"):
            await client.send(sid, 1, traceparent=12)  # type: ignore[arg-type]
        # No connection was opened for them, and the daemon has no record.
        assert client._connection.connects == 0
        assert (await direct.describe(sid)).records_in == 0
        # The client goes on: a good one is sent, and is the stream's only record.
        context, _ = traceparent()
        await client.send(sid, "good", traceparent=context)
        info = await direct.describe(sid)
        assert info.records_in == 1, info
        assert [f.data for f in await results(direct, sid, 1)] == ["good"]
