"""One benchmarked server: a uvicorn child process, and what /proc says about it.

`ServerProcess` starts ``uvicorn --factory <app> --loop uvloop --http httptools`` (one
worker, so the child itself serves) on a free loopback port, with its open-file limit
raised and optionally pinned to one CPU, and always kills it on exit from the
``with`` block. `cpu_seconds` and `rss_kb` read /proc (Linux only).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final

from bench.client import BenchError
from streamui.nats_server import free_port

if TYPE_CHECKING:
    from collections.abc import Mapping
    from types import TracebackType
    from typing import Self

__all__ = ["ServerProcess", "positive", "raise_open_file_limit"]

HOST: Final = "127.0.0.1"
_CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
_STOP_GRACE: Final = 5.0


def raise_open_file_limit(wanted: int) -> None:
    """Raise this process's soft RLIMIT_NOFILE to at least *wanted* (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return
    if hard != resource.RLIM_INFINITY and hard < wanted:
        raise BenchError(
            f"need {wanted} open files but the hard limit is {hard}; "
            "raise it (ulimit -Hn) or use fewer --streams"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


class ServerProcess:
    """``with ServerProcess(...) as server:`` runs one uvicorn server until the block ends."""

    def __init__(
        self,
        name: str,
        factory: str,
        *,
        open_files: int,
        backlog: int,
        log_path: Path,
        cpu: int | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.factory = factory
        self.open_files = open_files
        self.backlog = backlog
        self.log_path = log_path
        self.cpu = cpu
        self.env = dict(env or {})
        self.host = HOST
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        self.port = free_port(HOST)
        command = [
            sys.executable, "-m", "uvicorn", "--factory", self.factory,
            "--host", self.host, "--port", str(self.port),
            "--loop", "uvloop", "--http", "httptools", "--workers", "1",
            "--backlog", str(self.backlog), "--timeout-graceful-shutdown", "2",
            "--log-level", "warning", "--no-access-log",
        ]  # fmt: skip
        open_files, cpu = self.open_files, self.cpu

        def prepare_child() -> None:
            # Runs in the child between fork and exec.
            resource.setrlimit(
                resource.RLIMIT_NOFILE,
                (open_files, resource.getrlimit(resource.RLIMIT_NOFILE)[1]),
            )
            if cpu is not None:
                os.sched_setaffinity(0, {cpu})

        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
                preexec_fn=prepare_child,  # noqa: PLW1509 - no threads in this process
                start_new_session=True,
            )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("the server is not started")
        return self._process.pid

    async def wait_ready(self, timeout: float) -> None:
        """Wait until the server accepts connections; raise with its log if it died."""
        deadline = time.monotonic() + timeout
        while True:
            self._require_running()
            try:
                _, writer = await asyncio.open_connection(self.host, self.port)
            except OSError:
                if time.monotonic() > deadline:
                    raise BenchError(
                        f"the server did not listen on {self.host}:{self.port} "
                        f"within {timeout:g} s{self._log_tail()}"
                    ) from None
                await asyncio.sleep(0.05)
            else:
                writer.close()
                return

    def _require_running(self) -> None:
        if self._process is not None and (code := self._process.poll()) is not None:
            raise BenchError(f"the server exited with code {code}{self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()[-20:]
        except OSError:
            return ""
        return "".join(f"\n    {line}" for line in lines) if lines else ""

    def cpu_seconds(self) -> float:
        """CPU time (user plus system) the server has used so far, all threads.

        Read in nanoseconds from each thread's ``schedstat`` where the kernel has it; else
        ``utime + stime`` from ``/proc/<pid>/stat``, the same quantity in clock ticks
        (usually 10 ms, too coarse for short runs).
        """
        self._require_running()
        try:
            total = 0
            for path in Path(f"/proc/{self.pid}/task").glob("*/schedstat"):
                total += int(path.read_text().split()[0])
            if total:
                return total / 1e9
        except (OSError, ValueError, IndexError):
            pass
        return self.cpu_ticks_seconds()

    def cpu_ticks_seconds(self) -> float:
        """``utime + stime`` from ``/proc/<pid>/stat``, in seconds (clock-tick resolution)."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        # The command name (field 2) is in parentheses and may contain spaces.
        fields = stat.rpartition(")")[2].split()
        utime, stime = int(fields[11]), int(fields[12])
        return (utime + stime) / _CLOCK_TICKS

    def rss_kb(self) -> int:
        """The server's resident set size now, in KiB."""
        self._require_running()
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise BenchError(f"no VmRSS in /proc/{self.pid}/status")

    def stop(self) -> None:
        """Terminate the server (SIGKILL after a grace period); idempotent."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(_STOP_GRACE)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(_STOP_GRACE)


def positive(text: str) -> int:
    """An ``argparse`` type: a whole number of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value
