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
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import logging
import os
import re
import time
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qs

from datastar_py import ServerSentEventGenerator
from litestar import Controller, Request, Response, get
from litestar.di import Provide
from litestar.exceptions import ClientException, NotFoundException, PermissionDeniedException
from litestar.plugins import InitPlugin

from streamui import client
from streamui.broker import POINT, Broker, Upstream
from streamui.components import (
    TOKENS_NAMESPACE,
    StreamEndpoint,
    _token_name,
    merge_tokens,
    use_endpoint,
)
from streamui.errors import ConfigurationError, InvalidTokenError
from streamui.scopes import DEFAULT_PREFIX
from streamui.shutdown import on_server_shutdown
from streamui.stream import EventStream
from streamui.tokens import StreamToken, TokenSigner, unverified_claims

if TYPE_CHECKING:
    from collections.abc import Mapping

    from litestar import Litestar
    from litestar.config.app import AppConfig
    from litestar.config.compression import CompressionConfig
    from litestar.types import ASGIApp, Receive, Scope, Send

    from streamui.transports import Transport

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
SECRET_ENV = "STREAMUI_SECRET"
REFUSED_TOKENS_HEADER: Final = "streamui-refused-tokens"
"""On a 403 for tokens that do not verify: their indexes among the request's ``t``."""
NATS_URL_ENV = "STREAMUI_NATS_URL"


