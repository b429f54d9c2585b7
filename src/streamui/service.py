"""The stream endpoint, whichever web framework serves it.

`StreamService` is what `streamui.litestar` and `streamui.starlette` share: it owns the
broker and the token signer made from a `StreamConfig`, answers the stream and merge
requests from the raw ASGI scope, and runs the broker's lifespan. A framework
integration adds only its routes, its middleware (``use_endpoint`` in every request but
the stream) and the translation of `StreamRefused` into its own error response.

What it guarantees:

- Every refusal is one `StreamRefused` (status, reason, ``kind``, headers), raised
  before anything is subscribed: 404 for another spelling of the stream's path, 400
  for a missing token, too many tokens or scopes, or a bad ``since``, 403 for a token
  that does not verify (the ``streamui-refused-tokens`` header names which) or a
  connection the ``authorize`` hook refuses. Never a 500 for bad input.
- An open stream keeps what `EventStream` keeps, plus one small `_Renewal` when tokens
  expire: no framework request object, no parsed headers or query (they would live as
  long as the stream, for hours).
- Several processes where one is expected (an in-process broker, or a random secret
  per process) are diagnosed from the tokens and logged once per process, at ERROR.

It does not route, and does not compress: the framework decides which requests reach it.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import time
import weakref
from collections.abc import Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar
from urllib.parse import parse_qs

from datastar_py import ServerSentEventGenerator

from streamui import client
from streamui.broker import POINT, Broker, Upstream
from streamui.components import TOKENS_NAMESPACE, StreamEndpoint, _token_name, merge_tokens
from streamui.errors import (
    ConfigurationError,
    ExpiredTokenError,
    InvalidTokenError,
    RefusalKind,
    StreamRefused,
)
from streamui.scopes import DEFAULT_PREFIX
from streamui.shutdown import on_server_shutdown
from streamui.stream import EventStream
from streamui.tokens import StreamToken, TokenSigner, unverified_claims

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

    from streamui.transports import Transport

__all__ = [
    "NATS_URL_ENV",
    "REFUSED_TOKENS_HEADER",
    "SECRET_ENV",
    "StreamConfig",
    "StreamRefused",
    "StreamService",
]

SECRET_ENV: Final = "STREAMUI_SECRET"
NATS_URL_ENV: Final = "STREAMUI_NATS_URL"
REFUSED_TOKENS_HEADER: Final = "streamui-refused-tokens"
"""On a 403 for tokens that do not verify: their indexes among the request's ``t``."""

RequestT = TypeVar("RequestT")

Scope = Mapping[str, Any]
"""An ASGI connection scope, as any framework types it (read only here)."""


