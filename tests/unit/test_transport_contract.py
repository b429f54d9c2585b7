"""The transport contract, written once and run against every transport.

Add a transport by appending a `Factory` to `TRANSPORT_FACTORIES`: an async context
manager that yields a started transport and closes it afterwards, and the names of the
fixtures it needs (only requested when its parameter runs: the NATS one starts the
session's ``nats-server`` on first use). Every test gets its own subject prefix, so
transports that share a server cannot see each other's messages. Waits are on events;
"nothing was delivered" is checked after a barrier message published later by the same
publisher (NATS keeps one publisher's order on one connection, and nats-py dispatches
each subscription's messages in the order they arrive).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from streamui import InProcessTransport, Subscription, Transport
from streamui.nats import NatsTransport
from tests.unit.conftest import WAIT

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator
    from contextlib import AbstractAsyncContextManager

    from streamui.nats_server import NatsServer


@contextlib.asynccontextmanager
async def in_process() -> AsyncIterator[Transport]:
    transport = InProcessTransport()
    await transport.start()
    try:
        yield transport
    finally:
        await transport.close()


@contextlib.asynccontextmanager
async def over_nats(server: NatsServer) -> AsyncIterator[Transport]:
    """A `NatsTransport` with a connection of its own to the session's real nats-server."""
    transport = NatsTransport(servers=server.url)
    await transport.start()
    try:
        yield transport
    finally:
        await transport.close()


@dataclass(frozen=True)
class Factory:
    """Opens a started transport; *fixtures* are passed to *open* positionally."""

    open: Callable[..., AbstractAsyncContextManager[Transport]]
    fixtures: tuple[str, ...] = ()


TRANSPORT_FACTORIES: list[Any] = [
    pytest.param(Factory(in_process), id="in-process"),
    pytest.param(Factory(over_nats, fixtures=("shared_nats_server",)), id="nats"),
]
"""``pytest.param(Factory(...), id=...)`` for every transport the contract runs against."""


class Inbox:
    """A message handler that records what it was given and lets a test wait for it."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self.messages: list[tuple[str, bytes]] = []
        self._changed = asyncio.Event()

    def __call__(self, subject: str, payload: bytes) -> None:
        self._bus.deliveries += 1
        self.messages.append((subject, payload))
        self._changed.set()

    async def wait_for(self, count: int) -> list[tuple[str, bytes]]:
        """Wait until at least *count* messages arrived; return all of them."""
        async with asyncio.timeout(WAIT):
            while len(self.messages) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.messages


@dataclass
class Bus:
    """The transport under test, a private subject prefix, and a record of its use."""

    name: str
    transport: Transport
    prefix: str
    publishes: int = 0
    subscriptions: int = 0
    deliveries: int = 0
    _barrier: Inbox | None = field(default=None, repr=False)

    def subject(self, *tokens: str) -> str:
        return ".".join([self.prefix, *tokens])

    async def publish(self, subject: str, payload: bytes = b"") -> None:
        self.publishes += 1
        await self.transport.publish(subject, payload)

    async def subscribe(
        self, pattern: str, handler: Callable[[str, bytes], None] | None = None
    ) -> tuple[Inbox, Subscription]:
        inbox = Inbox(self)
        self.subscriptions += 1
        subscription = await self.transport.subscribe(pattern, handler or inbox)
        return inbox, subscription

    async def barrier(self) -> None:
        """Return once everything published before has been dispatched."""
        if self._barrier is None:
            self._barrier, _ = await self.subscribe(self.subject("barrier"))
        seen = len(self._barrier.messages)
        await self.publish(self.subject("barrier"))
        await self._barrier.wait_for(seen + 1)


@pytest.fixture(params=TRANSPORT_FACTORIES)
def open_transport(
    request: pytest.FixtureRequest,
) -> Callable[[], AbstractAsyncContextManager[Transport]]:
    """The parameter's factory with its fixtures resolved (synchronously, so a session
    fixture may start on its own event loop before the test's loop runs)."""
    factory: Factory = request.param
    arguments = [request.getfixturevalue(name) for name in factory.fixtures]
    return functools.partial(factory.open, *arguments)


@pytest.fixture
async def bus(
    request: pytest.FixtureRequest,
    open_transport: Callable[[], AbstractAsyncContextManager[Transport]],
) -> AsyncIterator[Bus]:
    async with open_transport() as transport:
        used = Bus(request.node.callspec.id, transport, f"contract.{uuid.uuid4().hex}")
        yield used
    # Prove that the test ran against this transport end to end, not against a stand-in.
    assert used.subscriptions > 0, f"the test never subscribed on {used.name}"
    assert used.publishes > 0, f"the test never published on {used.name}"
    assert used.deliveries > 0, f"{used.name} never delivered a message in this test"


