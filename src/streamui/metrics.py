"""Metrics: the broker's counters, exported to Prometheus or OpenTelemetry.

The broker keeps plain counters (`Broker.frames_written`, `Broker.catch_ups`, ...) and
a `streamui.lag.LagHistogram`, bumped on the hot path once per flush or per write.
Exporters only *read* them, when they are scraped or collected: an application that
exports nothing pays the additions and nothing else, and one that does pays per scrape,
not per event. (The one exception is the OpenTelemetry lag histogram, below.)

- Prometheus (``pip install 'streamui[prometheus]'``): `PrometheusCollector` is a
  ``prometheus_client`` custom collector; `register_prometheus` adds it to a registry
  (the default one, which Litestar's ``PrometheusController`` serves). Names start
  with ``streamui_``; see `METRICS`.
- OpenTelemetry (``pip install 'streamui[opentelemetry]'``): `instrument_opentelemetry`
  creates observable instruments whose callbacks read the same counters. The API has
  no observable histogram, so the lag is recorded on a synchronous ``Histogram``: one
  measurement per invalidation per flush (the lag when the flush ended, which every
  stream written in it shares), not one per stream, so its cost does not grow with the
  number of streams; its count is of deliveries, not of writes.

Neither library is imported by ``import streamui``; importing this module imports
neither until an exporter is made.

Not covered: several brokers in one process are exported separately (one collector or
instrumentation each, and Prometheus refuses two collectors with the same names in one
registry: give the second its own registry).
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any, Final, Literal, NamedTuple

from streamui.broker import REFUSALS

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from opentelemetry.metrics import CallbackOptions, Histogram, MeterProvider, Observation
    from prometheus_client.metrics_core import Metric as MetricFamily
    from prometheus_client.registry import CollectorRegistry

    from streamui.broker import Broker

__all__ = [
    "CATCH_UP_REASONS",
    "METRICS",
    "Metric",
    "OpenTelemetryInstruments",
    "PrometheusCollector",
    "instrument_opentelemetry",
    "register_prometheus",
]

CATCH_UP_REASONS: Final = ("exact", "everything", "resume")
"""How a stream started (`Broker.catch_ups`): always exported, zeros included."""


class Metric(NamedTuple):
    """One exported metric: its Prometheus name (without ``_total`` for counters), kind,
    label, meaning and the broker attribute it reads. (A NamedTuple, not a dataclass:
    a third of the import time.)"""

    name: str
    kind: Literal["gauge", "counter", "histogram"]
    help: str
    attribute: str
    label: str | None = None


METRICS: Final = (
    Metric("streamui_open_streams", "gauge", "Streams open now.", "watcher_count"),
    Metric(
        "streamui_upstream_subscriptions",
        "gauge",
        "Subscriptions held on the transport now.",
        "subscription_count",
    ),
    Metric(
        "streamui_invalidations_published",
        "counter",
        "Scopes this process invalidated (published to the transport).",
        "invalidations_published",
    ),
    Metric(
        "streamui_invalidations_received",
        "counter",
        "Invalidations received from the transport.",
        "invalidations_received",
    ),
    Metric(
        "streamui_frames_written",
        "counter",
        "Patch-signals events written to streams (one per stream per write).",
        "frames_written",
    ),
    Metric(
        "streamui_changes_coalesced",
        "counter",
        "Changes that joined a frame a stream was owed already, instead of making one.",
        "changes_coalesced",
    ),
    Metric(
        "streamui_catch_ups",
        "counter",
        "Streams started, by how they caught up: exact, everything (the broker could "
        "not know what changed), resume (asked for everything).",
        "catch_ups",
        label="reason",
    ),
    Metric(
        "streamui_refused_streams",
        "counter",
        "Streams refused before they opened, by reason: the endpoint's refusal kinds "
        "(missing_token, invalid_token, expired_token, unauthorized, ...) and "
        "unavailable (503: subscribing failed).",
        "refused",
        label="reason",
    ),
    Metric(
        "streamui_lag_seconds",
        "histogram",
        "Seconds from an invalidation's publish to the write of the frame carrying it, "
        "per stream write (across processes: where the message carries its publish time).",
        "lag",
    ),
)
"""Everything exported, in order (the README lists the same)."""

_REASONS: Final = {"catch_ups": CATCH_UP_REASONS, "refused": REFUSALS}


def _values(broker: Broker, metric: Metric) -> dict[str, int]:
    """A labelled counter's values, every known reason first (zeros included)."""
    counts: dict[str, int] = getattr(broker, metric.attribute)
    return {reason: counts.get(reason, 0) for reason in _REASONS[metric.attribute]} | counts


