"""Bounded by bytes: the payload limit, the frame cache and the log of recent invalidations."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import streamui.broker
from streamui import Broker, ConfigurationError, PayloadTooLargeError
from streamui.litestar import StreamConfig, StreamPlugin
from tests.unit.conftest import FakeClock, RecordingTransport, next_signals
from tests.unit.test_broker import BrokerMachine

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from streamui import Watcher


@pytest.fixture
async def small(recording_transport: RecordingTransport) -> AsyncIterator[Broker]:
    """A started broker on a `RecordingTransport` that takes at most 100 bytes of data."""
    async with Broker(recording_transport, max_data_bytes=100) as broker:
        yield broker


def text_of_json_size(size: int) -> str:
    """A string whose compact JSON encoding is exactly *size* bytes (the quotes count)."""
    return "x" * (size - 2)


# -- the payload limit -------------------------------------------------------------------------


async def test_data_over_the_limit_is_refused_and_nothing_is_sent(
    small: Broker, recording_transport: RecordingTransport
) -> None:
    data = {"blob": "x" * 200}
    message = (
        r"data encodes to 211 bytes of JSON, over the limit of 100 \(max_data_bytes\), "
        r"got \{'blob': 'xxx.*'\}: send less .* or raise max_data_bytes"
    )
    async with small.watch(["a:1"]) as watcher:
        with pytest.raises(PayloadTooLargeError, match=message):
            await small.invalidate("a:1", data=data)
        with pytest.raises(PayloadTooLargeError, match=message):
            await small.invalidate_many(["a:1", "b:1"], data=data)
        with pytest.raises(PayloadTooLargeError, match=message):
            small.invalidate_threadsafe("a:1", data=data)
        assert not watcher.ready
    assert recording_transport.published == []


@pytest.mark.parametrize("size", [3, 99, 100])
async def test_data_up_to_the_limit_is_sent(small: Broker, size: int) -> None:
    data = text_of_json_size(size)
    async with small.watch(["a:1"]) as watcher:
        await small.invalidate("a:1", data=data)
        revision, signals = await next_signals(watcher)
    assert signals == {"_stream": {"a_1": revision}, "_streamData": {"a_1": data}}


async def test_the_default_limit_is_64_kib(broker: Broker) -> None:
    assert broker.max_data_bytes == 65536
    await broker.invalidate("a:1", data=text_of_json_size(65536))
    with pytest.raises(PayloadTooLargeError, match="65537 bytes of JSON, over the limit of 65536"):
        await broker.invalidate("a:1", data=text_of_json_size(65537))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "max_data_bytes must be a positive number of bytes, got 0"),
        (-1, "max_data_bytes must be a positive number of bytes, got -1"),
        (True, "max_data_bytes must be an int, got True"),
        (1.5, "max_data_bytes must be an int, got 1.5"),
        ("65536", "max_data_bytes must be an int, got '65536'"),
    ],
)
def test_a_bad_limit_is_refused(value: object, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Broker(max_data_bytes=value)  # type: ignore[arg-type]


def test_stream_config_passes_the_limit_to_its_broker() -> None:
    assert StreamConfig().max_data_bytes == 65536
    assert StreamPlugin(StreamConfig(max_data_bytes=1234)).broker.max_data_bytes == 1234
    with pytest.raises(ConfigurationError, match="max_data_bytes must be at least 1, got 0"):
        StreamConfig(max_data_bytes=0)


@pytest.mark.parametrize(
    "payload",
    [
        json.dumps(text_of_json_size(101)).encode(),
        # 40 bytes as sent, 122 once re-encoded: every 'é' becomes '\u00e9'.
        json.dumps("é" * 20, ensure_ascii=False).encode(),
    ],
)
async def test_a_received_payload_over_the_limit_is_logged_and_dropped(
    small: Broker, caplog: pytest.LogCaptureFixture, payload: bytes
) -> None:
    async with small.watch(["a:1"]) as watcher:
        with caplog.at_level(logging.WARNING, logger="streamui.broker"):
            # What another process with a larger limit would publish.
            await small.transport.publish("streamui.scope.a.1", payload)
        revision, signals = await next_signals(watcher)
    # The scope still reloads; only the data is gone.
    assert signals == {"_stream": {"a_1": revision}}
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage().startswith("dropping the payload on 'streamui.scope.a.1': ")
    assert "bytes, over max_data_bytes=100; delivering a plain invalidation" in record.getMessage()


# -- the frame cache ---------------------------------------------------------------------------


def frame_cost(broker: Broker) -> int:
    """What the frame cache holds, counted the way the broker counts it."""
    overhead = streamui.broker._FRAME_ENTRY_OVERHEAD
    return sum(len(frame) + overhead for frame in broker._frames.values())


async def test_the_frame_cache_stays_within_its_budget(broker: Broker) -> None:
    blob = "x" * 60_000
    async with broker.watch(["item:*"]) as everything, broker.watch(["item:7"]) as seven:
        for number in range(200):
            await broker.invalidate(f"item:{number}", data={"n": number, "blob": blob})
            await asyncio.sleep(0)  # the watchers are marked in the next turn
            everything.take()
            seven.take()
            assert broker._frame_bytes == frame_cost(broker) <= streamui.broker._FRAME_BUDGET
    # The budget holds a few dozen frames this size, and no key keeps a payload.
    assert 30 < len(broker._frames) < 200
    for key in broker._frames:
        assert not any(isinstance(part, bytes) for part in json_parts(key))


def json_parts(value: object) -> list[object]:
    """Every leaf of nested tuples."""
    if isinstance(value, tuple):
        return [leaf for part in value for leaf in json_parts(part)]
    return [value]


async def test_a_frame_larger_than_the_budget_is_kept_alone(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(streamui.broker, "_FRAME_BUDGET", 1000)
    async with broker.watch(["a:1"]) as first, broker.watch(["a:1"]) as second:
        await broker.invalidate("a:1")
        await asyncio.sleep(0)  # the watchers are marked in the next turn
        first.take()
        await broker.invalidate("a:1", data="x" * 2000)
        await asyncio.sleep(0)
        frame = first.take()
        # The only frame left is the newest, and every stream waking for it shares it.
        assert list(broker._frames.values()) == [frame]
        assert second.take() is frame


async def test_equal_keys_and_revision_with_other_payloads_get_their_own_frame(
    broker: Broker,
) -> None:
    # Both streams end up with key a_1 at the same revision; only one still holds the
    # payload from before (payloads persist until taken, a plain invalidation keeps them).
    async with broker.watch(["a:1"]) as took, broker.watch(["a:1"]) as waited:
        await broker.invalidate("a:1", data="first")
        await asyncio.sleep(0)  # the watchers are marked in the next turn
        took.take()
        await broker.invalidate("a:1")
        revision, signals = await next_signals(took)
        assert signals == {"_stream": {"a_1": revision}}
        assert await next_signals(waited) == (
            revision,
            {"_stream": {"a_1": revision}, "_streamData": {"a_1": "first"}},
        )


class TightFrameBudgetMachine(BrokerMachine):
    """The broker model of test_broker, with room for about two frames: cache hits and
    evictions interleave, and every frame must still match the model."""

    def __init__(self) -> None:
        self.patch = pytest.MonkeyPatch()
        self.patch.setattr(streamui.broker, "_FRAME_BUDGET", 700)
        super().__init__()

    def teardown(self) -> None:
        try:
            super().teardown()
        finally:
            self.patch.undo()


TestTightFrameBudget = TightFrameBudgetMachine.TestCase
TestTightFrameBudget.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)


# -- the log of recent invalidations -----------------------------------------------------------


def log_cost(broker: Broker) -> int:
    overhead = streamui.broker._RECENT_ENTRY_OVERHEAD
    return sum(len(scope) + overhead for scope in broker._recent)


async def test_the_recent_log_stays_within_its_budget(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    budget = 10 * (len("item:0000") + streamui.broker._RECENT_ENTRY_OVERHEAD)
    monkeypatch.setattr(streamui.broker, "_RECENT_BUDGET", budget)
    async with Broker() as broker:
        for number in range(1000):
            clock.advance(0.01)
            await broker.invalidate(f"item:{number:04}")
            assert broker._recent_bytes == log_cost(broker) <= budget
        assert list(broker._recent) == [f"item:{number:04}" for number in range(990, 1000)]
        # Invalidating a remembered scope again moves it, and costs nothing more.
        await broker.invalidate("item:0990")
        assert broker._recent_bytes == log_cost(broker) == budget
        assert next(reversed(broker._recent)) == "item:0990"


async def test_catch_up_pushes_everything_for_a_render_before_what_the_log_forgot(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = len("other:0") + streamui.broker._RECENT_ENTRY_OVERHEAD
    monkeypatch.setattr(streamui.broker, "_RECENT_BUDGET", 3 * entry)
    async with Broker() as broker:
        early = clock.advance(1)
        for number in range(5):
            clock.advance(1)
            await broker.invalidate(f"other:{number}")
            if number == 2:
                late = clock.now
        # other:0 and other:1 were forgotten: a render before them cannot know what
        # changed, so it gets every scope; a later one only what changed after it.
        async with broker.watch(["a:1", "b:1"], rendered_at=early) as watcher:
            revision, signals = await next_signals(watcher)
            assert signals == {"_stream": {"a_1": revision, "b_1": revision}}
        async with broker.watch(["a:1", "other:4"], rendered_at=late) as watcher:
            revision, signals = await next_signals(watcher)
            assert signals == {"_stream": {"other_4": revision}}


WATCHED = ("a:1", "b:1", "long:*")


@settings(max_examples=150, deadline=None)
@given(
    invalidated=st.lists(st.sampled_from(["a:1", "b:1", "c:1", "long:" + "x" * 200]), max_size=30),
    entries=st.integers(1, 6),
    render_after=st.integers(0, 30),
)
def test_catch_up_never_misses_a_change_whatever_the_log_forgot(
    invalidated: list[str], entries: int, render_after: int
) -> None:
    # Every watched scope invalidated after the render is pushed, however small the log.
    render_after = min(render_after, len(invalidated))
    with pytest.MonkeyPatch.context() as patch:
        clock = FakeClock()
        patch.setattr(streamui.broker, "_now", clock)
        budget = entries * streamui.broker._RECENT_ENTRY_OVERHEAD
        patch.setattr(streamui.broker, "_RECENT_BUDGET", budget)
        pushed = asyncio.run(catch_up(clock, invalidated, render_after))
    changed = {scope.split(":")[0] for scope in invalidated[render_after:]}
    assert changed - {"c"} <= pushed <= {"a", "b", "long"}


async def catch_up(clock: FakeClock, invalidated: list[str], render_after: int) -> set[str]:
    """Invalidate in order, rendering after the first *render_after*; what does the page get?"""
    async with Broker() as broker:
        for scope in invalidated[:render_after]:
            clock.advance(1)
            await broker.invalidate(scope)
        rendered_at = clock.advance(1)
        for scope in invalidated[render_after:]:
            clock.advance(1)
            await broker.invalidate(scope)
            assert broker._recent_bytes == log_cost(broker) <= streamui.broker._RECENT_BUDGET
        async with broker.watch(WATCHED, rendered_at=rendered_at) as watcher:
            return pushed_names(watcher)


def pushed_names(watcher: Watcher) -> set[str]:
    """The first segment of every scope the watcher has pending (nothing if none)."""
    if not watcher.ready:
        return set()
    frame = watcher.take()
    line = next(line for line in frame.decode().splitlines() if line.startswith("data: signals "))
    signals = json.loads(line.removeprefix("data: signals "))
    return {key.split("_")[0] for key in signals["_stream"]}
