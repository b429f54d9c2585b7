"""Support for the worker tests: ``uvicorn tests.workers.app:app --workers 2``, and
requests that reach a chosen worker.

`workers` runs uvicorn with two worker processes on a free port (`tests.nats.
multiprocess.started` collects the output and ends the parent whatever happens; the
worker processes are SIGKILLed too if uvicorn did not take them down). Both workers
accept on one socket and the kernel picks which one gets a connection, so `get_on`
opens new connections until the wanted worker answers (it says who it is in
``x-worker-pid``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

from streamui.nats_server import free_port
from tests.nats.multiprocess import START_WAIT, Child, started
from tests.support import WAIT
from tests.workers.app import PID_HEADER

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Container, Mapping

PICK_WAIT = 20.0
"""Generous bound for the kernel to hand a connection to the wanted worker."""

_WORKER_STARTED = re.compile(r"Started server process \[(\d+)\]")
_WORKER_READY = "Application startup complete."


@dataclass
class Workers:
    """A running ``uvicorn --workers 2`` and what it printed."""

    child: Child
    base_url: str
    pids: list[int]

    def lines_with(self, text: str) -> list[str]:
        return [line for line in self.child.lines if text in line]


@contextlib.asynccontextmanager
async def workers(
    *, env: Mapping[str, str], app: str = "tests.workers.app:app", count: int = 2
) -> AsyncIterator[Workers]:
    """Run ``uvicorn <app> --workers <count>`` with *env*; wait until every worker started."""
    port = free_port()
    command = (
        *(sys.executable, "-m", "uvicorn", app, "--workers", str(count)),
        *("--host", "127.0.0.1", "--port", str(port), "--no-access-log"),
    )
    pids: list[int] = []
    try:
        async with started(f"uvicorn --workers {count}", *command, env=env) as child:
            try:
                async with asyncio.timeout(START_WAIT):
                    while sum(_WORKER_READY in line for line in child.lines) < count:
                        if child.process.returncode is not None:
                            break
                        await asyncio.sleep(0.05)  # the output has no event to wait on
            except TimeoutError:
                pass
            pids = [int(m.group(1)) for m in map(_WORKER_STARTED.search, child.lines) if m]
            ready = sum(_WORKER_READY in line for line in child.lines)
            assert ready == count, f"{ready} of {count} workers started:\n{child.output}"
            yield Workers(child, f"http://127.0.0.1:{port}", pids)
    finally:
        # Ending the parent ends its workers; a parent that had to be SIGKILLed leaves
        # them running, so they are ended here too (only the pids uvicorn printed).
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def new_connections() -> httpx.AsyncClient:
    """A client that opens a new connection for every request, so any worker may answer."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(WAIT, read=None),
        trust_env=False,
        limits=httpx.Limits(max_keepalive_connections=0),
    )


def worker_pid(response: httpx.Response) -> int:
    return int(response.headers[PID_HEADER])


@contextlib.asynccontextmanager
async def get_on(
    client: httpx.AsyncClient,
    url: str,
    pids: Container[int],
    *,
    params: Mapping[str, str | list[str]] | None = None,
) -> AsyncIterator[httpx.Response]:
    """GET *url* on new connections until a worker in *pids* answers; yield its response
    with the body unread (a stream stays open until the block ends)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PICK_WAIT
    answered: set[int] = set()
    while True:
        async with client.stream("GET", url, params=params) as response:
            answered.add(worker_pid(response))
            if worker_pid(response) in pids:
                yield response
                return
        if loop.time() > deadline:
            raise AssertionError(
                f"no worker in {pids} answered {url} within {PICK_WAIT} s; {answered} did"
            )


async def poll_output(workers: Workers, text: str) -> None:
    """Wait until a line of the output contains *text* (the logs go through a queue
    thread, so a line may come a moment after the response); bounded by WAIT."""
    try:
        async with asyncio.timeout(WAIT):
            while not workers.lines_with(text):  # noqa: ASYNC110 - the output has no event
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(
            f"no line with {text!r} within {WAIT} s:\n{workers.child.output}"
        ) from None
