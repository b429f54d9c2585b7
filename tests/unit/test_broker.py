"""The broker: invalidation, fan-out, coalescing, reference-counted subscriptions, catch-up."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

import streamui.broker
from streamui import (
    Broker,
    BrokerStateError,
    ConfigurationError,
    InProcessTransport,
    InvalidScopeError,
    Subscription,
    Watcher,
    scope_key,
)
from tests.support import revision_of
from tests.unit.conftest import (
    WAIT,
    FakeClock,
    RecordingTransport,
    nats_matches,
    next_frame,
    next_signals,
    parse_events,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from contextlib import AbstractAsyncContextManager

    from streamui.broker import Upstream
    from streamui.transports import MessageHandler


def counts(broker: Broker) -> tuple[int, int]:
    """(patterns the broker's streams watch, subscriptions the transport has besides the
    broker's own one to every scope)."""
    transport = broker.transport
    assert isinstance(transport, InProcessTransport)
    own = broker.subscription_count if broker.upstream == "all" else 0
    return broker.pattern_count, transport.subscription_count - own


class SharedBus(InProcessTransport):
    """The in-process transport standing in for a bus that several processes share (as
    NATS is): the broker cannot assume it sees every publish."""

    sees_all_publishes = False


@pytest.fixture(params=["all", "watched"])
async def any_broker(request: pytest.FixtureRequest) -> AsyncIterator[Broker]:
    """A started broker of each upstream mode (``watched``: on a `SharedBus`)."""
    upstream = request.param
    transport = InProcessTransport() if upstream == "all" else SharedBus()
    async with Broker(transport, upstream=upstream) as started:
        yield started
        assert counts(started) == (0, 0), "subscriptions leaked"


def per_pattern(broker: Broker, patterns: int) -> tuple[int, int]:
    """What `counts` gives while *patterns* distinct patterns are watched."""
    return patterns, patterns if broker.upstream == "watched" else 0


async def wait_for(event: asyncio.Event) -> None:
    async with asyncio.timeout(WAIT):
        await event.wait()


# -- delivery ---------------------------------------------------------------------------------


async def test_invalidate_reaches_a_watcher_of_the_exact_scope(broker: Broker) -> None:
    async with broker.watch(["invoice:42"]) as watcher:
        before = broker.revision
        await broker.invalidate("invoice:42")
        frame = await next_frame(watcher)
    (event,) = parse_events(frame)
    assert event.event == "datastar-patch-signals"
    assert event.id is not None
    revision = revision_of(event.id)
    assert revision > before
    assert event.signals == {"_stream": {"invoice_42": revision}}
    # The exact wire format: one event, an id, one data line (what Datastar parses).
    assert (
        frame
        == (
            f"event: datastar-patch-signals\nid: {revision}-{broker.id}\n"
            f'data: signals {{"_stream":{{"invoice_42":{revision}}}}}\n\n'
        ).encode()
    )


async def test_wildcard_watchers_get_their_own_key(broker: Broker) -> None:
    async with broker.watch(["invoices:*", "workspace:>"]) as watcher:
        await broker.invalidate("invoices:7")
        revision, signals = await next_signals(watcher)
        assert signals == {"_stream": {"invoices_WILD": revision}}
        await broker.invalidate("workspace:1:doc:3")
        revision, signals = await next_signals(watcher)
        assert signals == {"_stream": {"workspace_REST": revision}}


async def test_scopes_that_do_not_match_are_not_pushed(broker: Broker) -> None:
    async with broker.watch(["invoices:*", "workspace:>", "invoice:42", "sentinel"]) as watcher:
        for other in ("invoices", "invoices:7:lines", "workspace", "invoice:43", "invoice"):
            await broker.invalidate(other)
        await broker.invalidate("sentinel")
        revision, signals = await next_signals(watcher)
    assert signals == {"_stream": {"sentinel": revision}}


async def test_invalidate_many_reaches_every_watcher(broker: Broker) -> None:
    async with broker.watch(["a:1"]) as first, broker.watch(["b:*"]) as second:
        await broker.invalidate_many(["a:1", "b:2"])
        revision, signals = await next_signals(first)
        assert signals == {"_stream": {"a_1": revision}}
        revision, signals = await next_signals(second)
        assert signals == {"_stream": {"b_WILD": revision}}


async def test_invalidate_many_takes_any_iterable(broker: Broker) -> None:
    async with broker.watch(["a:1", "a:2"]) as watcher:
        await broker.invalidate_many(f"a:{number}" for number in (1, 2))
        revision, signals = await next_signals(watcher)
    assert signals == {"_stream": {"a_1": revision, "a_2": revision}}


async def test_two_watchers_of_one_scope_both_get_it(broker: Broker) -> None:
    async with broker.watch(["invoice:42"]) as first, broker.watch(["invoice:42"]) as second:
        await broker.invalidate("invoice:42")
        first_revision, first_signals = await next_signals(first)
        second_revision, second_signals = await next_signals(second)
    assert first_signals == {"_stream": {"invoice_42": first_revision}}
    assert second_signals == first_signals
    assert second_revision == first_revision


async def test_revisions_grow_from_frame_to_frame(broker: Broker) -> None:
    async with broker.watch(["a:1"]) as watcher:
        seen = [broker.revision]
        for _ in range(5):
            await broker.invalidate("a:1")
            revision, _ = await next_signals(watcher)
            seen.append(revision)
    assert seen == sorted(set(seen))


async def test_revisions_are_seeded_from_the_wall_clock(clock: FakeClock) -> None:
    # A tab reconnected to another process (or a restarted one) must see a larger value.
    async with Broker() as first, first.watch(["a:1"]) as watcher:
        await first.invalidate("a:1")
        earlier, _ = await next_signals(watcher)
    assert earlier >= clock.now * 1000
    clock.advance(1)
    async with Broker() as second, second.watch(["a:1"]) as watcher:
        await second.invalidate("a:1")
        later, _ = await next_signals(watcher)
    assert later > earlier


# -- coalescing and payloads -----------------------------------------------------------------


async def test_invalidations_before_a_take_coalesce_into_one_frame(broker: Broker) -> None:
    async with broker.watch(["a:1", "b:1", "c:*", "d:1"]) as watcher:
        for value in ("a:1", "b:1", "c:9", "a:1", "c:8"):
            await broker.invalidate(value)
        revision, signals = await next_signals(watcher)
        assert signals == {"_stream": {"a_1": revision, "b_1": revision, "c_WILD": revision}}
        # The largest revision handed out: no change is older than the frame says.
        assert revision == broker.revision
        # Taken means reset: nothing more to write until the next invalidation.
        assert not watcher.ready
        assert watcher.take() == b""


async def test_an_attached_writer_is_called_once_per_loop_turn(broker: Broker) -> None:
    async with broker.watch(["a:1", "b:1"]) as watcher:
        frames: list[bytes] = []

        class Writer:
            def kick(self) -> None:
                frames.append(watcher.take())

            def write(self, frame: bytes) -> bool:
                frames.append(frame)
                return True

        watcher.attach(Writer())
        # A burst in one loop turn: one call, one frame with the last revision.
        for value in ("a:1", "b:1", "a:1"):
            await broker.invalidate(value)
        assert frames == []  # not from inside invalidate: once the turn is over
        await asyncio.sleep(0)
        assert len(frames) == 1
        revision = broker.revision
        assert f'"a_1":{revision},"b_1":{revision}'.encode() in frames[0]
        # A heartbeat and a close call it too (the writer ends the body).
        watcher.heartbeat()
        await asyncio.sleep(0)
        assert frames[1] == b": keep-alive\n\n"
        watcher.close()
        await asyncio.sleep(0)
        assert len(frames) == 3
        # Detached, changes wait for a take.
        watcher.attach(None)
        await broker.invalidate("a:1")
        await asyncio.sleep(0)
        assert len(frames) == 3
        assert watcher.ready


async def test_a_burst_in_one_turn_marks_each_watcher_once(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fan-out's cost per invalidation is O(1); the watchers are marked once per
    # turn, with the newest revision and the newest payload.
    marks: list[tuple[str, int]] = []
    mark = Watcher.mark

    def counting(
        self: Watcher, key: str, revision: int, data: Any = None, since: float = 0.0
    ) -> None:
        marks.append((key, revision))
        mark(self, key, revision, data, since)

    monkeypatch.setattr(Watcher, "mark", counting)
    async with contextlib.AsyncExitStack() as stack:
        watchers = [await stack.enter_async_context(broker.watch(["a:*"])) for _ in range(20)]
        for number in range(1000):
            await broker.invalidate(f"a:{number % 7}", data=number if number == 500 else None)
        assert marks == []
        await asyncio.sleep(0)
        assert marks == [("a_WILD", broker.revision)] * 20
        for watcher in watchers:
            revision, signals = await next_signals(watcher)
            assert revision == broker.revision
            # The last payload of the burst, with the scope that carried it.
            assert signals["_streamData"] == {"a_WILD": {"scope": "a:3", "data": 500}}


class SlowWriter:
    """A stream writer whose every write takes *seconds* of CPU, as writing to a few
    hundred streams does; it records the revision of every frame it writes."""

    def __init__(self, watcher: Watcher, seconds: float) -> None:
        self.watcher = watcher
        self.seconds = seconds
        self.revisions: list[int] = []
        self.wrote = asyncio.Event()
        watcher.attach(self)

    def kick(self) -> None:
        frame = self.watcher.take()
        if frame:
            self.write(frame)

    def write(self, frame: bytes) -> bool:
        deadline = time.perf_counter() + self.seconds
        while time.perf_counter() < deadline:
            pass
        (event,) = parse_events(frame)
        self.revisions.append(revision_of(event.id))
        self.wrote.set()
        return True


async def test_a_burst_that_yields_to_the_loop_coalesces_behind_a_costly_flush(
    broker: Broker,
) -> None:
    # The producer yields after every invalidation, so each would get a flush of its
    # own; behind a flush that cost 5 ms, the next waits as long, and what the
    # producer invalidates meanwhile goes out as one frame.
    async with broker.watch(["a:1"]) as watcher:
        writer = SlowWriter(watcher, 0.005)
        started = time.perf_counter()
        invalidations = 0
        while time.perf_counter() - started < 0.5:
            await broker.invalidate("a:1")
            invalidations += 1
            await asyncio.sleep(0)
        last = broker.revision
        async with asyncio.timeout(WAIT):
            while not writer.revisions or writer.revisions[-1] != last:
                writer.wrote.clear()
                await writer.wrote.wait()
    # Unpaced, every invalidation costs a 5 ms flush: 100 frames in 0.5 s, one each.
    assert invalidations > 5 * len(writer.revisions), (invalidations, len(writer.revisions))
    assert writer.revisions == sorted(set(writer.revisions))


async def test_a_change_in_a_later_turn_is_not_held_back_by_a_costly_flush(
    broker: Broker,
) -> None:
    # What arrives by I/O (a request, a NATS message) comes in a later turn than the
    # flush before it, and is written in the next turn, however long that flush took.
    async with broker.watch(["a:1"]) as watcher:
        writer = SlowWriter(watcher, 0.005)
        await broker.invalidate("a:1")
        await asyncio.sleep(0)
        assert len(writer.revisions) == 1
        await asyncio.sleep(0)  # a later turn
        await broker.invalidate("a:1")
        await asyncio.sleep(0)
        assert writer.revisions == [writer.revisions[0], broker.revision]


async def test_a_cancelled_wait_leaves_nothing_to_wake(broker: Broker) -> None:
    async with broker.watch(["a:1"]) as watcher:
        waiting = asyncio.ensure_future(watcher.wait())
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert watcher._waiter is None
        await broker.invalidate("a:1")
        revision, _ = await next_signals(watcher)
        assert revision == broker.revision


async def test_data_is_set_under_stream_data(broker: Broker) -> None:
    data = {"total": 12.5, "text": "line\nbreak </script> 'quoted' \"double\" é\u2028", "n": None}
    async with broker.watch(["invoice:42", "invoice:*"]) as watcher:
        await broker.invalidate("invoice:42", data=data)
        frame = await next_frame(watcher)
        (event,) = parse_events(frame)
        assert event.id is not None
        revision = revision_of(event.id)
        # A wildcard watcher is told which scope the data is for.
        assert event.signals == {
            "_stream": {"invoice_42": revision, "invoice_WILD": revision},
            "_streamData": {
                "invoice_42": data,
                "invoice_WILD": {"scope": "invoice:42", "data": data},
            },
        }
        # One line of JSON: nothing in the data can start another SSE field or event.
        assert [line for line in event.data if line.startswith("signals ")] == list(event.data)
        assert len(event.data) == 1
        # Without data, no stale payload is sent again.
        await broker.invalidate("invoice:42")
        revision, signals = await next_signals(watcher)
        assert signals == {"_stream": {"invoice_42": revision, "invoice_WILD": revision}}


@pytest.mark.parametrize("data", [0, False, "", [], {}, "text", [1, "two"]])
async def test_falsy_and_plain_json_values_are_payloads_too(broker: Broker, data: object) -> None:
    async with broker.watch(["a:1"]) as watcher:
        await broker.invalidate("a:1", data=data)
        revision, signals = await next_signals(watcher)
    assert signals == {"_stream": {"a_1": revision}, "_streamData": {"a_1": data}}


async def test_coalesced_payloads_keep_the_latest_per_key(broker: Broker) -> None:
    async with broker.watch(["a:1", "b:1"]) as watcher:
        await broker.invalidate("a:1", data=1)
        await broker.invalidate("b:1", data="b")
        await broker.invalidate("a:1", data=2)
        revision, signals = await next_signals(watcher)
    assert signals == {
        "_stream": {"a_1": revision, "b_1": revision},
        "_streamData": {"a_1": 2, "b_1": "b"},
    }


@pytest.mark.parametrize("data", [object(), {1, 2}, b"bytes", float("nan"), float("inf")])
async def test_data_that_is_not_json_is_a_type_error_and_nothing_is_sent(
    broker: Broker, recording_transport: RecordingTransport, data: object
) -> None:
    with pytest.raises(TypeError, match="data must be JSON-serializable"):
        await broker.invalidate("a:1", data=data)
    with pytest.raises(TypeError, match="data must be JSON-serializable"):
        broker.invalidate_threadsafe("a:1", data=data)
    assert recording_transport.published == []


async def test_a_go_style_message_with_an_empty_payload_is_an_invalidation() -> None:
    transport = InProcessTransport()
    broker = Broker(transport, prefix="webx.scope")
    async with broker, broker.watch(["invoice:42"]) as watcher:
        await transport.publish("webx.scope.invoice.42", b"")
        revision, signals = await next_signals(watcher)
    assert signals == {"_stream": {"invoice_42": revision}}


async def test_a_foreign_payload_is_re_encoded_or_dropped(broker: Broker) -> None:
    transport = broker.transport
    async with broker.watch(["a:1"]) as watcher:
        await transport.publish("streamui.scope.a.1", b'{ "x" :\n [1, 2] }')
        revision, signals = await next_signals(watcher)
        assert signals == {"_stream": {"a_1": revision}, "_streamData": {"a_1": {"x": [1, 2]}}}
        # Not JSON (here: an attempt to inject another SSE event): the invalidation
        # still counts, the payload does not reach the stream.
        await transport.publish("streamui.scope.a.1", b"1\n\nevent: datastar-patch-elements\n")
        frame = await next_frame(watcher)
    (event,) = parse_events(frame)
    assert event.id is not None
    assert event.signals == {"_stream": {"a_1": revision_of(event.id)}}


# -- validation: a bad call sends nothing ------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("invoice.42", r"character '\.' at position 7"),
        ("invoice 42", "character ' ' at position 7"),
        ("", "needs at least one segment"),
        ("invoices:*", "an invalidated scope must be concrete"),
        ("workspace:>", "an invalidated scope must be concrete"),
    ],
)
async def test_invalidate_refuses_a_bad_scope_and_sends_nothing(
    broker: Broker, recording_transport: RecordingTransport, value: str, message: str
) -> None:
    async with broker.watch([">"]) as watcher:
        with pytest.raises(InvalidScopeError, match=message):
            await broker.invalidate(value)
        with pytest.raises(InvalidScopeError, match=message):
            await broker.invalidate_many(["a:1", value, "b:1"])
        with pytest.raises(InvalidScopeError, match=message):
            broker.invalidate_threadsafe("a:1", value)
        assert recording_transport.published == []
        assert not watcher.ready


