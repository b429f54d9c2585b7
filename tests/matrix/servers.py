"""Real ASGI servers as child processes, started as a user would start them.

`SERVERS` holds each server's command line (the console script of this environment,
the app as the import string ``tests.matrix.app:app``, a graceful timeout of 20 s so
that a server exiting within 2 s shows that streamui ended its streams). `ServerProcess`
starts one on a given port in a process group of its own, with its output in a file,
waits until it answers, sends it a signal, times its exit, and kills the whole group
on the way out whatever happened (hypercorn and granian serve from child processes).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import httpx

from tests.matrix.variants import CREDENTIAL, CREDENTIAL_HEADER, VARIANT_ENV

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

__all__ = [
    "APP",
    "GRACEFUL_TIMEOUT",
    "ROOT",
    "SERVERS",
    "ServerProcess",
    "free_port",
    "kill_group",
    "problems_in",
    "running",
    "spawn",
    "until_answers",
    "warnings_in",
]

ROOT: Final = Path(__file__).resolve().parents[2]
BIN: Final = Path(sys.executable).parent
APP: Final = "tests.matrix.app:app"
GRACEFUL_TIMEOUT: Final = 20
"""Seconds every server waits for open requests on shutdown before it gives up on them."""
STARTUP: Final = 30.0
"""Seconds a server may take to answer (a spawned worker imports everything again)."""
EXIT: Final = 10.0
"""Seconds a signalled server may take to exit before the test stops waiting."""


def _uvicorn(http: str) -> Callable[[int], list[str]]:
    def argv(port: int) -> list[str]:
        return [
            str(BIN / "uvicorn"),
            APP,
            "--host=127.0.0.1",
            f"--port={port}",
            f"--http={http}",
            f"--timeout-graceful-shutdown={GRACEFUL_TIMEOUT}",
        ]

    return argv


def _hypercorn(*extra: str) -> Callable[[int], list[str]]:
    def argv(port: int) -> list[str]:
        return [
            str(BIN / "hypercorn"),
            APP,
            f"--bind=127.0.0.1:{port}",
            f"--graceful-timeout={GRACEFUL_TIMEOUT}",
            *extra,
        ]

    return argv


def _granian(port: int) -> list[str]:
    return [
        str(BIN / "granian"),
        "--interface=asgi",
        "--host=127.0.0.1",
        f"--port={port}",
        f"--workers-kill-timeout={GRACEFUL_TIMEOUT}",
        APP,
    ]


SERVERS: Final[dict[str, Callable[[int], list[str]]]] = {
    "uvicorn-httptools": _uvicorn("httptools"),
    "uvicorn-h11": _uvicorn("h11"),
    # Default mode: the parent process handles the signals and stops its one spawned
    # worker through a multiprocessing event; the worker never sees a signal.
    "hypercorn": _hypercorn(),
    "hypercorn-w0": _hypercorn("--workers=0"),  # serves in the main process
    "granian": _granian,
}
"""Each server's command line for a port."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _lines_at(*levels: str) -> re.Pattern[str]:
    # uvicorn, Litestar and the app's streamui handler start a line with the level;
    # hypercorn and granian put it in brackets.
    names = "|".join(levels)
    return re.compile(rf"^(?:(?:{names})\b|.*\[(?:{names})\]).*$", re.MULTILINE)


_PROBLEMS = re.compile(rf"{_lines_at('ERROR', 'CRITICAL').pattern}|^.*Traceback.*$", re.MULTILINE)
_WARNINGS = _lines_at("WARNING", "WARN")


def problems_in(output: str) -> list[str]:
    """The lines of a server's output logged at ERROR or above, or starting a traceback."""
    return [match.group(0) for match in _PROBLEMS.finditer(output)]


def warnings_in(output: str) -> list[str]:
    """The lines of a server's output logged at WARNING."""
    return [match.group(0) for match in _WARNINGS.finditer(output)]


