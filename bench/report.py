"""The benchmark's Markdown report: one table, one row per server."""

from __future__ import annotations

import os
import platform
import time
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from bench.run import Result

__all__ = ["markdown_report"]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def markdown_report(results: Sequence[Result], *, pinned: bool) -> str:
    """A heading that says what was run where, and the table of *results*."""
    first = results[0]
    versions = ", ".join(
        f"{package} {version(package)}" for package in ("uvicorn", "uvloop", "litestar")
    )
    runs = f", {first.runs} interleaved runs pooled" if first.runs > 1 else ""
    placement = "server pinned to one CPU, client on the others" if pinned else "not pinned"
    lines = [
        f"### Fan-out: {first.streams} streams x {first.rounds} rounds{runs}",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M')}, {_cpu_model()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, {versions}; {placement}. "
        "CPU = server CPU time (user+system, all threads) over the timed rounds / deliveries; "
        "latency = fire to arrival at the client, over every stream and round; "
        "memory = server RSS growth from opening the streams / streams.",
        "",
        "| server | CPU µs / delivery | vs raw | p50 ms | p99 ms | max ms | KB / idle stream |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    floor = next((result for result in results if result.name == "raw"), None)
    for result in results:
        ratio = (
            f"{result.cpu_us_per_delivery / floor.cpu_us_per_delivery:.2f}x"
            if floor is not None and floor.cpu_seconds > 0
            else "n/a"
        )
        lines.append(
            f"| {result.name} | {result.cpu_us_per_delivery:.1f} | {ratio} "
            f"| {result.latency_ms(0.50):.1f} | {result.latency_ms(0.99):.1f} "
            f"| {result.latency_ms(1.0):.1f} | {result.kb_per_stream:.1f} |"
        )
    return "\n".join(lines) + "\n"
