"""Fixtures for the Starlette and FastAPI tests: the apps of `tests.starlette.app` under
a real server on a free port.

``start(framework, server="uvicorn", gzip=False, http_middleware=False, **settings)``
builds an app with ``StreamConfig(secret=SECRET, **settings)``, serves it (uvicorn, or
hypercorn, in this process) and returns a `Live` handle. Like the Litestar integration
fixtures, it checks for every test that the server never answered 5xx, that nothing
was logged at ERROR by the server, Starlette or streamui (unless the test said it
expects it), and that every stream released its subscriptions once the client left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import httpx
import pytest
from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config as HypercornConfig

from streamui import InProcessTransport
from streamui.starlette import StreamConfig
from tests.integration.conftest import OpenStream, RecordingHandler, url_from
from tests.starlette.app import Framework, Lifecycle, make_app
from tests.support import WAIT, SSEReader, revision_of, serve

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

    from streamui import Broker
    from streamui.starlette import StreamUI

SECRET = "starlette-tests-secret-0123456789"
WATCHED_LOGGERS = ("uvicorn.error", "hypercorn.error", "starlette", "fastapi", "streamui")

Server = Literal["uvicorn", "hypercorn"]


@contextlib.asynccontextmanager
async def serve_hypercorn(app: Callable[..., Awaitable[None]]) -> AsyncIterator[str]:
    """Run *app* under hypercorn (asyncio, HTTP/1.1) on a free loopback port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # hypercorn binds it again (SO_REUSEADDR)
    config = HypercornConfig()
    config.bind = [f"127.0.0.1:{port}"]
    config.graceful_timeout = 2
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    stop = asyncio.Event()
    task = asyncio.create_task(hypercorn_serve(app, config, shutdown_trigger=stop.wait))
    base_url = f"http://127.0.0.1:{port}"
    try:
        async with asyncio.timeout(WAIT), httpx.AsyncClient(trust_env=False) as client:
            while True:
                if task.done():
                    task.result()
                    raise RuntimeError("hypercorn stopped before it started")
                with contextlib.suppress(httpx.TransportError):
                    await client.get(base_url + "/component/0")
                    break
                await asyncio.sleep(0.02)
        yield base_url
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT)


@dataclass
class Live:
    """A running test app and a client for it."""

    base_url: str
    ui: StreamUI
    lifecycle: Lifecycle
    client: httpx.AsyncClient
    statuses: list[int] = field(default_factory=list)
    expected_error_loggers: set[str] = field(default_factory=set)

    @property
    def broker(self) -> Broker:
        return self.ui.broker

    @property
    def transport(self) -> InProcessTransport:
        transport = self.broker.transport
        assert isinstance(transport, InProcessTransport)
        return transport

    def expect_errors(self, logger_name: str) -> None:
        self.expected_error_loggers.add(logger_name)

    async def page(self, *scopes: str) -> str:
        response = await self.client.get("/page", params=[("scope", value) for value in scopes])
        assert response.status_code == 200, response.text
        return response.text

    async def fragment(self, *scopes: str) -> str:
        response = await self.client.get("/fragment", params=[("scope", value) for value in scopes])
        assert response.status_code == 200, response.text
        return response.text

    async def stream_url(self, *scopes: str) -> str:
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
            assert opening.id is not None, opening
            yield OpenStream(response, reader, revision_of(opening.id))

    async def refused(
        self, url: str, *, headers: Mapping[str, str] | None = None
    ) -> httpx.Response:
        """GET *url*, which must be answered with an error, not a stream."""
        async with self.client.stream("GET", url, headers=headers) as response:
            assert response.status_code != 200, "the stream was opened, not refused"
            await response.aread()
            return response

    async def wait_released(self) -> None:
        """Wait until every stream ended and released its upstream subscriptions."""
        try:
            async with asyncio.timeout(WAIT):
                while not (  # noqa: ASYNC110 - nothing to wait on but the state
                    self.broker.watcher_count == 0
                    and self.broker.pattern_count == 0
                    and self.transport.subscription_count == self.broker.subscription_count
                ):
                    await asyncio.sleep(0.01)
        except TimeoutError:
            raise AssertionError(
                f"streams still hold subscriptions (watchers={self.broker.watcher_count})"
            ) from None


class Start(Protocol):
    async def __call__(
        self,
        framework: Framework,
        *,
        server: Server = "uvicorn",
        gzip: bool = False,
        http_middleware: bool = False,
        **settings: Any,
    ) -> Live: ...


@contextlib.asynccontextmanager
async def running(
    framework: Framework,
    *,
    server: Server = "uvicorn",
    gzip: bool = False,
    http_middleware: bool = False,
    **settings: Any,
) -> AsyncIterator[Live]:
    settings.setdefault("secret", SECRET)
    app, ui, lifecycle = make_app(
        StreamConfig(**settings), framework, gzip=gzip, http_middleware=http_middleware
    )
    statuses: list[int] = []

    async def record(response: httpx.Response) -> None:
        statuses.append(response.status_code)

    handler = RecordingHandler()
    serving = serve(app) if server == "uvicorn" else serve_hypercorn(app)
    try:
        async with serving as base_url:
            for name in WATCHED_LOGGERS:
                logging.getLogger(name).addHandler(handler)
            async with httpx.AsyncClient(
                base_url=base_url,
                timeout=WAIT,
                trust_env=False,
                event_hooks={"response": [record]},
            ) as client:
                live = Live(base_url, ui, lifecycle, client, statuses)
                yield live
            await live.wait_released()
    finally:
        for name in WATCHED_LOGGERS:
            logging.getLogger(name).removeHandler(handler)
    assert not [status for status in statuses if status >= 500], statuses
    unexpected = [
        record
        for record in handler.records
        if not any(
            record.name == name or record.name.startswith(name + ".")
            for name in live.expected_error_loggers
        )
    ]
    assert not unexpected, [f"{r.name}: {r.getMessage()}" for r in unexpected]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    """Start a test app (the secret is SECRET); stopped after the test."""
    async with contextlib.AsyncExitStack() as stack:

        async def start_app(
            framework: Framework,
            *,
            server: Server = "uvicorn",
            gzip: bool = False,
            http_middleware: bool = False,
            **settings: Any,
        ) -> Live:
            return await stack.enter_async_context(
                running(
                    framework, server=server, gzip=gzip, http_middleware=http_middleware, **settings
                )
            )

        yield start_app


@pytest.fixture(params=["fastapi", "starlette"])
def framework(request: pytest.FixtureRequest) -> Framework:
    """Each test runs on a FastAPI app (``install``) and a Starlette app (the pieces)."""
    value: Framework = request.param
    return value


@pytest.fixture
async def live(start: Start, framework: Framework) -> Live:
    return await start(framework)
