"""The broker's counters, and the exporters that read them (`streamui.metrics`).

The counters are what an operator relies on to see a deployment work: streams open,
invalidations in and out, frames written, changes that coalesced, how streams caught
up or why they were refused, and the lag from an invalidation to the write. The
exporters are checked through the libraries' own readers: prometheus_client's text
exposition and the OpenTelemetry SDK's in-memory reader.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from typing import TYPE_CHECKING, Any, get_args

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    InMemoryMetricReader,
    NumberDataPoint,
)
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streamui import Broker
from streamui.broker import REFUSALS
from streamui.errors import RefusalKind
from streamui.lag import LAG_BUCKETS, LagHistogram
from streamui.metrics import (
    METRICS,
    instrument_opentelemetry,
    register_prometheus,
)
from streamui.stream import EventStream
from streamui.transports import InProcessTransport, MessageHandler, Subscription
from tests.unit.conftest import FakeClock, next_frame, next_signals, parse_events

if TYPE_CHECKING:
    from collections.abc import Iterator

    from streamui.broker import Watcher

WAIT = 10.0


class Writer:
    """An attached stream writer (as `EventStream` is): the fan-out hands it whole
    frames, and it takes what was marked when kicked."""

    def __init__(self, watcher: Watcher) -> None:
        self.watcher = watcher
        self.frames: list[bytes] = []
        self.busy = False
        """True: every write is refused as if one were in flight."""
        self.wrote = asyncio.Event()
        watcher.attach(self)

    def kick(self) -> None:
        if not self.busy and (frame := self.watcher.take()):
            self.write(frame)

    def write(self, frame: bytes) -> bool:
        if self.busy:
            return False
        self.frames.append(frame)
        self.wrote.set()
        return True

    async def next(self) -> bytes:
        await asyncio.wait_for(self.wrote.wait(), WAIT)
        self.wrote.clear()
        return self.frames[-1]


def prometheus(broker: Broker) -> dict[str, float]:
    """Every sample of the broker's Prometheus export, by name and labels."""
    registry = CollectorRegistry()
    register_prometheus(broker, registry)
    text = generate_latest(registry).decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{name}={value}" for name, value in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


# -- the counters ------------------------------------------------------------------------------


async def test_a_fresh_broker_exports_every_metric_at_zero(broker: Broker) -> None:
    samples = prometheus(broker)
    assert samples["streamui_open_streams"] == 0
    assert samples["streamui_upstream_subscriptions"] == 1  # upstream="all": the one
    for name in (
        "invalidations_published",
        "invalidations_received",
        "frames_written",
        "changes_coalesced",
    ):
        assert samples[f"streamui_{name}_total"] == 0, name
    for reason in ("exact", "everything", "resume"):
        assert samples[f"streamui_catch_ups_total{{reason={reason}}}"] == 0
    for reason in REFUSALS:
        assert samples[f"streamui_refused_streams_total{{reason={reason}}}"] == 0
    assert set(REFUSALS) == {*get_args(RefusalKind), "unavailable"}
    assert samples["streamui_lag_seconds_count"] == 0
    assert samples["streamui_lag_seconds_bucket{le=+Inf}"] == 0
    assert {metric.name for metric in METRICS} == {
        name.split("{")[0].removesuffix("_total").removesuffix("_bucket").removesuffix("_count")
        for name in samples
        if not name.endswith(("_created", "_sum"))
    }


async def test_invalidations_streams_and_frames_are_counted(broker: Broker) -> None:
    async with broker.watch(["a:1"]) as first, broker.watch(["a:*"]) as second:
        assert broker.watcher_count == 2
        writers = [Writer(first), Writer(second)]
        await broker.invalidate_many(["a:1", "b:1"])
        assert broker.invalidations_published == 2
        assert broker.invalidations_received == 2
        for writer in writers:
            await writer.next()
        samples = prometheus(broker)
        assert samples["streamui_open_streams"] == 2
        assert samples["streamui_invalidations_published_total"] == 2
        assert samples["streamui_invalidations_received_total"] == 2
        assert samples["streamui_frames_written_total"] == 2  # one per stream
        assert samples["streamui_lag_seconds_count"] == 2  # one per stream write
    assert prometheus(broker)["streamui_open_streams"] == 0


