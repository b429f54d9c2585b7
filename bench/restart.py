"""``python -m bench.restart``: how 1,000 open tabs reconnect when the server restarts.

On SIGTERM the plugin ends every stream with a last frame ``retry: <ms>``, ms drawn
uniformly in [1000, 1000 * reconnect_spread] (``StreamConfig.reconnect_spread``, 5 s by
default), and the browser waits that long before it reconnects. This measures what
that does to a restart, next to a close without jitter (``reconnect_spread=0``: every
stream says 1000 ms), in one run:

1. A listening socket on a free loopback port, held by this process (as a service
   manager would), and a server on it (`bench.restart_server`, a uvicorn child process).
2. N streams, each a browser-like client: it remembers the last ``id:`` and
   ``retry:``, and after the body ends it waits that delay and reconnects with
   ``Last-Event-ID``.
3. SIGTERM to the server, and right away a new server on the same socket. The old
   server's exit is timed; each reconnect is timed when its request is sent and when
   its opening frame arrives, relative to the signal.

Prints a Markdown table and writes it to build/restart-spread.md; server logs go to
build/restart-*.log.

    python -m bench.restart                  # 1000 streams, 5 s spread vs none
    python -m bench.restart --streams 200    # a quick check
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import secrets
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, cast

import uvloop

from bench.client import BenchError, StreamBody
from bench.process import HOST, positive, raise_open_file_limit
from bench.restart_server import READY_LINE
from bench.servers import SCOPE, SECRET_ENV, STREAMUI_PATH
from streamui import TokenSigner

if TYPE_CHECKING:
    import io
    from collections.abc import Sequence

__all__ = ["Outcome", "main", "measure_restart"]

BUILD: Final = Path("build")
ROOT: Final = Path(__file__).resolve().parents[1]
WINDOW: Final = 0.1
"""Seconds: the window in which the peak number of reconnects is counted."""
_CONNECT_CONCURRENCY: Final = 128
_STARTUP_TIMEOUT: Final = 30.0
_STOP_GRACE: Final = 5.0


# -- the servers --------------------------------------------------------------------------


class Server:
    """One `bench.restart_server` child process serving on the shared socket."""

    def __init__(self, process: asyncio.subprocess.Process, log_path: Path) -> None:
        self.process = process
        self.log_path = log_path

    @classmethod
    async def start(cls, sock: socket.socket, spread: float, secret: str, log_path: Path) -> Server:
        fd = sock.fileno()
        with _open_log(log_path) as log:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.restart_server", str(fd), str(spread),
                cwd=ROOT,
                env={**os.environ, SECRET_ENV: secret, "PYTHONUNBUFFERED": "1"},
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
                pass_fds=(fd,),
                start_new_session=True,
            )  # fmt: skip
        return cls(process, log_path)

    async def wait_ready(self, timeout: float) -> None:
        """Wait until uvicorn logged that the app started (the socket listens already)."""
        try:
            async with asyncio.timeout(timeout):
                while not _log_has(self.log_path, READY_LINE):
                    if self.process.returncode is not None:
                        raise BenchError(
                            f"the server exited with code {self.process.returncode}"
                            f"{_log_tail(self.log_path)}"
                        )
                    await asyncio.sleep(0.005)
        except TimeoutError:
            raise BenchError(
                f"the server did not start within {timeout:g} s{_log_tail(self.log_path)}"
            ) from None

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after a grace period; idempotent."""
        if self.process.returncode is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), _STOP_GRACE)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


def _open_log(path: Path) -> io.BufferedWriter:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("wb")


def _log_has(path: Path, text: str) -> bool:
    try:
        return text in path.read_text(errors="replace")
    except OSError:
        return False


def _log_tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()[-20:]
    except OSError:
        return ""
    return "".join(f"\n    {line}" for line in lines)


# -- the browser-like client ----------------------------------------------------------------


