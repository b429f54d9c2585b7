"""Litestar integration: `StreamPlugin` serves the stream and owns the broker.

``Litestar(plugins=[StreamPlugin(StreamConfig(secret=...))])``:

- registers `StreamController` at ``config.path`` (default ``/streamui/stream``);
- provides the `Broker` as the dependency ``broker`` (unless the app already defines one);
- starts the broker with the app, ends every stream as soon as the server starts
  shutting down (`streamui.shutdown`), and closes the broker on shutdown;
- makes `Connect`, `JoinStream` and `init_scope` sign tokens for this app in every request.

The stream endpoint answers 404 for any other spelling of its path, 400 for a missing
token, too many tokens or scopes, 403 for a token that does not verify or a connection
the ``authorize`` hook refuses, and 503 if the broker cannot subscribe; each with a
reason in the body. It never answers 500 for bad input.

What the endpoint does is `streamui.service.StreamService`'s, shared with
`streamui.starlette`; this module routes it, and turns its refusals into Litestar's
exceptions (so an app's exception handlers see them as any other 4xx).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final

from litestar import Controller, Request, Response, get
from litestar.di import Provide
from litestar.exceptions import (
    ClientException,
    HTTPException,
    NotFoundException,
    PermissionDeniedException,
)
from litestar.plugins import InitPlugin

from streamui import client
from streamui.broker import Broker
from streamui.components import use_endpoint
from streamui.errors import StreamRefused
from streamui.service import (
    NATS_URL_ENV,
    REFUSED_TOKENS_HEADER,
    SECRET_ENV,
    StreamConfig,
    StreamService,
)

if TYPE_CHECKING:
    from litestar import Litestar
    from litestar.config.app import AppConfig
    from litestar.config.compression import CompressionConfig
    from litestar.types import ASGIApp, Receive, Scope, Send

    from streamui.stream import EventStream

__all__ = [
    "NATS_URL_ENV",
    "REFUSED_TOKENS_HEADER",
    "SECRET_ENV",
    "Authorize",
    "StreamConfig",
    "StreamController",
    "StreamPlugin",
]

logger = logging.getLogger("streamui.litestar")

Authorize = Callable[[Request[Any, Any, Any], tuple[str, ...]], bool | Awaitable[bool]]
"""``authorize(request, scopes)``: return False to refuse the stream (403)."""

_STATE_KEY = "streamui"

_Service = StreamService[Request[Any, Any, Any]]

_EXCEPTIONS: Final[dict[int, type[HTTPException]]] = {
    400: ClientException,
    403: PermissionDeniedException,
    404: NotFoundException,
}


def _http_exception(refused: StreamRefused) -> HTTPException:
    """*refused* as the Litestar exception an app's exception handlers expect."""
    exception = _EXCEPTIONS.get(refused.status, HTTPException)
    return exception(refused.reason, status_code=refused.status, headers=dict(refused.headers))


class StreamController(Controller):
    """Serves ``GET <path>?t=<token>[&t=<token>…][&since=<event id or ms>]`` as a Datastar
    SSE stream,
    and ``GET <path>/merge?t=<token>…``, which answers ``{"token": …}``: one token for the
    union of the scopes of several (streamui's module uses it for the stream it shares
    between tabs, when their tokens are more than ``max_tokens``)."""

    path = "/streamui/stream"
    include_in_schema = False

    @get("/", name="streamui:stream", cache=False)
    async def stream(self, request: Request[Any, Any, Any]) -> ASGIApp:
        service: _Service = request.app.state[_STATE_KEY]
        try:
            stream: EventStream = await service.stream(request.scope, request)
        except StreamRefused as refused:
            raise _http_exception(refused) from None
        return stream

    @get("/merge", name="streamui:merge", cache=False)
    async def merge(self, request: Request[Any, Any, Any]) -> Response[dict[str, str]]:
        service: _Service = request.app.state[_STATE_KEY]
        try:
            token = service.merge(request.scope)
        except StreamRefused as refused:
            raise _http_exception(refused) from None
        return Response({"token": token}, headers={"cache-control": "no-store"})