@dataclass
class StreamConfig:
    """Settings of the stream endpoint and its broker."""

    path: str = "/streamui/stream"
    secret: str | bytes | None = field(default_factory=lambda: os.environ.get(SECRET_ENV) or None)
    """HMAC secret for stream tokens, shared by every process serving the app (default:
    ``STREAMUI_SECRET``). None draws a random one per process: one process only, and
    open tabs must reload after a restart."""
    prefix: str = DEFAULT_PREFIX
    nats_url: str | Sequence[str] | None = field(
        default_factory=lambda: os.environ.get(NATS_URL_ENV) or None
    )
    """NATS server URL(s) (default: ``STREAMUI_NATS_URL``); set, the broker uses
    `streamui.nats.NatsTransport` so several processes and machines share invalidations."""
    nats_options: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for ``nats.connect`` (credentials, TLS, names, ...)."""
    transport: Transport | None = None
    """A transport to use instead (None and no *nats_url*: the in-process transport)."""
    broker: Broker | None = None
    """An existing broker to serve; by default one is built from *transport* and *prefix*."""
    max_scopes: int = 64
    max_tokens: int = 16
    max_data_bytes: int = 65536
    """The largest ``data=`` payload, in bytes of JSON (see `Broker`); ignored when
    *broker* is given (set it on that broker)."""
    upstream: Upstream = "all"
    """What the broker subscribes to over NATS: every invalidation of the prefix (exact
    catch-up) or only the watched patterns (see `Broker`); ignored when *broker* is
    given, and must be "all" with the in-process transport."""
    heartbeat: float = 15.0
    max_lifetime: float | None = None
    token_max_age: float | None = None
    """Refuse tokens whose page was rendered longer ago than this, renewed or not."""
    token_lifetime: float | None = 3600.0
    """Seconds a stream token verifies after it was signed: a stream URL copied from a
    log grants nothing after that. Open streams hand their tabs renewed tokens (running
    ``authorize`` again) halfway through, so open tabs never notice; a tab that was
    closed or offline longer reloads once (see ``reload_when_refused``). None: tokens
    never expire."""
    authorize: Authorize | None = None
    dependency_key: str = "broker"
    end_streams_on_signal: bool = True
    """End open streams as soon as the server starts shutting down (SIGINT/SIGTERM, or
    hypercorn's signal to its worker processes); see the README."""
    reconnect_spread: float = 5.0
    """Seconds: streams ended by a shutdown tell each browser to reconnect after a
    random delay between 1 s and this, so a restart does not arrive as one spike."""
    share_across_tabs: bool = True
    """One stream per browser: all tabs of a browser profile showing this app share the
    stream of one of them (Web Locks + BroadcastChannel; per-tab streams where a browser
    lacks them). False gives every tab its own stream."""
    reload_when_refused: bool = True
    """A tab whose stream is refused with a 403 (its token no longer verifies after a
    secret rotation or its expiry, or ``authorize`` said no) reloads once, for a fresh
    page; refused again, it waits 30 s, then longer. False only shows the reason, in the
    ``_streamError`` signal (as for any refusal)."""
    compress: bool = False
    """Let the app's Litestar compression (``compression_config``) compress the stream.
    Off by default: events are ~100 bytes, and a compressed stream keeps a compressor
    per open stream (zlib: ~256 KB each) and compresses every event once per stream."""
    eager_writes: bool = True
    """Write a waiting stream's frames from the broker's fan-out, stepping the app's
    ``send`` (the whole middleware chain, in the stream's context) by hand: a delivery
    then costs no task switch, and a write that must wait is finished by the stream's
    task. False writes every frame from the stream's own task, for middleware that needs
    its ``send`` awaited there (one task wake-up per delivery)."""

    def __post_init__(self) -> None:
        if not self.path.startswith("/"):
            raise ConfigurationError(f"path must start with '/', got {self.path!r}")
        for name in ("max_scopes", "max_tokens", "max_data_bytes"):
            if getattr(self, name) < 1:
                raise ConfigurationError(f"{name} must be at least 1, got {getattr(self, name)!r}")
        if self.max_tokens < 2:
            raise ConfigurationError(
                "max_tokens must be at least 2 (streamui's module has the server merge the "
                f"tokens of a stream, a few at a time), got {self.max_tokens!r}"
            )
        if self.heartbeat <= 0:
            raise ConfigurationError(f"heartbeat must be positive seconds, got {self.heartbeat!r}")
        if self.token_lifetime is not None and not self.token_lifetime > 0:
            raise ConfigurationError(
                f"token_lifetime must be positive seconds, got {self.token_lifetime!r}"
            )
        if self.max_lifetime is not None and self.max_lifetime <= 0:
            raise ConfigurationError(f"max_lifetime must be positive, got {self.max_lifetime!r}")
        if self.reconnect_spread < 0:
            raise ConfigurationError(
                f"reconnect_spread must be zero or positive seconds, got {self.reconnect_spread!r}"
            )


@dataclass(frozen=True)
class _State:
    config: StreamConfig
    broker: Broker
    endpoint: StreamEndpoint

    @functools.cached_property
    def renew_every(self) -> float:
        """Seconds between token renewals: half their lifetime (one float for every
        stream)."""
        lifetime = self.endpoint.signer.lifetime
        return 0.0 if lifetime is None else lifetime / 2


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
        state: _State = request.app.state[_STATE_KEY]
        config = state.config
        if not _is_exact_path(request, config.path):
            # Litestar also routes //path, path/ and path%2F here; a proxy rule that
            # matches the exact path must not be sidestepped by another spelling.
            raise NotFoundException(f"the stream is served at {config.path!r} only")
        query = _query(request.scope)
        since = _since(query)
        verified, watched = _verified(state, query)
        if not await _authorized(config, request, watched):
            raise PermissionDeniedException("not authorized to watch these scopes")

        def merge(opening_id: str) -> bytes:
            event = merge_tokens(state.endpoint, verified, event_id=opening_id)
            return event.encode() if event is not None else b""

        # The stream catches up on what was invalidated after a point: since (streamui's
        # module, which knows what its tabs have seen), else the last event the browser
        # saw, else the newest render (older tokens' scopes were served until then by
        # the stream this one replaces). A client that lies only gets more pushes, or
        # misses its own updates. An id that no broker gave is owed everything.
        point = since or _last_event_id(request.scope) or _render_point(verified)
        resume = POINT.fullmatch(point) is None
        return EventStream(
            state.broker,
            watched,
            after=None if resume else point,
            resume=resume,
            clock=state.endpoint.signer.instance,
            heartbeat=config.heartbeat,
            max_lifetime=config.max_lifetime,
            greeting=merge,
            eager_writes=config.eager_writes,
            frame_send=past_exception_capture,
            **_renewal(state, request, verified, watched),
        )

    @get("/merge", name="streamui:merge", cache=False)
    async def merge(self, request: Request[Any, Any, Any]) -> Response[dict[str, str]]:
        state: _State = request.app.state[_STATE_KEY]
        verified, watched = _verified(state, _query(request.scope))
        # The oldest render: a merged token never claims a later one than its parts.
        token = state.endpoint.signer.sign(
            watched, issued_at=min(token.issued_at for token in verified)
        )
        return Response({"token": token}, headers={"cache-control": "no-store"})


def _render_point(verified: Sequence[StreamToken]) -> str:
    """The newest render among *verified*, as a `POINT` named after its process's clock."""
    newest = max(verified, key=lambda token: token.issued_at)
    ms = int(newest.issued_at * 1000)
    return f"{ms}-{newest.instance}" if newest.instance is not None else str(ms)


async def _authorized(
    config: StreamConfig, request: Request[Any, Any, Any], scopes: tuple[str, ...]
) -> bool:
    if config.authorize is None:
        return True
    allowed = config.authorize(request, scopes)
    if inspect.isawaitable(allowed):
        allowed = await allowed
    return bool(allowed)


def _renewal(
    state: _State,
    request: Request[Any, Any, Any],
    verified: Sequence[StreamToken],
    watched: tuple[str, ...],
) -> dict[str, Any]:
    """The stream's token renewal: halfway to the first expiry, then every half lifetime,
    ``authorize`` runs again and the tab gets its tokens signed again (same scopes and
    render time) as a ``_streamTokens`` patch, under the names its tokens have."""
    signer = state.endpoint.signer
    if signer.lifetime is None:
        return {}
    soonest = min(signer.expiry(token) or 0.0 for token in verified)
    return {
        "renew": _Renewal(state, request.scope, verified, watched),
        "renew_after": max(0.0, soonest - time.time()) / 2,
        "renew_every": state.renew_every,
    }


class _Renewal:
    """Renews a stream's tokens: ``authorize`` again, then the tokens signed again, as
    a ``_streamTokens`` patch (None: not authorized any more).

    One small object per open stream. It keeps the ASGI scope (which lives as long as
    the stream anyway), not a Request: the Request made of it again at a renewal
    (rarely) is not kept alive for hours by every stream."""

    __slots__ = ("_scope", "_state", "_verified", "_watched")

    def __init__(
        self,
        state: _State,
        scope: Scope,
        verified: Sequence[StreamToken],
        watched: tuple[str, ...],
    ) -> None:
        self._state = state
        self._scope = scope
        self._verified = verified
        self._watched = watched

    async def __call__(self) -> bytes | None:
        state = self._state
        if not await _authorized(state.config, Request(self._scope), self._watched):
            return None
        signer = state.endpoint.signer
        tokens = {_token_name(token.scopes): signer.renew(token) for token in self._verified}
        signals = json.dumps({TOKENS_NAMESPACE: tokens}, separators=(",", ":"))
        return ServerSentEventGenerator.patch_signals(signals).encode()


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


def _last_event_id(scope: Scope) -> str | None:
    """The ``Last-Event-ID`` header, read from the raw headers: ``request.headers``
    would parse them all into a structure cached for the stream's whole life."""
    for name, value in scope["headers"]:
        if name.lower() == b"last-event-id":
            return value.decode("latin-1")
    return None


def _query(scope: Scope) -> dict[str, list[str]]:
    """The query string's values by name, parsed here: ``request.query_params`` would
    be cached for the stream's whole life."""
    return parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)