async def test_a_frame_taken_by_a_waiting_stream_is_counted_too(broker: Broker) -> None:
    async with broker.watch(["a:1"]) as watcher:
        await broker.invalidate("a:1")
        await next_frame(watcher)
    assert broker.frames_written == 1
    assert broker.lag.count == 1


async def test_a_burst_in_one_turn_coalesces_into_one_frame_per_stream(broker: Broker) -> None:
    async with contextlib.AsyncExitStack() as stack:
        writers = [Writer(await stack.enter_async_context(broker.watch(["a:*"]))) for _ in range(3)]
        for number in range(5):
            await broker.invalidate(f"a:{number}")
        for writer in writers:
            await writer.next()
            assert len(writer.frames) == 1
    # Four of the five changes joined the first, in each of the three streams.
    assert broker.changes_coalesced == 4 * 3
    assert broker.frames_written == 3


async def test_changes_that_wait_for_a_busy_stream_coalesce(broker: Broker) -> None:
    async with broker.watch(["a:1", "b:1", "c:1"]) as watcher:
        writer = Writer(watcher)
        writer.busy = True  # a slow client: its previous write is still in flight
        for value in ("a:1", "b:1", "c:1"):
            await broker.invalidate(value)
            await asyncio.sleep(0)  # each in a turn of its own
        await asyncio.sleep(0)
        assert broker.changes_coalesced == 2  # b:1 and c:1 joined a:1's frame
        writer.busy = False
        writer.kick()
        (event,) = parse_events(writer.frames[-1])
        assert set(event.signals["_stream"]) == {"a_1", "b_1", "c_1"}
    assert broker.frames_written == 1
    assert broker.lag.count == 1


async def test_lag_is_measured_from_the_publish_to_the_write(clock: FakeClock) -> None:
    async with Broker() as broker, broker.watch(["a:1"]) as watcher:
        writer = Writer(watcher)
        await broker.invalidate("a:1")
        clock.advance(0.02)  # the fan-out runs in the next turn, 20 ms later
        await writer.next()
        assert broker.lag.count == 1
        assert broker.lag.sum == pytest.approx(0.02)
        samples = prometheus(broker)
    assert samples["streamui_lag_seconds_bucket{le=0.01}"] == 0
    assert samples["streamui_lag_seconds_bucket{le=0.025}"] == 1
    assert samples["streamui_lag_seconds_bucket{le=+Inf}"] == 1
    assert samples["streamui_lag_seconds_sum"] == pytest.approx(0.02)


def test_the_lag_histogram_counts_into_inclusive_buckets() -> None:
    lag = LagHistogram()
    lag.observe(0.001, 3)  # on a bound: counted under it (Prometheus' "le")
    lag.observe(-0.5)  # clocks of two machines disagree: no lag, not a negative one
    lag.observe(60.0)
    cumulative = dict(lag.cumulative())
    assert cumulative[0.0005] == 1
    assert cumulative[0.001] == 4
    assert cumulative[LAG_BUCKETS[-1]] == 4
    assert cumulative[float("inf")] == 5
    assert lag.count == 5
    assert lag.sum == pytest.approx(60.003)


async def test_catch_ups_are_exported_by_reason(broker: Broker) -> None:
    async with broker.watch(["a:1"], resume=True) as watcher:
        await next_signals(watcher)
    async with broker.watch(["a:1"], after=broker.event_id(broker.revision)):
        pass
    samples = prometheus(broker)
    assert samples["streamui_catch_ups_total{reason=resume}"] == 1
    assert samples["streamui_catch_ups_total{reason=exact}"] == 1
    assert samples["streamui_catch_ups_total{reason=everything}"] == 0


# -- refused streams ---------------------------------------------------------------------------