_CAPTURE: Final = "ExceptionHandlerMiddleware.__call__.<locals>.capture_response_started"


def past_exception_capture(send: Send) -> Send:
    """*send* without the wrappers of Litestar's own exception handlers on its outside.

    Litestar wraps ``send`` at the app and at the route, only to note that the response
    started: a stream's frames come after that, and going through them costs two
    coroutines per frame, a tenth of a delivery's CPU. Unwrapping stops at anything
    else, so every middleware of the app still sees every frame (between the two, the
    app's middleware keeps the inner one in place).
    """
    while getattr(send, "__qualname__", None) == _CAPTURE:
        function: Any = send
        try:
            inner = function.__closure__[function.__code__.co_freevars.index("send")]
            inner = inner.cell_contents
        except (AttributeError, IndexError, TypeError, ValueError):
            break  # another Litestar than this was written for: keep the wrapper
        if not callable(inner):
            break
        send = inner
    return send


class StreamPlugin(InitPlugin):
    """Adds streamui to a Litestar app (see the module docstring)."""

    __slots__ = ("broker", "config", "endpoint", "service")

    def __init__(self, config: StreamConfig | None = None) -> None:
        self.config = config = config or StreamConfig()
        self.service: _Service = StreamService(
            config, Request, frame_send=past_exception_capture, logger=logger
        )
        self.broker = self.service.broker
        self.endpoint = self.service.endpoint

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        app_config.state[_STATE_KEY] = self.service
        controller = type("StreamController", (StreamController,), {"path": self.config.path})
        app_config.route_handlers.append(controller)
        if self.endpoint.client_url is not None:
            app_config.route_handlers.append(_client_handler(self.endpoint.client_url))
        if self.config.dependency_key not in app_config.dependencies:
            broker = self.broker

            def provide_broker() -> Broker:
                return broker

            app_config.dependencies[self.config.dependency_key] = Provide(
                provide_broker, sync_to_thread=False
            )
        app_config.signature_namespace.update(
            {"Broker": Broker, "StreamConfig": StreamConfig, "StreamPlugin": StreamPlugin}
        )
        # First, so the broker is up before the app's own lifespans and on_startup hooks
        # (which may invalidate) and still up while they shut down.
        app_config.lifespan.insert(0, self._lifespan)
        app_config.middleware.insert(0, self._middleware)
        if app_config.compression_config is not None and not self.config.compress:
            app_config.compression_config = _exclude_path(
                app_config.compression_config, self.config.path
            )
        return app_config

    @asynccontextmanager
    async def _lifespan(self, app: Litestar) -> AsyncGenerator[None, None]:
        async with self.service.lifespan():
            yield

    def _middleware(self, app: ASGIApp) -> ASGIApp:
        endpoint = self.endpoint
        is_stream = self.service.is_stream

        async def with_endpoint(scope: Scope, receive: Receive, send: Send) -> None:
            with use_endpoint(endpoint):
                await app(scope, receive, send)

        def dispatch(scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
            # A stream renders nothing, and lives for hours: it keeps no registry and
            # no frame of this middleware (other spellings of the path get a 404).
            if is_stream(scope):
                return app(scope, receive, send)
            return with_endpoint(scope, receive, send)

        return dispatch


def _client_handler(url: str) -> Any:
    """The route serving streamui's browser module at *url* (which names its digest)."""

    @get(url, name="streamui:client", include_in_schema=False, media_type=client.MEDIA_TYPE)
    async def streamui_client() -> Response[bytes]:
        return Response(
            client.source(),
            media_type=client.MEDIA_TYPE,
            headers={"cache-control": client.CACHE_CONTROL},
        )

    return streamui_client


def _exclude_path(compression: CompressionConfig, path: str) -> CompressionConfig:
    """*compression* with the stream's path added to what it leaves alone."""
    exclude = compression.exclude
    patterns = [exclude] if isinstance(exclude, str) else list(exclude or ())
    return dataclasses.replace(compression, exclude=[*patterns, f"^{re.escape(path)}$"])