async def test_invalidate_many_refuses_a_single_string(
    broker: Broker, recording_transport: RecordingTransport
) -> None:
    with pytest.raises(TypeError, match=r"iterable of scopes, not the str 'a:1'.*use invalidate"):
        await broker.invalidate_many("a:1")
    assert recording_transport.published == []


async def test_watch_refuses_a_bad_scope(broker: Broker) -> None:
    with pytest.raises(InvalidScopeError, match="'>' at position 0 must be the last"):
        broker.watch(["a:1", ">:a"])
    assert counts(broker) == (0, 0)
    assert broker.watcher_count == 0


async def test_the_prefix_names_the_subjects(recording_transport: RecordingTransport) -> None:
    async with Broker(recording_transport, prefix="webx.scope") as broker:
        assert broker.prefix == "webx.scope"
        async with broker.watch(["invoice:42"]) as watcher:
            await broker.invalidate("invoice:42", data=[1])
            await next_signals(watcher)
    assert recording_transport.published == [("webx.scope.invoice.42", b"[1]")]


async def test_brokers_with_other_prefixes_do_not_hear_each_other() -> None:
    shared = InProcessTransport()
    go_style, ours = Broker(shared, prefix="webx.scope"), Broker(shared)
    async with go_style, ours, go_style.watch(["invoice:42", "sentinel"]) as watcher:
        await ours.invalidate("invoice:42")
        await go_style.invalidate("sentinel")
        revision, signals = await next_signals(watcher)
    assert signals == {"_stream": {"sentinel": revision}}


