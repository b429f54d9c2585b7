"""The broker: publishes invalidations and fans them out to the streams of this process.

Guarantees:

- ``invalidate`` validates before anything is sent (a bad scope loses nothing and sends
  nothing) and returns once the transport has accepted the message.
- Upstream, by default (``upstream="all"``), one subscription to every scope of the
  prefix, taken at `start`: the broker sees every invalidation from then on, which is
  what makes catch-up exact (below). Locally a subject trie finds the patterns a message
  matches, so fan-out of one message costs O(streams watching a matching pattern).
  With ``upstream="watched"`` (for very high invalidation rates over NATS) it holds one
  upstream subscription per distinct watched pattern instead, shared by every stream
  watching it and dropped when the last one ends; catch-up is then exact only for
  patterns subscribed before the point it starts from. Streams never touch the transport.
- Each stream's state is one small `Watcher`: the set of keys changed since its last
  write, the payloads of those changes, and the largest revision. Memory per stream is
  bounded by the number of scopes it watches (times ``max_data_bytes`` for payloads),
  whatever the client's read speed; changes that arrive while a write is in flight
  coalesce into the next frame.
- Memory is bounded by bytes, not only counts: the shared frame cache keeps at most
  4 MiB (oldest frames go first; a single larger frame is kept alone), the index of the
  last invalidation of each scope at most 2 MiB (what it forgets falls back to pushing
  every scope).
- ``data`` is at most ``max_data_bytes`` of JSON (64 KiB by default): `invalidate`
  raises `PayloadTooLargeError` and sends nothing; a larger payload received from the
  transport is logged at WARNING and delivered as a plain invalidation.
- Revisions increase strictly within a broker and are seeded from the wall clock in
  milliseconds, so a reconnected tab (possibly served by another process) still sees a
  larger value than the one it has. Event ids are ``<revision>-<broker id>``.
- Exact catch-up. A stream starts from a point: the render of its page, or an event id
  (``Last-Event-ID``, or streamui's ``since``). It is pushed exactly the scopes
  invalidated after that point: none if nothing changed. From an id of this broker the
  point is exact; from a render time or another process's id it reaches back
  `CLOCK_MARGIN` (clock skew between machines) unless the transport is in-process. Where
  the broker cannot know (a point before it started or before the transport's last
  reconnect, or older than what its index remembers), it pushes every scope, and counts
  it in ``catch_ups["everything"]``.
- Everything except `invalidate_threadsafe` must be called on the broker's event loop.

- Counters for metrics (`streamui.metrics` exports them): plain ints and Counters on
  the broker, bumped on the hot path once per flush or per write, never read there.

Not guaranteed: delivery to a tab that is disconnected; the catch-up above replaces it.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
import random
import re
import reprlib
import secrets
import time
from collections import Counter, OrderedDict
from typing import TYPE_CHECKING, Final, Literal, Protocol, TypeAlias, cast, get_args

from datastar_py import ServerSentEventGenerator

from streamui.errors import (
    BrokerStateError,
    ConfigurationError,
    PayloadTooLargeError,
    RefusalKind,
)
from streamui.lag import LagHistogram
from streamui.scopes import (
    DATA_NAMESPACE,
    DEFAULT_PREFIX,
    SIGNAL_NAMESPACE,
    is_pattern,
    scope_key,
    scope_matches,
    scope_subject,
    validate_prefix,
    validate_scope,
)
from streamui.transports import InProcessTransport, SubjectTrie, Subscription, Transport

if TYPE_CHECKING:
    import concurrent.futures
    from collections.abc import Callable, Iterable, Sequence
    from types import TracebackType
    from typing import Self

__all__ = ["CLOCK_MARGIN", "POINT", "REFUSALS", "Broker", "Refusal", "Upstream", "Watcher"]

logger = logging.getLogger("streamui.broker")

Upstream: TypeAlias = Literal["all", "watched"]
"""What a broker subscribes to upstream: every scope of its prefix, or only what its
streams watch (see `Broker`)."""

Refusal: TypeAlias = RefusalKind | Literal["unavailable"]
"""Why a stream was refused before it opened (`Broker.note_refused`): the stream
endpoint's `RefusalKind` (a 4xx), or ``"unavailable"`` (the 503 when subscribing
failed)."""
REFUSALS: Final[tuple[Refusal, ...]] = (*get_args(RefusalKind), "unavailable")

_RECENT_BUDGET: Final = 2 * 1024 * 1024
"""Bytes of the index of recently invalidated scopes (the last revision of each), for
catch-up: about 11,000 short scopes, 5,000 of the longest (an entry costs its scope's
length plus `_RECENT_ENTRY_OVERHEAD`)."""
_RECENT_ENTRY_OVERHEAD: Final = 160
"""Bytes an entry of the index costs besides its scope's characters (str and int objects,
ordered-dict slots; ~150 measured with tracemalloc)."""
CLOCK_MARGIN: Final = 1.0
"""Seconds of clock skew tolerated between the process that rendered a page (or served
its last event) and the one that streams it; a catch-up from another clock reaches back
this far, so an invalidation in that second before the point is pushed again."""
POINT: Final = re.compile(r"([0-9]{1,16})(?:-([0-9A-Za-z_-]{1,32}))?")
"""A point to catch up from: an event id (``<revision>-<broker id>``), or a time in ms
(digits, optionally followed by ``-<process instance>`` that names its clock)."""
_FRAME_BUDGET: Final = 4 * 1024 * 1024
"""Bytes of built frames kept for sharing between streams: some 11,000 plain events, or
a few dozen carrying ~64 KiB of data each (a frame is shared only around its revision)."""
_FRAME_ENTRY_OVERHEAD: Final = 256
"""Bytes a cached frame costs besides its length (its key tuple, bytes header, dict slot)."""
_DEFAULT_MAX_DATA_BYTES: Final = 65_536
_AHEAD_ENTRIES: Final = 4096
"""Milliseconds in which revisions ran ahead of the clock that are remembered (~100 bytes
each): a page rendered longer ago than that, during a storm of more than 1,000
invalidations a second, may be pushed scopes invalidated just before it."""
_MIN_RECONNECT: Final = 1.0
"""Seconds: the shortest reconnect delay `Broker.end_streams` asks for (Datastar's default)."""


def _now() -> float:
    return time.time()


def _first(pair: tuple[int, int]) -> int:
    return pair[0]


class StreamWriter(Protocol):
    """What `Watcher.attach` takes: the stream's writer (`streamui.stream.EventStream`)."""

    def kick(self) -> None:
        """Write what the watcher has ready (`Watcher.take`), or complete the body if
        it was closed."""

    def write(self, frame: bytes) -> bool:
        """Write *frame* now; False if it cannot (a write is in flight)."""


class _Pattern:
    """A watched pattern, the streams watching it, and (``upstream="watched"``) its own
    upstream subscription."""

    __slots__ = (
        "covered_from",
        "data",
        "key",
        "merged",
        "queued",
        "revision",
        "since",
        "subscribing",
        "subscription",
        "watchers",
        "wildcard",
    )

    def __init__(self, key: str, wildcard: bool) -> None:
        self.key = key
        self.wildcard = wildcard
        self.watchers: set[Watcher] = set()
        self.subscription: Subscription | None = None
        # The transport call runs in a task of its own, which every watcher awaits
        # through a shield: cancelling one waiting stream never cancels the others.
        self.subscribing: asyncio.Task[None] | None = None
        self.covered_from = _NEVER
        """upstream="watched": the first revision from which every invalidation it
        matches is known here (with "all", the broker's own ``_complete_from``)."""
        # What changed since the last `flush`: the newest revision, and the newest
        # payload with the revision that carried it.
        self.revision = 0
        self.data: tuple[int, bytes] | None = None
        self.queued = False
        # For the metrics: when the oldest invalidation not yet flushed was sent (Unix
        # time, 0.0 if unknown), and how many more joined it before the flush.
        self.since = 0.0
        self.merged = 0

    def deliver(self, concrete: str, revision: int, payload: bytes, sent_at: float) -> bool:
        """Record an invalidation sent at *sent_at* (0.0: unknown) (hot path: O(1),
        whatever the number of watchers); True if the pattern must now be queued for a
        `flush`. A wildcard's data says which scope it is for."""
        if not self.watchers:
            return False
        if payload:
            if self.wildcard:
                payload = b'{"scope":"%s","data":%s}' % (concrete.encode(), payload)
            self.data = (revision, payload)
        self.revision = revision
        if self.queued:
            self.merged += 1
            if not self.since:
                self.since = sent_at
            return False
        self.queued = True
        self.since = sent_at
        return True

    def flush(self, broker: Broker, *, alone: bool) -> None:
        """Mark every watcher with what was delivered since the last flush: a burst of
        invalidations in one event-loop turn marks each watcher once.

        *alone* (no other pattern has changes this turn): a watcher with nothing else
        to write is handed this pattern's frame, built once for all of them, by its
        attached ``write``; only the others are marked (the hot path of a fan-out).
        """
        self.queued = False
        key, revision, data, since = self.key, self.revision, self.data, self.since
        self.data = None
        frame = b""
        marked = 0
        for watcher in self.watchers:
            writer = watcher._writer
            if (  # (the last four: `not watcher.ready`, inlined on the hot path)
                alone
                and writer is not None
                and watcher._pending is None
                and watcher._extra is None
                and not watcher._heartbeat_due
                and not watcher.closed
            ):
                if not frame:
                    frame = broker._frame((key,), revision, {key: data} if data else None)
                if writer.write(frame):
                    if revision > watcher._revision:  # noqa: PLR1730 - a call less, hot path
                        watcher._revision = revision
                    continue
            marked += 1
            watcher.mark(key, revision, data, since)
        # The metrics, once per flush rather than per stream (the frames written are
        # counted from those marked: the loop above stays as it was without metrics).
        # Each stream was spared one frame per invalidation merged into this flush.
        written = len(self.watchers) - marked
        if self.merged:
            broker.changes_coalesced += self.merged * len(self.watchers)
            self.merged = 0
        if written:
            broker.frames_written += written
            if since:
                lagging = broker._lagging
                lagging[since] = lagging.get(since, 0) + written


_PACE_FROM: Final = 0.001
"""Seconds: a flush that took at least this long (writing to a hundred streams or more)
paces the next one when it is asked for in the same event-loop turn (see `_flush_soon`)."""

_NEVER: Final = 2**63
"""A revision no broker reaches: "not known from any point"."""


class Watcher:
    """The broker-side state of one stream: what changed since the last write.

    `Broker.watch` returns one; ``async with`` subscribes it (and marks what the
    stream is owed from its start) and unsubscribes it at the end.

    The stream's writer awaits `wait`, then calls `take` for the bytes to write. While
    the writer is busy (a write waiting on a slow client), changes join the next `take`:
    that is the coalescing, and it is why the fan-out costs a set insertion per stream.

    A writer may instead `attach` a callback: a change then calls it once per
    event-loop turn, from one broker callback for every such watcher, so a delivery
    needs no task of its own (the stream's writer steps its ``send`` right there).
    """

    __slots__ = (
        "_broker",
        "_data",
        "_extra",
        "_heartbeat_due",
        "_opening",
        "_pending",
        "_queued",
        "_revision",
        "_since",
        "_waiter",
        "_writer",
        "closed",
        "opening_id",
        "reconnect_after",
        "scopes",
    )

    def __init__(
        self,
        broker: Broker,
        scopes: tuple[str, ...],
        *,
        start: int | None = None,
        resume: bool = False,
    ) -> None:
        self._broker = broker
        self.scopes = scopes
        self._opening: tuple[int | None, bool] | None = (start, resume)
        """Where the catch-up starts, until the block is entered."""
        # Made on the first change after a take: an idle stream keeps neither.
        self._pending: set[str] | None = None
        self._data: dict[str, tuple[int, bytes]] | None = None
        self._revision = 0
        self._since = 0.0
        """When the oldest change not yet taken was sent (0.0: none, or unknown)."""
        self._heartbeat_due = False
        self._extra: list[bytes] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._writer: StreamWriter | None = None
        self._queued = False
        self.closed = False
        self.reconnect_after: int | None = None
        """Milliseconds the browser should wait before it reconnects (set on shutdown)."""
        self.opening_id = ""
        """The id for the stream's opening frame (set by the catch-up): a tab that resumes
        from it is pushed at least what this stream was pushed when it started."""

    async def __aenter__(self) -> Watcher:
        """Subscribe, and mark what the stream is owed from its start."""
        opening, self._opening = self._opening, None
        if opening is None:
            raise RuntimeError("a watch is entered once: call broker.watch() for another")
        start, resume = opening
        broker = self._broker
        await broker._attach(self)
        if start is not None:
            broker._catch_up(self, start)
        # Nothing to start from: nothing is owed (a plain watch), or everything is
        # (and a tab that resumes from the opening frame is owed everything again).
        elif resume:
            self.opening_id = broker.event_id(0)
            broker.catch_ups["resume"] += 1
            self.mark_all()
        else:
            self.opening_id = broker.event_id(broker.revision or broker.next_revision())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._broker._detach(self)

    def _wake(self) -> None:
        if self._writer is not None:
            if not self._queued:
                self._queued = True
                broker = self._broker
                broker._ready.append(self)
                if not broker._flush_due:
                    broker._flush_soon()
            return
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def attach(self, writer: StreamWriter | None) -> None:
        """Have *writer* called instead of waking `wait`: its ``kick()`` whenever there
        is something to `take` or the watcher closed (soon, once per event-loop turn,
        from the broker's one callback for every such watcher), and its
        ``write(frame)`` with a whole frame when one change is all there is to write
        (False has it marked instead). None detaches. Neither may raise."""
        self._writer = writer

    def mark(
        self,
        key: str,
        revision: int,
        data: tuple[int, bytes] | None = None,
        since: float = 0.0,
    ) -> None:
        """Record that *key* changed, last at *revision*; called by the broker's fan-out
        (hot path).

        *data*, if given, is the newest payload for *key* and the revision whose message
        carried it: the frame cache names payloads by (key, revision), so one revision
        has one payload per key. *since*, if given, is when the invalidation was sent
        (Unix time), for the lag metric.
        """
        pending = self._pending
        if pending is None:
            self._pending = {key}
        else:
            pending.add(key)
            self._broker.changes_coalesced += 1  # joins a frame the stream is owed already
        if data is not None:
            if self._data is None:
                self._data = {}
            self._data[key] = data
        if since and not self._since:
            self._since = since
        self._revision = max(self._revision, revision)
        self._wake()

    @property
    def keys(self) -> tuple[str, ...]:
        """The signal names of `scopes` (`scope_key`), in order."""
        return tuple(self._broker._keys(self))

    def mark_all(self, revision: int | None = None) -> None:
        """Push every scope once (resume after a disconnect, or a reconnect upstream)."""
        revision = revision or self._broker.next_revision()
        for key in self.keys:
            self.mark(key, revision)

    def heartbeat(self) -> None:
        self._heartbeat_due = True
        self._wake()

    def push(self, frame: bytes) -> None:
        """Write *frame* (a whole SSE event, e.g. renewed tokens) with the next write."""
        if self._extra is None:
            self._extra = []
        self._extra.append(frame)
        self._wake()

    def close(self, *, reconnect_after: int | None = None) -> None:
        """End the stream: its writer wakes, sees `closed` and returns.

        *reconnect_after* (ms), if given, is sent to the browser as the delay before it
        reconnects.
        """
        if not self.closed and reconnect_after is not None:
            self.reconnect_after = reconnect_after
        self.closed = True
        self._wake()

    @property
    def ready(self) -> bool:
        """True when `wait` would return at once (something to write, or closed)."""
        return bool(self._pending) or self._heartbeat_due or self.closed or bool(self._extra)

    async def wait(self) -> None:
        """Return when there is something to `take`, or the stream is closed."""
        if not self.ready:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None  # also when cancelled: nothing left to wake

    @property
    def revision(self) -> int:
        return self._revision

    def take(self) -> bytes:
        """The bytes to write now (pushed frames, a patch-signals event, a heartbeat),
        and reset."""
        frame = b""
        if self._extra:
            frame, self._extra = b"".join(self._extra), None
        if self._pending:
            broker = self._broker
            frame += broker._frame(tuple(sorted(self._pending)), self._revision, self._data)
            self._pending = self._data = None
            # Counted (and its lag observed) when the flush ends, or now outside one.
            broker._taken.append(self._since)
            self._since = 0.0
            if not broker._flushing:
                broker._observe_lag()
        if self._heartbeat_due:
            self._heartbeat_due = False
            frame += b": keep-alive\n\n"
        return frame


class Broker:
    """Publishes invalidations and serves this process's streams.

    ``Broker()`` uses the in-process transport (one process). For several processes or
    machines pass a NATS transport: ``Broker(NatsTransport(...))``. Use it as an async
    context manager, or call `start` and `close` (the Litestar plugin does it for you);
    a closed broker can be started again.

    *upstream* is what the broker subscribes to: ``"all"`` (the default) receives every
    invalidation of the prefix, which makes every catch-up exact; ``"watched"`` receives
    only the patterns its streams watch (one upstream subscription each), for
    deployments whose whole invalidation rate is more than each process should read:
    a stream whose page was rendered before its patterns were subscribed is then pushed
    every such scope once.
    """

    def __init__(  # noqa: PLR0915 - one documented attribute per statement
        self,
        transport: Transport | None = None,
        *,
        prefix: str = DEFAULT_PREFIX,
        max_data_bytes: int = _DEFAULT_MAX_DATA_BYTES,
        upstream: Upstream = "all",
    ) -> None:
        if isinstance(max_data_bytes, bool) or not isinstance(max_data_bytes, int):
            raise ConfigurationError(f"max_data_bytes must be an int, got {max_data_bytes!r}")
        if max_data_bytes < 1:
            raise ConfigurationError(
                f"max_data_bytes must be a positive number of bytes, got {max_data_bytes!r}"
            )
        if upstream not in ("all", "watched"):
            raise ConfigurationError(f"upstream must be 'all' or 'watched', got {upstream!r}")
        self.transport: Transport = transport if transport is not None else InProcessTransport()
        if upstream == "watched" and self.transport.sees_all_publishes:
            raise ConfigurationError(
                "upstream='watched' is for a transport shared by several processes (NATS); "
                "the in-process transport delivers every invalidation anyway"
            )
        self.prefix = validate_prefix(prefix)
        self.max_data_bytes = max_data_bytes
        """The largest ``data`` payload, in bytes of JSON, sent or delivered."""
        self.upstream: Upstream = upstream
        self.id = secrets.token_hex(4)
        """This broker's id (8 hex characters): event ids are ``<revision>-<id>``."""
        self.catch_ups: Counter[str] = Counter()
        """How streams started: ``"exact"`` (pushed only what changed after their point),
        ``"everything"`` (pushed every scope, or every scope of a pattern, because the
        broker could not know) and ``"resume"`` (asked to push everything)."""
        self._recorders: list[Callable[[Sequence[str], object], None]] = []
        """`streamui.testing.recorded_invalidations`: told every invalidation made here."""
        self.refused: Counter[str] = Counter()
        """Streams refused, by `Refusal` (see `note_refused`)."""
        self.invalidations_published = 0
        """Scopes this process published (`invalidate`, `invalidate_many`)."""
        self.invalidations_received = 0
        """Invalidations received from the transport (with ``upstream="watched"``, once
        per upstream subscription a message matched)."""
        self.frames_written = 0
        """Patch-signals events handed to streams (one per stream per write)."""
        self.changes_coalesced = 0
        """Changes that joined a frame a stream was owed already, instead of making one."""
        self.lag = LagHistogram()
        """Seconds from an invalidation's publish to the write of the frame that carries
        it, one observation per stream write (where the publish time is known)."""
        self._lagging: dict[float, int] = {}
        """Frames written in this flush, by when their change was sent, observed in `lag`
        when it ends: one clock read and one observation per publish, not per write."""
        self._taken: list[float] = []
        """For each frame taken in this flush, when its oldest change was sent (0.0:
        unknown): one append per write, counted when the flush ends."""
        self._flushing = False
        self._patterns: dict[str, _Pattern] = {}
        self._trie = SubjectTrie()
        """upstream="all": subject pattern -> its `_Pattern`."""
        self._all: Subscription | None = None
        self._complete_from = _NEVER
        """upstream="all": the first revision from which every invalidation is known."""
        self._watchers: set[Watcher] = set()
        self._revision = 0
        # (ms, the last revision handed out in it) for the milliseconds in which the
        # revisions ran ahead of the clock, oldest first; and the newest one forgotten.
        self._ahead: list[tuple[int, int]] = []
        self._ahead_forgotten = (-1, -1)
        # Built frames, oldest first, and what they cost against _FRAME_BUDGET.
        self._frames: OrderedDict[tuple[object, ...], bytes] = OrderedDict()
        self._frame_bytes = 0
        # The revision of the last invalidation of each concrete scope seen, oldest
        # first; what they cost against _RECENT_BUDGET; and the newest one forgotten.
        self._recent: OrderedDict[str, int] = OrderedDict()
        self._recent_bytes = 0
        self._recent_floor = 0
        # Patterns delivered to, and watchers whose attached writer has something to
        # write, flushed in one callback per event-loop turn (see `_flush`).
        self._dirty: list[_Pattern] = []
        self._ready: list[Watcher] = []
        self._flush_due = False
        self._flushed_this_turn = False
        self._flush_ended = 0.0
        self._flush_took = 0.0
        """Loop time at which the last flush ended, and how long it took (pacing)."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started_at = float("inf")
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Connect the transport and subscribe; starting a started broker does nothing.

        A closed broker starts again, as new: an app's lifespan may run more than once in
        one process (each test that serves a module-level app), and the app's code keeps
        the broker it was given. Its streams ended at the close; a watch still leaving
        from then changes nothing of the new run.
        """
        if self._loop is not None:
            return
        if self._closed:
            self._closed = False
            self._dirty.clear()
            self._ready.clear()
            self._flush_due = self._flushed_this_turn = False  # callbacks of the old loop
            self._lagging.clear()
            self._taken.clear()
            self._flushing = False
        await self.transport.start(on_reconnect=self._resync)
        self._loop = asyncio.get_running_loop()
        self._started_at = _now()
        if self.upstream == "all":
            # Flushed to the server when this returns: every invalidation published from
            # here on is received, so the index is complete from the next revision.
            self._all = await self.transport.subscribe(f"{self.prefix}.>", self._receive)
            self._complete_from = self.next_revision()

    async def close(self) -> None:
        """End every stream, drop every subscription and close the transport."""
        if self._closed:
            return
        self._closed = True
        self.end_streams()
        patterns, self._patterns = self._patterns, {}
        self._trie = SubjectTrie()
        subscriptions = [self._all] if self._all is not None else []
        self._all = None
        for entry in patterns.values():
            if entry.subscribing is not None:
                entry.subscribing.cancel()
            if entry.subscription is not None:
                subscriptions.append(entry.subscription)
        for subscription in subscriptions:
            await subscription.unsubscribe()
        if self._loop is not None:
            await self.transport.close()
        self._loop = None

    def end_streams(self, *, reconnect_within: float | None = None) -> None:
        """End every open stream cleanly, keeping the broker running.

        Browsers reconnect (to this process or another). Used when the server starts
        shutting down, so open streams do not hold the shutdown up. With
        *reconnect_within* (seconds), each browser is told to wait a random delay
        between one second and that long before it reconnects, so that thousands of
        tabs do not reconnect to the next server in the same instant.
        """
        longest = None if reconnect_within is None else max(_MIN_RECONNECT, reconnect_within)
        for watcher in list(self._watchers):
            delay = None if longest is None else int(1000 * random.uniform(_MIN_RECONNECT, longest))
            watcher.close(reconnect_after=delay)

    def _resync(self) -> None:
        """After the transport reconnected: push every scope of every stream once.

        Invalidations published while the link was down may never arrive, and which
        ones is unknowable, so every open tab re-fetches what it watches, and catch-ups
        from a point before now push everything.
        """
        logger.info("transport reconnected: pushing every scope of %d streams", len(self._watchers))
        revision = self.next_revision()
        if self.upstream == "all":
            self._complete_from = revision
        else:
            for entry in self._patterns.values():
                if entry.subscription is not None:
                    entry.covered_from = revision
        for watcher in list(self._watchers):
            watcher.mark_all(revision)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def _require_started(self) -> asyncio.AbstractEventLoop:
        if self._closed:
            raise BrokerStateError("the Broker is closed")
        if self._loop is None:
            raise BrokerStateError(
                "the Broker is not started; use 'async with Broker() as broker:' "
                "or add StreamPlugin to the Litestar app"
            )
        return self._loop

    def _require_this_loop(self) -> None:
        """Refuse a caller on another event loop than the broker's: the broker's state
        is its loop's alone (another loop would be another thread, or a closed one)."""
        if asyncio.get_running_loop() is not self._require_started():
            raise BrokerStateError(
                "the Broker runs on another event loop than this one (another thread's): "
                "from there, use invalidate_threadsafe(). In tests, serve the app with "
                "streamui.testing.LiveClient, which runs its lifespan in the test's loop "
                "(Litestar's and Starlette's test clients run it on a thread of their own)"
            )

    # -- publishing ------------------------------------------------------------------

    async def invalidate(self, scope: str, *, data: object = None) -> None:
        """Tell every tab watching a scope that matches *scope* to reload.

        *data*, if given, must be JSON-serializable and encode to at most
        ``max_data_bytes`` (else `PayloadTooLargeError`, and nothing is sent); it is set
        as ``_streamData.<key>`` in each tab before the revision changes (for a wildcard
        watcher: ``{"scope": <scope>, "data": data}``).

        This process's watchers are marked in the next event-loop turn, all at once:
        a burst of invalidations made without yielding costs O(1) each and reaches
        every stream as one frame.
        """
        await self.invalidate_many((scope,), data=data)

    async def invalidate_many(self, scopes: Iterable[str], *, data: object = None) -> None:
        """Invalidate several scopes; all are validated before any is sent."""
        if isinstance(scopes, str):
            raise TypeError(
                f"invalidate_many() takes an iterable of scopes, not the str {scopes!r}; "
                "use invalidate() for one scope"
            )
        concrete = [validate_scope(value, allow_wildcards=False) for value in scopes]
        payload = _encode_data(data, self.max_data_bytes)
        self._require_this_loop()
        for record in self._recorders:
            record(concrete, data)
        for value in concrete:
            await self.transport.publish(scope_subject(value, self.prefix), payload)
            self.invalidations_published += 1

    def invalidate_threadsafe(
        self, *scopes: str, data: object = None
    ) -> concurrent.futures.Future[None]:
        """Invalidate from any thread, or from sync code on the loop; returns at once.

        The scopes and *data* are validated in the caller's thread (errors raise there).
        The returned future completes when the transport accepted the messages; it must
        not be waited on from the broker's own event loop thread.
        """
        for value in scopes:
            validate_scope(value, allow_wildcards=False)
        _encode_data(data, self.max_data_bytes)
        loop = self._require_started()
        future = asyncio.run_coroutine_threadsafe(self.invalidate_many(scopes, data=data), loop)
        future.add_done_callback(_log_failure)
        return future

    # -- watching --------------------------------------------------------------------

    def next_revision(self, now: float | None = None) -> int:
        """A revision larger than every one before, and at least the time in ms."""
        ms = int((_now() if now is None else now) * 1000)
        revision = self._revision + 1
        if revision > ms:
            # More than one a millisecond: revisions run ahead of the clock. Remember the
            # last one handed out in each such millisecond, so a page rendered at a later
            # one is not pushed what it already showed (see `_start_at`).
            ahead = self._ahead
            if ahead and ahead[-1][0] == ms:
                ahead[-1] = (ms, revision)
            else:
                ahead.append((ms, revision))
                if len(ahead) > 2 * _AHEAD_ENTRIES:
                    self._ahead_forgotten = ahead[-_AHEAD_ENTRIES - 1]
                    del ahead[:-_AHEAD_ENTRIES]
        else:
            revision = ms
        self._revision = revision
        return revision

    @property
    def revision(self) -> int:
        """The last revision handed out (0 before any)."""
        return self._revision

    def event_id(self, revision: int) -> str:
        """The SSE id of an event of this broker at *revision*."""
        return f"{revision}-{self.id}"

    @property
    def started_at(self) -> float | None:
        """Unix time at which `start` completed (None before)."""
        return None if self._started_at == float("inf") else self._started_at

    def watch(
        self,
        scopes: Iterable[str],
        *,
        rendered_at: float | None = None,
        after: str | None = None,
        resume: bool = False,
        clock: str | None = None,
    ) -> Watcher:
        """Watch *scopes* for the lifetime of an ``async with`` block.

        The block yields a `Watcher`. At most one of: *rendered_at* (Unix time at which
        the page was rendered) or *after* (a `POINT`: an event id,
        ``<revision>-<broker id>``, or a time in ms, ``<ms>-<process instance>`` when the
        instance is known): every scope invalidated after that point is pushed once at
        the start, and nothing else; ``resume=True``: every scope is pushed once.

        *clock* names this process (`TokenSigner.instance`): a time tagged with it is on
        this clock, which spares it the `CLOCK_MARGIN`.
        """
        values = scopes if type(scopes) is tuple else tuple(scopes)
        for value in values:
            validate_scope(value)
        # (The caller's tuple when it has no duplicates: an open stream keeps it.)
        unique = values if len(set(values)) == len(values) else tuple(dict.fromkeys(values))
        if sum((rendered_at is not None, after is not None, resume)) > 1:
            raise ValueError("watch() takes at most one of rendered_at, after and resume")
        start: int | None = None
        if after is not None:
            start = self._start_after(after, clock)
        elif rendered_at is not None:
            start = self._start_at(int(rendered_at * 1000))
        return Watcher(broker=self, scopes=unique, start=start, resume=resume)

    def _start_after(self, after: str, clock: str | None) -> int:
        """The first revision a stream that saw event *after* (or a page rendered then)
        may have missed."""
        match = POINT.fullmatch(after)
        if match is None:
            raise ValueError(
                f"not an event id (<revision>-<broker id>) or a time in ms: {after[:40]!r}"
            )
        revision, origin = int(match[1]), match[2]
        if origin == self.id:
            return revision + 1  # this broker's own revision: nothing to guess
        return self._start_at(revision, same_clock=origin is not None and origin == clock)

    def _start_at(self, ms: int, *, same_clock: bool = False) -> int:
        """The first revision that may be news to a page rendered at *ms* (its clock).

        Revisions are at least the time in ms at which this broker saw the message, so
        anything seen after *ms* here has a revision of at least *ms*; from another
        process's clock, reach back `CLOCK_MARGIN` for skew."""
        if not (same_clock or self.transport.sees_all_publishes):
            ms -= int(CLOCK_MARGIN * 1000)
        ms = max(ms, 0)
        # A revision handed out before *ms* may be larger than *ms* (more than one a
        # millisecond): start after the last of those, where it is remembered.
        forgotten_ms, forgotten = self._ahead_forgotten
        if ms <= forgotten_ms:
            return ms  # cannot tell: at worst, scopes invalidated just before are pushed
        index = bisect.bisect_left(self._ahead, ms, key=_first)
        before = self._ahead[index - 1][1] if index else forgotten
        return max(ms, before + 1)

    @property
    def subscription_count(self) -> int:
        """Upstream subscriptions held now: one per distinct watched pattern with
        ``upstream="watched"``; with ``"all"``, the one for every scope."""
        if self.upstream == "all":
            return int(self._all is not None)
        return len(self._patterns)

    @property
    def pattern_count(self) -> int:
        """Distinct patterns the open streams watch."""
        return len(self._patterns)

    @property
    def watcher_count(self) -> int:
        return len(self._watchers)

    def note_refused(self, reason: Refusal) -> None:
        """Count a stream refused before it opened, for the metrics: the endpoint
        (`streamui.service.StreamService`) counts each `StreamRefused` by its kind, the
        stream its 503; an endpoint of one's own may call this too."""
        if reason not in REFUSALS:
            raise ValueError(f"not a refusal reason: {reason!r}; one of {', '.join(REFUSALS)}")
        self.refused[reason] += 1

    async def _attach(self, watcher: Watcher) -> None:
        self._require_this_loop()
        self._watchers.add(watcher)
        try:
            for value in watcher.scopes:
                entry = self._patterns.get(value)
                if entry is None:
                    entry = self._patterns[value] = _Pattern(scope_key(value), is_pattern(value))
                    if self.upstream == "all":
                        self._trie.add(scope_subject(value, self.prefix), entry)
                    else:
                        entry.subscribing = asyncio.create_task(self._subscribe(value, entry))
                        entry.subscribing.add_done_callback(_retrieve)
                entry.watchers.add(watcher)
                if entry.subscribing is not None:
                    await asyncio.shield(entry.subscribing)
        except BaseException:
            await self._detach(watcher)
            raise

    async def _subscribe(self, value: str, entry: _Pattern) -> None:
        def handler(subject: str, payload: bytes) -> None:
            self._deliver(entry, subject, payload)

        try:
            entry.subscription = await self.transport.subscribe(
                scope_subject(value, self.prefix), handler
            )
        except BaseException:
            if self._patterns.get(value) is entry:
                del self._patterns[value]
            raise
        finally:
            entry.subscribing = None
        entry.covered_from = self.next_revision()
        if self._patterns.get(value) is not entry:  # everyone left while we subscribed
            await entry.subscription.unsubscribe()

    def _keys(self, watcher: Watcher) -> list[str]:
        """The signal names of *watcher*'s scopes: its patterns' (a watcher keeps none
        of its own, for memory), or made again if it is not attached."""
        patterns = self._patterns
        return [
            entry.key if (entry := patterns.get(value)) is not None else scope_key(value)
            for value in watcher.scopes
        ]

    async def _detach(self, watcher: Watcher) -> None:
        watcher.close()
        self._watchers.discard(watcher)
        dropped: list[Subscription] = []
        for value in watcher.scopes:
            entry = self._patterns.get(value)
            if entry is None or watcher not in entry.watchers:
                continue  # (also: a watch of the run before a restart)
            entry.watchers.discard(watcher)
            if not entry.watchers:
                del self._patterns[value]
                if self.upstream == "all":
                    self._trie.remove(scope_subject(value, self.prefix), entry)
                if entry.subscription is not None:
                    dropped.append(entry.subscription)
        # The bookkeeping above is already consistent; the awaits below only tell the
        # transport, and are shielded so a cancelled stream still releases upstream.
        if dropped:
            await asyncio.shield(asyncio.gather(*(sub.unsubscribe() for sub in dropped)))

    def _catch_up(self, watcher: Watcher, start: int) -> None:
        """Push the scopes invalidated at or after revision *start*; every scope of a
        pattern for which that is not known here (not seen from that far back)."""
        now = self._revision
        watcher.opening_id = self.event_id(max(min(start - 1, now), 0))
        changed = []
        if start <= now:
            for seen, revision in reversed(self._recent.items()):
                if revision < start:
                    break
                changed.append(seen)
        known = start > self._recent_floor
        every = self.upstream == "all"
        unknown = 0
        revision = 0
        for value, key in zip(watcher.scopes, self._keys(watcher), strict=True):
            covered_from = self._complete_from if every else self._patterns[value].covered_from
            if not known or covered_from > start:
                unknown += 1
            elif not any(scope_matches(value, seen) for seen in changed):
                continue
            revision = revision or self.next_revision()
            watcher.mark(key, revision)
        if unknown:
            self.catch_ups["everything"] += 1
            logger.debug(
                "catch-up from revision %d pushes %d scope(s) it cannot know about "
                "(index from %d, forgotten up to %d)",
                start,
                unknown,
                self._complete_from,
                self._recent_floor,
            )
        else:
            self.catch_ups["exact"] += 1

    # -- fan-out (hot path) ----------------------------------------------------------

    def _queue(self, entry: _Pattern) -> None:
        """*entry* was delivered something: mark its watchers this turn."""
        self._dirty.append(entry)
        if not self._flush_due:
            self._flush_soon()

    def _flush_soon(self) -> None:
        self._flush_due = True
        loop = asyncio.get_running_loop()
        if self._flushed_this_turn and self._flush_took >= _PACE_FROM:
            # A producer that yields to nothing but the loop (sleep(0), a lock, a queue
            # with items) invalidates again in the very turn a costly flush ran: wait as
            # long as that flush took, so what it invalidates meanwhile goes out as one
            # frame per stream and the flushes take at most half the time of a burst.
            # What arrives by I/O comes a turn later and is flushed at once.
            loop.call_at(self._flush_ended + self._flush_took, self._flush)
        else:
            loop.call_soon(self._flush)

    def _next_turn(self) -> None:
        self._flushed_this_turn = False

    def _flush(self) -> None:
        """Once per event-loop turn with changes: mark the watchers of every pattern
        delivered to, then call the attached writers that have something to write."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        self._flushing = True
        try:
            while self._dirty or self._ready:
                dirty, self._dirty = self._dirty, []
                alone = len(dirty) == 1
                for entry in dirty:
                    entry.flush(self, alone=alone)
                ready, self._ready = self._ready, []
                for watcher in ready:
                    watcher._queued = False
                    writer = watcher._writer
                    if writer is not None:
                        writer.kick()
        finally:
            self._flushing = False
            if self._lagging or self._taken:
                self._observe_lag()
            self._flush_due = False
            self._flush_ended = ended = loop.time()
            self._flush_took = ended - started
            if not self._flushed_this_turn:
                self._flushed_this_turn = True
                loop.call_soon(self._next_turn)  # runs after what is ready this turn

    def _observe_lag(self) -> None:
        """Observe the writes of this flush (or of a write outside one) in `lag`."""
        lagging = self._lagging
        taken = self._taken
        if taken:
            self.frames_written += len(taken)
            for since, writes in Counter(taken).items():  # (counted in C)
                if since:
                    lagging[since] = lagging.get(since, 0) + writes
            taken.clear()
        now = _now()
        lag = self.lag
        for since, writes in lagging.items():
            lag.observe(now - since, writes)
        lagging.clear()

    def _receive(self, subject: str, payload: bytes) -> None:
        """upstream="all": every invalidation of the prefix."""
        concrete, revision, payload, sent_at = self._seen(subject, payload)
        for match in self._trie.match(subject):
            entry = cast("_Pattern", match)
            if entry.deliver(concrete, revision, payload, sent_at):
                self._queue(entry)

    def _deliver(self, entry: _Pattern, subject: str, payload: bytes) -> None:
        """upstream="watched": an invalidation matching *entry*'s own subscription."""
        if entry.deliver(*self._seen(subject, payload)):
            self._queue(entry)

    def _seen(self, subject: str, payload: bytes) -> tuple[str, int, bytes, float]:
        """An invalidation received: its scope, the revision it gets here (indexed), its
        payload as it may reach a stream, and when it was sent (0.0: unknown)."""
        self.invalidations_received += 1
        transport = self.transport
        # In process, the publish is now; across processes, the transport says when the
        # publisher sent it if the message carries that (0.0: no lag sample).
        now = _now()
        sent_at = now if transport.sees_all_publishes else (transport.sent_at or 0.0)
        if payload:
            payload = self._checked(subject, payload)
        concrete = subject[len(self.prefix) + 1 :].replace(".", ":")
        revision = self.next_revision(now)  # (one clock read for both)
        self._remember(concrete, revision)
        return concrete, revision, payload, sent_at

    def _checked(self, subject: str, payload: bytes) -> bytes:
        """*payload* re-encoded, or b"" if it is not JSON or over the limit.

        Anyone with access to the transport may publish: nothing but one line of JSON
        may reach a stream, and none over the limit (checked before parsing, and again
        after: escaping may lengthen it)."""
        limit = self.max_data_bytes
        size = len(payload)
        if size <= limit:
            payload = _canonical_payload(payload, subject)
            size = len(payload)
        if size > limit:
            logger.warning(
                "dropping the payload on %r: %d bytes, over max_data_bytes=%d; "
                "delivering a plain invalidation",
                subject,
                size,
                limit,
            )
            return b""
        return payload

    def _remember(self, concrete: str, revision: int) -> None:
        recent = self._recent
        known = len(recent)
        recent[concrete] = revision
        recent.move_to_end(concrete)
        if len(recent) > known:
            self._recent_bytes += len(concrete) + _RECENT_ENTRY_OVERHEAD
            # Forgetting raises the floor: a point older than the newest forgotten
            # invalidation cannot tell what changed, so its catch-up pushes everything.
            while self._recent_bytes > _RECENT_BUDGET:
                forgotten, self._recent_floor = recent.popitem(last=False)
                self._recent_bytes -= len(forgotten) + _RECENT_ENTRY_OVERHEAD

    def _frame(
        self, keys: tuple[str, ...], revision: int, data: dict[str, tuple[int, bytes]] | None
    ) -> bytes:
        """One patch-signals event, built once per (keys, revision, payloads) and shared.

        The cache key names each payload by (key, revision that carried it), not by its
        bytes, so a cached payload is kept once: inside its frame.
        """
        items = sorted(data.items()) if data else ()
        cache_key: tuple[object, ...] = (
            (keys, revision, *((key, carried) for key, (carried, _) in items))
            if items
            else (keys, revision)
        )
        frame = self._frames.get(cache_key)
        if frame is None:
            revisions = ",".join(f'"{key}":{revision}' for key in keys)
            signals = f'{{"{SIGNAL_NAMESPACE}":{{{revisions}}}'
            if items:
                values = ",".join(f'"{key}":{value.decode()}' for key, (_, value) in items)
                signals += f',"{DATA_NAMESPACE}":{{{values}}}'
            signals += "}"
            event = ServerSentEventGenerator.patch_signals(
                signals, event_id=self.event_id(revision)
            )
            frame = self._frames[cache_key] = event.encode()
            self._frame_bytes += len(frame) + _FRAME_ENTRY_OVERHEAD
            # Oldest first, never the frame just built: a frame is wanted around its
            # own revision, by the streams waking for it now.
            while self._frame_bytes > _FRAME_BUDGET and len(self._frames) > 1:
                _, evicted = self._frames.popitem(last=False)
                self._frame_bytes -= len(evicted) + _FRAME_ENTRY_OVERHEAD
        return frame


def _encode_data(data: object, limit: int) -> bytes:
    """*data* as compact JSON (b"" for None), at most *limit* bytes."""
    if data is None:
        return b""
    try:
        payload = json.dumps(data, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as error:
        raise TypeError(f"data must be JSON-serializable, got {data!r}: {error}") from None
    if len(payload) > limit:
        raise PayloadTooLargeError(
            f"data encodes to {len(payload)} bytes of JSON, over the limit of {limit} "
            f"(max_data_bytes), got {reprlib.repr(data)}: send less (e.g. an id the "
            "component fetches) or raise max_data_bytes on the Broker or StreamConfig"
        )
    return payload


def _canonical_payload(payload: bytes, subject: str) -> bytes:
    """Re-encode a received payload so nothing but one line of JSON reaches a stream."""
    try:
        return json.dumps(json.loads(payload), separators=(",", ":"), allow_nan=False).encode()
    except ValueError:
        logger.warning("ignoring a payload on %r that is not JSON: %.80r", subject, payload)
        return b""


def _retrieve(task: asyncio.Task[None]) -> None:
    """Mark a subscribing task's error as seen: the watchers awaiting it re-raise it."""
    if not task.cancelled():
        task.exception()


def _log_failure(future: concurrent.futures.Future[None]) -> None:
    if not future.cancelled() and (error := future.exception()) is not None:
        logger.error("invalidate_threadsafe failed", exc_info=error)