@dataclass
class StreamConfig:
    """Settings of the stream endpoint and its broker (for any framework)."""

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
    authorize: Callable[[Any, tuple[str, ...]], bool | Awaitable[bool]] | None = None
    """``authorize(request, scopes)``, sync or async, on every (re)connect and token
    renewal: False refuses the stream (403). *request* is the framework's own
    (``litestar.Request``, ``starlette.requests.Request``)."""
    dependency_key: str = "broker"
    """The broker's name: Litestar's dependency, the attribute of Starlette's
    ``app.state``."""
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
    per open stream (zlib: ~256 KB each) and compresses every event once per stream.
    (Starlette's GZipMiddleware never compresses a stream.)"""
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


class StreamService(Generic[RequestT]):
    """The stream endpoint of one app: its broker, its signer, and its two requests.

    *request_factory* makes the framework's request object from an ASGI scope, for the
    ``authorize`` hook (only when one is set, and again at each renewal). *frame_send*
    is `EventStream`'s (which ``send`` wrappers of the framework's own to leave out).
    Diagnostics go to *logger*.
    """

    __slots__ = (
        "broker",
        "config",
        "endpoint",
        "frame_send",
        "logger",
        "renew_every",
        "request_factory",
    )

    def __init__(
        self,
        config: StreamConfig,
        request_factory: Callable[[Any], RequestT],
        *,
        frame_send: Callable[[Any], Any] | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.config = config
        self.request_factory = request_factory
        self.frame_send = frame_send
        self.logger = logger or logging.getLogger(__name__)
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
        lifetime = self.endpoint.signer.lifetime
        self.renew_every = 0.0 if lifetime is None else lifetime / 2
        """Seconds between token renewals: half their lifetime (one float for every stream)."""

    # -- the requests ---------------------------------------------------------------------

    def is_stream(self, scope: Scope) -> bool:
        """Whether *scope* names the stream's path (in any spelling a router may take
        for it: the stream itself answers 404 to all but the exact one)."""
        return scope["path"] in _spellings(scope, self.config.path)

    async def stream(self, scope: Scope, request: RequestT | None = None) -> EventStream:
        """The stream that answers *scope* (an ASGI app), or `StreamRefused`.

        *request*: the framework's request for *scope*, if it made one already (else one
        is made for ``authorize``, if set).
        """
        try:
            return await self._stream(scope, request)
        except StreamRefused as refused:
            self.broker.note_refused(refused.kind)  # streamui_refused_streams_total
            raise

    async def _stream(self, scope: Scope, request: RequestT | None) -> EventStream:
        config = self.config
        if not _is_exact_path(scope, config.path):
            # A router may also route //path, path/ or path%2F here; a proxy rule that
            # matches the exact path must not be sidestepped by another spelling.
            raise StreamRefused(
                404, f"the stream is served at {config.path!r} only", kind="not_found"
            )
        query = _query(scope)
        since = _since(query)
        verified, watched = self._verified(query)
        if config.authorize is not None:
            if request is None:
                request = self.request_factory(scope)
            if not await _authorized(config, request, watched):
                raise StreamRefused(
                    403, "not authorized to watch these scopes", kind="unauthorized"
                )
        endpoint = self.endpoint

        def merge(opening_id: str) -> bytes:
            event = merge_tokens(endpoint, verified, event_id=opening_id)
            return event.encode() if event is not None else b""

        # The stream catches up on what was invalidated after a point: since (streamui's
        # module, which knows what its tabs have seen), else the last event the browser
        # saw, else the newest render (older tokens' scopes were served until then by
        # the stream this one replaces). A client that lies only gets more pushes, or
        # misses its own updates. An id that no broker gave is owed everything.
        point = since or _last_event_id(scope) or _render_point(verified)
        resume = POINT.fullmatch(point) is None
        return EventStream(
            self.broker,
            watched,
            after=None if resume else point,
            resume=resume,
            clock=endpoint.signer.instance,
            heartbeat=config.heartbeat,
            max_lifetime=config.max_lifetime,
            greeting=merge,
            eager_writes=config.eager_writes,
            frame_send=self.frame_send,
            **self._renewal(scope, verified, watched),
        )

    def merge(self, scope: Scope) -> str:
        """One token for the union of the scopes of the request's tokens (or
        `StreamRefused`)."""
        verified, watched = self._verified(_query(scope))
        # The oldest render: a merged token never claims a later one than its parts.
        return self.endpoint.signer.sign(
            watched, issued_at=min(token.issued_at for token in verified)
        )

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[Broker]:
        """The broker started, streams ended as soon as the server starts shutting down
        (unless ``end_streams_on_signal`` is False), and the broker closed on exit."""
        broker = self.broker
        await broker.start()
        spread = self.config.reconnect_spread
        stop_watching = (
            on_server_shutdown(lambda: broker.end_streams(reconnect_within=spread))
            if self.config.end_streams_on_signal
            else None
        )
        try:
            yield broker
        finally:
            if stop_watching is not None:
                stop_watching()
            await broker.close()

    # -- verification ---------------------------------------------------------------------

    def _verified(
        self, query: Mapping[str, list[str]]
    ) -> tuple[tuple[StreamToken, ...], tuple[str, ...]]:
        """The request's tokens, verified, and the scopes they grant (else `StreamRefused`)."""
        config = self.config
        tokens = [token for token in query.get("t", ()) if token]
        if not tokens:
            raise StreamRefused(
                400,
                "missing stream token: the URL needs ?t=<token> from Connect()",
                kind="missing_token",
            )
        if len(tokens) > config.max_tokens:
            raise StreamRefused(
                400,
                f"too many stream tokens: {len(tokens)}, the limit is {config.max_tokens}",
                kind="too_many_tokens",
            )
        verified = []
        refused: list[tuple[int, str, RefusalKind]] = []
        for index, token in enumerate(tokens):
            try:
                verified.append(self.endpoint.signer.verify(token))
            except InvalidTokenError as error:
                kind: RefusalKind = (
                    "expired_token" if isinstance(error, ExpiredTokenError) else "invalid_token"
                )
                refused.append((index, self._refusal(token, error), kind))
        if refused:
            # Which tokens: a stream shared by several tabs drops the tabs holding them
            # (they reload) and goes on for the others.
            _, reason, kind = refused[0]
            raise StreamRefused(
                403,
                reason,
                kind=kind,
                headers={REFUSED_TOKENS_HEADER: ",".join(str(index) for index, *_ in refused)},
            )
        if self.broker.transport.sees_all_publishes:
            self._check_one_process(verified)
        scopes = dict.fromkeys(value for token in verified for value in token.scopes)
        if len(scopes) > config.max_scopes:
            raise StreamRefused(
                400,
                f"too many scopes: {len(scopes)}, the limit is {config.max_scopes}",
                kind="too_many_scopes",
            )
        if len(verified) == 1 and len(scopes) == len(verified[0].scopes):
            return tuple(verified), verified[0].scopes  # (one tuple kept by the open stream)
        return tuple(verified), tuple(scopes)

    def _renewal(
        self, scope: Scope, verified: Sequence[StreamToken], watched: tuple[str, ...]
    ) -> dict[str, Any]:
        """The stream's token renewal: halfway to the first expiry, then every half
        lifetime, ``authorize`` runs again and the tab gets its tokens signed again (same
        scopes and render time) as a ``_streamTokens`` patch, under the names its tokens
        have."""
        signer = self.endpoint.signer
        if signer.lifetime is None:
            return {}
        soonest = min(signer.expiry(token) or 0.0 for token in verified)
        return {
            "renew": _Renewal(self, scope, verified, watched),
            "renew_after": max(0.0, soonest - time.time()) / 2,
            "renew_every": self.renew_every,
        }

    # -- several processes where one is expected --------------------------------------------
    # With the in-process broker, or the random per-process secret, an app run in several
    # processes (uvicorn --workers) fails quietly: invalidations stay in the process that
    # made them, or streams get a bare 403. Tokens name the process that rendered them, so
    # the process that serves the stream can tell, and say what to do.

    def _from_sibling(self, token: StreamToken) -> bool:
        """Whether *token* was signed by another process running alongside this one.

        A token issued before this broker started may come from the process this one
        replaced (a tab reconnecting after a restart): that says nothing about siblings.
        """
        return (
            token.instance is not None
            and token.instance != self.endpoint.signer.instance
            and self.broker.started_at is not None
            and token.issued_at >= self.broker.started_at
        )

    def _report_once(self, kind: str, message: str, *args: object) -> None:
        reported = _reported.setdefault(self.broker, set())
        if kind not in reported:
            reported.add(kind)
            self.logger.error(message, *args)

    def _check_one_process(self, verified: Sequence[StreamToken]) -> None:
        """Log an ERROR (once) when a sibling's page streams here over an in-process broker."""
        for token in verified:
            if self._from_sibling(token):
                self._report_once(
                    "broker",
                    "several processes serve this app, but its broker is in-process: this "
                    "process (pid %d, instance %s) serves the stream of a page rendered by "
                    "another (instance %s), and invalidations made in one process never "
                    "reach the tabs streamed by another. To fix it, %s. (Logged once per "
                    "process.)",
                    os.getpid(),
                    self.endpoint.signer.instance,
                    token.instance,
                    _DEPLOY_ADVICE,
                )
                return

    def _refusal(self, token: str, error: InvalidTokenError) -> str:
        """The 403 reason for *token*, which says what to do when it was refused only
        because every process draws a random secret of its own."""
        if self.config.secret is not None:
            return str(error)
        # Unverified: anyone can write these claims. They only choose this message.
        claims = unverified_claims(token)
        if claims is None or not self._from_sibling(claims):
            return str(error)
        self._report_once(
            "secret",
            "several processes serve this app, but each draws a random stream secret: this "
            "process (pid %d, instance %s) refused (403) the stream of a page rendered by "
            "another (instance %s); invalidations would not reach it either. To fix it, %s. "
            "(Logged once per process.)",
            os.getpid(),
            self.endpoint.signer.instance,
            claims.instance,
            _DEPLOY_ADVICE,
        )
        return (
            f"{error}: the page was rendered by another process of this app, and each "
            "process draws a random secret when none is set; several processes need one "
            f"shared secret: set {SECRET_ENV} (or StreamConfig(secret=...)) to the same "
            "value in each"
        )


_reported: weakref.WeakKeyDictionary[Broker, set[str]] = weakref.WeakKeyDictionary()
"""What was logged already, per broker (one per app: per process, in a deployment)."""

_DEPLOY_ADVICE: Final = (
    f"run a NATS server and set {NATS_URL_ENV} (or StreamConfig(nats_url=...)) and one "
    f"{SECRET_ENV} (or StreamConfig(secret=...)) shared by every process; see the README, "
    '"Deploying"'
)


class _Renewal:
    """Renews a stream's tokens: ``authorize`` again, then the tokens signed again, as
    a ``_streamTokens`` patch (None: not authorized any more).

    One small object per open stream. It keeps the ASGI scope (which lives as long as
    the stream anyway), not a request: the request made of it again at a renewal
    (rarely) is not kept alive for hours by every stream."""

    __slots__ = ("_scope", "_service", "_verified", "_watched")

    def __init__(
        self,
        service: StreamService[Any],
        scope: Scope,
        verified: Sequence[StreamToken],
        watched: tuple[str, ...],
    ) -> None:
        self._service = service
        self._scope = scope
        self._verified = verified
        self._watched = watched

    async def __call__(self) -> bytes | None:
        service = self._service
        config = service.config
        if config.authorize is not None and not await _authorized(
            config, service.request_factory(self._scope), self._watched
        ):
            return None
        signer = service.endpoint.signer
        tokens = {_token_name(token.scopes): signer.renew(token) for token in self._verified}
        signals = json.dumps({TOKENS_NAMESPACE: tokens}, separators=(",", ":"))
        return ServerSentEventGenerator.patch_signals(signals).encode()


async def _authorized(config: StreamConfig, request: object, scopes: tuple[str, ...]) -> bool:
    if config.authorize is None:
        return True
    allowed = config.authorize(request, scopes)
    if inspect.isawaitable(allowed):
        allowed = await allowed
    return bool(allowed)


def _render_point(verified: Sequence[StreamToken]) -> str:
    """The newest render among *verified*, as a `POINT` named after its process's clock."""
    newest = max(verified, key=lambda token: token.issued_at)
    ms = int(newest.issued_at * 1000)
    return f"{ms}-{newest.instance}" if newest.instance is not None else str(ms)


def _last_event_id(scope: Scope) -> str | None:
    """The ``Last-Event-ID`` header, read from the raw headers: a framework's parsed
    headers would be a structure cached for the stream's whole life."""
    name: bytes
    value: bytes
    for name, value in scope["headers"]:
        if name.lower() == b"last-event-id":
            return value.decode("latin-1")
    return None


def _query(scope: Scope) -> dict[str, list[str]]:
    """The query string's values by name, parsed here: a framework's parsed query would
    be cached for the stream's whole life."""
    return parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)


def _since(query: Mapping[str, list[str]]) -> str | None:
    values = query.get("since")
    if values is None:
        return None
    value = values[0]
    if not POINT.fullmatch(value):
        raise StreamRefused(
            400,
            "since must be an event id (<revision>-<broker id>) or a time in milliseconds "
            f"(digits, optionally -<instance>), got {value[:40]!r}",
            kind="bad_since",
        )
    return value


def _spellings(scope: Scope, path: str) -> tuple[str, str]:
    """*path* as ``scope["path"]`` names it, without and with the app's root path."""
    return path, scope.get("root_path", "") + path


def _is_exact_path(scope: Scope, path: str) -> bool:
    """True when the request names *path* exactly: no doubled, trailing or encoded slash."""
    allowed = _spellings(scope, path)
    if scope["path"] not in allowed:
        return False
    raw = scope.get("raw_path")  # optional in ASGI; the bytes as the client sent them
    return raw is None or raw.decode("latin-1").partition("?")[0] in allowed


def _transport(config: StreamConfig) -> Transport | None:
    if config.transport is not None or config.nats_url is None:
        return config.transport
    from streamui.nats import NatsTransport  # needs the nats extra

    return NatsTransport(servers=config.nats_url, **config.nats_options)
