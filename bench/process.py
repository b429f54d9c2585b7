"""One benchmarked server: a uvicorn or granian child process, and what /proc says about it.

`ServerProcess` starts ``uvicorn --factory <app> --loop uvloop --http httptools`` (one
worker, so the started process itself serves) or ``granian --interface asgi --factory
<app> --loop uvloop --http 1`` (one worker, which granian runs in a child process of
its own) on a free loopback port, with its open-file limit raised and optionally the
whole process tree pinned to one CPU, and always kills it (its whole process group)
on exit from the ``with`` block. `cpu_seconds` and `rss_kb` read /proc (Linux only).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from bench.client import BenchError
from streamui.nats_server import free_port

if TYPE_CHECKING:
    from collections.abc import Mapping
    from types import TracebackType
    from typing import Self

__all__ = [
    "ASGI_SERVERS",
    "CpuSample",
    "ServerProcess",
    "positive",
    "process_tree",
    "raise_open_file_limit",
]

HOST: Final = "127.0.0.1"
_ROOT: Final = Path(__file__).resolve().parent.parent
"""The repository, where the server runs, so ``bench.servers`` imports from anywhere."""
ASGI_SERVERS: Final = ("uvicorn", "granian")
"""The ASGI servers `ServerProcess` can run an app factory under."""
_CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
_STOP_GRACE: Final = 5.0
_GRACEFUL_SHUTDOWN: Final = "2"
"""Seconds either server gives open requests when told to stop, before it drops them."""
_READY_PROBE: Final = b"GET /__bench_ready HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"


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


def process_tree(pid: int) -> list[int]:
    """*pid* and its live descendants, parents before children.

    Read from ``/proc/<pid>/task/*/children``; where the kernel lacks that file, from
    the parent field of every ``/proc/<n>/stat``.
    """
    found = [pid]
    index = 0
    while index < len(found):
        found.extend(child for child in _children(found[index]) if child not in found)
        index += 1
    return found


def _children(pid: int) -> list[int]:
    children: list[int] = []
    task_files = list(Path(f"/proc/{pid}/task").glob("*/children"))
    if task_files:
        for path in task_files:
            with contextlib.suppress(OSError, ValueError):
                children.extend(int(item) for item in path.read_text().split())
        return children
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rpartition(")")[2].split()[1]) == pid:
                children.append(int(stat.parent.name))
    return children


def _thread_cpu_ns(pid: int) -> dict[int, int]:
    """The CPU time of each live thread of *pid* in ns (``schedstat``); empty where the
    kernel has no schedstat."""
    threads: dict[int, int] = {}
    for path in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            threads[int(path.parent.name)] = int(path.read_text().split()[0])
    return threads


@dataclass(frozen=True, slots=True)
class CpuSample:
    """The CPU time (user plus system) of a server's processes at one moment."""

    threads: Mapping[int, int]
    """Nanoseconds per live thread id, from ``/proc/<pid>/task/<tid>/schedstat``."""
    ticks_seconds: float
    """``utime + stime`` of the processes (``/proc/<pid>/stat``): includes threads that
    have ended, but counts in clock ticks (usually 10 ms, coarse for short runs)."""

    @property
    def seconds(self) -> float:
        return sum(self.threads.values()) / 1e9 if self.threads else self.ticks_seconds

    def seconds_since(self, earlier: CpuSample) -> float:
        """CPU seconds used between *earlier* and this sample: exact (schedstat) while
        every thread of *earlier* is still alive; in clock ticks if one ended in
        between, since its schedstat went with it."""
        if self.threads and earlier.threads and earlier.threads.keys() <= self.threads.keys():
            return self.seconds - earlier.seconds
        return self.ticks_seconds - earlier.ticks_seconds


