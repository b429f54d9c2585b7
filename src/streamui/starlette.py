"""Starlette and FastAPI integration: `StreamUI` serves the stream and owns the broker.

``StreamUI(StreamConfig(secret=...)).install(app)``, for a ``Starlette`` or ``FastAPI``
app before it starts:

- routes the stream at ``config.path`` (default ``/streamui/stream``), its ``/merge``
  route and streamui's browser module, ahead of the app's own routes;
- starts the broker before the app's own lifespan runs and closes it after, ends every
  stream as soon as the server starts shutting down (`streamui.shutdown`), and sets
  ``app.state.broker`` (``config.dependency_key``) unless the app set it, and
  ``app.state.streamui`` to itself;
- makes `Connect`, `JoinStream` and `init_scope` sign tokens for this app in every
  request (a pure ASGI middleware, outermost of the app's own).

Or piece by piece: ``Starlette(routes=[*ui.routes, ...], middleware=[ui.middleware],
lifespan=ui.lifespan)`` (``ui.wrap_lifespan(own)`` runs the app's own lifespan inside
it). FastAPI handlers get the broker with ``Depends(ui.provide_broker)``.

The endpoint is the Litestar plugin's (`streamui.service.StreamService`), and answers
the same: 404 for any other spelling of its path, 400 for a missing token, too many
tokens or scopes, 403 for a token that does not verify or a connection the
``authorize(request, scopes)`` hook refuses (*request*: a ``starlette.requests.Request``),
503 if the broker cannot subscribe; each with the reason in a JSON body
(``{"status_code": …, "detail": …}``, as Litestar's). Never a 500 for bad input.

Starlette's GZipMiddleware (0.46 and later) never compresses ``text/event-stream``, so
the stream passes it untouched; ``StreamConfig(compress=True)`` has no meaning here and
is refused.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, cast

try:
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import BaseRoute, Route
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "streamui.starlette needs Starlette: pip install 'streamui[starlette]'"
    ) from error

from streamui import client
from streamui.components import use_endpoint
from streamui.errors import ConfigurationError, StreamRefused
from streamui.service import (
    NATS_URL_ENV,
    REFUSED_TOKENS_HEADER,
    SECRET_ENV,
    StreamConfig,
    StreamService,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping
    from contextlib import AbstractAsyncContextManager

    from starlette.applications import Starlette
    from starlette.types import ASGIApp, Receive, Scope, Send

    from streamui.broker import Broker
    from streamui.components import StreamEndpoint

__all__ = [
    "NATS_URL_ENV",
    "REFUSED_TOKENS_HEADER",
    "SECRET_ENV",
    "Authorize",
    "StreamConfig",
    "StreamUI",
    "StreamUIMiddleware",
]

logger = logging.getLogger("streamui.starlette")

Authorize = Callable[[Request, tuple[str, ...]], bool | Awaitable[bool]]
"""``authorize(request, scopes)``: return False to refuse the stream (403)."""

AppLifespan = Callable[[Any], "AbstractAsyncContextManager[Any]"]
"""A lifespan as Starlette and FastAPI take it (``lifespan=``): it yields None, or the
state that each request's ``request.state`` starts from."""