class _Connection(asyncio.Protocol):
    """One HTTP connection of a tab: the GET, the response head, the SSE frames."""

    def __init__(self, tab: _Tab, request: bytes) -> None:
        self.tab = tab
        self.request = request
        self.transport: asyncio.Transport | None = None
        self._body = StreamBody()
        self._text = b""
        self._frames = 0
        self.done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)
        self.transport.write(self.request)
        self.tab.sent(time.perf_counter())

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        try:
            self._received(data, now)
        except (BenchError, ValueError) as error:
            self.tab.client.fail(BenchError(f"tab {self.tab.index}: {error}"))

    def _received(self, data: bytes, now: float) -> None:
        text = self._text + self._body.feed(data)
        *frames, self._text = text.split(b"\n\n")
        for frame in frames:
            self._frame(frame, now)
        if self._body.ended:
            self._end(now, clean=True)

    def _frame(self, frame: bytes, now: float) -> None:
        for line in frame.split(b"\n"):
            name, _, value = line.partition(b":")
            value = value.removeprefix(b" ")
            if name == b"id":
                self.tab.last_id = value.decode()
            elif name == b"retry":
                self.tab.retry_ms = int(value)
        self._frames += 1
        if self._frames == 1:
            self.tab.opened(now)

    def _end(self, now: float, *, clean: bool) -> None:
        if self.done:
            return
        self.done = True
        if self.transport is not None:
            self.transport.close()
        self.tab.ended(now, clean=clean)

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(time.perf_counter(), clean=False)


@dataclass(slots=True)
class _Tab:
    """One browser tab's stream: connects, and reconnects after the announced delay."""

    client: RestartClient
    index: int
    last_id: str | None = None
    retry_ms: int = 1000
    connection: _Connection | None = None
    connections: int = 0
    clean_end: bool | None = None
    ended_retry_ms: int | None = None
    """The delay the ended stream asked for (the reconnect's opening frame resets it)."""
    ended_at: float | None = None
    sent_at: float | None = None
    """When the current connection's request was written."""
    reconnect_sent_at: float | None = None
    reconnect_opened_at: float | None = None

    def connect(self) -> None:
        headers = "" if self.last_id is None else f"Last-Event-ID: {self.last_id}\r\n"
        self.connection = _Connection(self, self.client.request(headers))
        self.connections += 1
        self.client.spawn(self.connection)

    def sent(self, now: float) -> None:
        self.sent_at = now
        if self.connections == 2:
            self.reconnect_sent_at = now

    def opened(self, now: float) -> None:
        if self.connections == 1:
            self.client.first_opened()
        elif self.connections == 2:
            self.reconnect_opened_at = now
            self.client.reconnected()

    def ended(self, now: float, *, clean: bool) -> None:
        if self.client.closing:
            return
        if self.connections > 1 or not self.client.signalled:
            self.client.fail(
                BenchError(f"tab {self.index}: a stream ended before the restart or twice")
            )
            return
        self.clean_end = clean
        self.ended_at = now
        self.ended_retry_ms = self.retry_ms
        # What a browser does after a stream ends: wait the last retry, then reconnect.
        self.client.loop.call_later(self.retry_ms / 1000, self.connect)