@pytest.mark.parametrize("prefix", ["", "webx.*", "webx.>", "webx..scope", "webx scope"])
def test_a_bad_prefix_is_refused(prefix: str) -> None:
    with pytest.raises(InvalidScopeError, match="invalid subject prefix"):
        Broker(prefix=prefix)


# -- one upstream subscription per distinct pattern -------------------------------------------


async def test_subscriptions_are_shared_and_reference_counted(any_broker: Broker) -> None:
    broker = any_broker
    assert counts(broker) == (0, 0)
    async with broker.watch(["a:1", "b:*", "a:1"]) as first:
        assert counts(broker) == per_pattern(broker, 2)
        async with broker.watch(["a:1", "c:>"]) as second:
            assert counts(broker) == per_pattern(broker, 3)
            async with broker.watch(["b:*"]):
                assert counts(broker) == per_pattern(broker, 3)
            assert counts(broker) == per_pattern(broker, 3)
            await broker.invalidate("a:1")
            first_revision, _ = await next_signals(first)
            second_revision, _ = await next_signals(second)
            assert first_revision == second_revision
        assert counts(broker) == per_pattern(broker, 2)
    assert counts(broker) == (0, 0)
    assert broker.watcher_count == 0
    assert not broker._trie


async def test_a_watch_that_raises_releases_its_subscriptions(any_broker: Broker) -> None:
    broker = any_broker
    held: list[tuple[int, int]] = []

    async def stream() -> None:
        async with broker.watch(["a:1", "b:*"]):
            held.append(counts(broker))
            raise LookupError("in the stream")

    with pytest.raises(LookupError, match="in the stream"):
        await stream()
    assert held == [per_pattern(broker, 2)]
    assert counts(broker) == (0, 0)


