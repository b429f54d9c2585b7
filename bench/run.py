"""Measure one server: CPU per delivery, fan-out latency and memory per idle stream.

For each server, in its own uvicorn process:

1. Warm up: open a few streams, fire once, close them (first requests import and
   allocate things that stay, which are not per-stream costs).
2. Read the server's RSS, open N streams, wait until every one has read its opening
   frame, read the RSS again: (after - before) / N is the memory per idle stream.
3. Fire one untimed round over all N streams (first-write allocations again), then
   R timed rounds. The server's user+system CPU time over the timed rounds divided by
   N * R is the CPU per delivery; every stream's arrival time minus the round's t0
   gives the latency distribution.

Everything waits with a timeout and raises `BenchError` naming the server and the
step; the server process is killed whatever happens.
"""

from __future__ import annotations

import asyncio
import math
import os
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from bench.client import BenchError, FanOutClient
from bench.process import ServerProcess
from bench.servers import SCOPE, SECRET_ENV, STREAMUI_PATH
from streamui import TokenSigner

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from pathlib import Path

__all__ = [
    "SERVER_NAMES",
    "Result",
    "ServerSpec",
    "Settings",
    "measure",
    "measure_all",
    "pick_cpus",
    "server_specs",
]

SERVER_NAMES: Final = ("raw", "streamui", "channels")
_STARTUP_TIMEOUT: Final = 30.0
_WARMUP_STREAMS: Final = 10
_SETTLE: Final = 0.5
"""Seconds for the server to finish with closed warm-up streams before reading its RSS."""
_QUIESCE: Final = 0.2
"""Seconds for the server to finish its bookkeeping after the last arrival before reading CPU."""


@dataclass(frozen=True, slots=True)
class ServerSpec:
    name: str
    factory: str
    stream_path: Callable[[], str]
    """Called right before streams open (streamui signs a fresh token each time)."""
    env: Mapping[str, str]


def server_specs() -> dict[str, ServerSpec]:
    secret = secrets.token_urlsafe(32)
    signer = TokenSigner(secret)

    def streamui_path() -> str:
        # A token signed now: the stream's first-connect catch-up finds nothing to push.
        return f"{STREAMUI_PATH}?t={signer.sign([SCOPE])}"

    return {
        "raw": ServerSpec("raw", "bench.servers:raw_app", lambda: "/stream", {}),
        "streamui": ServerSpec(
            "streamui", "bench.servers:streamui_app", streamui_path, {SECRET_ENV: secret}
        ),
        "channels": ServerSpec("channels", "bench.servers:channels_app", lambda: "/stream", {}),
    }


@dataclass(frozen=True, slots=True)
class Settings:
    streams: int
    rounds: int
    round_timeout: float
    open_timeout: float
    log_dir: Path
    server_cpu: int | None = None


@dataclass(frozen=True, slots=True)
class Result:
    """What one or more runs of one server measured (totals over the runs)."""

    name: str
    streams: int
    rounds: int
    cpu_seconds: float
    rss_growth_kb: int
    latencies: tuple[float, ...]
    """Seconds from fire to arrival, one per stream and timed round."""
    runs: int = 1

    @classmethod
    def combine(cls, results: Sequence[Result]) -> Result:
        """Pool the runs of one server (same streams and rounds)."""
        first = results[0]
        return cls(
            name=first.name,
            streams=first.streams,
            rounds=first.rounds,
            cpu_seconds=sum(result.cpu_seconds for result in results),
            rss_growth_kb=sum(result.rss_growth_kb for result in results),
            latencies=tuple(value for result in results for value in result.latencies),
            runs=sum(result.runs for result in results),
        )

    @property
    def cpu_us_per_delivery(self) -> float:
        return self.cpu_seconds / (self.streams * self.rounds * self.runs) * 1e6

    @property
    def kb_per_stream(self) -> float:
        return self.rss_growth_kb / (self.streams * self.runs)

    def latency_ms(self, fraction: float) -> float:
        """The nearest-rank percentile (*fraction* of 1) of the latencies, in ms."""
        ordered = sorted(self.latencies)
        index = max(0, math.ceil(fraction * len(ordered)) - 1)
        return ordered[index] * 1000


def pick_cpus() -> tuple[int | None, set[int] | None]:
    """One CPU for the server and the others for the client, if there are two or more."""
    allowed = os.sched_getaffinity(0)
    if len(allowed) < 2:
        return None, None
    server = max(allowed)
    return server, allowed - {server}


async def measure(spec: ServerSpec, settings: Settings) -> Result:
    try:
        return await _measure(spec, settings)
    except BenchError as error:
        raise BenchError(f"{spec.name}: {error}") from None


async def _measure(spec: ServerSpec, settings: Settings) -> Result:
    process = ServerProcess(
        spec.name,
        spec.factory,
        open_files=settings.streams + 256,
        backlog=max(2048, settings.streams),
        log_path=settings.log_dir / f"bench-{spec.name}.log",
        cpu=settings.server_cpu,
        env=spec.env,
    )
    with process as server:
        await server.wait_ready(_STARTUP_TIMEOUT)
        async with FanOutClient(
            server.host, server.port, spec.stream_path(), _WARMUP_STREAMS
        ) as warm:
            await warm.open(settings.open_timeout)
            await warm.round(settings.round_timeout)
        await asyncio.sleep(_SETTLE)
        rss_before = server.rss_kb()
        async with FanOutClient(
            server.host, server.port, spec.stream_path(), settings.streams
        ) as client:
            await client.open(settings.open_timeout)
            rss_open = server.rss_kb()
            await client.round(settings.round_timeout)
            cpu_before = server.cpu_seconds()
            latencies: list[float] = []
            for _ in range(settings.rounds):
                latencies.extend(await client.round(settings.round_timeout))
            await asyncio.sleep(_QUIESCE)
            cpu_after = server.cpu_seconds()
    return Result(
        name=spec.name,
        streams=settings.streams,
        rounds=settings.rounds,
        cpu_seconds=cpu_after - cpu_before,
        rss_growth_kb=rss_open - rss_before,
        latencies=tuple(latencies),
    )


async def measure_all(names: Sequence[str], settings: Settings, *, repeat: int = 1) -> list[Result]:
    """Measure the named servers one after another, each in a fresh process.

    With *repeat* > 1 the whole sequence runs that many times (interleaved, so slow
    phases of a noisy machine spread over every server) and each server's runs are pooled.
    """
    specs = server_specs()
    runs: dict[str, list[Result]] = {name: [] for name in names}
    for _ in range(repeat):
        for name in names:
            runs[name].append(await measure(specs[name], settings))
    return [Result.combine(results) for results in runs.values()]