class PrometheusCollector:
    """A ``prometheus_client`` collector reading *broker*'s counters at each scrape."""

    def __init__(self, broker: Broker) -> None:
        try:
            from prometheus_client import core
        except ImportError as error:  # pragma: no cover - depends on the environment
            raise ImportError(
                "PrometheusCollector needs prometheus_client: pip install 'streamui[prometheus]'"
            ) from error
        self._core = core
        self._broker = weakref.ref(broker)
        """Weak: a collector left in a registry does not keep a closed broker alive."""

    def collect(self) -> Iterator[MetricFamily]:
        broker = self._broker()
        if broker is None:
            return
        core = self._core
        for metric in METRICS:
            family: MetricFamily
            if metric.kind == "histogram":
                lag = broker.lag
                family = core.HistogramMetricFamily(
                    metric.name,
                    metric.help,
                    buckets=[(_bound(bound), count) for bound, count in lag.cumulative()],
                    sum_value=lag.sum,
                    unit="",
                )
            elif metric.label is not None:
                labelled = core.CounterMetricFamily(metric.name, metric.help, labels=[metric.label])
                for reason, count in _values(broker, metric).items():
                    labelled.add_metric([reason], count)
                family = labelled
            elif metric.kind == "counter":
                family = core.CounterMetricFamily(
                    metric.name, metric.help, value=getattr(broker, metric.attribute)
                )
            else:
                family = core.GaugeMetricFamily(
                    metric.name, metric.help, value=getattr(broker, metric.attribute)
                )
            yield family

    def describe(self) -> Iterable[MetricFamily]:
        """What `collect` yields: the registry checks the names for duplicates with it."""
        return self.collect()


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def register_prometheus(
    broker: Broker, registry: CollectorRegistry | None = None
) -> PrometheusCollector:
    """Export *broker*'s metrics from *registry* (default: ``prometheus_client``'s own,
    which ``generate_latest()`` and Litestar's ``PrometheusController`` serve).

    Returns the collector; ``registry.unregister(collector)`` stops the export."""
    collector = PrometheusCollector(broker)
    if registry is None:
        from prometheus_client import REGISTRY

        registry = REGISTRY
    registry.register(collector)
    return collector


class OpenTelemetryInstruments:
    """What `instrument_opentelemetry` made; `close` stops recording the lag (the
    observable instruments stop reporting once the broker is gone)."""

    def __init__(self, broker: Broker, meter_provider: MeterProvider | None) -> None:
        try:
            from opentelemetry import metrics
        except ImportError as error:  # pragma: no cover - depends on the environment
            raise ImportError(
                "instrument_opentelemetry needs the OpenTelemetry API: "
                "pip install 'streamui[opentelemetry]'"
            ) from error
        from streamui import __version__
        from streamui.lag import LAG_BUCKETS

        self._broker = weakref.ref(broker)
        meter = metrics.get_meter("streamui", __version__, meter_provider)
        self.instruments: list[Any] = []
        for metric in METRICS:
            name = "streamui." + metric.name.removeprefix("streamui_")
            if metric.kind == "histogram":
                lag = meter.create_histogram(
                    name.removesuffix("_seconds"),
                    unit="s",
                    description=metric.help,
                    explicit_bucket_boundaries_advisory=LAG_BUCKETS,
                )
                self.instruments.append(lag)
                self._listener = _record(lag)
                broker.lag.listeners.append(self._listener)
                continue
            create = (
                meter.create_observable_counter
                if metric.kind == "counter"
                else meter.create_observable_gauge
            )
            self.instruments.append(
                create(name, callbacks=[self._observe(metric)], description=metric.help)
            )

    def _observe(self, metric: Metric) -> Callable[[CallbackOptions], Iterable[Observation]]:
        from opentelemetry.metrics import Observation

        def callback(options: CallbackOptions) -> Iterable[Observation]:
            broker = self._broker()
            if broker is None:
                return []
            if metric.label is None:
                return [Observation(getattr(broker, metric.attribute))]
            return [
                Observation(count, {metric.label: reason})
                for reason, count in _values(broker, metric).items()
            ]

        return callback

    def close(self) -> None:
        broker = self._broker()
        if broker is not None and self._listener in broker.lag.listeners:
            broker.lag.listeners.remove(self._listener)


def _record(histogram: Histogram) -> Callable[[float, int], None]:
    def record(seconds: float, writes: int) -> None:
        histogram.record(seconds)

    return record


def instrument_opentelemetry(
    broker: Broker, meter_provider: MeterProvider | None = None
) -> OpenTelemetryInstruments:
    """Report *broker*'s metrics through OpenTelemetry (default: the global meter
    provider): observable counters and gauges named ``streamui.<name>`` read at each
    collection, and a ``streamui.lag`` histogram (seconds) recorded once per flush."""
    return OpenTelemetryInstruments(broker, meter_provider)
