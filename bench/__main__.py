"""``python -m bench``: the fan-out benchmark, raw ASGI vs streamui vs Litestar channels.

Runs each server in its own uvicorn process (one worker, uvloop, httptools, on
127.0.0.1), one after another, drives it from this process, prints one Markdown table
and writes it to build/bench-results.md. Server logs go to build/bench-<server>.log.

    python -m bench                          # 2000 streams, 20 rounds
    python -m bench --streams 200 --rounds 3 # a quick check
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import uvloop

from bench.client import BenchError
from bench.process import positive, raise_open_file_limit
from bench.report import markdown_report
from bench.run import SERVER_NAMES, Settings, measure_all, pick_cpus

BUILD = Path("build")


def _servers(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in SERVER_NAMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown server(s) {unknown!r}; choose from {', '.join(SERVER_NAMES)}"
        )
    return names


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Fan-out benchmark: server CPU per delivery, latency and memory per "
        "stream for a raw ASGI floor, streamui and Litestar channels, side by side.",
    )
    parser.add_argument("--streams", type=positive, default=2000, help="SSE streams (2000)")
    parser.add_argument("--rounds", type=positive, default=20, help="timed rounds (20)")
    parser.add_argument(
        "--repeat",
        type=positive,
        default=1,
        help="run the whole sequence this many times and pool each server's runs (1)",
    )
    parser.add_argument(
        "--servers",
        type=_servers,
        default=list(SERVER_NAMES),
        help=f"comma-separated subset of {','.join(SERVER_NAMES)} (all)",
    )
    parser.add_argument(
        "--round-timeout", type=float, default=60.0, help="seconds a round may take (60)"
    )
    parser.add_argument(
        "--open-timeout",
        type=float,
        default=120.0,
        help="seconds opening all streams may take (120)",
    )
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="do not pin the server to one CPU and the client to the others",
    )
    parser.add_argument(
        "--output", type=Path, default=BUILD / "bench-results.md", help="%(default)s"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    if not sys.platform.startswith("linux"):
        print("python -m bench: reads /proc, so it runs on Linux only", file=sys.stderr)
        return 2
    server_cpu, client_cpus = pick_cpus() if arguments.pin else (None, None)
    settings = Settings(
        streams=arguments.streams,
        rounds=arguments.rounds,
        round_timeout=arguments.round_timeout,
        open_timeout=arguments.open_timeout,
        log_dir=BUILD,
        server_cpu=server_cpu,
    )
    try:
        raise_open_file_limit(arguments.streams + 256)
        if client_cpus is not None:
            os.sched_setaffinity(0, client_cpus)
        results = uvloop.run(measure_all(arguments.servers, settings, repeat=arguments.repeat))
    except BenchError as error:
        print(f"python -m bench: {error}", file=sys.stderr)
        return 1
    report = markdown_report(results, pinned=server_cpu is not None)
    print(report)
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(report)
    print(f"(written to {arguments.output})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