def _since(query: Mapping[str, list[str]]) -> str | None:
    values = query.get("since")
    if values is None:
        return None
    value = values[0]
    if not POINT.fullmatch(value):
        raise ClientException(
            "since must be an event id (<revision>-<broker id>) or a time in milliseconds "
            f"(digits, optionally -<instance>), got {value[:40]!r}"
        )
    return value


def _verified(
    state: _State, query: Mapping[str, list[str]]
) -> tuple[tuple[StreamToken, ...], tuple[str, ...]]:
    """The request's tokens, verified, and the scopes they grant (4xx with a reason if not)."""
    config = state.config
    tokens = [token for token in query.get("t", ()) if token]
    if not tokens:
        raise ClientException("missing stream token: the URL needs ?t=<token> from Connect()")
    if len(tokens) > config.max_tokens:
        raise ClientException(
            f"too many stream tokens: {len(tokens)}, the limit is {config.max_tokens}"
        )
    verified = []
    refused: list[tuple[int, str]] = []
    for index, token in enumerate(tokens):
        try:
            verified.append(state.endpoint.signer.verify(token))
        except InvalidTokenError as error:
            refused.append((index, _refusal(state, token, error)))
    if refused:
        # Which tokens: a stream shared by several tabs drops the tabs holding them (they
        # reload) and goes on for the others.
        raise PermissionDeniedException(
            refused[0][1],
            headers={REFUSED_TOKENS_HEADER: ",".join(str(index) for index, _ in refused)},
        )
    if state.broker.transport.sees_all_publishes:
        _check_one_process(state, verified)
    scopes = dict.fromkeys(value for token in verified for value in token.scopes)
    if len(scopes) > config.max_scopes:
        raise ClientException(f"too many scopes: {len(scopes)}, the limit is {config.max_scopes}")
    if len(verified) == 1 and len(scopes) == len(verified[0].scopes):
        return tuple(verified), verified[0].scopes  # (one tuple kept by the open stream)
    return tuple(verified), tuple(scopes)


