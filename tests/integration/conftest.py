"""Fixtures for the HTTP integration tests: a real uvicorn server running the test app.

``start(**settings)`` builds the app of `tests.integration.app` with
``StreamConfig(secret=SECRET, **settings)``, serves it on a free port and returns a
`Live` handle (base URL, plugin, an httpx client and stream helpers). The fixture
tears everything down in order and checks, for every test, that:

- the server never answered 5xx (unless the test said it expects it, with
  `Live.expect_status`);
- nothing was logged at ERROR by uvicorn, Litestar or streamui (unless the test said
  it expects it, with `Live.expect_errors`);
- once the client has gone, every stream ended and released its subscriptions.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import httpx
import pytest

from streamui import DATA_NAMESPACE, SIGNAL_NAMESPACE, InProcessTransport
from streamui.litestar import StreamConfig
from tests.integration.app import make_app
from tests.support import WAIT, Event, SSEReader, revision_of, serve, stream_path, stream_tokens

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Mapping
    from contextlib import AbstractAsyncContextManager

    from streamui import Broker
    from streamui.litestar import StreamPlugin

SECRET = "integration-tests-secret-0123456789"
"""The stream secret of every app the fixtures start."""

WATCHED_LOGGERS = ("uvicorn.error", "litestar", "streamui")


class RecordingHandler(logging.Handler):
    """Keeps every record at *level* (default ERROR) or above."""

    def __init__(self, level: int = logging.ERROR) -> None:
        super().__init__(level)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass(frozen=True)
class Push:
    """One ``datastar-patch-signals`` event of a stream, checked for shape."""

    revision: int
    signals: dict[str, Any]

    @property
    def keys(self) -> set[str]:
        return set(self.signals[SIGNAL_NAMESPACE])

    @property
    def data(self) -> dict[str, Any]:
        value: dict[str, Any] = self.signals.get(DATA_NAMESPACE, {})
        return value


def check_push(event: Event) -> Push:
    """Check that *event* is a well-formed push and return it.

    A push is a ``datastar-patch-signals`` event with an ``id:`` equal to the revision
    that every key under ``_stream`` is set to.
    """
    assert event.event == "datastar-patch-signals", event
    assert event.id is not None, f"a push without an id: {event}"
    assert revision_of(event.id) >= 0, event
    revision = revision_of(event.id)
    signals = event.signals
    assert set(signals) <= {SIGNAL_NAMESPACE, DATA_NAMESPACE}, signals
    revisions = signals[SIGNAL_NAMESPACE]
    assert revisions, f"a push without keys: {event}"
    assert all(value == revision for value in revisions.values()), (revision, revisions)
    return Push(revision, signals)


@dataclass
class OpenStream:
    """A stream whose response started (200) and whose opening frame was read."""

    response: httpx.Response
    reader: SSEReader
    opening_id: int
    last_revision: int = 0

    async def next_push(self) -> Push:
        """The next event; it must be a well-formed push newer than the previous one."""
        push = check_push(await self.reader.next_event())
        assert push.revision >= self.opening_id, (push, self.opening_id)
        assert push.revision > self.last_revision, (push, self.last_revision)
        self.last_revision = push.revision
        return push

    async def pushes_through(self, key: str) -> list[Push]:
        """Read pushes up to and including the first one that carries *key*.

        Invalidate a probe scope after other invalidations and read through its key:
        everything delivered before the probe is in these pushes (a write takes every
        pending change).
        """
        pushes = [await self.next_push()]
        while key not in pushes[-1].keys:
            pushes.append(await self.next_push())
        return pushes

    async def read_to_end(self) -> list[Event]:
        """Read frames until the response body completes; return them.

        A connection cut before the end of the body raises an `httpx.TransportError`.
        """
        frames: list[Event] = []
        while True:
            try:
                frames.append(await self.reader.next())
            except EOFError:
                return frames


@dataclass
class Served:
    """A running test app (`tests.integration.app`, or its Starlette twin) and a client.

    Each framework's fixture gives a subclass that knows where the app's broker is."""

    base_url: str
    client: httpx.AsyncClient
    statuses: list[int] = field(default_factory=list)
    expected_error_loggers: set[str] = field(default_factory=set)
    expected_server_errors: set[int] = field(default_factory=set)

    @property
    def broker(self) -> Broker:
        raise NotImplementedError

    @property
    def transport(self) -> InProcessTransport:
        transport = self.broker.transport
        assert isinstance(transport, InProcessTransport)
        return transport

    def expect_errors(self, logger_name: str) -> None:
        """Allow records at ERROR from *logger_name* (and its children) in this test."""
        self.expected_error_loggers.add(logger_name)

    def expect_status(self, status: int) -> None:
        """Allow the server to answer *status* (5xx) in this test."""
        self.expected_server_errors.add(status)

    async def page(self, *scopes: str) -> str:
        """A page with one Watch per scope (repeats allowed), and Connect()."""
        response = await self.client.get("/page", params=[("scope", value) for value in scopes])
        assert response.status_code == 200, response.text
        return response.text

    async def fragment(self, *scopes: str) -> str:
        """A fragment with one Watch per scope, ending with JoinStream()."""
        response = await self.client.get("/fragment", params=[("scope", value) for value in scopes])
        assert response.status_code == 200, response.text
        return response.text

    async def stream_url(self, *scopes: str) -> str:
        """Render a page watching *scopes* and return its stream URL."""
        return url_from(await self.page(*scopes))

    @contextlib.asynccontextmanager
    async def stream(
        self, url: str, *, headers: Mapping[str, str] | None = None
    ) -> AsyncIterator[OpenStream]:
        """Open *url*, check the response and its opening id-only frame; close on exit."""
        async with self.client.stream("GET", url, headers=headers) as response:
            if response.status_code != 200:
                await response.aread()
            assert response.status_code == 200, (response.status_code, response.text)
            assert response.headers["content-type"].startswith("text/event-stream")
            reader = SSEReader(response)
            opening = await reader.next()
            assert opening.event is None, f"the first frame is not id-only: {opening}"
            assert opening.data == [], opening
            assert opening.comments == [], opening
            assert opening.id is not None, opening
            assert revision_of(opening.id) >= 0, opening
            yield OpenStream(response, reader, revision_of(opening.id))

    async def refused(
        self, url: str, *, headers: Mapping[str, str] | None = None
    ) -> httpx.Response:
        """GET *url*, which must be answered with an error, not a stream."""
        async with self.client.stream("GET", url, headers=headers) as response:
            assert response.status_code != 200, "the stream was opened, not refused"
            await response.aread()
            return response

    async def wait_until(self, predicate: Callable[[], bool], what: str) -> None:
        """Poll *predicate*, for server state that no event announces (e.g. the server
        noticing a disconnect); bounded by WAIT."""
        try:
            async with asyncio.timeout(WAIT):
                while not predicate():  # noqa: ASYNC110 - nothing to wait on but the state
                    await asyncio.sleep(0.01)
        except TimeoutError:
            raise AssertionError(f"timed out waiting until {what}") from None

    async def wait_released(self) -> None:
        """Wait until every stream ended and released its upstream subscriptions."""
        await self.wait_until(
            lambda: (
                self.broker.watcher_count == 0
                and self.broker.pattern_count == 0
                # none but the broker's own one to every scope (upstream="all"), if open
                and self.transport.subscription_count == self.broker.subscription_count
            ),
            "every stream released its subscriptions "
            f"(watchers={self.broker.watcher_count}, "
            f"broker={self.broker.pattern_count}, "
            f"transport={self.transport.subscription_count})",
        )


@dataclass
class Live(Served):
    """The Litestar test app, served."""

    plugin: StreamPlugin = field(kw_only=True)

    @property
    def broker(self) -> Broker:
        return self.plugin.broker


ServedT = TypeVar("ServedT", bound=Served)


def url_from(*documents: str) -> str:
    """The stream URL for a page (the first document) and fragments rendered into it."""
    tokens = [token for document in documents for token in stream_tokens(document)]
    assert tokens, "no stream token in the documents"
    return stream_path(documents[0]) + "?" + "&".join(f"t={token}" for token in tokens)


class Start(Protocol):
    async def __call__(self, **settings: Any) -> Live: ...


@contextlib.asynccontextmanager
async def checked(
    serving: AbstractAsyncContextManager[str],
    served: Callable[[str, httpx.AsyncClient, list[int]], ServedT],
    watched_loggers: tuple[str, ...] = WATCHED_LOGGERS,
) -> AsyncIterator[ServedT]:
    """Serve an app (*serving* yields its base URL) with a client (*served* makes the
    `Served`); afterwards, check that it answered no unexpected 5xx and that nothing
    logged at ERROR from *watched_loggers* but what the test expected."""
    statuses: list[int] = []

    async def record(response: httpx.Response) -> None:
        statuses.append(response.status_code)

    handler = RecordingHandler()
    try:
        async with serving as base_url:
            # After the server started: uvicorn's logging setup drops the handlers it finds.
            for name in watched_loggers:
                logging.getLogger(name).addHandler(handler)
            async with httpx.AsyncClient(
                base_url=base_url,
                timeout=WAIT,
                trust_env=False,
                event_hooks={"response": [record]},
            ) as client:
                live = served(base_url, client, statuses)
                yield live
            # Shut down only once every stream is gone, so shutdown never has to cut one.
            if isinstance(live.broker.transport, InProcessTransport):
                await live.wait_released()
    finally:
        for name in watched_loggers:
            logging.getLogger(name).removeHandler(handler)
    unexpected_statuses = [
        status for status in statuses if status >= 500 and status not in live.expected_server_errors
    ]
    assert not unexpected_statuses, f"the server answered {unexpected_statuses}"
    unexpected = [
        record
        for record in handler.records
        if not any(
            record.name == name or record.name.startswith(name + ".")
            for name in live.expected_error_loggers
        )
    ]
    assert not unexpected, [f"{r.name}: {r.getMessage()}" for r in unexpected]


@contextlib.asynccontextmanager
async def running(**settings: Any) -> AsyncIterator[Live]:
    """Serve a new test app with ``StreamConfig(secret=SECRET, **settings)``."""
    settings.setdefault("secret", SECRET)
    app, plugin = make_app(StreamConfig(**settings))
    served = functools.partial(Live, plugin=plugin)
    async with checked(serve(app), served) as live:
        yield live


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    """Start a test app with the given StreamConfig settings (the secret is SECRET)."""
    async with contextlib.AsyncExitStack() as stack:

        async def start_app(**settings: Any) -> Live:
            return await stack.enter_async_context(running(**settings))

        yield start_app


@pytest.fixture
async def live(start: Start) -> Live:
    """The test app with the default settings."""
    return await start()
