"""What the tests run: the daemon (``streamctl serve``), tansu, a TCP proxy that cuts its
connections, and a reader of a Server-Sent Events replay. Every process started here is
stopped by the fixture that started it."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

import httpx

KEY = "alice-key-0123456789"
REPO = Path(__file__).resolve().parents[3]


def streamctl_bin() -> str:
    path = os.environ.get("STREAMCTL_BIN") or str(REPO / "target" / "debug" / "streamctl")
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"no streamctl binary at {path} (set STREAMCTL_BIN)")
    return path


def tansu_bin() -> str | None:
    path = os.environ.get("TANSU_BIN") or shutil.which("tansu")
    if path is None:
        home = Path.home() / ".cargo" / "bin" / "tansu"
        path = str(home) if home.exists() else None
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes], sig: int, grace: float = 15.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class Daemon:
    """One ``streamctl serve`` with a config of its own, on a port kept across restarts."""

    def __init__(self, workdir: Path, *, brokers: str = "embedded",
                 rate_limits: str = "{per_ip: null, per_key: null, per_ip_public: null}",
                 name: str = "daemon", extra: str = "") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        self.config = workdir / f"{name}.yaml"
        self.log = workdir / f"{name}.log"
        self.config.write_text(
            f"listen: 127.0.0.1:{self.port}\n"
            f"brokers: {brokers}\n"
            f"api_keys: [{{name: alice, key: {KEY}}}]\n"
            f"rate_limits: {rate_limits}\n"
            "log: {level: warn}\n"
            "topics: {partitions: 3}\n"
            + extra
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, wait_ready: bool = True, timeout: float = 90.0) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [streamctl_bin(), "serve", "--config", str(self.config), "--log-format", "json"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
            )
        self.wait_up(timeout, ready=wait_ready)

    def wait_up(self, timeout: float, *, ready: bool = True) -> None:
        """Waits for ``/healthz`` to answer 200 (``{"status": "ok"}`` and ``/readyz`` 200
        too when ``ready``; without it, ``starting`` will do)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"the daemon exited ({self.proc.returncode}): {self.tail()}")
            try:
                health = httpx.get(self.url + "/healthz", timeout=2)
                if health.status_code == 200:
                    if not ready:
                        return
                    if health.json().get("status") == "ok" and \
                            httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                        return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the daemon was not up within {timeout} s: {self.tail()}")

    def stop(self) -> None:
        """SIGTERM: the daemon drains and exits."""
        if self.proc is not None:
            _stop(self.proc, signal.SIGTERM)

    def restart(self) -> None:
        self.stop()
        self.start()

    def tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


class Tansu:
    """A tansu broker storing in SQLite under the test's temporary directory."""

    def __init__(self, workdir: Path) -> None:
        binary = tansu_bin()
        if binary is None:
            raise RuntimeError("tansu not found (set TANSU_BIN, or put it on PATH)")
        self.binary = binary
        self.port = free_port()
        self.db = (workdir / "tansu.db").resolve()
        self.log = workdir / "tansu.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--storage-engine", f"sqlite:///{self.db}"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tansu exited: {self.log.read_text(errors='replace')}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("tansu did not listen within 30 s")

    def stop(self) -> None:
        """SIGINT, as tansu wants."""
        if self.proc is not None:
            _stop(self.proc, signal.SIGINT)


async def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Waits until ``condition()`` holds, checking every 20 ms."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


