"""Measure one server: CPU per delivery, fan-out latency and memory per idle stream.

For each server, in its own uvicorn or granian process (and, for ``streamui-nats``,
with a nats-server of its own that this process starts on the client's CPUs):

1. Warm up: open a few streams, fire once, close them (first requests import and
   allocate things that stay, which are not per-stream costs).
2. Read the server's RSS, open N streams, wait until every one has read its opening
   frame, read the RSS again: (after - before) / N is the memory per idle stream.
3. Fire one untimed round over all N streams (first-write allocations again), then
   R timed rounds. The server's user+system CPU time over the timed rounds divided by
   N * R is the CPU per delivery; every stream's arrival time minus the round's t0
   gives the latency distribution.

Everything waits with a timeout and raises `BenchError` naming the server and the
step; the server process (and nats-server) is stopped whatever happens.

`measure_all` runs the servers in sequence (interleaved when repeated); `measure_scaling`
runs them at several stream counts, with fewer rounds at high counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import os
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from bench.client import BenchError, FanOutClient
from bench.process import ServerProcess
from bench.servers import NATS_URL_ENV, SCOPE, SECRET_ENV, STREAMUI_PATH
from streamui import TokenSigner
from streamui.broker import CLOCK_MARGIN
from streamui.errors import ConfigurationError
from streamui.nats_server import NatsServer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Mapping, Sequence
    from pathlib import Path

__all__ = [
    "SCALING_DELIVERIES",
    "SCALING_NAMES",
    "SERVER_NAMES",
    "Result",
    "ServerSpec",
    "Settings",
    "measure",
    "measure_all",
    "measure_scaling",
    "pick_cpus",
    "scaling_rounds",
    "server_specs",
]

SERVER_NAMES: Final = ("raw", "streamui", "streamui-nats", "channels")
SCALING_NAMES: Final = ("raw", "streamui", "channels")
"""The servers of the scaling sweep (those of ``--servers`` that are in this list)."""
SCALING_DELIVERIES: Final = 40_000
"""Deliveries per point of the scaling sweep, at least (see `scaling_rounds`)."""
_SCALING_MIN_ROUNDS: Final = 5
_OPEN_SECONDS_PER_STREAM: Final = 0.02
"""Open timeout per stream in the sweep, where that exceeds ``Settings.open_timeout``."""
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
    nats: bool = False
    """Start a nats-server for it and pass its URL in ``STREAMUI_BENCH_NATS_URL``."""
    catch_up_margin: float = 0.0
    """Seconds a stream's catch-up reaches back before its token's time. Before signing
    tokens the benchmark waits longer than that after the server's start and after the
    warm-up's fire, so no stream is owed a catch-up event when it opens."""


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
        "streamui-nats": ServerSpec(
            "streamui-nats",
            "bench.servers:streamui_nats_app",
            streamui_path,
            {SECRET_ENV: secret},
            nats=True,
            # Over NATS the broker does not see every publish, so a catch-up from the
            # client's clock reaches back CLOCK_MARGIN (and pushes everything from
            # before the broker started).
            catch_up_margin=CLOCK_MARGIN + 0.1,
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
    asgi: str = "uvicorn"
    """The ASGI server to run the app under: ``"uvicorn"`` or ``"granian"``."""


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
    asgi: str = "uvicorn"
    parts: tuple[Result, ...] = ()
    """The single runs a pooled result combines, in the order they ran (empty: one run)."""

    @classmethod
    def combine(cls, results: Sequence[Result]) -> Result:
        """Pool the runs of one server (same ASGI server, streams and rounds)."""
        first = results[0]
        parts = tuple(part for result in results for part in result.run_results)
        return cls(
            name=first.name,
            streams=first.streams,
            rounds=first.rounds,
            cpu_seconds=sum(result.cpu_seconds for result in results),
            rss_growth_kb=sum(result.rss_growth_kb for result in results),
            latencies=tuple(value for result in results for value in result.latencies),
            runs=sum(result.runs for result in results),
            asgi=first.asgi,
            parts=parts if len(parts) > 1 else (),
        )

    @property
    def run_results(self) -> tuple[Result, ...]:
        """Each single run, in the order they ran (itself when it is one run)."""
        return self.parts or (self,)

    @property
    def deliveries(self) -> int:
        """Events delivered in the timed rounds: streams x rounds x runs."""
        return self.streams * self.rounds * self.runs

    @property
    def cpu_us_per_delivery(self) -> float:
        return self.cpu_seconds / self.deliveries * 1e6

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
        raise BenchError(
            f"{spec.name} on {settings.asgi}, {settings.streams} streams: {error}"
        ) from None


@contextlib.asynccontextmanager
async def _nats_env(spec: ServerSpec) -> AsyncIterator[dict[str, str]]:
    """The server's environment; with a nats-server running for it if it needs one.

    nats-server inherits this process's CPU affinity: it runs on the client's CPUs,
    and its CPU time is not counted as the server's.
    """
    if not spec.nats:
        yield dict(spec.env)
        return
    nats = NatsServer()
    try:
        await nats.start()
    except ConfigurationError as error:
        await nats.stop()
        raise BenchError(f"could not start nats-server: {error}") from None
    try:
        yield {**spec.env, NATS_URL_ENV: nats.url}
    finally:
        await nats.stop()


async def _measure(spec: ServerSpec, settings: Settings) -> Result:
    async with _nats_env(spec) as env:
        return await _measure_server(spec, settings, env)


async def _measure_server(spec: ServerSpec, settings: Settings, env: Mapping[str, str]) -> Result:
    process = ServerProcess(
        spec.name,
        spec.factory,
        open_files=settings.streams + 256,
        backlog=max(2048, settings.streams),
        log_path=settings.log_dir / f"bench-{spec.name}-{settings.asgi}.log",
        cpu=settings.server_cpu,
        env=env,
        server=settings.asgi,
    )
    with process as server:
        await server.wait_ready(_STARTUP_TIMEOUT)
        await asyncio.sleep(spec.catch_up_margin)
        async with FanOutClient(
            server.host, server.port, spec.stream_path(), _WARMUP_STREAMS
        ) as warm:
            await warm.open(settings.open_timeout)
            await warm.round(settings.round_timeout)
        await asyncio.sleep(max(_SETTLE, spec.catch_up_margin))
        rss_before = server.rss_kb()
        async with FanOutClient(
            server.host, server.port, spec.stream_path(), settings.streams
        ) as client:
            await client.open(settings.open_timeout)
            rss_open = server.rss_kb()
            await client.round(settings.round_timeout)
            cpu_before = server.cpu_sample()
            latencies: list[float] = []
            for _ in range(settings.rounds):
                latencies.extend(await client.round(settings.round_timeout))
            await asyncio.sleep(_QUIESCE)
            cpu_seconds = server.cpu_sample().seconds_since(cpu_before)
    return Result(
        name=spec.name,
        streams=settings.streams,
        rounds=settings.rounds,
        cpu_seconds=cpu_seconds,
        rss_growth_kb=rss_open - rss_before,
        latencies=tuple(latencies),
        asgi=settings.asgi,
    )


async def measure_all(
    names: Sequence[str],
    settings: Settings,
    *,
    repeat: int = 1,
    on: Sequence[str] | None = None,
    progress: Callable[[Result], None] | None = None,
) -> list[Result]:
    """Measure the named servers one after another, each in a fresh process, under each
    ASGI server of *on* (default: ``settings.asgi`` only).

    With *repeat* > 1 the whole sequence runs that many times (interleaved, so slow
    phases of a noisy machine spread over every server) and each server's runs are
    pooled; the pooled result keeps the single runs (`Result.parts`) for their spread.
    *progress* is called with each single run as it completes.
    """
    specs = server_specs()
    asgi_servers = list(on) if on is not None else [settings.asgi]
    runs: dict[tuple[str, str], list[Result]] = {
        (asgi, name): [] for asgi in asgi_servers for name in names
    }
    for _ in range(repeat):
        for asgi in asgi_servers:
            for name in names:
                result = await measure(specs[name], dataclasses.replace(settings, asgi=asgi))
                if progress is not None:
                    progress(result)
                runs[asgi, name].append(result)
    return [Result.combine(results) for results in runs.values()]


def scaling_rounds(streams: int, deliveries: int = SCALING_DELIVERIES) -> int:
    """Timed rounds for one point of the sweep: at least *deliveries* in all, at least 5."""
    return max(_SCALING_MIN_ROUNDS, math.ceil(deliveries / streams))


async def measure_scaling(
    names: Sequence[str],
    counts: Sequence[int],
    settings: Settings,
    *,
    on: Sequence[str],
    deliveries: int = SCALING_DELIVERIES,
    known: Sequence[Result] = (),
    progress: Callable[[Result], None] | None = None,
) -> list[Result]:
    """Each named server under each ASGI server of *on*, at each stream count of *counts*
    (``scaling_rounds`` rounds, a longer open timeout at high counts).

    A result in *known* with the same server, ASGI server, streams and rounds (the main
    table's) is used as it is instead of measuring that point again.
    """
    specs = server_specs()
    reuse = {(result.asgi, result.name, result.streams, result.rounds): result for result in known}
    results: list[Result] = []
    for count in counts:
        rounds = scaling_rounds(count, deliveries)
        point = dataclasses.replace(
            settings,
            streams=count,
            rounds=rounds,
            open_timeout=max(settings.open_timeout, count * _OPEN_SECONDS_PER_STREAM),
        )
        for asgi in on:
            for name in names:
                result = reuse.get((asgi, name, count, rounds))
                if result is None:
                    result = await measure(specs[name], dataclasses.replace(point, asgi=asgi))
                    if progress is not None:
                        progress(result)
                results.append(result)
    return results
