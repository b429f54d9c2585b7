"""``python -m bench``: the fan-out benchmark, raw ASGI vs streamui vs Litestar channels.

Runs each server in its own process (one worker, uvloop, on 127.0.0.1) under uvicorn
and under granian, one after another, and drives it from this process. Then, unless
``--no-scaling``, the scaling sweep: raw, streamui and channels at 1,000 to 10,000
streams under both; and unless ``--no-workloads``, the workloads shaped like real apps
(`bench.workloads`). Prints the Markdown and writes build/bench-results.md,
build/bench-scaling.md, build/bench-workloads.md and docs/scaling.png. Server logs go
to build/bench-<server>-<asgi server>.log; progress goes to stderr.

    python -m bench                                   # everything (about 4 minutes)
    python -m bench --no-scaling --repeat 3           # the fan-out tables, 3 runs pooled
    python -m bench --streams 200 --rounds 3 --no-scaling --on uvicorn  # a quick check
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import uvloop

from bench.client import BenchError
from bench.process import ASGI_SERVERS, positive, raise_open_file_limit
from bench.report import markdown_report, scaling_report
from bench.run import (
    SCALING_DELIVERIES,
    SCALING_NAMES,
    SERVER_NAMES,
    Settings,
    measure_all,
    measure_scaling,
    pick_cpus,
)
from bench.workloads import SCENARIOS, run_workloads
from bench.workloads import Settings as WorkloadSettings
from streamui.errors import ConfigurationError
from streamui.nats_server import find_nats_server

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from bench.run import Result

BUILD = Path("build")
DEFAULT_SCALE = (1000, 2000, 5000, 10000)


def _names(allowed: Sequence[str]) -> Callable[[str], list[str]]:
    """An ``argparse`` type: a comma-separated, non-empty subset of *allowed*."""

    def parse(text: str) -> list[str]:
        names = list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
        unknown = [name for name in names if name not in allowed]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"unknown name(s) {unknown!r}; choose from {', '.join(allowed)}"
            )
        return names

    return parse


def _counts(text: str) -> list[int]:
    """An ``argparse`` type: comma-separated stream counts, each at least 1, ascending."""
    try:
        counts = sorted({positive(item.strip()) for item in text.split(",") if item.strip()})
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if not counts:
        raise argparse.ArgumentTypeError("give at least one stream count")
    return counts


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Fan-out benchmark: server CPU per delivery, latency and memory per "
        "stream for a raw ASGI floor, streamui (in-process and over NATS) and Litestar "
        "channels, under uvicorn and granian; then how they scale with open streams.",
    )
    parser.add_argument("--streams", type=positive, default=2000, help="SSE streams (2000)")
    parser.add_argument("--rounds", type=positive, default=20, help="timed rounds (20)")
    parser.add_argument(
        "--repeat",
        type=positive,
        default=1,
        help="run the fan-out sequence this many times, interleaved, and pool each "
        "server's runs; the tables then show the spread over the runs (1)",
    )
    parser.add_argument(
        "--servers",
        type=_names(SERVER_NAMES),
        default=list(SERVER_NAMES),
        help=f"comma-separated subset of {','.join(SERVER_NAMES)} (all); the scaling sweep "
        f"runs those of them in {','.join(SCALING_NAMES)}",
    )
    parser.add_argument(
        "--on",
        type=_names(ASGI_SERVERS),
        default=list(ASGI_SERVERS),
        help=f"ASGI servers to run every server under, comma-separated ({','.join(ASGI_SERVERS)})",
    )
    parser.add_argument(
        "--round-timeout", type=float, default=60.0, help="seconds a round may take (60)"
    )
    parser.add_argument(
        "--open-timeout",
        type=float,
        default=120.0,
        help="seconds opening all streams may take (120; the sweep allows 0.02 s per stream "
        "where that is more)",
    )
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="do not pin the server to one CPU and the client to the others",
    )
    parser.add_argument(
        "--no-scaling", dest="scaling", action="store_false", help="skip the scaling sweep"
    )
    parser.add_argument(
        "--no-workloads",
        dest="workloads",
        action="store_false",
        help="skip the workloads shaped like real apps (python -m bench.workloads)",
    )
    parser.add_argument(
        "--scale",
        type=_counts,
        default=list(DEFAULT_SCALE),
        help="stream counts of the scaling sweep (%(default)s)",
    )
    parser.add_argument(
        "--scale-deliveries",
        type=positive,
        default=SCALING_DELIVERIES,
        help="deliveries per sweep point at least: rounds = max(5, this / streams) (%(default)s)",
    )
    parser.add_argument(
        "--output", type=Path, default=BUILD / "bench-results.md", help="%(default)s"
    )
    parser.add_argument(
        "--scaling-output", type=Path, default=BUILD / "bench-scaling.md", help="%(default)s"
    )
    parser.add_argument(
        "--workloads-output", type=Path, default=BUILD / "bench-workloads.md", help="%(default)s"
    )
    parser.add_argument("--plot", type=Path, default=Path("docs/scaling.png"), help="%(default)s")
    parser.add_argument(
        "--log-dir", type=Path, default=BUILD, help="where server logs go (%(default)s)"
    )
    return parser.parse_args(argv)


def _check_tools(arguments: argparse.Namespace) -> None:
    """Fail before measuring anything if granian or nats-server is needed but missing."""
    if "granian" in arguments.on and importlib.util.find_spec("granian") is None:
        raise BenchError("granian is not installed: pip install granian, or --on uvicorn")
    if "streamui-nats" in arguments.servers:
        try:
            find_nats_server()
        except ConfigurationError as error:
            raise BenchError(f"streamui-nats needs nats-server: {error}") from None


def _progress(result: Result) -> None:
    print(
        f"  {result.asgi:<8} {result.name:<14} {result.streams:>6} streams x "
        f"{result.rounds:>3} rounds: {result.cpu_us_per_delivery:6.1f} µs / delivery, "
        f"p99 {result.latency_ms(0.99):7.1f} ms, {result.kb_per_stream:5.1f} KB / stream",
        file=sys.stderr,
        flush=True,
    )


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"(written to {path})")


async def _run(arguments: argparse.Namespace, settings: Settings) -> None:
    pinned = settings.server_cpu is not None
    print(
        f"fan-out: {', '.join(arguments.servers)} on {', '.join(arguments.on)}",
        file=sys.stderr,
    )
    results = await measure_all(
        arguments.servers,
        settings,
        repeat=arguments.repeat,
        on=arguments.on,
        progress=_progress,
    )
    report = markdown_report(results, pinned=pinned)
    print(report)
    _write(arguments.output, report)
    names = [name for name in SCALING_NAMES if name in arguments.servers]
    if arguments.scaling and names:
        await _scaling(arguments, settings, names, results)
    if arguments.workloads:
        print("workloads: per-user, unwatched, burst, open, render on uvicorn", file=sys.stderr)
        workloads = await run_workloads(
            list(SCENARIOS),
            replace(WorkloadSettings(), server_cpu=settings.server_cpu, log_dir=settings.log_dir),
        )
        print()
        print(workloads)
        _write(arguments.workloads_output, workloads)


async def _scaling(
    arguments: argparse.Namespace, settings: Settings, names: list[str], results: list[Result]
) -> None:
    pinned = settings.server_cpu is not None
    print(
        f"scaling: {', '.join(names)} on {', '.join(arguments.on)} at "
        f"{', '.join(map(str, arguments.scale))} streams",
        file=sys.stderr,
    )
    scaling = await measure_scaling(
        names,
        arguments.scale,
        settings,
        on=arguments.on,
        deliveries=arguments.scale_deliveries,
        known=results,
        progress=_progress,
    )
    report = scaling_report(scaling, pinned=pinned, deliveries=arguments.scale_deliveries)
    print()
    print(report)
    _write(arguments.scaling_output, report)
    from bench.plot import plot_scaling  # matplotlib: only when drawing

    plot_scaling(scaling, arguments.plot)
    print(f"(drawn to {arguments.plot})")


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    if not sys.platform.startswith("linux"):
        print("python -m bench: reads /proc, so it runs on Linux only", file=sys.stderr)
        return 2
    started = time.monotonic()
    server_cpu, client_cpus = pick_cpus() if arguments.pin else (None, None)
    settings = Settings(
        streams=arguments.streams,
        rounds=arguments.rounds,
        round_timeout=arguments.round_timeout,
        open_timeout=arguments.open_timeout,
        log_dir=arguments.log_dir,
        server_cpu=server_cpu,
    )
    most = max([arguments.streams, *(arguments.scale if arguments.scaling else ())])
    try:
        _check_tools(arguments)
        raise_open_file_limit(most + 256)
        if client_cpus is not None:
            os.sched_setaffinity(0, client_cpus)
        uvloop.run(_run(arguments, settings))
    except BenchError as error:
        print(f"python -m bench: {error}", file=sys.stderr)
        return 1
    minutes, seconds = divmod(round(time.monotonic() - started), 60)
    print(f"python -m bench: done in {minutes} min {seconds} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
