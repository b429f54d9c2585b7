"""Shared helpers for the unit tests: scope strategies, SSE parsing, watcher waits, a fake clock,
and one real ``nats-server`` for the whole session (started only when a test asks for it).

Import the helpers as ``from tests.unit.conftest import ...``; the fixtures are found by
pytest on its own.
"""

from __future__ import annotations

import asyncio
import json
import string
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio
from hypothesis import assume
from hypothesis import strategies as st

import streamui.broker
from streamui import MAX_SCOPE_LENGTH, Broker, InProcessTransport
from tests.nats.conftest import nats_server_running
from tests.support import revision_of

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from streamui import Watcher
    from streamui.nats_server import NatsServer

WAIT = 10.0
"""Generous timeout (seconds) for anything a test waits on; tests never assert timings."""

SEGMENT_ALPHABET = string.ascii_letters + string.digits + "_-"

# -- strategies over the whole grammar ------------------------------------------------------

# Words that stress the key encoding: the spellings of '*' and '>', escape letters, digits.
_TRICKY_SEGMENTS = ["WILD", "REST", "wild", "_", "-", "__", "_u", "_w", "_r", "u", "h", "w"]
_TRICKY_SEGMENTS += ["r", "0", "42", "0a", "a", "A", "a_b", "a-b", "WILD_", "_REST"]

segments = st.one_of(
    st.sampled_from(_TRICKY_SEGMENTS),
    st.text(alphabet=SEGMENT_ALPHABET, min_size=1, max_size=24),
    st.text(alphabet=SEGMENT_ALPHABET, min_size=100, max_size=MAX_SCOPE_LENGTH),
)


@st.composite
def scopes(draw: st.DrawFn, *, wildcards: bool = True) -> str:
    """Any valid scope; with *wildcards*, also patterns (``*`` segments, a final ``>``)."""
    segment = st.one_of(segments, st.just("*")) if wildcards else segments
    rest = wildcards and draw(st.booleans())
    parts = draw(st.lists(segment, min_size=0 if rest else 1, max_size=12))
    # Drop trailing segments until the scope fits; keeps long scopes near the limit.
    while parts and len(":".join([*parts, ">"] if rest else parts)) > MAX_SCOPE_LENGTH:
        parts.pop()
    if rest:
        parts.append(">")
    assume(parts)
    value = ":".join(parts)
    assert len(value) <= MAX_SCOPE_LENGTH
    return value


concrete_scopes = scopes(wildcards=False)


def nats_matches(pattern: list[str], subject: list[str]) -> bool:
    """Reference NATS semantics over tokens: ``*`` is one token, ``>`` one or more."""
    if not pattern:
        return not subject
    head, *rest = pattern
    if head == ">":
        return bool(subject)
    if not subject:
        return False
    return (head in ("*", subject[0])) and nats_matches(rest, subject[1:])


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One SSE frame as the browser's parser sees it."""

    event: str | None
    id: str | None
    data: tuple[str, ...]
    comments: tuple[str, ...]

    @property
    def signals(self) -> dict[str, Any]:
        """The JSON of a ``datastar-patch-signals`` event."""
        assert self.event == "datastar-patch-signals", self
        lines = [line.removeprefix("signals ") for line in self.data if line.startswith("signals ")]
        value: dict[str, Any] = json.loads("\n".join(lines))
        return value

    @property
    def only_if_missing(self) -> bool:
        return "onlyIfMissing true" in self.data


def parse_events(frame: bytes | str) -> list[SSEEvent]:
    """Split SSE bytes into frames; every frame must be terminated by a blank line."""
    text = frame.decode() if isinstance(frame, bytes) else frame
    assert text.endswith("\n\n"), f"an SSE frame must end with a blank line: {text!r}"
    events: list[SSEEvent] = []
    for block in text[:-2].split("\n\n"):
        event: str | None = None
        event_id: str | None = None
        data: list[str] = []
        comments: list[str] = []
        for line in block.split("\n"):
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "":
                comments.append(value)
            elif field == "event":
                event = value
            elif field == "id":
                event_id = value
            elif field == "data":
                data.append(value)
            else:
                raise AssertionError(f"unexpected SSE line {line!r} in {text!r}")
        events.append(SSEEvent(event, event_id, tuple(data), tuple(comments)))
    return events


async def next_frame(watcher: Watcher, within: float = WAIT) -> bytes:
    """Wait until *watcher* has something to write, then take it."""
    async with asyncio.timeout(within):
        await watcher.wait()
    frame = watcher.take()
    assert frame, "the watcher woke with nothing to write"
    return frame


async def next_signals(watcher: Watcher, within: float = WAIT) -> tuple[int, dict[str, Any]]:
    """Wait for the next frame, which must be one patch-signals event; return (id, signals).

    Asserts what every frame the broker writes must satisfy: the event name, an ``id:``
    that is the revision, and that every key under ``_stream`` carries that revision.
    """
    events = parse_events(await next_frame(watcher, within))
    assert len(events) == 1, events
    (event,) = events
    assert event.event == "datastar-patch-signals"
    assert event.id is not None
    assert revision_of(event.id) >= 0, event.id
    revision = revision_of(event.id)
    signals = event.signals
    assert set(signals) <= {"_stream", "_streamData"}, signals
    assert signals["_stream"], signals
    assert set(signals["_stream"].values()) == {revision}, signals
    return revision, signals


class RecordingTransport(InProcessTransport):
    """The in-process transport, remembering every publish (to prove what was not sent)."""

    def __init__(self) -> None:
        super().__init__()
        self.published: list[tuple[str, bytes]] = []

    async def publish(self, subject: str, payload: bytes) -> None:
        self.published.append((subject, payload))
        await super().publish(subject, payload)


class FakeClock:
    """Stands in for the broker's wall clock so catch-up tests need no sleeping."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """Replace the broker's clock (``streamui.broker._now``) with a `FakeClock`."""
    fake = FakeClock()
    monkeypatch.setattr(streamui.broker, "_now", fake)
    return fake


@pytest.fixture
def recording_transport() -> RecordingTransport:
    return RecordingTransport()


@pytest.fixture
async def broker(recording_transport: RecordingTransport) -> AsyncIterator[Broker]:
    """A started broker on a `RecordingTransport`; afterwards, no subscription may remain."""
    started = Broker(recording_transport)
    await started.start()
    try:
        yield started
        # Every test leaves its watch blocks, so nothing may be held any more.
        held = (started.pattern_count, recording_transport.subscription_count)
    finally:
        await started.close()
    assert held == (0, 1), f"subscriptions leaked (patterns, transport): {held}"


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def shared_nats_server() -> AsyncIterator[NatsServer]:
    """One real nats-server for the session's NATS contract tests; tests keep apart by
    subject prefix. Fails (never skips) when the binary cannot be found."""
    async with nats_server_running() as server:
        yield server