async def test_a_cancelled_stream_releases_its_subscriptions(any_broker: Broker) -> None:
    broker = any_broker
    entered = asyncio.Event()

    async def stream() -> None:
        async with broker.watch(["a:1", "b:*"]) as watcher:
            entered.set()
            await watcher.wait()
            raise AssertionError("nothing was invalidated")

    async with broker.watch(["a:1"]):
        task = asyncio.create_task(stream())
        await wait_for(entered)
        assert counts(broker) == per_pattern(broker, 2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert counts(broker) == per_pattern(broker, 1)
    assert counts(broker) == (0, 0)


class GatedTransport(SharedBus):
    """Subscribing waits for `gate`: lets a test act while a subscription is in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.subscribing = asyncio.Event()

    async def subscribe(self, pattern: str, handler: MessageHandler) -> Subscription:
        self.subscribing.set()
        await self.gate.wait()
        return await super().subscribe(pattern, handler)


async def test_a_stream_cancelled_while_subscribing_leaks_nothing() -> None:
    transport = GatedTransport()
    async with Broker(transport, upstream="watched") as broker:
        task = asyncio.create_task(broker.watch(["a:1"]).__aenter__())
        await wait_for(transport.subscribing)
        assert broker.pattern_count == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        transport.gate.set()
        assert counts(broker) == (0, 0)
        # The pattern can be watched again afterwards.
        async with broker.watch(["a:1"]) as watcher:
            await broker.invalidate("a:1")
            await next_signals(watcher)
        assert counts(broker) == (0, 0)


async def test_cancelling_one_subscribing_stream_does_not_cancel_another() -> None:
    transport = GatedTransport()
    async with Broker(transport, upstream="watched") as broker:
        first = asyncio.create_task(broker.watch(["a:1"]).__aenter__())
        await wait_for(transport.subscribing)
        second_entered = asyncio.Event()

        async def second_stream() -> int:
            async with broker.watch(["a:1"]) as watcher:
                second_entered.set()
                revision, _ = await next_signals(watcher)
                return revision

        second = asyncio.create_task(second_stream())
        await asyncio.sleep(0)  # one step: the second stream joins the pending subscription
        assert broker.watcher_count == 2
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        transport.gate.set()
        entered = asyncio.ensure_future(second_entered.wait())
        try:
            await asyncio.wait([second, entered], timeout=WAIT, return_when="FIRST_COMPLETED")
            assert not second.cancelled(), "the second stream died of a cancellation it never got"
            assert second_entered.is_set()
            await broker.invalidate("a:1")
            assert await asyncio.wait_for(second, WAIT) > 0
        finally:
            entered.cancel()
            second.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await second


# -- resume and catch-up ------------------------------------------------------------------------


async def test_resume_pushes_every_scope_once(broker: Broker) -> None:
    before = broker.revision
    async with broker.watch(["a:1", "b:*", "c:>"], resume=True) as watcher:
        revision, signals = await next_signals(watcher)
        assert signals == {"_stream": {"a_1": revision, "b_WILD": revision, "c_REST": revision}}
        assert revision > before
        assert not watcher.ready


async def test_catch_up_pushes_what_changed_since_the_render(clock: FakeClock) -> None:
    async with Broker() as broker:
        clock.advance(1)
        await broker.invalidate("invoice:42")  # before the render: already in the page
        rendered_at = clock.advance(1)
        clock.advance(1)
        for value in ("invoice:43", "invoices:7", "elsewhere:1"):
            await broker.invalidate(value)
        clock.advance(1)
        watched = ["invoice:42", "invoice:43", "invoices:*", "customer:1"]
        async with broker.watch(watched, rendered_at=rendered_at) as watcher:
            revision, signals = await next_signals(watcher)
            assert signals == {"_stream": {"invoice_43": revision, "invoices_WILD": revision}}
            assert not watcher.ready


async def test_catch_up_pushes_nothing_when_nothing_changed(clock: FakeClock) -> None:
    async with Broker() as broker:
        await broker.invalidate("invoice:42")
        rendered_at = clock.advance(1)
        clock.advance(5)
        async with broker.watch(["invoice:42", "invoices:*"], rendered_at=rendered_at) as watcher:
            assert not watcher.ready
            assert watcher.take() == b""
            await broker.invalidate("invoice:42")
            revision, signals = await next_signals(watcher)
            assert signals == {"_stream": {"invoice_42": revision}}


async def test_a_render_from_long_ago_gets_exactly_what_changed(clock: FakeClock) -> None:
    # A tab hidden (or offline) for ten minutes, or a day: the index still knows.
    async with Broker() as broker:
        rendered_at = clock.advance(1)
        clock.advance(86_400)
        await broker.invalidate("b:7")
        clock.advance(600)
        async with broker.watch(["a:1", "b:*"], rendered_at=rendered_at) as watcher:
            revision, signals = await next_signals(watcher)
            assert signals == {"_stream": {"b_WILD": revision}}
        async with broker.watch(["a:1", "b:3"], rendered_at=rendered_at) as watcher:
            assert not watcher.ready
    assert broker.catch_ups == {"exact": 2}


async def test_a_resume_from_an_own_event_id_is_exact(broker: Broker) -> None:
    async with broker.watch(["a:1", "b:*"]) as watcher:
        await broker.invalidate("b:2")
        frame = await next_frame(watcher)
    (event,) = parse_events(frame)
    assert event.id == broker.event_id(revision_of(event.id))
    # Back with the id of the last event it saw: nothing new, nothing pushed again.
    async with broker.watch(["a:1", "b:*"], after=event.id) as watcher:
        assert not watcher.ready
        assert watcher.opening_id == event.id
        await broker.invalidate("a:1")
        revision, signals = await next_signals(watcher)
        assert signals == {"_stream": {"a_1": revision}}
    # From the event before it: exactly that one change.
    earlier = broker.event_id(revision_of(event.id) - 1)
    async with broker.watch(["a:1", "b:*"], after=earlier) as watcher:
        revision, signals = await next_signals(watcher)
        assert signals == {"_stream": {"a_1": revision, "b_WILD": revision}}
    assert broker.catch_ups == {"exact": 2}


async def test_an_id_from_another_process_reaches_back_the_clock_margin(clock: FakeClock) -> None:
    async with Broker(SharedBus()) as broker:
        clock.advance(2)  # (a point within the margin of the start would get everything)
        await broker.invalidate("a:1")
        seen_at = clock.advance(0.5)  # the other process's event, half a second later
        clock.advance(5)
        await broker.invalidate("b:1")
        foreign = f"{int(seen_at * 1000)}-0badc0de"
        async with broker.watch(["a:1", "b:1", "c:1"], after=foreign) as watcher:
            revision, signals = await next_signals(watcher)
    # a:1 came half a second before: within the skew allowed between two clocks.
    assert signals == {"_stream": {"a_1": revision, "b_1": revision}}
    assert streamui.broker.CLOCK_MARGIN == 1.0
    assert broker.catch_ups == {"exact": 1}


async def test_a_resumed_stream_that_drops_before_its_first_event_is_owed_it_again(
    broker: Broker,
) -> None:
    await broker.invalidate("a:1")
    async with broker.watch(["a:1", "b:1"], resume=True) as watcher:
        opening = watcher.opening_id
        assert watcher.ready  # everything, pushed but never read: the tab dropped
    async with broker.watch(["a:1", "b:1"], after=opening) as watcher:
        revision, signals = await next_signals(watcher)
    assert signals == {"_stream": {"a_1": revision, "b_1": revision}}
    assert broker.catch_ups == {"resume": 1, "everything": 1}


async def test_the_opening_id_owes_what_the_catch_up_pushed(clock: FakeClock) -> None:
    async with Broker() as broker:
        rendered_at = clock.advance(1)
        clock.advance(1)
        await broker.invalidate("a:1")
        async with broker.watch(["a:1", "b:1"], rendered_at=rendered_at) as watcher:
            assert watcher.ready
            opening = watcher.opening_id
        # The tab dropped before reading the catch-up: resuming from the opening id
        # pushes it again, and only it.
        async with broker.watch(["a:1", "b:1"], after=opening) as watcher:
            revision, signals = await next_signals(watcher)
        assert signals == {"_stream": {"a_1": revision}}


async def test_after_a_transport_reconnect_older_points_get_every_scope(clock: FakeClock) -> None:
    async with Broker() as broker:
        rendered_at = clock.advance(1)
        clock.advance(1)
        broker._resync()  # what the transport calls after its link came back
        clock.advance(1)
        async with broker.watch(["a:1"], rendered_at=rendered_at) as watcher:
            revision, signals = await next_signals(watcher)
        assert signals == {"_stream": {"a_1": revision}}
        async with broker.watch(["a:1"], rendered_at=clock.advance(1)) as watcher:
            assert not watcher.ready
    assert broker.catch_ups == {"everything": 1, "exact": 1}


async def test_watched_upstream_is_exact_only_for_patterns_subscribed_before_the_point(
    clock: FakeClock,
) -> None:
    async with Broker(SharedBus(), upstream="watched") as broker:
        clock.advance(1)
        async with broker.watch(["a:1"]):
            rendered_at = clock.advance(5)  # later than the margin after a:1's subscription
            clock.advance(5)
            async with broker.watch(["a:1", "b:1"], rendered_at=rendered_at) as watcher:
                # a:1 was covered all along (nothing changed); b:1 is new here.
                revision, signals = await next_signals(watcher)
    assert signals == {"_stream": {"b_1": revision}}
    assert broker.catch_ups == {"everything": 1}


@pytest.mark.parametrize("after", ["", "12a", "-1", "1" * 17, "12-", "12-a.b", "12-" + "a" * 33])
async def test_watch_refuses_a_point_that_is_not_an_event_id(broker: Broker, after: str) -> None:
    with pytest.raises(ValueError, match="not an event id"):
        broker.watch(["a:1"], after=after)
    with pytest.raises(ValueError, match="at most one of"):
        broker.watch(["a:1"], after="12", resume=True)


def test_upstream_is_checked() -> None:
    with pytest.raises(ConfigurationError, match="upstream must be 'all' or 'watched', got 'some'"):
        Broker(upstream="some")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="upstream='watched' is for a transport shared"):
        Broker(upstream="watched")


async def test_a_render_before_the_broker_started_gets_every_scope(clock: FakeClock) -> None:
    # E.g. the process restarted between the render and the connect: it cannot know
    # what changed in between.
    rendered_at = clock.now
    clock.advance(1)
    async with Broker() as broker, broker.watch(["a:1"], rendered_at=rendered_at) as watcher:
        revision, signals = await next_signals(watcher)
    assert signals == {"_stream": {"a_1": revision}}


async def test_catch_up_pushes_everything_once_the_log_forgot(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = len("other:0") + streamui.broker._RECENT_ENTRY_OVERHEAD
    monkeypatch.setattr(streamui.broker, "_RECENT_BUDGET", 3 * entry)
    async with Broker() as broker:
        rendered_at = clock.advance(1)
        for number in range(5):
            clock.advance(1)
            await broker.invalidate(f"other:{number}")
        async with broker.watch(["a:1"], rendered_at=rendered_at) as watcher:
            revision, signals = await next_signals(watcher)
    assert signals == {"_stream": {"a_1": revision}}


# -- other threads and sync code ---------------------------------------------------------------


async def test_invalidate_threadsafe_from_a_plain_thread(
    broker: Broker, recording_transport: RecordingTransport
) -> None:
    errors: list[tuple[int, Exception]] = []
    results: list[Any] = []

    def worker() -> None:
        calls: list[Callable[[], object]] = [
            lambda: broker.invalidate_threadsafe("invoice 42"),
            lambda: broker.invalidate_threadsafe("invoice:*"),
            lambda: broker.invalidate_threadsafe("invoice:42", data=object()),
        ]
        for call in calls:
            try:
                call()
            except (InvalidScopeError, TypeError) as error:
                errors.append((threading.get_ident(), error))
        results.append(broker.invalidate_threadsafe("invoice:42", "other:1", data={"n": 1}))

    async with broker.watch(["invoice:42"]) as watcher:
        thread = threading.Thread(target=worker)
        thread.start()
        await asyncio.to_thread(thread.join, WAIT)
        assert not thread.is_alive()
        revision, signals = await next_signals(watcher)
        assert signals == {
            "_stream": {"invoice_42": revision},
            "_streamData": {"invoice_42": {"n": 1}},
        }
    # Validation ran in the caller's thread, so the caller saw the errors.
    assert [type(error) for _, error in errors] == [InvalidScopeError, InvalidScopeError, TypeError]
    assert {ident for ident, _ in errors} == {thread.ident}
    (future,) = results
    await asyncio.wrap_future(future)
    assert recording_transport.published == [
        ("streamui.scope.invoice.42", b'{"n":1}'),
        ("streamui.scope.other.1", b'{"n":1}'),
    ]


async def test_invalidate_threadsafe_from_sync_code_on_the_loop(broker: Broker) -> None:
    async with broker.watch(["a:1"]) as watcher:
        future = broker.invalidate_threadsafe("a:1")
        revision, signals = await next_signals(watcher)
        await asyncio.wrap_future(future)
    assert signals == {"_stream": {"a_1": revision}}


# -- lifecycle -------------------------------------------------------------------------------------


async def test_using_a_broker_before_start_is_an_error() -> None:
    broker = Broker()
    message = r"not started; use 'async with Broker\(\) as broker:'"
    assert issubclass(BrokerStateError, RuntimeError)
    with pytest.raises(BrokerStateError, match=message):
        await broker.invalidate("a:1")
    with pytest.raises(BrokerStateError, match=message):
        await broker.invalidate_many(["a:1"])
    with pytest.raises(BrokerStateError, match=message):
        broker.invalidate_threadsafe("a:1")
    with pytest.raises(BrokerStateError, match=message):
        async with broker.watch(["a:1"]):
            pass
    assert broker.watcher_count == 0


async def test_using_a_broker_after_close_is_an_error() -> None:
    async with Broker() as broker:
        await broker.start()  # starting twice is harmless
    with pytest.raises(BrokerStateError, match="the Broker is closed"):
        await broker.invalidate("a:1")
    with pytest.raises(BrokerStateError, match="the Broker is closed"):
        broker.invalidate_threadsafe("a:1")
    with pytest.raises(BrokerStateError, match="the Broker is closed"):
        async with broker.watch(["a:1"]):
            pass
    await broker.close()  # closing twice is harmless


def test_a_broker_refuses_callers_on_another_event_loop() -> None:
    """A broker started on one loop (a test client's thread) used from another (the
    test's): a clear error, not a broker whose state two threads change at once."""
    import threading

    broker = Broker()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(broker.start(), loop).result(WAIT)

        async def from_another_loop() -> None:
            with pytest.raises(BrokerStateError, match=r"another event loop.*threadsafe"):
                await broker.invalidate("a:1")
            with pytest.raises(BrokerStateError, match="another event loop"):
                async with broker.watch(["a:1"]):
                    pass
            # The way across threads still works.
            await asyncio.wrap_future(broker.invalidate_threadsafe("a:1"))

        asyncio.run(from_another_loop())
        assert broker.watcher_count == 0
    finally:
        asyncio.run_coroutine_threadsafe(broker.close(), loop).result(WAIT)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(WAIT)
        loop.close()


@pytest.mark.parametrize("upstream", ["all", "watched"])
async def test_a_closed_broker_starts_again_as_new(upstream: Upstream) -> None:
    """An app's lifespan may run twice in a process (a module-level app served by each
    test): the broker it holds starts again and streams as before."""
    transport = InProcessTransport() if upstream == "all" else SharedBus()
    broker = Broker(transport, upstream=upstream)
    await broker.start()
    stale = broker.watch(["a:1"])
    await stale.__aenter__()
    await broker.invalidate("a:1")  # queued for a flush the close pre-empts
    await broker.close()
    await broker.start()
    async with broker.watch(["a:*"]) as watcher:
        await stale.__aexit__(None, None, None)  # the old run's watch leaves late
        assert broker.pattern_count == 1
        await broker.invalidate("a:2")
        await asyncio.wait_for(watcher.wait(), 5)
        assert watcher.keys == ("a_WILD",)
        assert b'"a_WILD"' in watcher.take()
    assert broker.watcher_count == 0
    assert broker.pattern_count == 0
    await broker.close()


@pytest.mark.parametrize("upstream", ["all", "watched"])
async def test_close_ends_every_watcher_and_drops_every_subscription(upstream: Upstream) -> None:
    transport = InProcessTransport() if upstream == "all" else SharedBus()
    broker = Broker(transport, upstream=upstream)
    await broker.start()
    async with broker.watch(["a:1"]) as first, broker.watch(["b:*", "a:1"]) as second:
        woken = asyncio.create_task(first.wait())
        assert counts(broker) == per_pattern(broker, 2)
        await broker.close()
        async with asyncio.timeout(WAIT):
            await woken
        assert first.closed
        assert second.closed
        assert second.ready
        assert (broker.pattern_count, transport.subscription_count) == (0, 0)
    assert (broker.pattern_count, transport.subscription_count) == (0, 0)


async def test_end_streams_closes_watchers_and_keeps_the_broker_running(broker: Broker) -> None:
    async with broker.watch(["a:1"]) as first, broker.watch(["b:*"]) as second:
        broker.end_streams()
        assert first.closed
        assert second.closed
        assert second.ready
    assert counts(broker) == (0, 0)
    # New streams (the browsers reconnecting) are served as before.
    async with broker.watch(["a:1"]) as watcher:
        assert not watcher.closed
        await broker.invalidate("a:1")
        revision, signals = await next_signals(watcher)
    assert signals == {"_stream": {"a_1": revision}}


async def test_heartbeats_are_comments_after_the_pending_event(broker: Broker) -> None:
    async with broker.watch(["a:1"]) as watcher:
        watcher.heartbeat()
        assert await next_frame(watcher) == b": keep-alive\n\n"
        await broker.invalidate("a:1")
        await asyncio.sleep(0)  # the watchers of a pattern are marked in the next turn
        watcher.heartbeat()
        events = parse_events(await next_frame(watcher))
    assert [event.event for event in events] == ["datastar-patch-signals", None]
    assert events[1].comments == ("keep-alive",)


# -- a stateful test against a plain model ---------------------------------------------------------

_PATTERNS = st.lists(st.sampled_from(["a", "b", "*"]), min_size=1, max_size=3).map(
    ":".join
) | st.sampled_from([">", "a:>", "b:>"])
_CONCRETE = st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3).map(":".join)


class BrokerMachine(RuleBasedStateMachine):
    """Watch, invalidate, take and unwatch at random; compare with a dict model.

    Each rule drives the broker on one event loop of its own (``asyncio.Runner``).
    """

    watchers = Bundle("watchers")

    def __init__(self) -> None:
        super().__init__()
        self.runner = asyncio.Runner()
        self.transport = InProcessTransport()
        self.broker = Broker(self.transport)
        self.runner.run(self.broker.start())
        self.next_id = 0
        self.open: dict[int, tuple[AbstractAsyncContextManager[Watcher], Watcher]] = {}
        self.scopes: dict[int, tuple[str, ...]] = {}
        self.pending: dict[int, set[str]] = {}
        self.data: dict[int, dict[str, object]] = {}
        self.revisions: dict[int, int] = {}

    @rule(target=watchers, scopes=st.lists(_PATTERNS, min_size=1, max_size=3), resume=st.booleans())
    def watch(self, scopes: list[str], resume: bool) -> int:
        block = self.broker.watch(scopes, resume=resume)
        watcher = self.runner.run(block.__aenter__())
        number = self.next_id
        self.next_id += 1
        self.open[number] = (block, watcher)
        self.scopes[number] = tuple(dict.fromkeys(scopes))
        self.pending[number] = {scope_key(value) for value in scopes} if resume else set()
        self.data[number] = {}
        self.revisions[number] = 0
        return number

    @rule(number=consumes(watchers))
    def unwatch(self, number: int) -> None:
        block, watcher = self.open.pop(number)
        self.runner.run(block.__aexit__(None, None, None))
        assert watcher.closed

    @rule(concrete=st.lists(_CONCRETE, min_size=1, max_size=3), data=st.none() | st.integers(0, 3))
    def invalidate(self, concrete: list[str], data: int | None) -> None:
        self.runner.run(self.broker.invalidate_many(concrete, data=data))
        for number in self.open:
            for pattern in self.scopes[number]:
                wildcard = {"*", ">"} & set(pattern.split(":"))
                for value in concrete:
                    if not nats_matches(pattern.split(":"), value.split(":")):
                        continue
                    key = scope_key(pattern)
                    self.pending[number].add(key)
                    if data is not None:
                        # The last one wins; a wildcard's data names its scope.
                        self.data[number][key] = (
                            {"scope": value, "data": data} if wildcard else data
                        )

    @rule(number=watchers)
    def take(self, number: int) -> None:
        if number not in self.open:  # a watcher may be drawn again after being consumed
            return
        _, watcher = self.open[number]
        assert watcher.ready == bool(self.pending[number])
        frame = watcher.take()
        if not self.pending[number]:
            assert frame == b""
            return
        (event,) = parse_events(frame)
        assert event.id is not None
        revision = revision_of(event.id)
        assert revision > self.revisions[number]
        expected: dict[str, object] = {"_stream": dict.fromkeys(self.pending[number], revision)}
        if self.data[number]:
            expected["_streamData"] = self.data[number]
        assert event.signals == expected
        self.revisions[number] = revision
        self.pending[number] = set()
        self.data[number] = {}

    @invariant()
    def one_subscription_per_distinct_watched_pattern(self) -> None:
        distinct = {value for number in self.open for value in self.scopes[number]}
        assert self.broker.pattern_count == len(distinct)
        assert self.transport.subscription_count == 1
        assert self.broker.watcher_count == len(self.open)

    def teardown(self) -> None:
        try:
            for block, _ in self.open.values():
                self.runner.run(block.__aexit__(None, None, None))
            assert self.broker.pattern_count == 0
            assert self.transport.subscription_count == 1
            self.runner.run(self.broker.close())
        finally:
            self.runner.close()


TestBrokerAgainstModel = BrokerMachine.TestCase
TestBrokerAgainstModel.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)


