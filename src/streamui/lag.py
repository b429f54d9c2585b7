"""`LagHistogram`: how long invalidations take to reach the streams, kept as bucket counts.

The broker observes into it on the hot path (a bisect and three additions, once per
flush for the streams the fan-out writes itself, once per other write), and the
metrics exporters (`streamui.metrics`) read it whenever they are scraped: no sample is
kept, memory is fixed. The buckets are fixed too (`LAG_BUCKETS`): an exporter cannot
re-bucket counts it never saw.

Lag is measured on the wall clock, from the publisher's ``time.time()`` to this
process's: across machines it includes their clock skew (a negative lag counts as 0).
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["LAG_BUCKETS", "LagHistogram"]

LAG_BUCKETS: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Upper bounds (seconds, inclusive) of the buckets; one more bucket holds the rest."""


class LagHistogram:
    """Counts of lags (seconds) per bucket of `LAG_BUCKETS`, their sum and their number.

    `counts` are per bucket, not cumulative (the last one is above every bound);
    `listeners` are called with every observation (an OpenTelemetry histogram)."""

    __slots__ = ("count", "counts", "listeners", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(LAG_BUCKETS) + 1)
        self.sum = 0.0
        self.count = 0
        self.listeners: list[Callable[[float, int], None]] = []

    def observe(self, seconds: float, times: int = 1) -> None:
        """Count *times* writes that each took *seconds* (clamped at 0) from the publish."""
        seconds = max(seconds, 0.0)
        self.counts[bisect.bisect_left(LAG_BUCKETS, seconds)] += times
        self.sum += seconds * times
        self.count += times
        for listener in self.listeners:
            listener(seconds, times)

    def cumulative(self) -> list[tuple[float, int]]:
        """``[(upper bound, writes at most that lag), ..., (inf, all writes)]``."""
        total = 0
        buckets = []
        for bound, count in zip((*LAG_BUCKETS, float("inf")), self.counts, strict=True):
            total += count
            buckets.append((bound, total))
        return buckets
