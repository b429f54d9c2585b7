"""The scaling sweep as a figure: CPU per delivery and fan-out p99 against open streams.

Two panels side by side, one line per server and ASGI server (colour: the server;
solid: uvicorn, dashed: granian), streams on a log axis with a tick at each measured
count. Drawn with matplotlib's Agg canvas directly, so no display and no pyplot state
are involved (matplotlib comes with the ``dev`` extra).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from bench.run import Result

__all__ = ["plot_scaling"]

_SIZE: Final = (9.0, 3.6)
"""Inches: wide enough for two panels, short enough for a README."""
_DPI: Final = 110
_COLOURS: Final = {
    "raw": "#7f7f7f",
    "streamui": "#1f77b4",
    "streamui-nats": "#2ca02c",
    "channels": "#d62728",
}
_STYLES: Final = {"uvicorn": "-", "granian": "--"}


def plot_scaling(results: Sequence[Result], path: Path, *, title: str | None = None) -> None:
    """Draw *results* (the sweep's points) into a PNG at *path*; the default title says
    when and on which CPU."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter, NullLocator

    from bench.report import cpu_model

    if not results:
        raise ValueError("no results to plot")
    lines: dict[tuple[str, str], list[Result]] = {}
    for result in results:
        lines.setdefault((result.name, result.asgi), []).append(result)
    counts = sorted({result.streams for result in results})

    figure = Figure(figsize=_SIZE, dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    cpu_axes, p99_axes = figure.subplots(1, 2)
    for (name, asgi), unordered in lines.items():
        points = sorted(unordered, key=lambda point: point.streams)
        streams = [point.streams for point in points]
        style = {
            "color": _COLOURS.get(name),
            "linestyle": _STYLES.get(asgi, ":"),
            "marker": "o",
            "markersize": 3.5,
            "linewidth": 1.4,
            "label": f"{name} ({asgi})",
        }
        cpu_axes.plot(streams, [point.cpu_us_per_delivery for point in points], **style)
        p99_axes.plot(streams, [point.latency_ms(0.99) for point in points], **style)
    for axes, label in (
        (cpu_axes, "server CPU µs / delivery"),
        (p99_axes, "fan-out p99 latency, ms"),
    ):
        axes.set_xscale("log")
        axes.set_xticks(counts, [f"{count:,}" for count in counts])
        axes.xaxis.set_minor_locator(NullLocator())
        axes.xaxis.set_minor_formatter(NullFormatter())
        axes.set_xlabel("open SSE streams")
        axes.set_ylabel(label)
        axes.set_ylim(bottom=0)
        axes.grid(visible=True, alpha=0.3)
    p99_axes.legend(fontsize="small", loc="upper left")
    figure.suptitle(
        title or f"Fan-out scaling, {time.strftime('%Y-%m-%d')}, {cpu_model()}",
        fontsize="medium",
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
