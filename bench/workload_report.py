"""The workload benchmark's Markdown: a heading that says what ran where, and one
section with a table per scenario (`bench.workloads` measures, this formats)."""

from __future__ import annotations

import os
import platform
import statistics
import time
from importlib.metadata import version
from typing import TYPE_CHECKING, Any, Final

from bench.report import cpu_model

if TYPE_CHECKING:
    from collections.abc import Callable

    from bench.workloads import (
        BurstResult,
        OpenResult,
        PerUserResult,
        RenderResult,
        Settings,
        UnwatchedResult,
    )

__all__ = ["TABLES", "heading"]


def _per_user_table(result: PerUserResult) -> list[str]:
    lines = [
        f"### Per-user scopes ({result.seconds:.0f} s)",
        "",
        "Each stream watches its own scopes (`user:<i>:<k>`, one token each); each "
        "invalidation reaches exactly one stream, checked at the client (right stream, "
        "only its key, once). Rounds of invalidations from one request handler; each "
        "size in a fresh server.",
        "",
        "| streams open | scopes watched | invalidations | deliveries checked "
        "| server CPU µs / invalidation: median round | mean | opening the streams |",
        "|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for point in result.points:
        lines.append(
            f"| {point.streams:,} | {point.scopes:,} | {point.invalidations:,} "
            f"| {point.deliveries:,} | {point.median_us_per_invalidation:.1f} "
            f"| {point.cpu_us_per_invalidation:.1f} | {point.open_seconds:.1f} s |"
        )
    first, last = result.points[0], result.points[-1]
    lines += [
        "",
        f"Median CPU per invalidation at {last.streams:,} streams / at {first.streams:,}: "
        f"**{result.ratio:.2f}x** (1.0 is O(1); O(streams) would be "
        f"{last.streams / first.streams:.0f}x).",
    ]
    return lines


def _unwatched_table(result: UnwatchedResult) -> list[str]:
    lines = [
        f"### Unwatched invalidations ({result.seconds:.0f} s)",
        "",
        f"A server-side job invalidates scopes no stream watches, paced at "
        f"{result.rate:,.0f} per second; each run in a fresh server. No stream may "
        "receive anything.",
        "",
        "| streams open | invalidations | achieved rate / s | server CPU µs / invalidation "
        "| events received |",
        "|--:|--:|--:|--:|--:|",
    ]
    for run in result.runs:
        label = f"{run.streams:,}" if run.streams else "0 (publishes alone)"
        lines.append(
            f"| {label} | {run.invalidations:,} | {run.rate:,.0f} "
            f"| {run.cpu_us_per_invalidation:.1f} | {run.events} |"
        )
    with_streams, alone = result.runs
    lines += [
        "",
        f"With the streams open / alone: "
        f"**{with_streams.cpu_us_per_invalidation / alone.cpu_us_per_invalidation:.2f}x**.",
    ]
    return lines


def _burst_table(result: BurstResult) -> list[str]:
    lines = [
        f"### Burst ({result.seconds:.0f} s)",
        "",
        f"{result.runs[0].streams:,} streams on one scope; the server invalidates it "
        f"{result.runs[0].requested:,} times as fast as it can, (a) from one task that "
        "never yields, (b) with `await asyncio.sleep(0)` after each invalidation (stopped "
        f"after {result.cap:g} s). Frames counted at the client; every stream ended on the "
        "last revision published (checked).",
        "",
        "| variant | invalidations | burst s | until all on last revision s "
        "| frames / stream: mean | max | min | server CPU s | CPU µs / invalidation "
        "| CPU µs / frame |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for run in result.runs:
        frames = sum(run.frames)
        capped = f" (capped: of {run.requested:,})" if run.capped else ""
        lines.append(
            f"| {run.label} | {run.invalidations:,}{capped} | {run.burst_seconds:.2f} "
            f"| {run.settle_seconds:.2f} | {statistics.fmean(run.frames):,.1f} "
            f"| {max(run.frames):,} | {min(run.frames):,} | {run.cpu_seconds:.2f} "
            f"| {run.cpu_seconds / run.invalidations * 1e6:,.0f} "
            f"| {run.cpu_seconds / frames * 1e6:,.1f} |"
        )
    return lines


def _open_table(result: OpenResult) -> list[str]:
    raw, ours = result.runs
    lines = [
        f"### Opening streams ({result.seconds:.0f} s)",
        "",
        f"{raw.opens:,} streams opened one after another on {raw.concurrency} connections "
        "in flight: connect, GET, read the opening frame, close. streamui's tokens grant "
        "5 per-user scopes each. Server busy = its CPU time / wall time (1.0: its core "
        "is saturated; below, the client is the bottleneck).",
        "",
        "| server | opens / s | server CPU µs / open | server busy |",
        "|---|--:|--:|--:|",
    ]
    for run in result.runs:
        lines.append(
            f"| {run.server} | {run.per_second:,.0f} | {run.cpu_us_per_open:.0f} | {run.busy:.2f} |"
        )
    lines += [
        "",
        f"streamui / raw: **{ours.per_second / raw.per_second:.2f}x** opens per second, "
        f"**{ours.cpu_us_per_open / raw.cpu_us_per_open:.2f}x** CPU per open.",
    ]
    return lines


def _render_table(result: RenderResult) -> list[str]:
    verdict = "within" if result.slowdown <= 0.10 else "over"
    return [
        f"### Rendering ({result.seconds:.0f} s)",
        "",
        f"A page of {result.components} cards built and rendered to a string in this "
        f"process (best of several timeit repeats). Watched: each card in a `Watch` of its "
        f"project's scope ({result.scopes} distinct scopes, {result.components // result.scopes}"
        " cards each, as a list page grouped by project would: one scope per card would "
        "exceed the default max_scopes of 64), plus `Connect()`, inside `use_endpoint`. "
        "Plain: the same cards in `div`s with the same ids.",
        "",
        "| page | µs / page | bytes |",
        "|---|--:|--:|",
        f"| watched | {result.watched_us:,.0f} | {result.watched_bytes:,} |",
        f"| plain | {result.plain_us:,.0f} | {result.plain_bytes:,} |",
        "",
        f"Slowdown: **{result.slowdown:+.1%}** ({verdict} the 10% target).",
    ]


TABLES: Final[dict[str, Callable[[Any], list[str]]]] = {
    "per-user": _per_user_table,
    "unwatched": _unwatched_table,
    "burst": _burst_table,
    "open": _open_table,
    "render": _render_table,
}


def heading(settings: Settings) -> list[str]:
    versions = ", ".join(
        f"{package} {version(package)}" for package in (settings.on, "uvloop", "litestar")
    )
    placement = (
        "server pinned to one CPU, client on the others"
        if settings.server_cpu is not None
        else "not pinned"
    )
    return [
        "## Workloads",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M')}, {cpu_model()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, {versions}; one worker, {placement}. "
        "Server CPU = user+system time of the server process (all threads, from /proc) "
        "over the measured step. Times in headings: the whole scenario, servers included.",
    ]