class CuttingProxy:
    """A TCP proxy to the daemon that cuts every connection it carries every ``every`` s.

    With ``hold``, it holds back what the daemon writes for ``hold`` s before each cut, so
    the answers to records stored in that time are surely lost with the connection. With
    ``hide_connect``, it answers a request for ``/api/connect`` itself, 404, as a daemon
    without that route would.
    """

    def __init__(self, target_port: int, every: float = 2.0, hold: float = 0.0,
                 hide_connect: bool = False) -> None:
        self.target_port = target_port
        self.every = every
        self.hold = hold
        self.hide_connect = hide_connect
        self.cuts = 0
        self.accepted = 0
        #: Requests for ``/api/connect`` answered 404 (with ``hide_connect``).
        self.hidden = 0
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._server: asyncio.AbstractServer | None = None
        self._cutter: asyncio.Task[None] | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self.port = 0
        #: Cleared: nothing the daemon writes is read (its socket buffers fill up).
        self.flowing = asyncio.Event()
        self.flowing.set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> CuttingProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        if self.every > 0:
            self._cutter = asyncio.create_task(self._cut_forever())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._cutter is not None:
            self._cutter.cancel()
        assert self._server is not None
        self._server.close()
        self.cut()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        await self._server.wait_closed()

    def cut(self) -> int:
        """Cuts every connection now; how many there were."""
        links = list(self._links)
        for client, upstream in links:
            client.transport.abort()
            upstream.transport.abort()
        self._links.clear()
        return len(links)

    async def _cut_forever(self) -> None:
        while True:
            await asyncio.sleep(self.every - self.hold)
            self.flowing.clear()
            await asyncio.sleep(self.hold)
            cut = self.cut()
            self.flowing.set()
            if cut:
                self.cuts += 1

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        head = b""
        if self.hide_connect:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                writer.transport.abort()
                return
            if head.startswith(b"GET /api/connect"):
                self.hidden += 1
                body = b'{"error":{"code":"route_not_found","message":"no such route"}}'
                writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                             % (len(body), body))
                writer.close()
                return
        try:
            sock = socket.socket()
            # A small receive buffer: a paused proxy soon holds the daemon's writes up.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", self.target_port))
            up_reader, up_writer = await asyncio.open_connection(sock=sock, limit=4096)
        except OSError:
            writer.transport.abort()
            return
        link = (writer, up_writer)
        self._links.add(link)
        up_writer.write(head)
        for src, dst, gated in ((reader, up_writer, False), (up_reader, writer, True)):
            task = asyncio.create_task(self._pipe(src, dst, link, gated))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                    link: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
                    gated: bool) -> None:
        try:
            while True:
                if gated:
                    await self.flowing.wait()
                data = await src.read(4096 if gated else 65536)
                if not data:
                    break
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._links.discard(link)
            for w in link:
                w.transport.abort()


async def sse_replay(url: str, stream_id: str, **headers: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Replays a stream over Server-Sent Events (``from=earliest&until=now``): the ``result``
    frames, and the type of every event in order. The response ends after the replay."""
    results: list[dict[str, Any]] = []
    kinds: list[str] = []
    async with httpx.AsyncClient(timeout=60) as http:
        async with http.stream(
            "GET",
            f"{url}/api/stream/{stream_id}/results",
            params={"from": "earliest", "until": "now"},
            headers={"Accept": "text/event-stream", "X-API-Key": KEY, **headers},
        ) as resp:
            assert resp.status_code == 200, await resp.aread()
            event: str | None = None
            data: list[str] = []
            async for line in resp.aiter_lines():
                if line == "":
                    if event is not None:
                        kinds.append(event)
                        if event == "result":
                            results.append(json.loads("\n".join(data)))
                    event, data = None, []
                elif line.startswith("event:"):
                    event = line[len("event:"):].strip()
                elif line.startswith("data:"):
                    data.append(line[len("data:"):].lstrip())
            if event is not None:
                kinds.append(event)
                if event == "result":
                    results.append(json.loads("\n".join(data)))
    return results, kinds


async def replay_until(url: str, stream_id: str, count: int, timeout: float = 30.0
                       ) -> tuple[list[dict[str, Any]], list[str]]:
    """:func:`sse_replay` again until it has at least ``count`` results."""
    deadline = time.monotonic() + timeout
    while True:
        results, kinds = await sse_replay(url, stream_id)
        if len(results) >= count or time.monotonic() > deadline:
            return results, kinds
        await asyncio.sleep(0.05)


async def in_thread(fn: Callable[[], Any]) -> Any:
    """Runs a blocking step (starting or stopping a process) off the event loop."""
    return await asyncio.to_thread(fn)


Probe = Callable[[], Awaitable[Any]]