# -- several processes where one is expected ------------------------------------------------
# With the in-process broker, or the random per-process secret, an app run in several
# processes (uvicorn --workers) fails quietly: invalidations stay in the process that
# made them, or streams get a bare 403. Tokens name the process that rendered them, so
# the process that serves the stream can tell, and say what to do.

_reported: weakref.WeakKeyDictionary[Broker, set[str]] = weakref.WeakKeyDictionary()
"""What was logged already, per broker (one per app: per process, in a deployment)."""

_DEPLOY_ADVICE = (
    f"run a NATS server and set {NATS_URL_ENV} (or StreamConfig(nats_url=...)) and one "
    f"{SECRET_ENV} (or StreamConfig(secret=...)) shared by every process; see the README, "
    '"Deploying"'
)


def _from_sibling(state: _State, token: StreamToken) -> bool:
    """Whether *token* was signed by another process running alongside this one.

    A token issued before this broker started may come from the process this one
    replaced (a tab reconnecting after a restart): that says nothing about siblings.
    """
    return (
        token.instance is not None
        and token.instance != state.endpoint.signer.instance
        and state.broker.started_at is not None
        and token.issued_at >= state.broker.started_at
    )


def _report_once(broker: Broker, kind: str, message: str, *args: object) -> None:
    reported = _reported.setdefault(broker, set())
    if kind not in reported:
        reported.add(kind)
        logger.error(message, *args)


def _check_one_process(state: _State, verified: Sequence[StreamToken]) -> None:
    """Log an ERROR (once) when a sibling's page streams here over an in-process broker."""
    for token in verified:
        if _from_sibling(state, token):
            _report_once(
                state.broker,
                "broker",
                "several processes serve this app, but its broker is in-process: this "
                "process (pid %d, instance %s) serves the stream of a page rendered by "
                "another (instance %s), and invalidations made in one process never reach "
                "the tabs streamed by another. To fix it, %s. (Logged once per process.)",
                os.getpid(),
                state.endpoint.signer.instance,
                token.instance,
                _DEPLOY_ADVICE,
            )
            return


