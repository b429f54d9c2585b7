"""Support for the multi-process tests: worker processes, and streams read over HTTP.

Each worker is an OS process of its own.

`started` runs a command from the repository root with its output (stdout and stderr
merged) collected line by line, so a test waits for what the process says (uvicorn's
"running on" line, the launcher's URLs) instead of for a while, and a failure shows
the output. Leaving the block always ends the process, also when the test failed:
SIGTERM, then SIGKILL if it has not exited within the wait.

`app_worker` is one worker of `tests.nats.mp_app` under uvicorn, on a port the
kernel picks (``--port 0``; uvicorn prints the one it got). `open_stream` opens the
stream of a page (rendered by any worker) on a worker, as the page's tab would, and
`expect_push` checks the next event byte for byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from streamui import SIGNAL_NAMESPACE
from streamui.broker import CLOCK_MARGIN
from streamui.litestar import NATS_URL_ENV, SECRET_ENV
from tests.support import WAIT, Event, SSEReader, revision_of, stream_path, stream_tokens

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

ROOT = Path(__file__).resolve().parents[2]
START_WAIT = 30.0
"""Generous bound for a process to start (imports, uvicorn, connecting to NATS)."""
SECRET = "multi-process-tests-secret-0123456789"
"""The stream token secret the workers of a test share."""

_RUNNING_ON = re.compile(r"Uvicorn running on (http://127\.0\.0\.1:\d+)")


class Child:
    """A running child process and everything it printed so far."""

    def __init__(self, name: str, process: asyncio.subprocess.Process) -> None:
        self.name = name
        self.process = process
        self.lines: list[str] = []
        self._changed = asyncio.Condition()
        self._ended = False
        self._reader = asyncio.create_task(self._read(), name=f"read {name}")

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    async def _read(self) -> None:
        assert self.process.stdout is not None
        try:
            async for raw in self.process.stdout:
                self.lines.append(raw.decode(errors="replace").rstrip("\r\n"))
                async with self._changed:
                    self._changed.notify_all()
        finally:
            self._ended = True
            async with self._changed:
                self._changed.notify_all()

    async def wait_for_line(
        self, pattern: re.Pattern[str], timeout: float = START_WAIT
    ) -> re.Match[str]:
        """The first line (printed so far or later) that *pattern* matches."""

        def found() -> re.Match[str] | None:
            for line in self.lines:
                match = pattern.search(line)
                if match:
                    return match
            return None

        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(lambda: found() is not None or self._ended)
        except TimeoutError:
            raise AssertionError(
                f"{self.name} did not print {pattern.pattern!r} within {timeout} s:\n{self.output}"
            ) from None
        match = found()
        if match is None:
            await self._wait_exit(WAIT)
            raise AssertionError(
                f"{self.name} ended (exit status {self.process.returncode}) before it printed "
                f"{pattern.pattern!r}:\n{self.output}"
            )
        return match

    async def _wait_exit(self, timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout):
                await self.process.wait()
        except TimeoutError:
            return False
        return True

    async def terminate(self, timeout: float = START_WAIT) -> int:
        """SIGTERM and wait for the exit; its status, or AssertionError (after a SIGKILL)
        if the process did not exit within *timeout*."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        if not await self._wait_exit(timeout):
            await self.kill()
            raise AssertionError(
                f"{self.name} did not exit within {timeout} s of SIGTERM:\n{self.output}"
            )
        await self._finish_reading()
        assert self.process.returncode is not None
        return self.process.returncode

    async def kill(self) -> None:
        """SIGKILL (if still running) and reap it."""
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()
        await self._finish_reading()

    async def _finish_reading(self) -> None:
        # The pipe ends with the process, unless something it started still holds it.
        try:
            await asyncio.wait_for(asyncio.shield(self._reader), WAIT)
        except TimeoutError:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def end(self) -> None:
        """End the process whatever its state: SIGTERM, then SIGKILL. Never raises."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            if not await self._wait_exit(WAIT):
                self.process.kill()
        await self.kill()


@contextlib.asynccontextmanager
async def started(name: str, *command: str, env: Mapping[str, str]) -> AsyncIterator[Child]:
    """Run *command* from the repository root with *env* added to this environment."""
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    child = Child(name, process)
    try:
        yield child
    finally:
        await child.end()


class Worker:
    """A `tests.nats.mp_app` worker process."""

    def __init__(self, child: Child) -> None:
        self.child = child
        self._base_url: str | None = None

    async def ready(self) -> str:
        """Wait until uvicorn listens (the app has started, NATS connected); its base URL."""
        if self._base_url is None:
            self._base_url = (await self.child.wait_for_line(_RUNNING_ON)).group(1)
        return self._base_url

    @property
    def base_url(self) -> str:
        assert self._base_url is not None, "await ready() first"
        return self._base_url

    async def stop_cleanly(self, *, warnings: bool = False) -> None:
        """SIGTERM; the worker must shut down completely, without a traceback, an error
        or (unless *warnings*, e.g. after its NATS server died) a warning."""
        status = await self.child.terminate()
        output = self.child.output
        # uvicorn re-raises the signal it caught once it has shut down.
        assert status in (0, -signal.SIGTERM), f"{self.child.name} exited {status}:\n{output}"
        assert "Application shutdown complete" in output, output
        assert "Traceback" not in output, output
        assert "ERROR" not in output, output
        if not warnings:
            assert "WARNING" not in output, output


@contextlib.asynccontextmanager
async def app_worker(name: str, nats_url: str, *, secret: str = SECRET) -> AsyncIterator[Worker]:
    """Start a worker of `tests.nats.mp_app` on *nats_url*; `Worker.ready` waits for it."""
    command = (
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "tests.nats.mp_app:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--no-access-log",
    )
    env = {NATS_URL_ENV: nats_url, SECRET_ENV: secret}
    async with started(name, *command, env=env) as child:
        yield Worker(child)


# -- streams -------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def open_stream(
    client: httpx.AsyncClient, base_url: str, page: str
) -> AsyncIterator[SSEReader]:
    """Open, on the worker at *base_url*, the stream that *page*'s Connect() opens; check
    the 200 and the opening id-only frame."""
    url = base_url + stream_path(page)
    params = {"t": stream_tokens(page)}
    timeout = httpx.Timeout(WAIT, read=None)
    async with client.stream("GET", url, params=params, timeout=timeout) as response:
        if response.status_code != 200:
            await response.aread()
        assert response.status_code == 200, (url, response.status_code, response.text)
        reader = SSEReader(response)
        opening = await reader.next()
        assert opening.event is None, f"the first frame is not id-only: {opening}"
        assert opening.id is not None, opening
        assert revision_of(opening.id) >= 0, opening
        yield reader


def push_event(event_id: str, *keys: str) -> Event:
    """Exactly the event a stream writes when *keys* changed, with id *event_id*."""
    signals = {SIGNAL_NAMESPACE: dict.fromkeys(sorted(keys), revision_of(event_id))}
    return Event(
        event="datastar-patch-signals",
        id=event_id,
        data=["signals " + json.dumps(signals, separators=(",", ":"))],
    )


async def expect_push(reader: SSEReader, *keys: str, after: int = 0, timeout: float = WAIT) -> int:
    """The next event must be exactly the push of *keys* (nothing else), at a revision
    above *after*; return the revision."""
    event = await reader.next_event(timeout)
    assert event.id is not None, event
    revision = revision_of(event.id)
    assert event == push_event(event.id, *keys), event
    assert revision > after, (revision, after)
    return revision


async def past_the_clock_margin() -> None:
    """Let the workers' brokers be up longer than `CLOCK_MARGIN`: a page rendered by
    another process within that margin of a worker's start is pushed every scope (the
    other clock may be that far ahead), which the tests that use this do not look at."""
    await asyncio.sleep(CLOCK_MARGIN + 0.2)


async def invalidate(client: httpx.AsyncClient, worker: Worker, scope: str) -> None:
    """Have *worker* invalidate *scope* (``POST /invalidate``)."""
    response = await client.post(f"{worker.base_url}/invalidate", params={"scope": scope})
    assert response.status_code == 204, response.text


@contextlib.asynccontextmanager
async def two_workers(nats_url: str) -> AsyncIterator[tuple[Worker, Worker, httpx.AsyncClient]]:
    """Workers A and B on *nats_url*, ready and up longer than `CLOCK_MARGIN`, and a
    client; both workers must stop cleanly at the end."""
    async with (
        app_worker("worker A", nats_url) as a,
        app_worker("worker B", nats_url) as b,
        httpx.AsyncClient(timeout=WAIT, trust_env=False) as client,
    ):
        await asyncio.gather(a.ready(), b.ready())
        await past_the_clock_margin()
        yield a, b, client
        await asyncio.gather(a.stop_cleanly(), b.stop_cleanly())