async def test_exact_subjects_are_delivered(bus: Bus) -> None:
    inbox, _ = await bus.subscribe(bus.subject("invoice", "42"))
    for subject in ("invoice.43", "invoice", "invoice.42.lines", "invoices.42", "x.invoice.42"):
        await bus.publish(bus.subject(*subject.split(".")), b"wrong")
    await bus.publish(bus.subject("invoice", "42"), b"right")
    await bus.barrier()
    assert inbox.messages == [(bus.subject("invoice", "42"), b"right")]


async def test_star_matches_exactly_one_token(bus: Bus) -> None:
    inbox, _ = await bus.subscribe(bus.subject("invoices", "*"))
    middle, _ = await bus.subscribe(bus.subject("*", "7"))
    for tokens in (("invoices",), ("invoices", "7", "lines"), ("other", "7"), ("invoices", "8")):
        await bus.publish(bus.subject(*tokens))
    await bus.barrier()
    assert inbox.messages == [(bus.subject("invoices", "8"), b"")]
    assert middle.messages == [(bus.subject("other", "7"), b"")]


async def test_star_matches_any_token(bus: Bus) -> None:
    inbox, _ = await bus.subscribe(bus.subject("invoices", "*"))
    for token in ("1", "abc", "a-b_c", "*x", "WILD"):
        await bus.publish(bus.subject("invoices", token))
    messages = await inbox.wait_for(5)
    assert [subject for subject, _ in messages] == [
        bus.subject("invoices", token) for token in ("1", "abc", "a-b_c", "*x", "WILD")
    ]


async def test_greater_than_matches_one_or_more_trailing_tokens(bus: Bus) -> None:
    inbox, _ = await bus.subscribe(bus.subject("workspace", ">"))
    await bus.publish(bus.subject("workspace"))  # no token left for '>': not delivered
    await bus.publish(bus.subject("workspaces", "1"))
    await bus.publish(bus.subject("workspace", "1"))
    await bus.publish(bus.subject("workspace", "1", "doc", "3"))
    await bus.barrier()
    assert [subject for subject, _ in inbox.messages] == [
        bus.subject("workspace", "1"),
        bus.subject("workspace", "1", "doc", "3"),
    ]


async def test_wildcards_combine(bus: Bus) -> None:
    inbox, _ = await bus.subscribe(bus.subject("*", "doc", ">"))
    await bus.publish(bus.subject("w1", "doc"))
    await bus.publish(bus.subject("w1", "page", "3"))
    await bus.publish(bus.subject("w1", "doc", "3"))
    await bus.publish(bus.subject("w2", "doc", "3", "rev", "9"))
    await bus.barrier()
    assert [subject for subject, _ in inbox.messages] == [
        bus.subject("w1", "doc", "3"),
        bus.subject("w2", "doc", "3", "rev", "9"),
    ]


async def test_a_message_matching_several_subscriptions_reaches_each_once(bus: Bus) -> None:
    subject = bus.subject("invoice", "42")
    patterns = [subject, subject, bus.subject("invoice", "*"), bus.subject(">")]
    inboxes = [(await bus.subscribe(pattern))[0] for pattern in patterns]
    await bus.publish(subject, b"x")
    for inbox in inboxes:
        assert await inbox.wait_for(1) == [(subject, b"x")]
    await bus.barrier()
    # '>' under the prefix also sees the barrier; everyone else saw the message once.
    assert [len(inbox.messages) for inbox in inboxes[:3]] == [1, 1, 1]
    assert inboxes[3].messages[0] == (subject, b"x")


async def test_unsubscribe_stops_delivery_and_is_idempotent(bus: Bus) -> None:
    subject = bus.subject("invoice", "42")
    gone, subscription = await bus.subscribe(subject)
    kept, _ = await bus.subscribe(subject)
    await bus.publish(subject, b"1")
    await gone.wait_for(1)
    await subscription.unsubscribe()
    await subscription.unsubscribe()
    await bus.publish(subject, b"2")
    await kept.wait_for(2)
    await bus.barrier()
    assert gone.messages == [(subject, b"1")]
    assert kept.messages == [(subject, b"1"), (subject, b"2")]


async def test_unsubscribe_removes_exactly_its_own_subscription(bus: Bus) -> None:
    subject = bus.subject("invoice", "42")
    subscribed = [await bus.subscribe(subject) for _ in range(3)]
    await subscribed[1][1].unsubscribe()
    await bus.publish(subject, b"x")
    await subscribed[0][0].wait_for(1)
    await subscribed[2][0].wait_for(1)
    await bus.barrier()
    assert [inbox.messages for inbox, _ in subscribed] == [[(subject, b"x")], [], [(subject, b"x")]]