def _refusal(state: _State, token: str, error: InvalidTokenError) -> str:
    """The 403 reason for *token*, which says what to do when it was refused only because
    every process draws a random secret of its own."""
    if state.config.secret is not None:
        return str(error)
    # Unverified: anyone can write these claims. They only choose this message.
    claims = unverified_claims(token)
    if claims is None or not _from_sibling(state, claims):
        return str(error)
    _report_once(
        state.broker,
        "secret",
        "several processes serve this app, but each draws a random stream secret: this "
        "process (pid %d, instance %s) refused (403) the stream of a page rendered by "
        "another (instance %s); invalidations would not reach it either. To fix it, %s. "
        "(Logged once per process.)",
        os.getpid(),
        state.endpoint.signer.instance,
        claims.instance,
        _DEPLOY_ADVICE,
    )
    return (
        f"{error}: the page was rendered by another process of this app, and each process "
        "draws a random secret when none is set; several processes need one shared "
        f"secret: set {SECRET_ENV} (or StreamConfig(secret=...)) to the same value in each"
    )


class StreamPlugin(InitPlugin):
    """Adds streamui to a Litestar app (see the module docstring)."""

    __slots__ = ("broker", "config", "endpoint")

    def __init__(self, config: StreamConfig | None = None) -> None:
        self.config = config = config or StreamConfig()
        self.broker = config.broker or Broker(
            _transport(config),
            prefix=config.prefix,
            max_data_bytes=config.max_data_bytes,
            upstream=config.upstream,
        )
        if config.secret is None and not self.broker.transport.sees_all_publishes:
            # A random per-process secret would make a token signed by one worker fail
            # (403) on every other: refuse to start rather than fail in the browser.
            raise ConfigurationError(
                "several processes share this broker's invalidations, so they must share "
                f"the token secret: set StreamConfig(secret=...) or {SECRET_ENV}"
            )
        self.endpoint = StreamEndpoint(
            config.path,
            TokenSigner(
                config.secret, max_age=config.token_max_age, lifetime=config.token_lifetime
            ),
            client_url=client.url_for(config.path),
            share_across_tabs=config.share_across_tabs,
            reload_when_refused=config.reload_when_refused,
            max_tokens=config.max_tokens,
            max_scopes=config.max_scopes,
        )

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        state = _State(self.config, self.broker, self.endpoint)
        app_config.state[_STATE_KEY] = state
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
        await self.broker.start()
        stop_watching = (
            on_server_shutdown(
                lambda: self.broker.end_streams(reconnect_within=self.config.reconnect_spread)
            )
            if self.config.end_streams_on_signal
            else None
        )
        try:
            yield
        finally:
            if stop_watching is not None:
                stop_watching()
            await self.broker.close()

    def _middleware(self, app: ASGIApp) -> ASGIApp:
        endpoint = self.endpoint
        stream_path = self.config.path

        async def with_endpoint(scope: Scope, receive: Receive, send: Send) -> None:
            with use_endpoint(endpoint):
                await app(scope, receive, send)

        def dispatch(scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
            # A stream renders nothing, and lives for hours: it keeps no registry and
            # no frame of this middleware (other spellings of the path get a 404).
            if scope["path"] in _spellings(scope, stream_path):
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


def _spellings(scope: Scope, path: str) -> tuple[str, str]:
    """*path* as ``scope["path"]`` names it, without and with the app's root path."""
    return path, scope.get("root_path", "") + path


def _is_exact_path(request: Request[Any, Any, Any], path: str) -> bool:
    """True when the request names *path* exactly: no doubled, trailing or encoded slash."""
    scope = request.scope
    allowed = _spellings(scope, path)
    if scope["path"] not in allowed:
        return False
    raw = scope.get("raw_path")  # optional in ASGI; the bytes as the client sent them
    return raw is None or raw.decode("latin-1").partition("?")[0] in allowed


def _exclude_path(compression: CompressionConfig, path: str) -> CompressionConfig:
    """*compression* with the stream's path added to what it leaves alone."""
    exclude = compression.exclude
    patterns = [exclude] if isinstance(exclude, str) else list(exclude or ())
    return dataclasses.replace(compression, exclude=[*patterns, f"^{re.escape(path)}$"])


def _transport(config: StreamConfig) -> Transport | None:
    if config.transport is not None or config.nats_url is None:
        return config.transport
    from streamui.nats import NatsTransport  # needs the nats extra

    return NatsTransport(servers=config.nats_url, **config.nats_options)
