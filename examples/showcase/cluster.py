"""Run the showcase on two workers that share a managed nats-server and a SQLite file.

    python3 dev.py demo-cluster        (or: python -m examples.showcase.cluster)

What it does, in order:

1. starts a `streamui.nats_server.NatsServer` on free loopback ports;
2. creates the showcase's database (`SqliteStore`: schema and demo data) in a new
   temporary directory, once, before any worker could race to create it;
3. starts two workers, ``python -m examples.showcase``, on ``PORT`` and ``PORT + 1``
   (default 8000 and 8001; ``HOST`` default 127.0.0.1), with ``STREAMUI_NATS_URL``,
   ``STREAMUI_SHOWCASE_DB`` and one ``STREAMUI_SECRET`` (random per launch unless set:
   the workers share it, so a page rendered by one opens its stream on the other);
4. once both listen, prints both URLs ("open one window on each") and the workers'
   process ids; every line a worker prints is shown after its port, e.g. ``[8001]``.

Ctrl-C or SIGTERM stops the workers (SIGTERM, then SIGKILL after 10 s), then the NATS
server, removes the database and exits with status 0. If a worker exits by itself,
or does not start within 30 s, the rest is stopped the same way and the status is 1.

The workers run in sessions of their own, so the terminal's Ctrl-C reaches only the
launcher, which stops them before the NATS server. The nats-server child (started by
`NatsServer`, in the launcher's process group) would get a Ctrl-C too and exit at
once, leaving the workers to log that NATS went away while they shut down; so
``dev.py demo-cluster`` runs the launcher in a session of its own and turns Ctrl-C
into SIGTERM. POSIX only (signals, sessions).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any, Final

from examples.showcase import address_from_env
from examples.showcase.sqlite_store import DATABASE_ENV, SqliteStore
from streamui.errors import ConfigurationError
from streamui.litestar import NATS_URL_ENV, SECRET_ENV
from streamui.nats_server import NatsServer

__all__ = ["main", "run"]

ROOT: Final = Path(__file__).resolve().parents[2]
START_TIMEOUT: Final = 30.0
"""Seconds a worker may take to start listening."""
STOP_TIMEOUT: Final = 10.0
"""Seconds a worker may take to shut down after SIGTERM before it is killed."""
_LISTENING: Final = b"Uvicorn running on"


class Worker:
    """One ``python -m examples.showcase`` process, its output relayed with a prefix."""

    def __init__(self, process: asyncio.subprocess.Process, host: str, port: int) -> None:
        self.process = process
        self.url = f"http://{host}:{port}"
        self.listening = asyncio.Event()
        self._prefix = f"[{port}] "
        self.relay = asyncio.create_task(self._relay(), name=f"relay {port}")

    @classmethod
    async def start(cls, host: str, port: int, environment: dict[str, str]) -> Worker:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "examples.showcase",
            cwd=ROOT,
            env={**environment, "HOST": host, "PORT": str(port), "PYTHONUNBUFFERED": "1"},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            # Its own session: the terminal's Ctrl-C reaches only the launcher, which
            # stops the workers before the NATS server.
            start_new_session=True,
        )
        return cls(process, host, port)

    async def _relay(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            if _LISTENING in line:
                self.listening.set()
            text = line.decode(errors="replace").rstrip("\r\n")
            print(self._prefix + text, flush=True)

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `STOP_TIMEOUT`."""
        if self.process.returncode is None:
            self.process.terminate()
            try:
                async with asyncio.timeout(STOP_TIMEOUT):
                    await self.process.wait()
            except TimeoutError:
                print(f"{self._prefix}did not stop within {STOP_TIMEOUT} s; killing it", flush=True)
                self.process.kill()
        await self.process.wait()
        await self.relay


async def run(host: str, first_port: int, *, secret: str | None = None) -> int:
    """Serve the showcase on two workers until SIGINT/SIGTERM; the exit status."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        with tempfile.TemporaryDirectory(prefix="streamui-showcase-") as directory:
            database = Path(directory) / "showcase.db"
            SqliteStore(database).close()
            pid_file = Path(directory) / "nats-server.pid"
            nats = NatsServer(extra_args=("--pid", str(pid_file)))
            workers: list[Worker] = []
            try:
                await nats.start()
                environment = {
                    **os.environ,
                    NATS_URL_ENV: nats.url,
                    SECRET_ENV: secret or secrets.token_urlsafe(32),
                    DATABASE_ENV: str(database),
                }
                for port in (first_port, first_port + 1):
                    workers.append(await Worker.start(host, port, environment))
                if not await _until_listening(workers, stop):
                    return 0 if stop.is_set() else 1
                _announce(workers, nats, pid_file.read_text().strip(), database)
                return await _until_stopped(workers, stop)
            finally:
                await asyncio.gather(*(worker.stop() for worker in workers))
                await nats.stop()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


async def _until_listening(workers: list[Worker], stop: asyncio.Event) -> bool:
    """Wait until every worker listens; False if one exited, the wait timed out or a
    stop was asked for first."""
    listening = asyncio.gather(*(worker.listening.wait() for worker in workers))
    interrupted = asyncio.ensure_future(stop.wait())
    waiters: list[asyncio.Future[Any]] = [listening, interrupted]
    waiters += [asyncio.ensure_future(worker.process.wait()) for worker in workers]
    try:
        done, _ = await asyncio.wait(
            waiters, timeout=START_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        for waiter in waiters:
            waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listening
    if listening in done:
        return True
    if interrupted not in done and not stop.is_set():
        failed = [worker.url for worker in workers if worker.process.returncode is not None]
        reason = f"{', '.join(failed)} exited" if failed else f"not within {START_TIMEOUT} s"
        print(f"the showcase workers did not start: {reason}", file=sys.stderr, flush=True)
    return False


def _announce(workers: list[Worker], nats: NatsServer, nats_pid: str, database: Path) -> None:
    lines = [
        f"streamui showcase on {len(workers)} workers, sharing the SQLite file {database}",
        f"and the NATS server {nats.url} (nats-server pid {nats_pid}):",
        *(f"  {worker.url}   (worker pid {worker.process.pid})" for worker in workers),
        "Open one window on each: a click in one shows up in the other. Ctrl-C stops everything.",
    ]
    print("\n".join(lines), flush=True)


async def _until_stopped(workers: list[Worker], stop: asyncio.Event) -> int:
    """Wait for SIGINT/SIGTERM (status 0) or for a worker to exit by itself (status 1)."""
    interrupted = asyncio.ensure_future(stop.wait())
    exits = {asyncio.ensure_future(worker.process.wait()): worker for worker in workers}
    try:
        done, _ = await asyncio.wait([interrupted, *exits], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in (interrupted, *exits):
            waiter.cancel()
    if interrupted in done:
        print("stopping the workers and the NATS server", flush=True)
        return 0
    exited = [worker for waiter, worker in exits.items() if waiter in done]
    for worker in exited:
        print(
            f"the worker on {worker.url} exited ({worker.process.returncode}); stopping the rest",
            file=sys.stderr,
            flush=True,
        )
    return 1


def main() -> None:
    host, port = address_from_env()
    if not 0 < port < 65535:
        sys.exit(f"PORT must be between 1 and 65534 (the workers use PORT and PORT+1), got {port}")
    try:
        status = asyncio.run(run(host, port, secret=os.environ.get(SECRET_ENV) or None))
    except ConfigurationError as error:  # e.g. no nats-server binary: the message says how
        sys.exit(f"demo-cluster: {error}")
    sys.exit(status)


if __name__ == "__main__":
    main()
