"""The app of the compatibility matrix, in each of its variants.

Servers import `tests.matrix.app` (``tests.matrix.app:app``), which builds the variant
named by ``STREAMUI_MATRIX_VARIANT``, so the command line stays the one a user types.
Routes:

- ``GET /page?scope=a&scope=b`` renders one `Watch` per scope, then `Connect()`; padded
  past the compression threshold, and it counts views in the session (``secured``).
- ``GET /component/{index}`` is what the watchers re-fetch.
- ``POST /invalidate?scope=a`` invalidates through the ``broker`` dependency.
- ``GET /debug/counts`` is the server's state as JSON (``watchers``, ``subscriptions``,
  ``pid``, ``streams_open``: the stream requests in progress, ``streams_incomplete``:
  those that returned without a last body message), so a test can look inside a server
  that runs in another process.

Every variant has `StreamEnds`, a plain ASGI middleware that only watches, as a metrics
middleware would.

The ``secured`` variant adds CORS, a server-side session and an authentication
middleware that answers 401 to every request (the stream included) without the
``CREDENTIAL_HEADER`` header.
"""

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Final

from htpy import p
from litestar import Litestar, MediaType, Request, get
from litestar.config.compression import CompressionConfig
from litestar.config.cors import CORSConfig
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency
from litestar.exceptions import NotAuthorizedException
from litestar.middleware import (
    AbstractAuthenticationMiddleware,
    AuthenticationResult,
    DefineMiddleware,
)
from litestar.middleware.session.server_side import ServerSideSessionConfig
from litestar.params import QueryParameter

from streamui import Broker
from streamui.litestar import StreamConfig, StreamPlugin
from tests.integration.app import component, invalidate, page_document

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Message, Middleware, Receive, Scope, Send

__all__ = [
    "CREDENTIAL",
    "CREDENTIAL_HEADER",
    "HEARTBEAT",
    "ORIGIN",
    "SECRET",
    "VARIANTS",
    "VARIANT_ENV",
    "Variant",
    "build_app",
]

VARIANT_ENV: Final = "STREAMUI_MATRIX_VARIANT"
SECRET: Final = "matrix-tests-secret-0123456789"
"""Fixed, so a tab's tokens still verify on the restarted server."""
HEARTBEAT: Final = 0.3
CREDENTIAL_HEADER: Final = "x-matrix-user"
CREDENTIAL: Final = "matrix-user"
ORIGIN: Final = "http://matrix.example"


@dataclass(frozen=True, slots=True)
class Variant:
    """How one variant configures the app."""

    name: str
    compression: str | None = None
    """The Content-Encoding of Litestar's compression (``gzip``, ``br``), or None."""
    compress_stream: bool = False
    """``StreamConfig(compress=True)``: the stream is compressed too."""
    secured: bool = False
    """CORS, a server-side session and `HeaderAuthentication`."""


VARIANTS: Final = {
    variant.name: variant
    for variant in (
        Variant("plain"),
        Variant("gzip", compression="gzip"),
        Variant("brotli", compression="br"),
        Variant("secured", secured=True),
        Variant("gzip-stream", compression="gzip", compress_stream=True),
        Variant("brotli-stream", compression="br", compress_stream=True),
    )
}
"""Every variant, by name."""

Scopes = Annotated[list[str], QueryParameter(name="scope")]

_PADDING: Final = "Padding past the compression threshold. " * 40


class StreamEnds:
    """A middleware that watches how stream requests end: how many are in progress, and
    how many started a response through it and returned without a last body message
    saying ``more_body`` false (a middleware that holds something until the body ends,
    as compression does, needs that message even when the client left first)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.open = 0
        self.incomplete = 0

    def __call__(self, app: "ASGIApp") -> "ASGIApp":
        async def watching(scope: "Scope", receive: "Receive", send: "Send") -> None:
            if scope["path"] != self.path:
                await app(scope, receive, send)
                return
            started = completed = False

            async def send_and_watch(message: "Message") -> None:
                nonlocal started, completed
                if message["type"] == "http.response.start":
                    started = True
                elif message["type"] == "http.response.body":
                    completed = not message.get("more_body", False)
                await send(message)

            self.open += 1
            try:
                await app(scope, receive, send_and_watch)
            finally:
                self.open -= 1
                # (A request refused by an inner middleware raised: its response was
                # made outside this one.)
                self.incomplete += started and not completed

        return watching


class HeaderAuthentication(AbstractAuthenticationMiddleware):
    """Lets a request in only with ``CREDENTIAL_HEADER: CREDENTIAL``; 401 otherwise."""

    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> Any:
        if connection.headers.get(CREDENTIAL_HEADER) != CREDENTIAL:
            raise NotAuthorizedException(f"send the {CREDENTIAL_HEADER} header")
        return AuthenticationResult(user=CREDENTIAL, auth=None)


def build_app(variant: Variant) -> Litestar:
    """The matrix app configured as *variant*."""
    plugin = StreamPlugin(
        StreamConfig(secret=SECRET, heartbeat=HEARTBEAT, compress=variant.compress_stream)
    )
    stream_ends = StreamEnds(plugin.config.path)

    @get("/page", media_type=MediaType.HTML)
    async def page(request: Request[Any, Any, Any], scopes: Scopes) -> str:
        if variant.secured:
            request.session["views"] = request.session.get("views", 0) + 1
        return str(page_document(scopes, extra=p[_PADDING]))

    @get("/debug/counts")
    async def counts(broker: NamedDependency[Broker]) -> dict[str, int]:
        return {
            "watchers": broker.watcher_count,
            "subscriptions": broker.pattern_count,
            "pid": os.getpid(),
            "streams_open": stream_ends.open,
            "streams_incomplete": stream_ends.incomplete,
        }

    compression = None
    if variant.compression is not None:
        backend = "brotli" if variant.compression == "br" else variant.compression
        compression = CompressionConfig(backend=backend)
    middleware: list[Middleware] = [stream_ends]
    cors = None
    if variant.secured:
        cors = CORSConfig(allow_origins=[ORIGIN], allow_credentials=True)
        middleware += [
            ServerSideSessionConfig().middleware,
            DefineMiddleware(HeaderAuthentication),
        ]
    return Litestar(
        route_handlers=[page, component, invalidate, counts],
        plugins=[plugin],
        compression_config=compression,
        cors_config=cors,
        middleware=middleware,
        debug=False,
    )