async def test_unsubscribing_a_wildcard_keeps_the_others(bus: Bus) -> None:
    star, star_subscription = await bus.subscribe(bus.subject("a", "*"))
    rest, rest_subscription = await bus.subscribe(bus.subject("a", ">"))
    await star_subscription.unsubscribe()
    await bus.publish(bus.subject("a", "1"))
    await rest.wait_for(1)
    await rest_subscription.unsubscribe()
    await bus.publish(bus.subject("a", "2"))
    await bus.barrier()
    assert star.messages == []
    assert rest.messages == [(bus.subject("a", "1"), b"")]


async def test_an_empty_payload_is_delivered_as_empty_bytes(bus: Bus) -> None:
    inbox, _ = await bus.subscribe(bus.subject("invoice", "42"))
    await bus.publish(bus.subject("invoice", "42"), b"")
    ((subject, payload),) = await inbox.wait_for(1)
    assert subject == bus.subject("invoice", "42")
    assert payload == b""
    assert isinstance(payload, bytes)


async def test_payload_bytes_arrive_unchanged(bus: Bus) -> None:
    inbox, _ = await bus.subscribe(bus.subject("blob"))
    payload = bytes(range(256)) + b'{"json": "\\n"}\r\n'
    await bus.publish(bus.subject("blob"), payload)
    assert await inbox.wait_for(1) == [(bus.subject("blob"), payload)]


async def test_one_publishers_order_is_preserved(bus: Bus) -> None:
    exact, _ = await bus.subscribe(bus.subject("counter"))
    wildcard, _ = await bus.subscribe(bus.subject(">"))
    for number in range(200):
        await bus.publish(bus.subject("counter"), str(number).encode())
    expected = [str(number).encode() for number in range(200)]
    assert [payload for _, payload in await exact.wait_for(200)] == expected
    assert [payload for _, payload in await wildcard.wait_for(200)] == expected


async def test_nothing_is_stored_for_a_later_subscriber(bus: Bus) -> None:
    await bus.publish(bus.subject("invoice", "42"), b"before")
    inbox, _ = await bus.subscribe(bus.subject("invoice", "42"))
    await bus.publish(bus.subject("invoice", "42"), b"after")
    await bus.barrier()
    assert inbox.messages == [(bus.subject("invoice", "42"), b"after")]


@contextlib.contextmanager
def captured_streamui_logs(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Capture the ``streamui`` loggers' records in *caplog* without letting them reach the
    root logger (where Litestar's queue handler would print them at the end of the run)."""
    streamui_logger = logging.getLogger("streamui")
    monkeypatch.setattr(streamui_logger, "propagate", False)
    streamui_logger.addHandler(caplog.handler)
    try:
        yield
    finally:
        streamui_logger.removeHandler(caplog.handler)


async def publish_to_a_broken_handler(bus: Bus, subject: str) -> list[bytes]:
    """Subscribe a handler that raises between two good ones, publish twice; return what the
    broken handler was given once both good ones had everything."""
    failures: list[bytes] = []

    def broken(subject: str, payload: bytes) -> None:
        failures.append(payload)
        raise RuntimeError("handler bug")

    before, _ = await bus.subscribe(subject)
    await bus.subscribe(subject, broken)
    after, _ = await bus.subscribe(subject)
    await bus.publish(subject, b"1")
    await bus.publish(subject, b"2")
    assert await before.wait_for(2) == [(subject, b"1"), (subject, b"2")]
    assert await after.wait_for(2) == [(subject, b"1"), (subject, b"2")]
    await bus.barrier()
    return failures


async def test_a_failing_handler_does_not_stop_delivery_to_the_others(
    bus: Bus, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    with captured_streamui_logs(caplog, monkeypatch):
        failures = await publish_to_a_broken_handler(bus, bus.subject("invoice", "42"))
    # The broken subscription keeps receiving too: one failure does not unsubscribe it.
    assert failures == [b"1", b"2"]
    # The failure is reported, naming the error.
    assert any("handler bug" in record.getMessage() or record.exc_info for record in caplog.records)


async def test_a_failing_handler_is_logged_with_its_traceback(
    bus: Bus,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    subject = bus.subject("invoice", "42")
    with captured_streamui_logs(caplog, monkeypatch):
        await publish_to_a_broken_handler(bus, subject)
    failures = [
        record
        for record in caplog.records
        if record.levelno >= logging.ERROR
        and record.exc_info
        and isinstance(record.exc_info[1], RuntimeError)
        and str(record.exc_info[1]) == "handler bug"
    ]
    # One ERROR with the traceback per failed delivery, and it names the subject.
    assert len(failures) == 2, [record.getMessage() for record in caplog.records]
    assert all(subject in record.getMessage() for record in failures)