class DownTransport(InProcessTransport):
    """A bus shared by several processes as far as the broker knows, whose subscribing
    fails (an upstream that is not there)."""

    sees_all_publishes = False

    async def subscribe(self, pattern: str, handler: MessageHandler) -> Subscription:
        if pattern != "streamui.scope.>":
            raise ConnectionError(f"upstream is down, cannot subscribe to {pattern!r}")
        return await super().subscribe(pattern, handler)


async def test_a_stream_that_cannot_subscribe_is_counted_as_unavailable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    async with Broker(DownTransport(), upstream="watched") as broker:
        stream = EventStream(broker, ["a:1"])
        await asyncio.wait_for(stream({"type": "http"}, receive, send), WAIT)  # type: ignore[arg-type]
        assert messages[0]["status"] == 503
        assert broker.refused == {"unavailable": 1}
        assert prometheus(broker)["streamui_refused_streams_total{reason=unavailable}"] == 1


async def test_refusals_are_counted_by_documented_reason_only(broker: Broker) -> None:
    broker.note_refused("invalid_token")
    broker.note_refused("invalid_token")
    broker.note_refused("missing_token")
    assert broker.refused == {"invalid_token": 2, "missing_token": 1}
    with pytest.raises(ValueError, match=r"not a refusal reason: 'forbidden'; one of not_found"):
        broker.note_refused("forbidden")  # type: ignore[arg-type]


# -- the exporters -----------------------------------------------------------------------------


async def test_two_collectors_with_the_same_names_are_refused_by_one_registry(
    broker: Broker,
) -> None:
    registry = CollectorRegistry()
    collector = register_prometheus(broker, registry)
    async with Broker() as other:
        with pytest.raises(ValueError, match="Duplicated timeseries"):
            register_prometheus(other, registry)
    registry.unregister(collector)
    assert generate_latest(registry) == b""


async def test_a_collector_outliving_its_broker_exports_nothing() -> None:
    registry = CollectorRegistry()
    async with Broker() as broker:
        register_prometheus(broker, registry)
        assert b"streamui_open_streams 0.0" in generate_latest(registry)
    del broker
    assert generate_latest(registry) == b""


@pytest.fixture
def opentelemetry() -> Iterator[tuple[InMemoryMetricReader, MeterProvider]]:
    """The OpenTelemetry SDK's in-memory reader, and a meter provider it reads."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    yield reader, provider
    provider.shutdown()


def opentelemetry_points(reader: InMemoryMetricReader) -> dict[str, Any]:
    """``{name or name{reason}: value, or the histogram point}`` of one collection."""
    data = reader.get_metrics_data()
    assert data is not None
    points: dict[str, Any] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            assert scope.scope.name == "streamui"
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    reason = point.attributes.get("reason") if point.attributes else None
                    name = f"{metric.name}{{{reason}}}" if reason else metric.name
                    points[name] = point.value if isinstance(point, NumberDataPoint) else point
    return points


async def test_opentelemetry_reads_the_same_counters(
    opentelemetry: tuple[InMemoryMetricReader, MeterProvider],
) -> None:
    reader, provider = opentelemetry
    async with Broker() as broker:
        instruments = instrument_opentelemetry(broker, meter_provider=provider)
        async with broker.watch(["a:1"]) as watcher:
            writer = Writer(watcher)
            await broker.invalidate("a:1")
            await writer.next()
            points = opentelemetry_points(reader)
            assert points["streamui.open_streams"] == 1
            assert points["streamui.upstream_subscriptions"] == 1
        assert points["streamui.invalidations_published"] == 1
        assert points["streamui.invalidations_received"] == 1
        assert points["streamui.frames_written"] == 1
        assert points["streamui.changes_coalesced"] == 0
        assert points["streamui.catch_ups{exact}"] == 0
        assert points["streamui.refused_streams{unavailable}"] == 0
        lag = points["streamui.lag"]
        assert lag.count == 1
        assert tuple(lag.explicit_bounds) == LAG_BUCKETS
        instruments.close()
        assert broker.lag.listeners == []


def test_importing_streamui_imports_no_metrics_library() -> None:
    code = (
        "import sys, streamui, streamui.metrics, streamui.litestar; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('prometheus_client', 'opentelemetry')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"
