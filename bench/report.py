"""The benchmark's Markdown reports: the fan-out tables (one per ASGI server, each server
against that ASGI server's own raw floor) and the scaling sweep's table."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

from bench.run import SCALING_DELIVERIES

if TYPE_CHECKING:
    from collections.abc import Sequence

    from bench.run import Result

__all__ = ["cpu_model", "cpu_ratio", "markdown_report", "run_ratios", "scaling_report"]

_DASH = "\N{EN DASH}"
_NATS_NOTE = (
    "streamui-nats = streamui with its broker on NATS (a local nats-server, on the "
    "client's CPUs): its CPU is the app process's only, not nats-server's."
)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _version(package: str) -> str:
    try:
        return f"{package} {version(package)}"
    except PackageNotFoundError:
        return f"{package} (not installed)"


def _nats_server_version() -> str:
    """``nats-server vX.Y.Z`` as the binary the benchmark starts reports it."""
    from streamui.errors import ConfigurationError
    from streamui.nats_server import find_nats_server

    try:
        output = subprocess.run(
            [find_nats_server(), "--version"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout
    except (ConfigurationError, OSError, subprocess.TimeoutExpired):
        return "nats-server ?"
    return output.strip().replace(":", "") or "nats-server ?"


def _machine(results: Sequence[Result], *, pinned: bool) -> str:
    """When, on what, with which versions, and where the server ran."""
    packages = [*_asgi_servers(results), "uvloop", "litestar"]
    if any(result.name == "streamui-nats" for result in results):
        packages.append("nats-py")
    versions = ", ".join(_version(package) for package in packages)
    if any(result.name == "streamui-nats" for result in results):
        versions += f", {_nats_server_version()}"
    placement = (
        "server pinned to one CPU (granian: parent and worker), client on the others"
        if pinned
        else "not pinned"
    )
    return (
        f"{time.strftime('%Y-%m-%d %H:%M')}, {cpu_model()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, {versions}; {placement}."
    )


def _asgi_servers(results: Sequence[Result]) -> list[str]:
    """The ASGI servers of *results*, in the order they first appear."""
    return list(dict.fromkeys(result.asgi for result in results))


def _floor(result: Result, results: Sequence[Result]) -> Result | None:
    """The raw row measured under the same ASGI server at the same stream count."""
    return next(
        (
            other
            for other in results
            if other.name == "raw" and other.asgi == result.asgi and other.streams == result.streams
        ),
        None,
    )


def cpu_ratio(result: Result, results: Sequence[Result]) -> float | None:
    """*result*'s CPU per delivery over that of the raw row in *results* with the same ASGI
    server and stream count; None without such a row (or if it used no CPU)."""
    floor = _floor(result, results)
    if floor is None or floor.cpu_seconds <= 0:
        return None
    return result.cpu_us_per_delivery / floor.cpu_us_per_delivery


def run_ratios(result: Result, results: Sequence[Result]) -> list[float]:
    """The CPU ratio of each single run to the raw run of the same repetition (runs are
    interleaved, so run i of every server shared the machine's state of the moment)."""
    floor = _floor(result, results)
    if floor is None:
        return []
    return [
        part.cpu_us_per_delivery / base.cpu_us_per_delivery
        for part, base in zip(result.run_results, floor.run_results, strict=False)
        if base.cpu_seconds > 0
    ]


def _ratio_text(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio:.2f}x"


def _spread(values: Sequence[float], template: str) -> str:
    if not values:
        return "n/a"
    return f"{template.format(min(values))}{_DASH}{template.format(max(values))}"


def markdown_report(results: Sequence[Result], *, pinned: bool) -> str:
    """A heading that says what was run where, and one table per ASGI server of *results*
    (each server's CPU against the raw row of that ASGI server). With more than one run,
    each row also shows the range of its per-run CPU ratio and p99."""
    first = results[0]
    runs = f", {first.runs} interleaved runs pooled" if first.runs > 1 else ""
    spread = first.runs > 1
    lines = [
        f"### Fan-out: {first.streams} streams x {first.rounds} rounds{runs}",
        "",
        f"{_machine(results, pinned=pinned)} "
        "CPU = server CPU time (user+system, all threads of the server's processes) over "
        "the timed rounds / deliveries; vs raw = that over the raw floor's on the same "
        "ASGI server; latency = fire to arrival at the client, over every stream and round; "
        "memory = server RSS growth from opening the streams / streams."
        + (f" {_NATS_NOTE}" if any(r.name == "streamui-nats" for r in results) else "")
        + (
            f" Per run: the min{_DASH}max over the runs of the CPU ratio (each run against the raw "
            "run of the same repetition) and of p99."
            if spread
            else ""
        ),
    ]
    header = "| server | CPU µs / delivery | vs raw | p50 ms | p99 ms | max ms | KB / idle stream |"
    rule = "|---|--:|--:|--:|--:|--:|--:|"
    if spread:
        header += " vs raw, per run | p99 ms, per run |"
        rule += "--:|--:|"
    for asgi in _asgi_servers(results):
        lines += ["", f"#### {_version(asgi)}", "", header, rule]
        for result in results:
            if result.asgi != asgi:
                continue
            row = (
                f"| {result.name} | {result.cpu_us_per_delivery:.1f} "
                f"| {_ratio_text(cpu_ratio(result, results))} "
                f"| {result.latency_ms(0.50):.1f} | {result.latency_ms(0.99):.1f} "
                f"| {result.latency_ms(1.0):.1f} | {result.kb_per_stream:.1f} |"
            )
            if spread:
                p99s = [part.latency_ms(0.99) for part in result.run_results]
                row += (
                    f" {_spread(run_ratios(result, results), '{:.2f}x')} "
                    f"| {_spread(p99s, '{:.1f}')} |"
                )
            lines.append(row)
    return "\n".join(lines) + "\n"


def scaling_report(
    results: Sequence[Result], *, pinned: bool, deliveries: int = SCALING_DELIVERIES
) -> str:
    """The scaling sweep as one table: per ASGI server and server, one row per stream count
    (*deliveries*: the minimum per point the sweep ran with)."""
    order = {asgi: index for index, asgi in enumerate(_asgi_servers(results))}
    names = {name: index for index, name in enumerate(dict.fromkeys(r.name for r in results))}
    ordered = sorted(results, key=lambda r: (order[r.asgi], names[r.name], r.streams))
    lines = [
        "### Fan-out scaling: CPU per delivery and latency against open streams",
        "",
        f"{_machine(results, pinned=pinned)} "
        f"Each point is a fresh server process; rounds = max(5, {deliveries} / streams), so "
        f"every point has at least {deliveries:,} deliveries. Columns as in the fan-out "
        "table; vs raw = against the raw floor of the same ASGI server at the same stream "
        "count.",
        "",
        "| ASGI server | server | streams | rounds | CPU µs / delivery | vs raw "
        "| p50 ms | p99 ms | max ms | KB / idle stream |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for result in ordered:
        lines.append(
            f"| {result.asgi} | {result.name} | {result.streams} | {result.rounds} "
            f"| {result.cpu_us_per_delivery:.1f} | {_ratio_text(cpu_ratio(result, results))} "
            f"| {result.latency_ms(0.50):.1f} | {result.latency_ms(0.99):.1f} "
            f"| {result.latency_ms(1.0):.1f} | {result.kb_per_stream:.1f} |"
        )
    return "\n".join(lines) + "\n"