def test_frames_parse_as_json() -> None:
    # Guards the helper the tests above rely on: the signals line is plain JSON.
    frame = b'event: datastar-patch-signals\nid: 7\ndata: signals {"_stream":{"a":7}}\n\n'
    (event,) = parse_events(frame)
    assert event.signals == json.loads('{"_stream":{"a":7}}')


# -- revisions ahead of the clock --------------------------------------------------------


async def test_a_page_rendered_after_a_storm_is_not_pushed_what_it_showed(
    clock: FakeClock,
) -> None:
    # More than 1,000 invalidations a second run the revisions ahead of the clock: a
    # page rendered a millisecond later has a render time smaller than their revisions.
    async with Broker() as broker:
        await broker.invalidate("a:1")
        for number in range(3000):
            await broker.invalidate(f"other:{number}")
        assert broker.revision > clock.now * 1000 + 2000
        rendered = clock.advance(0.001)
        async with broker.watch(["a:1", "other:*"], rendered_at=rendered) as watcher:
            await asyncio.sleep(0)
            assert not watcher.ready
            assert broker.catch_ups == {"exact": 1}
            await broker.invalidate("a:1")  # after the render: pushed, alone
            revision, signals = await next_signals(watcher)
            assert signals == {"_stream": {"a_1": revision}}
        # Rendered within the storm's millisecond, a page may have missed the rest of it.
        async with broker.watch(["other:*"], rendered_at=rendered - 0.001) as during:
            revision, signals = await next_signals(during)
            assert signals == {"_stream": {"other_WILD": revision}}


async def test_what_is_remembered_of_revisions_ahead_of_the_clock_is_bounded(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(streamui.broker, "_AHEAD_ENTRIES", 4)
    async with Broker() as broker:
        first_ms = clock.now
        for _ in range(20):
            for number in range(3):
                await broker.invalidate(f"a:{number}")
            clock.advance(0.001)
            assert len(broker._ahead) <= 8
        # A point older than what is remembered: pushed (it cannot be told apart).
        async with broker.watch(["a:0"], rendered_at=first_ms + 0.001) as early:
            await asyncio.sleep(0)
            assert early.ready
        # A recent one is told apart.
        async with broker.watch(["a:0"], rendered_at=clock.now) as recent:
            await asyncio.sleep(0)
            assert not recent.ready


async def test_a_watch_is_entered_once(broker: Broker) -> None:
    """`broker.watch()` is the watcher itself; a second ``async with`` would subscribe it twice."""
    watch = broker.watch(["a:1"])
    async with watch:
        with pytest.raises(RuntimeError, match="entered once"):
            await watch.__aenter__()
    assert broker.watcher_count == 0