async def spawn(argv: list[str], log: Path, env: dict[str, str]) -> asyncio.subprocess.Process:
    """Start *argv* in the repository, with *env* added, its output appended to *log*, in a
    process group of its own (the teardown can reap a server's workers too)."""
    with log.open("ab") as output:
        output.write(f"$ {' '.join(argv)}\n".encode())
        output.flush()
        return await asyncio.create_subprocess_exec(
            *argv,
            cwd=ROOT,
            env={**os.environ, **env, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=output,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )


async def until_answers(
    process: asyncio.subprocess.Process,
    name: str,
    client: httpx.AsyncClient,
    path: str,
    output: Callable[[], str],
) -> None:
    """Poll ``GET <path>`` with *client* until it answers 200 (bounded by STARTUP); fail
    with the server's *output* if it exits first or never answers."""
    deadline = time.monotonic() + STARTUP
    while True:
        if process.returncode is not None:
            raise AssertionError(
                f"{name} exited ({process.returncode}) before it answered:\n" + output()
            )
        with contextlib.suppress(httpx.TransportError):
            if (await client.get(path)).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} did not answer within {STARTUP} s:\n" + output())
        await asyncio.sleep(0.05)  # polling for readiness, not asserting a time


@dataclass
class ServerProcess:
    """One server process serving the matrix app; `running` starts and reaps it."""

    name: str
    variant: str
    port: int
    log: Path
    process: asyncio.subprocess.Process | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def output(self) -> str:
        """Everything the server printed so far (stdout and stderr, interleaved)."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    async def start(self) -> None:
        self.process = await spawn(
            SERVERS[self.name](self.port), self.log, {VARIANT_ENV: self.variant}
        )
        async with httpx.AsyncClient(
            base_url=self.base_url,
            headers={CREDENTIAL_HEADER: CREDENTIAL},
            timeout=2.0,
            trust_env=False,
        ) as client:
            await until_answers(
                self.process, self.name, client, "/debug/counts", lambda: self.output
            )

    def send_signal(self, signum: int) -> float:
        """Send *signum* to the server's main process only (as a process manager does);
        return the monotonic time it was sent."""
        sent = time.monotonic()
        os.kill(self.pid, signum)
        return sent

    async def wait_exit(self, since: float) -> tuple[int, float]:
        """Wait (at most EXIT seconds) for the main process to exit; return its exit
        code and the seconds from *since* to the exit."""
        assert self.process is not None
        try:
            async with asyncio.timeout(EXIT):
                returncode = await self.process.wait()
        except TimeoutError:
            raise AssertionError(
                f"{self.name} still running {EXIT} s after the signal:\n" + self.output
            ) from None
        return returncode, time.monotonic() - since

    async def wait_group_gone(self) -> None:
        """Wait (bounded) until no process of the server's group is left (workers)."""
        try:
            async with asyncio.timeout(EXIT):
                while _group_alive(self.pid):  # noqa: ASYNC110 - nothing to wait on but the OS
                    await asyncio.sleep(0.05)
        except TimeoutError:
            raise AssertionError(
                f"{self.name}: worker processes still running after the main process exited"
            ) from None

    async def kill(self) -> None:
        """Kill the whole process group, if anything of it is left, and reap the main
        process."""
        await kill_group(self.process)


async def kill_group(process: asyncio.subprocess.Process | None) -> None:
    """Kill *process*'s whole group (started by `spawn`), if anything of it is left, and
    reap *process*."""
    if process is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    if process.returncode is None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(EXIT):
                await process.wait()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a zombie of the group not yet reaped still counts
        return True
    return True


@contextlib.asynccontextmanager
async def running(name: str, variant: str, port: int, log: Path) -> AsyncIterator[ServerProcess]:
    """Start server *name* with the app as *variant* on *port*; kill what is left of it
    on exit, whatever happened."""
    server = ServerProcess(name, variant, port, log)
    try:
        await server.start()
        yield server
    finally:
        await server.kill()