class RestartClient:
    """N tabs on ``GET <path>`` of one host and port, through a restart."""

    def __init__(self, host: str, port: int, path: str, count: int) -> None:
        self.host = host
        self.port = port
        self.path = path
        self.loop = asyncio.get_running_loop()
        self.tabs = [_Tab(self, index) for index in range(count)]
        self.signalled = False
        self.closing = False
        self._opened = 0
        self._reconnected = 0
        self._all_open = self.loop.create_future()
        self._all_back = self.loop.create_future()
        self._limit = asyncio.Semaphore(_CONNECT_CONCURRENCY)
        self._tasks: set[asyncio.Task[None]] = set()

    def request(self, extra_headers: str) -> bytes:
        return (
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Accept: text/event-stream\r\nCache-Control: no-cache\r\n{extra_headers}\r\n"
        ).encode()

    def spawn(self, connection: _Connection) -> None:
        task = self.loop.create_task(self._connect(connection))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, connection: _Connection) -> None:
        # Only the first connections are throttled (the server's accept backlog); the
        # reconnects go out when their timers fire, as browsers would send them.
        try:
            if connection.tab.connections == 1:
                async with self._limit:
                    await self.loop.create_connection(lambda: connection, self.host, self.port)
            else:
                await self.loop.create_connection(lambda: connection, self.host, self.port)
        except OSError as error:
            self.fail(BenchError(f"tab {connection.tab.index}: could not connect: {error}"))

    async def open(self, timeout: float) -> None:
        for tab in self.tabs:
            tab.connect()
        try:
            async with asyncio.timeout(timeout):
                await self._all_open
        except TimeoutError:
            raise BenchError(
                f"only {self._opened} of {len(self.tabs)} streams opened within {timeout:g} s"
            ) from None

    async def all_reconnected(self, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                await self._all_back
        except TimeoutError:
            raise BenchError(
                f"only {self._reconnected} of {len(self.tabs)} streams reconnected "
                f"within {timeout:g} s of the signal"
            ) from None

    def first_opened(self) -> None:
        self._opened += 1
        if self._opened == len(self.tabs) and not self._all_open.done():
            self._all_open.set_result(None)

    def reconnected(self) -> None:
        self._reconnected += 1
        if self._reconnected == len(self.tabs) and not self._all_back.done():
            self._all_back.set_result(None)

    def fail(self, error: BenchError) -> None:
        for future in (self._all_open, self._all_back):
            if not future.done():
                future.set_exception(error)

    async def close(self) -> None:
        self.closing = True
        for future in (self._all_open, self._all_back):
            if not future.done():
                future.cancel()
            elif not future.cancelled():
                future.exception()  # retrieved: a failure was already raised
        for task in list(self._tasks):
            task.cancel()
        for tab in self.tabs:
            if tab.connection is not None and tab.connection.transport is not None:
                tab.connection.transport.abort()
        await asyncio.sleep(0)


# -- one restart ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    """One restart: times in seconds after the SIGTERM."""

    label: str
    spread: float
    streams: int
    old_exit: float
    new_ready: float
    retries_ms: tuple[int, ...]
    """The ``retry:`` each stream was told last."""
    clean_ends: int
    sent: tuple[float, ...]
    """When each reconnect request was sent."""
    opened: tuple[float, ...]
    """When each reconnect's opening frame arrived (same order as *sent*)."""

    def peak(self, times: Sequence[float], window: float = WINDOW) -> int:
        """The most of *times* in any half-open interval of *window* seconds."""
        ordered = sorted(times)
        best = start = 0
        for end, value in enumerate(ordered):
            while value - ordered[start] >= window:
                start += 1
            best = max(best, end - start + 1)
        return best


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (*fraction* of 1)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


async def measure_restart(
    label: str, slug: str, *, spread: float, streams: int, secret: str, timeout: float
) -> Outcome:
    signer = TokenSigner(secret)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    servers: list[Server] = []
    client: RestartClient | None = None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # accepted sockets inherit
        sock.bind((HOST, 0))
        sock.listen(max(2048, streams))
        port = sock.getsockname()[1]
        old = await Server.start(sock, spread, secret, BUILD / f"restart-{slug}-old.log")
        servers.append(old)
        await old.wait_ready(_STARTUP_TIMEOUT)
        path = f"{STREAMUI_PATH}?t={signer.sign([SCOPE])}"
        client = RestartClient(HOST, port, path, streams)
        await client.open(timeout)

        signalled_at = time.perf_counter()
        client.signalled = True
        old.process.send_signal(signal.SIGTERM)
        new = await Server.start(sock, spread, secret, BUILD / f"restart-{slug}-new.log")
        servers.append(new)

        async def exited() -> float:
            await old.process.wait()
            return time.perf_counter() - signalled_at

        async def ready() -> float:
            await new.wait_ready(_STARTUP_TIMEOUT)
            return time.perf_counter() - signalled_at

        old_exit, new_ready, _ = await asyncio.gather(
            exited(), ready(), client.all_reconnected(timeout + spread)
        )
        tabs = client.tabs
        return Outcome(
            label=label,
            spread=spread,
            streams=streams,
            old_exit=old_exit,
            new_ready=new_ready,
            retries_ms=tuple(cast("int", tab.ended_retry_ms) for tab in tabs),
            clean_ends=sum(1 for tab in tabs if tab.clean_end),
            sent=tuple(cast("float", tab.reconnect_sent_at) - signalled_at for tab in tabs),
            opened=tuple(cast("float", tab.reconnect_opened_at) - signalled_at for tab in tabs),
        )
    except BenchError as error:
        raise BenchError(f"{label}: {error}") from None
    finally:
        if client is not None:
            await client.close()
        for server in servers:
            await server.stop()
        sock.close()


# -- the report ---------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms"


def markdown_report(outcomes: Sequence[Outcome]) -> str:
    streams = outcomes[0].streams
    lines = [
        f"Restart with {streams:,} open streams: SIGTERM, and a new server on the same "
        "socket right away. Times after the signal.",
        "",
        "| close | old server exits | new server ready | clean ends | retry: range "
        "| reconnects sent: min / p50 / p90 / max | peak per 100 ms "
        "| opening frame: p50 / max | request → opening p50 / p99 / max |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for outcome in outcomes:
        sent, opened = outcome.sent, outcome.opened
        waits = [end - begin for begin, end in zip(sent, opened, strict=True)]
        lines.append(
            f"| {outcome.label} | {_ms(outcome.old_exit)} | {_ms(outcome.new_ready)} "
            f"| {outcome.clean_ends}/{outcome.streams} "
            f"| {min(outcome.retries_ms):,} to {max(outcome.retries_ms):,} ms "
            f"| {_ms(min(sent))} / {_ms(percentile(sent, 0.5))} / "
            f"{_ms(percentile(sent, 0.9))} / {_ms(max(sent))} "
            f"| {outcome.peak(sent)} "
            f"| {_ms(percentile(opened, 0.5))} / {_ms(max(opened))} "
            f"| {_ms(percentile(waits, 0.5))} / {_ms(percentile(waits, 0.99))} / "
            f"{_ms(max(waits))} |"
        )
    lines += [
        "",
        '"reconnects sent": when each tab sent its reconnect (the last `retry:` after the '
        'body ended); "peak per 100 ms": the most reconnects sent in any 100 ms; '
        '"request → opening": from sending the reconnect to its opening frame '
        "(includes waiting for the new server to start).",
    ]
    return "\n".join(lines) + "\n"


# -- command line -------------------------------------------------------------------------


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.restart",
        description="Restart a server under N open streams and time the reconnects, "
        "with the default reconnect spread and without jitter, side by side.",
    )
    parser.add_argument("--streams", type=positive, default=1000, help="SSE streams (1000)")
    parser.add_argument(
        "--spread", type=float, default=5.0, help="StreamConfig.reconnect_spread (5.0)"
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds a phase may take (60)")
    parser.add_argument(
        "--output", type=Path, default=BUILD / "restart-spread.md", help="%(default)s"
    )
    return parser.parse_args(argv)


async def measure_both(streams: int, spread: float, timeout: float) -> list[Outcome]:
    secret = secrets.token_urlsafe(32)
    jittered = await measure_restart(
        f"spread {spread:g} s", "spread", spread=spread, streams=streams, secret=secret,
        timeout=timeout,
    )  # fmt: skip
    plain = await measure_restart(
        "no jitter (reconnect_spread=0)", "no-jitter", spread=0.0, streams=streams,
        secret=secret, timeout=timeout,
    )  # fmt: skip
    return [jittered, plain]


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    try:
        # This process holds a tab's old and new connection at once, briefly.
        raise_open_file_limit(2 * arguments.streams + 256)
        outcomes = uvloop.run(measure_both(arguments.streams, arguments.spread, arguments.timeout))
    except BenchError as error:
        print(f"python -m bench.restart: {error}", file=sys.stderr)
        return 1
    report = markdown_report(outcomes)
    print(report)
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(report)
    print(f"(written to {arguments.output})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
