"""Fixtures for the NATS tests: a real ``nats-server`` per test, a plain nats-py client,
the server's monitoring endpoint, and helpers for the HTTP app of the integration tests.

Every server is a child process on a free loopback port with a temporary store
(`streamui.nats_server.NatsServer`). When the binary cannot be found the tests FAIL with
the message of `streamui.nats_server.find_nats_server`, which says how to get it: a
missing server is a broken setup, never a reason to skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

import httpx
import pytest

import nats
from streamui import scope_key
from streamui.errors import ConfigurationError
from streamui.nats_server import NatsServer
from tests.support import WAIT

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

    from nats.aio.client import Client

    from tests.integration.conftest import Live, OpenStream, Push

STREAMUI_CONNECTION = "streamui"
"""The client name `NatsTransport` gives the connections it opens."""


@contextlib.asynccontextmanager
async def nats_server_running(**options: Any) -> AsyncIterator[NatsServer]:
    """A started `NatsServer`, stopped (store removed) on exit; fails the test if it cannot
    start (e.g. no binary), never skips it."""
    server = NatsServer(**options)
    try:
        await server.start()
    except ConfigurationError as error:
        await server.stop()
        pytest.fail(f"the NATS tests need a real nats-server: {error}", pytrace=False)
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def nats_server() -> AsyncIterator[NatsServer]:
    """A nats-server of this test's own (tests may kill and restart it)."""
    async with nats_server_running() as server:
        yield server


@pytest.fixture
async def plain_client(nats_server: NatsServer) -> AsyncIterator[Client]:
    """A plain nats-py client, as a Go service or any other process would be."""
    client = await nats.connect(nats_server.url, name="plain-client")
    try:
        yield client
    finally:
        await client.close()


async def subscriptions_on_server(server: NatsServer, name: str = STREAMUI_CONNECTION) -> list[str]:
    """The subjects subscribed by the connections named *name*, as the server reports them
    (``GET /connz?subs=1``)."""
    async with httpx.AsyncClient(timeout=WAIT, trust_env=False) as client:
        response = await client.get(f"{server.monitor_url}/connz", params={"subs": "1"})
    response.raise_for_status()
    connections: list[dict[str, Any]] = response.json()["connections"] or []
    return [
        subject
        for connection in connections
        if connection.get("name") == name
        for subject in connection.get("subscriptions_list") or []
    ]


async def wait_until(predicate: Callable[[], bool], what: str) -> None:
    """Poll *predicate* (state that no event announces), bounded by WAIT."""
    try:
        async with asyncio.timeout(WAIT):
            while not predicate():  # noqa: ASYNC110 - nothing to wait on but the state
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out waiting until {what}") from None


async def wait_for_server_subscriptions(
    server: NatsServer, subject: str, count: int, *, name: str = STREAMUI_CONNECTION
) -> list[str]:
    """Poll the monitoring endpoint until the connections named *name* hold *count*
    subscriptions to *subject*; return everything they hold. Bounded by WAIT."""
    held: list[str] = []
    try:
        async with asyncio.timeout(WAIT):
            while True:
                held = await subscriptions_on_server(server, name)
                if held.count(subject) == count:
                    return held
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(
            f"the server never showed {count} subscription(s) to {subject!r} from the "
            f"{name!r} connection; it holds {held}"
        ) from None


async def settle(live: Live, stream: OpenStream, probe: str) -> list[Push]:
    """Invalidate *probe* (a scope the stream watches) and read through its push; return
    every push read.

    A first connection over NATS is pushed every scope whose subscription is newer than
    the page (the catch-up: the broker cannot know what it missed), so tests settle a
    stream before they look for the push of one invalidation. Everything delivered to the
    stream before the probe was published is in the pushes returned.
    """
    # Every push already marked (the catch-up included) has a revision up to this one;
    # the probe's push is the first with a larger one.
    marker = live.broker.revision
    await live.broker.invalidate(probe)
    key = scope_key(probe)
    pushes = [await stream.next_push()]
    while key not in pushes[-1].keys or pushes[-1].revision <= marker:
        pushes.append(await stream.next_push())
    return pushes


class LogRecorder(logging.Handler):
    """Keeps every record of a logger tree at WARNING or above."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    @property
    def tracebacks(self) -> list[str]:
        return [f"{r.name}: {r.getMessage()}" for r in self.records if r.exc_info]

    @property
    def errors(self) -> list[str]:
        return [f"{r.name}: {r.getMessage()}" for r in self.records if r.levelno >= logging.ERROR]


@contextlib.contextmanager
def recording_logs(name: str = "streamui") -> Iterator[LogRecorder]:
    """Record WARNING+ of the *name* logger tree, without letting it reach the root logger
    (where Litestar's queue handler would print it after the run)."""
    recorder = LogRecorder()
    logger = logging.getLogger(name)
    propagate = logger.propagate
    logger.addHandler(recorder)
    logger.propagate = False
    try:
        yield recorder
    finally:
        logger.removeHandler(recorder)
        logger.propagate = propagate