class StreamUI:
    """streamui for one Starlette or FastAPI app (see the module docstring)."""

    __slots__ = ("broker", "config", "endpoint", "service")

    def __init__(self, config: StreamConfig | None = None) -> None:
        self.config = config = config or StreamConfig()
        if config.compress:
            raise ConfigurationError(
                "StreamConfig(compress=True) is for Litestar's compression_config: "
                "Starlette's GZipMiddleware never compresses a text/event-stream "
                "response; leave compress at False"
            )
        self.service: StreamService[Request] = StreamService(config, Request, logger=logger)
        self.broker: Broker = self.service.broker
        self.endpoint: StreamEndpoint = self.service.endpoint

    @property
    def routes(self) -> list[BaseRoute]:
        """The stream, its merge route and streamui's browser module, for ``routes=``
        (put them before a catch-all route of the app)."""
        path = self.config.path
        routes: list[BaseRoute] = [
            Route(path, _StreamApp(self.service), methods=["GET"], name="streamui:stream"),
            Route(f"{path}/merge", self._merge, methods=["GET"], name="streamui:merge"),
        ]
        if self.endpoint.client_url is not None:
            routes.append(
                Route(self.endpoint.client_url, _client, methods=["GET"], name="streamui:client")
            )
        return routes

    @property
    def middleware(self) -> Middleware:
        """`StreamUIMiddleware` for this app, for ``middleware=`` (first in the list)."""
        return Middleware(StreamUIMiddleware, service=self.service)

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        """The broker's lifespan, for ``lifespan=``: started first, closed last."""
        key = self.config.dependency_key
        if getattr(app.state, key, None) is None:
            setattr(app.state, key, self.broker)
        app.state.streamui = self
        async with self.service.lifespan():
            yield

    def wrap_lifespan(self, own: AppLifespan | None) -> AppLifespan:
        """A lifespan that runs *own* (the app's, which may yield state) inside
        `lifespan`, so the broker is up while the app's own startup and shutdown run
        (they may invalidate)."""

        @asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[Mapping[str, Any] | None]:
            async with self.lifespan(app):
                if own is None:
                    yield None
                    return
                async with own(app) as state:
                    yield state

        return lifespan

    def install(self, app: Starlette) -> None:
        """Add the routes, the middleware and the lifespan to *app* (before it starts)."""
        app.state.streamui = self  # (streamui.testing.broker_of finds the broker here)
        app.router.routes[:0] = self.routes
        app.add_middleware(StreamUIMiddleware, service=self.service)
        app.router.lifespan_context = self.wrap_lifespan(app.router.lifespan_context)

    def provide_broker(self) -> Broker:
        """The broker, for FastAPI's ``Depends(ui.provide_broker)``."""
        return self.broker

    async def _merge(self, request: Request) -> Response:
        try:
            token = self.service.merge(request.scope)
        except StreamRefused as refused:
            return _refusal(refused)
        return JSONResponse({"token": token}, headers={"cache-control": "no-store"})


class StreamUIMiddleware:
    """Renders every request but the stream with ``use_endpoint``, so `Connect`,
    `JoinStream` and `init_scope` sign tokens for the app's stream (pure ASGI: it adds
    nothing to the path of a response's messages)."""

    __slots__ = ("app", "endpoint", "is_stream")

    def __init__(self, app: ASGIApp, service: StreamService[Any]) -> None:
        self.app = app
        self.endpoint = service.endpoint
        self.is_stream = service.is_stream

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # A stream renders nothing, and lives for hours: it keeps no registry and no
        # frame of this middleware (other spellings of the path get a 404).
        if scope["type"] == "lifespan" or self.is_stream(scope):
            return self.app(scope, receive, send)
        return self._with_endpoint(scope, receive, send)

    async def _with_endpoint(self, scope: Scope, receive: Receive, send: Send) -> None:
        with use_endpoint(self.endpoint):
            await self.app(scope, receive, send)


class _StreamApp:
    """The stream route, as a plain ASGI app: Starlette routes it without a Request or
    an exception wrapper of its own, which an open stream would keep for hours."""

    __slots__ = ("_service",)

    def __init__(self, service: StreamService[Request]) -> None:
        self._service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "GET":  # HEAD: a stream has no end to send the headers of
            await Response(status_code=405, headers={"allow": "GET"})(scope, receive, send)
            return
        try:
            stream = await self._service.stream(scope)
        except StreamRefused as refused:
            await _refusal(refused)(scope, receive, send)
            return
        await cast("ASGIApp", stream)(scope, receive, send)


def _refusal(refused: StreamRefused) -> Response:
    """*refused* as a JSON error response shaped like Litestar's, which streamui's
    browser module reads the reason from."""
    return JSONResponse(
        {"status_code": refused.status, "detail": refused.reason},
        status_code=refused.status,
        headers=dict(refused.headers),
    )


async def _client(request: Request) -> Response:
    """streamui's browser module (its URL names its digest: cached for a year)."""
    return Response(
        client.source(),
        media_type=client.MEDIA_TYPE,
        headers={"cache-control": client.CACHE_CONTROL},
    )
