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
import functools
import logging
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import httpx
import pytest
from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config as HypercornConfig

from streamui.starlette import StreamConfig
from tests.integration.conftest import Served, checked
from tests.starlette.app import Framework, Lifecycle, make_app
from tests.support import WAIT, serve

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

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
class Live(Served):
    """The Starlette (or FastAPI) test app, served."""

    ui: StreamUI = field(kw_only=True)
    lifecycle: Lifecycle = field(kw_only=True)

    @property
    def broker(self) -> Broker:
        return self.ui.broker


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
    serving = serve(app) if server == "uvicorn" else serve_hypercorn(app)
    served = functools.partial(Live, ui=ui, lifecycle=lifecycle)
    async with checked(serving, served, WATCHED_LOGGERS) as live:
        yield live


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