class ServerProcess:
    """``with ServerProcess(...) as server:`` runs one uvicorn or granian server until the
    block ends.

    *server* is ``"uvicorn"`` (the started process serves the app itself) or
    ``"granian"`` (one worker child of the started process serves it). Either way the
    whole process tree runs on *cpu*; `cpu_seconds` sums every thread of the whole tree
    (granian's supervising parent idles, so that is its worker's CPU plus a little
    bookkeeping that is a cost of serving too), and `rss_kb` is the serving process's
    own RSS (granian's worker, not the sum: the parent's memory does not grow with
    streams).
    """

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
        server: str = "uvicorn",
    ) -> None:
        if server not in ASGI_SERVERS:
            raise ValueError(f"server must be one of {', '.join(ASGI_SERVERS)}, got {server!r}")
        self.name = name
        self.factory = factory
        self.open_files = open_files
        self.backlog = backlog
        self.log_path = log_path
        self.cpu = cpu
        self.env = dict(env or {})
        self.server = server
        self.host = HOST
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._stopped = False

    def command(self) -> list[str]:
        """The command line that starts the server on ``self.port``."""
        if self.server == "granian":
            # --backpressure caps the requests a worker serves at once (default:
            # backlog / workers); every open stream is one, and POST /fire must get in.
            return [
                sys.executable, "-m", "granian", "--interface", "asgi", "--factory",
                "--host", self.host, "--port", str(self.port),
                "--loop", "uvloop", "--http", "1", "--workers", "1",
                "--backlog", str(self.backlog), "--backpressure", str(self.open_files),
                "--workers-kill-timeout", _GRACEFUL_SHUTDOWN,
                "--log-level", "warning", "--no-access-log",
                self.factory,
            ]  # fmt: skip
        return [
            sys.executable, "-m", "uvicorn", "--factory", self.factory,
            "--host", self.host, "--port", str(self.port),
            "--loop", "uvloop", "--http", "httptools", "--workers", "1",
            "--backlog", str(self.backlog), "--timeout-graceful-shutdown", _GRACEFUL_SHUTDOWN,
            "--log-level", "warning", "--no-access-log",
        ]  # fmt: skip

    def __enter__(self) -> Self:
        self.port = free_port(HOST)
        command = self.command()
        open_files, cpu = self.open_files, self.cpu

        def prepare_child() -> None:
            # Runs in the child between fork and exec; its children and threads inherit both.
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
                cwd=_ROOT,
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
        """The started process (granian: the parent of the worker)."""
        if self._process is None:
            raise RuntimeError("the server is not started")
        return self._process.pid

    @property
    def serving_pid(self) -> int:
        """The process that runs the app: uvicorn itself, or granian's worker."""
        if self.server != "granian":
            return self.pid
        tree = process_tree(self.pid)
        if len(tree) < 2:
            self._require_running()
            raise BenchError(f"granian has no worker process{self._log_tail()}")
        return tree[1]

    async def wait_ready(self, timeout: float) -> None:
        """Wait until the app answers an HTTP request; raise with its log if it died.

        An answer, not an accepted connection: granian's parent listens before its
        worker has loaded the app. Then pin every thread of the tree to the server CPU
        once more, in case a server set an affinity of its own after the fork.
        """
        deadline = time.monotonic() + timeout
        while True:
            self._require_running()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BenchError(
                    f"the server did not answer on {self.host}:{self.port} "
                    f"within {timeout:g} s{self._log_tail()}"
                )
            if await self._answers(min(remaining, 1.0)):
                break
            await asyncio.sleep(0.05)
        self.serving_pid  # noqa: B018 - raises if granian has no worker
        if self.cpu is not None:
            self._pin_tree(self.cpu)

    async def _answers(self, timeout: float) -> bool:
        """Whether one HTTP request gets a response head within *timeout* (any status)."""
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(self.host, self.port)
                writer.write(_READY_PROBE)
                head = await reader.readuntil(b"\r\n\r\n")
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return False
        finally:
            if writer is not None:
                writer.close()
        return head.startswith(b"HTTP/1.1 ")

    def _pin_tree(self, cpu: int) -> None:
        for pid in process_tree(self.pid):
            for task in Path(f"/proc/{pid}/task").glob("*"):
                # A thread may end between the listing and the call.
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.sched_setaffinity(int(task.name), {cpu})

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
        """CPU time (user plus system) the server has used so far: every live thread of
        every process in its tree (granian: parent and worker); see `cpu_sample`."""
        return self.cpu_sample().seconds

    def cpu_sample(self) -> CpuSample:
        """The CPU time of the server's tree now, per thread; `CpuSample.seconds_since`
        takes the difference of two samples."""
        self._require_running()
        tree = process_tree(self.pid)
        threads: dict[int, int] = {}
        for pid in tree:
            threads.update(_thread_cpu_ns(pid))
        return CpuSample(threads, sum(self.cpu_ticks_seconds(pid) for pid in tree))

    def cpu_ticks_seconds(self, pid: int | None = None) -> float:
        """``utime + stime`` of *pid* (default: the started process) from
        ``/proc/<pid>/stat``, in seconds (clock-tick resolution)."""
        stat = Path(f"/proc/{pid or self.pid}/stat").read_text()
        # The command name (field 2) is in parentheses and may contain spaces.
        fields = stat.rpartition(")")[2].split()
        utime, stime = int(fields[11]), int(fields[12])
        return (utime + stime) / _CLOCK_TICKS

    def rss_kb(self) -> int:
        """The serving process's resident set size now, in KiB (see `serving_pid`)."""
        self._require_running()
        pid = self.serving_pid
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise BenchError(f"no VmRSS in /proc/{pid}/status")

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after a grace period), then SIGKILL
        whatever is left of its process group, so no granian worker outlives its
        parent; idempotent."""
        process = self._process
        if process is None or self._stopped:
            return
        self._stopped = True
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(_STOP_GRACE)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(_STOP_GRACE)
        # start_new_session: the group's id is the pid of the process we started.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)


def positive(text: str) -> int:
    """An ``argparse`` type: a whole number of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value
