"""htpy components: watch scopes, and connect the page to its stream.

- `Watch(scopes, url)[children]` wraps a component; when any of its scopes is
  invalidated, the browser re-fetches *url* and Datastar morphs the answer in by id.
  Every Watch on a page is registered when it is *rendered*, so module-level constants,
  lazy children (callables, generators) and async rendering all work.
- `Connect()` goes after the page content. At render time it takes every scope
  registered by the Watch elements rendered before it, signs them into a token, and
  renders one hidden element that opens the tab's stream. On a page that registered no
  scope the element is idle: it opens nothing until a fragment's `JoinStream()` adds a
  token (``Connect(joinable=False)`` renders nothing instead).
- `JoinStream()` goes at the end of a fragment (e.g. rows from "load more") whose Watch
  elements introduce new scopes: it adds their token to the tab's stream, which
  reconnects once with the union. `init_scope` does the same as a Datastar event.

Limits fail at render time: Connect, JoinStream and init_scope raise
`TooManyScopesError` for more scopes than the endpoint's ``max_scopes``, which the
stream would refuse (a tab that never updates). JoinStream and init_scope can only count
their own scopes; the page they join adds its own.

Registration is per rendering task (worker threads running in a copy of a task's
context count as that task, so a page that Litestar streams chunk by chunk from its
thread pool registers in one place), so pages rendered concurrently never mix.
Connect/JoinStream consume what was registered, so the next render starts empty.

How the browser side works: each Watch element holds ``data-signals__ifmissing`` with
``_stream.<key> = 0`` and an empty ``_streamData.<key>`` (`scope_signals`), and a
``data-effect`` that reads every key on every run and calls ``@get(url)`` when the joined
value differs from what this element saw last. Revisions only grow, so every watcher of a
scope reloads on every push, and a freshly morphed-in element never fetches on its own
initialisation. The Connect element's effect reads ``_streamTokens`` and opens
``@get(<path>?t=…&t=…)`` with ``retry: 'always'``; when a fragment adds a token, the effect
runs again and Datastar's request cancellation aborts the previous stream, so a tab holds
exactly one.

With an endpoint that has streamui's module (``client_url``, as the Litestar plugin
sets it), Connect's effect instead mirrors ``_streamTokens`` and the watched keys into
its ``data-streamui-state`` attribute and loads the module (`streamui.client`): the tabs
of a browser elect one that holds a single stream for all of them (or, with
``share_across_tabs=False`` or without Web Locks or BroadcastChannel, each tab holds its
own), and each tab applies the events for its keys through a ``data-signals``
attribute. The module stops a stream the server refuses and says why in ``_streamError``
(`ERROR_SIGNAL`). The Datastar stream above is kept in ``data-streamui-fallback``, for
a tab whose scopes do not fit in the shared stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import threading
import time
from collections import Counter
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from datastar_py import ServerSentEventGenerator
from datastar_py.attributes import JSExpression, action_generator
from htpy import Element, div, script

from streamui.errors import ConfigurationError, TooManyScopesError
from streamui.scopes import DATA_NAMESPACE, SIGNAL_NAMESPACE, is_pattern, scope_key, validate_scope
from streamui.tokens import StreamToken, TokenSigner

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable, Iterator, Sequence

    from datastar_py.sse import DatastarEvent
    from htpy import Context
    from htpy._types import Attribute, Node
    from markupsafe import Markup

__all__ = [
    "CONNECT_ID",
    "DATASTAR_CDN_URL",
    "DATASTAR_VERSION",
    "ERROR_SIGNAL",
    "TOKENS_NAMESPACE",
    "Connect",
    "JoinStream",
    "StreamEndpoint",
    "Watch",
    "datastar_script",
    "init_scope",
    "scope_signals",
    "use_endpoint",
    "watch_attrs",
    "watch_effect",
]

DATASTAR_VERSION: Final = "1.0.1"
DATASTAR_CDN_URL: Final = (
    f"https://cdn.jsdelivr.net/gh/starfederation/datastar@v{DATASTAR_VERSION}/bundles/datastar.js"
)
CONNECT_ID: Final = "streamui-connect"
TOKENS_NAMESPACE: Final = "_streamTokens"
"""Signals holding the tab's stream tokens (one per Connect/JoinStream)."""
ERROR_SIGNAL: Final = "_streamError"
"""Signal saying why the server refused the tab's stream ("" while it is not refused),
for the page to show (streamui's module sets it)."""

_RETRY_MAX_COUNT: Final = 1_000_000_000
"""Datastar gives up after this many consecutive failures (its default is 10)."""


# -- endpoint (which path, which secret) --------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamEndpoint:
    """Where the stream is served, how its tokens are signed, and whether tabs share it."""

    path: str = "/streamui/stream"
    signer: TokenSigner = field(default_factory=TokenSigner)
    client_url: str | None = None
    """URL of streamui's browser module (`streamui.client`), which holds the stream (one
    per browser, or per tab); None: every tab opens its own with Datastar alone."""
    share_across_tabs: bool = True
    """With the module: the tabs of a browser share one stream (else one per tab)."""
    reload_when_refused: bool = True
    """With the module: a tab whose stream gets a 403 reloads once (with backoff)."""
    max_tokens: int = 16
    max_scopes: int = 64


_endpoint: ContextVar[StreamEndpoint | None] = ContextVar("streamui_endpoint", default=None)


@contextlib.contextmanager
def use_endpoint(endpoint: StreamEndpoint) -> Iterator[StreamEndpoint]:
    """Render one request's page for *endpoint* within this block.

    Connect/JoinStream/init_scope sign for *endpoint*, and every Watch rendered in the
    block registers with this request, whichever task or worker thread renders it (a
    page streamed chunk by chunk from a thread pool included). The Litestar plugin
    does this for every request; call it yourself with other frameworks.
    """
    reset_endpoint = _endpoint.set(endpoint)
    reset_registry = _registry.set(_Registry(_owner()))
    try:
        yield endpoint
    finally:
        _registry.reset(reset_registry)
        _endpoint.reset(reset_endpoint)


def _current_endpoint(explicit: StreamEndpoint | None) -> StreamEndpoint:
    endpoint = explicit or _endpoint.get()
    if endpoint is None:
        raise ConfigurationError(
            "no stream endpoint: add StreamPlugin to the Litestar app, render inside "
            "'with use_endpoint(StreamEndpoint(...)):', or pass endpoint=..."
        )
    return endpoint


# -- registration of rendered scopes -----------------------------------------------------


class _Registry:
    """Scopes registered since the last Connect/JoinStream, by one task or thread.

    A worker thread that runs with a copy of a task's context (Litestar and anyio run
    sync code and sync iterators that way) renders for that task, so it adopts the
    task's registry; another task (e.g. a child of asyncio.gather) starts its own.
    """

    __slots__ = ("owner", "scopes", "started_at")

    def __init__(self, owner: object) -> None:
        self.owner = owner
        self.scopes: dict[str, None] = {}
        # When this render began (for a request: when the request began). Tokens carry
        # it rather than the time Connect renders, at the end of the page: the stream
        # then catches up on anything invalidated while the page was being rendered.
        self.started_at = time.time()

    def serves(self, owner: object) -> bool:
        return self.owner == owner or (
            isinstance(owner, int) and isinstance(self.owner, asyncio.Task)
        )


_registry: ContextVar[_Registry | None] = ContextVar("streamui_registry", default=None)


def _owner() -> object:
    try:
        task = asyncio.current_task()
    except RuntimeError:
        task = None
    return task if task is not None else threading.get_ident()


def _register(scopes: Iterable[str]) -> None:
    owner = _owner()
    registry = _registry.get()
    # A registry inherited from another task (e.g. the parent of asyncio.gather) belongs
    # to another render: start our own so concurrent pages never mix.
    if registry is None or (registry.owner is not owner and not registry.serves(owner)):
        registry = _Registry(owner)
        _registry.set(registry)
    registered = registry.scopes
    for value in scopes:
        registered[value] = None


def _consume() -> tuple[list[str], float]:
    """The scopes registered by this render and when it began; starts the next render."""
    registry = _registry.get()
    if registry is None or not registry.serves(_owner()):
        return [], time.time()
    scopes, started_at = list(registry.scopes), registry.started_at
    registry.scopes.clear()
    registry.started_at = time.time()
    return scopes, started_at


def _normalize(scopes: str | Iterable[str]) -> tuple[str, ...]:
    values = (scopes,) if isinstance(scopes, str) else tuple(scopes)
    if not values:
        raise ValueError("at least one scope is required")
    return tuple(dict.fromkeys(_checked(value) for value in values))


# -- caches of the per-scope work ----------------------------------------------------------
#
# Rendering a Watch is pure string work on its scopes (validation, keys, the signals JSON,
# the escaped attributes), and a page repeats the same few scopes over and over, so that
# work is cached. Every cache is bounded (count and size of an entry) and only ever holds
# successes: lru_cache does not remember a call that raised, so a bad scope raises again
# at every call, with the same error. Only exact `str` scopes are cached (a str subclass
# may compare or hash differently), the others take the uncached path that computes the
# same thing.

_SCOPE_CACHE_SIZE: Final = 1024
"""Scopes whose key is cached: < 1 kB an entry (a scope has at most 256 characters, its
key at most 513), so < 1 MB in all."""
_WATCH_CACHE_SIZE: Final = 512
_WATCH_CACHE_SCOPES: Final = 16
_WATCH_CACHE_CHARACTERS: Final = 256
"""Scope lists whose Watch attributes are cached: only lists of at most 16 scopes and 256
characters in all, so < 6 kB an entry and < 3 MB in all (~0.8 kB an entry typically)."""


@functools.lru_cache(maxsize=_SCOPE_CACHE_SIZE)
def _scope_parts(value: str) -> tuple[str, bool]:
    """``(scope_key(value), is_pattern(value))`` of a str; raises for an invalid scope."""
    return scope_key(value), is_pattern(value)


def _checked(value: object) -> str:
    """`validate_scope`, through the cache for a str (the same result, the same errors)."""
    if type(value) is str:
        _scope_parts(value)
        return value
    return validate_scope(value)


def _parts(value: str) -> tuple[str, bool]:
    return _scope_parts(value) if type(value) is str else (scope_key(value), is_pattern(value))


# -- attributes and expressions ----------------------------------------------------------


def _js_string(text: str) -> str:
    """A JavaScript string literal for *text* that Datastar's rewriting leaves alone."""
    # json.dumps escapes quotes, backslashes, control and non-ASCII characters (so also
    # U+2028/9); '@' and '$' are escaped too because Datastar rewrites '@name(' and
    # '$name' before evaluating, even inside string literals.
    # (encode_basestring_ascii is what json.dumps does for a str, without its overhead.)
    return encode_basestring_ascii(text).replace("@", "\\u0040").replace("$", "\\u0024")


def _escape(text: str) -> str:
    """What htpy renders an attribute value *text* as: ``markupsafe.escape(text)``, as a
    plain str (a Markup would escape whatever is added to it)."""
    return (
        text.replace("&", "&amp;")
        .replace(">", "&gt;")
        .replace("<", "&lt;")
        .replace("'", "&#39;")
        .replace('"', "&#34;")
    )


def _signals(values: Iterable[str]) -> dict[str, Any]:
    parts = [_parts(value) for value in values]
    return {
        SIGNAL_NAMESPACE: {key: 0 for key, _ in parts},
        DATA_NAMESPACE: {key: {} if pattern else "" for key, pattern in parts},
    }


def scope_signals(*scopes: str) -> dict[str, Any]:
    """The initial signals for *scopes*: ``{"_stream": {key: 0, …}, "_streamData": {key:
    "" or {}, …}}``.

    ``_streamData.<key>`` exists from the first render, so a binding such as
    ``data-text="$_streamData.invoice_42.status"`` reads ``undefined`` instead of throwing
    (which would stop Datastar from setting up the rest of the page) until data arrives.
    A concrete scope starts at ``""`` and a pattern at ``{}`` (its data is always
    ``{"scope": …, "data": …}``): with only-if-missing, Datastar replaces any value that
    is not an object by ``{}`` (so ``{}`` would wipe a number or string pushed earlier),
    and an object shown as text (``data-text="$_streamData.invoice_42"``) throws.
    """
    return _signals(_normalize(scopes))


# The effect is `<head><@get((<url literal>))><tail>`: only the URL literal differs
# between the Watch elements of one scope list. Datastar's builder is asked once for how
# it wraps an expression (it adds nothing that depends on the expression).
_GET_PROBE: Final = '"/"'
_GET_HEAD, _, _GET_TAIL = action_generator.get(JSExpression(_GET_PROBE)).partition(_GET_PROBE)
_EFFECT_TAIL: Final = f"{_GET_TAIL}; el.streamuiSeen = seen"
_SIGNALS_ATTRIBUTE: Final = "data-signals__ifmissing"
_EFFECT_ATTRIBUTE: Final = "data-effect"
_ATTRIBUTES_TAIL: Final = f'{_escape(_EFFECT_TAIL)}"'


class _Watched(NamedTuple):
    """What every Watch of one scope list shares (built once per list, then cached)."""

    scopes: tuple[str, ...]
    """The scopes, validated and without duplicates."""
    signals: str
    """The ``data-signals__ifmissing`` value (`scope_signals` as JSON)."""
    effect_head: str
    """The ``data-effect`` value up to the URL literal."""
    attributes_head: str
    """Both attributes as HTML, escaped, up to the URL literal of the effect."""


def _watched_for(values: tuple[str, ...]) -> _Watched:
    """Build the shared part of a Watch of *values* (validated, without duplicates)."""
    keys = [key for key, _ in map(_parts, values)]
    reads = ", ".join(f"${SIGNAL_NAMESPACE}.{key}" for key in keys)
    signals = _signals_json(_signals(values))
    effect_head = (
        f"let seen = [{reads}].join(); "
        f"if (el.streamuiSeen !== undefined && el.streamuiSeen !== seen) {_GET_HEAD}"
    )
    # What htpy renders for these two attributes (it escapes their values).
    attributes_head = (
        f' {_SIGNALS_ATTRIBUTE}="{_escape(signals)}" {_EFFECT_ATTRIBUTE}="{_escape(effect_head)}'
    )
    return _Watched(values, signals, effect_head, attributes_head)


@functools.lru_cache(maxsize=_WATCH_CACHE_SIZE)
def _cached_watched(scopes: str | tuple[str, ...]) -> _Watched:
    return _watched_for(_normalize(scopes))


def _watched(scopes: str | Iterable[str]) -> _Watched:
    """The shared part of a Watch of *scopes*; raises as `_normalize` does."""
    if type(scopes) is str:
        if len(scopes) <= _WATCH_CACHE_CHARACTERS:
            return _cached_watched(scopes)
        return _watched_for(_normalize(scopes))
    values = (scopes,) if isinstance(scopes, str) else tuple(scopes)
    if (
        0 < len(values) <= _WATCH_CACHE_SCOPES
        and all(type(value) is str for value in values)
        and sum(map(len, values)) <= _WATCH_CACHE_CHARACTERS
    ):
        return _cached_watched(values)
    return _watched_for(_normalize(values))


def _url_literal(url: str) -> str:
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"watch_effect needs a non-empty url, got {url!r}")
    return _js_string(url)


def _effect(watched: _Watched, literal: str) -> str:
    return f"{watched.effect_head}{literal}{_EFFECT_TAIL}"


def watch_effect(scopes: str | Sequence[str], url: str) -> str:
    """The ``data-effect`` expression that re-fetches *url* when any scope changes."""
    watched = _watched(scopes)
    return _effect(watched, _url_literal(url))


def _signals_json(signals: Mapping[str, Any]) -> str:
    return json.dumps(signals, separators=(",", ":"))


def watch_attrs(scopes: str | Sequence[str], url: str) -> dict[str, str]:
    """The Watch attributes as a dict, for a component's own root element.

    Pass it positionally, ``div(watch_attrs(...), id="x")``: as keyword arguments htpy
    would turn the ``__`` of Datastar's modifiers into ``--``. Registers the scopes when
    called, so call it while rendering (inside the component).
    """
    watched = _watched(scopes)
    attrs = {
        _SIGNALS_ATTRIBUTE: watched.signals,
        _EFFECT_ATTRIBUTE: _effect(watched, _url_literal(url)),
    }
    _register(watched.scopes)
    return attrs


class _WatchElement(Element):
    """An htpy element that registers its scopes each time it is rendered.

    Calling it with attributes (htpy's way to set them) keeps the watch attributes.

    Its own slots are set by whoever makes one (`_watch_element`, `_adopt`): htpy builds
    elements of this class only in the `__getitem__` and `__call__` that this class
    overrides, so no ``__init__`` of its own runs for every element.
    """

    __slots__ = ("_literal", "_scopes", "_watched")

    _scopes: tuple[str, ...]
    _watched: _Watched | None
    _literal: str

    @property
    def _watch(self) -> dict[str, str]:
        """The watch attributes (built when asked: only a call needs them)."""
        if self._watched is None:
            return {}
        return {
            _SIGNALS_ATTRIBUTE: self._watched.signals,
            _EFFECT_ATTRIBUTE: _effect(self._watched, self._literal),
        }

    def _adopt(self, element: _WatchElement) -> _WatchElement:
        element._scopes = self._scopes
        element._watched = self._watched
        element._literal = self._literal
        return element

    def __getitem__(self, children: Node) -> _WatchElement:
        element = super().__getitem__(children)
        element._scopes = self._scopes
        element._watched = self._watched
        element._literal = self._literal
        return element

    def __call__(self, /, *args: Any, **kwargs: Attribute) -> _WatchElement:
        # htpy replaces all attributes on a call; put the watch attributes back first
        # (after an "#id.class" shorthand, which must stay the first argument).
        if args and not isinstance(args[0], Mapping):
            args = (args[0], self._watch, *args[1:])
        else:
            args = (self._watch, *args)
        return self._adopt(super().__call__(*args, **kwargs))

    def iter_chunks(self, context: Mapping[Context[Any], Any] | None = None) -> Iterator[str]:
        _register(self._scopes)
        yield from super().iter_chunks(context)

    async def aiter_chunks(
        self, context: Mapping[Context[Any], Any] | None = None
    ) -> AsyncIterator[str]:
        _register(self._scopes)
        async for chunk in super().aiter_chunks(context):
            yield chunk


def _watch_element(
    tag: str, attributes: str, watched: _Watched | None, literal: str
) -> _WatchElement:
    element = _WatchElement(tag, attributes)
    element._scopes = watched.scopes if watched is not None else ()
    element._watched = watched
    element._literal = literal
    return element


def _plain_attributes(attrs: Mapping[str, object]) -> str | None:
    """What htpy renders for keyword *attrs* that need none of its rules, else None.

    That is: every name is ASCII letters and digits other than ``class`` (htpy keeps
    such a name as it is), and every value a str, an int, True, False or None. Anything
    else (``class_``, ``data_x``, Markup, …) is left to htpy.
    """
    rendered = ""
    for name, value in attrs.items():
        if not (name.isascii() and name.isalnum()) or name == "class":
            return None
        if value is None or value is False:
            continue
        if value is True:
            rendered += f" {name}"
        elif type(value) is str:
            rendered += f' {name}="{_escape(value)}"'
        elif type(value) is int:
            rendered += f' {name}="{value}"'
        else:
            return None
    return rendered


def Watch(
    scopes: str | Sequence[str],
    url: str,
    *,
    tag: str = "div",
    **attrs: Attribute,
) -> _WatchElement:
    """A wrapper element that reloads from *url* whenever one of *scopes* is invalidated.

    *url* must answer with HTML whose root element has the same ``id`` as this wrapper
    (give it ``id=...``), typically the same component rendered again.
    """
    watched = _watched(scopes)
    if not tag.isalnum() or not tag.islower():
        raise ValueError(f"invalid tag name {tag!r}")
    literal = _url_literal(url)
    # htpy renders the watch attributes first, then *attrs*, each escaped on its own. The
    # watch attributes come escaped from the cache (only the URL literal is escaped here).
    plain = _plain_attributes(attrs) if attrs else ""
    if plain is not None:
        attributes = f"{watched.attributes_head}{_escape(literal)}{_ATTRIBUTES_TAIL}{plain}"
        return _watch_element(tag, attributes, watched, literal)
    if "data_effect" in attrs or "data-effect" in attrs:
        # htpy names a keyword attribute by turning "_" into "-" (and dropping a trailing
        # "_" after a Python keyword), so these two, and only these, replace the effect:
        # let htpy merge them with the watch attributes, as it always did.
        return _watch_element(tag, "", watched, literal)(**attrs)
    # Other attributes: htpy renders (and checks) them as it always did, after the watch
    # attributes (a call renders the attributes given to it, alone).
    bare = _watch_element(tag, "", watched, literal)
    element = bare._adopt(Element.__call__(bare, **attrs))
    element._attrs = (
        f"{watched.attributes_head}{_escape(literal)}{_ATTRIBUTES_TAIL}{element._attrs}"
    )
    return element


# -- connecting the page to its stream ---------------------------------------------------


def _token_signals(
    endpoint: StreamEndpoint, scopes: Sequence[str], rendered_at: float | None = None
) -> dict[str, Any]:
    token = endpoint.signer.sign(scopes, issued_at=rendered_at)
    return {**scope_signals(*scopes), TOKENS_NAMESPACE: {_token_name(scopes): token}}


def _token_name(scopes: Iterable[str]) -> str:
    # Named after the scope set, not the token (which carries its signing time): with
    # only-if-missing, rendering the same scopes again adds nothing, so the tab's token
    # list (and its stream URL) does not grow when a fragment is reloaded.
    return "t" + hashlib.sha256("\n".join(sorted(set(scopes))).encode()).hexdigest()[:16]


MERGE_TOKENS_OVER: Final = 4
"""A stream opened with more tokens than this tells the tab to merge them."""


def merge_tokens(
    endpoint: StreamEndpoint, tokens: Sequence[StreamToken], *, event_id: str | None = None
) -> DatastarEvent | None:
    """The event that replaces a tab's stream tokens by one, or None for a few tokens.

    Every JoinStream adds a token to the tab. A stream opened with more than
    `MERGE_TOKENS_OVER` answers first with this event, so the tab's URL stays short and
    under the endpoint's token limit however many fragments joined. It costs the tab one
    more reconnect, which is why a few tokens are left alone.
    """
    if len(tokens) <= MERGE_TOKENS_OVER:
        return None
    scopes = list(dict.fromkeys(value for token in tokens for value in token.scopes))
    merged_name = _token_name(scopes)
    patch: dict[str, Any] = {_token_name(token.scopes): None for token in tokens}
    patch[merged_name] = endpoint.signer.sign(scopes)
    return ServerSentEventGenerator.patch_signals({TOKENS_NAMESPACE: patch}, event_id=event_id)


class _LazyComponent:
    """Renders by calling a function at render time (after everything before it)."""

    __slots__ = ("_render",)

    def __init__(self, render: Any) -> None:
        self._render = render

    def iter_chunks(self, context: Mapping[Context[Any], Any] | None = None) -> Iterator[str]:
        node = self._render()
        if node is not None:
            yield from node.iter_chunks(context)

    async def aiter_chunks(
        self, context: Mapping[Context[Any], Any] | None = None
    ) -> AsyncIterator[str]:
        for chunk in self.iter_chunks(context):
            yield chunk

    def __str__(self) -> Markup:
        from markupsafe import Markup

        return Markup("".join(self.iter_chunks()))

    __html__ = __str__


_MIRROR: Final = (
    f"el.dataset.streamuiState = JSON.stringify([${TOKENS_NAMESPACE}, "
    f"Object.keys(${SIGNAL_NAMESPACE} || {{}})])"
)
"""Connect's effect when tabs share a stream: it mirrors the tab's tokens and watched keys
into an attribute, where streamui's module (which needs nothing from Datastar) reads them.
``|| {}`` in case ``_stream`` does not exist yet: Datastar 1.0.1 reads a missing signal as
``""`` (no keys), but undefined would throw and stop the effect for good."""

_IDLE_SIGNALS: Final[dict[str, Any]] = {
    SIGNAL_NAMESPACE: {},
    DATA_NAMESPACE: {},
    TOKENS_NAMESPACE: {},
    ERROR_SIGNAL: "",
}
"""An idle Connect's signals: the namespaces exist, empty (Datastar creates an empty
object signal), so that effects reading them track the keys a JoinStream adds."""


def _check_scope_count(scopes: Sequence[str], endpoint: StreamEndpoint, what: str) -> None:
    """Raise `TooManyScopesError` if one stream may not watch that many *scopes*."""
    limit = endpoint.max_scopes
    if len(scopes) <= limit:
        return
    parents = Counter(value.rpartition(":")[0] for value in scopes if ":" in value)
    pattern = f"{parents.most_common(1)[0][0]}:*" if parents else "invoice:*"
    shown = ", ".join([repr(value) for value in scopes[:3]] + ["..."] * (len(scopes) > 3))
    raise TooManyScopesError(
        f"{what} watches {len(scopes)} scopes ({shown}), over the limit of {limit} per "
        "stream: the stream would be refused and the page would never update. For a long "
        f"list, watch one pattern such as {pattern!r} (or one scope such as 'invoices' that "
        "every change to a row also invalidates) rather than one scope per row, or raise "
        "the limit with StreamConfig(max_scopes=...)."
    )


def _stream_get(stream_path: str) -> str:
    """The ``@get`` that opens the stream at *stream_path* with every token of the tab."""
    url = (
        f"{_js_string(stream_path + '?')} + Object.values(${TOKENS_NAMESPACE})"
        ".map((token) => 't=' + token).join('&')"
    )
    return action_generator.get(
        JSExpression(url),
        retry="always",
        retry_max_count=_RETRY_MAX_COUNT,
        include_signals="^$",
    )


_STREAM_GET_CACHE_CHARACTERS: Final = 512
_cached_stream_get = functools.lru_cache(maxsize=32)(_stream_get)
"""`_stream_get` for the few paths an app has (of at most 512 characters)."""


def Connect(
    path: str | None = None, *, endpoint: StreamEndpoint | None = None, joinable: bool = True
) -> _LazyComponent:
    """Open the tab's stream for every scope watched before this point of the page.

    Place it after the page content (e.g. last in ``<body>``). With an endpoint that
    shares streams across tabs (the Litestar plugin's default), it also loads streamui's
    module, which joins the browser's shared stream; otherwise, and where a browser lacks
    what sharing needs, the tab opens its own.

    On a page that registered no scope, it renders an idle element that opens nothing
    until a fragment loaded later (rows from "load more") adds a token with
    `JoinStream()`; ``joinable=False`` renders nothing instead, like the Go package (and
    so does a page rendered with no endpoint). Raises `TooManyScopesError` for more
    scopes than the endpoint's ``max_scopes``.
    """

    def render() -> Element | None:
        scopes, rendered_at = _consume()
        if not scopes and (not joinable or (endpoint or _endpoint.get()) is None):
            return None
        chosen = _current_endpoint(endpoint)
        _check_scope_count(scopes, chosen, "this page")
        stream_path = path or chosen.path
        get = (
            _cached_stream_get(stream_path)
            if type(stream_path) is str and len(stream_path) <= _STREAM_GET_CACHE_CHARACTERS
            else _stream_get(stream_path)
        )
        if scopes:
            signals = _signals_json(
                {**_token_signals(chosen, scopes, rendered_at), ERROR_SIGNAL: ""}
            )
        else:
            # Idle: a request without a token is a 400. The effect reads the token list on
            # every run, so it runs again (and opens the stream) when a JoinStream adds one.
            signals = _signals_json(_IDLE_SIGNALS)
            get = f"Object.keys(${TOKENS_NAMESPACE}).length && {get}"
        if chosen.client_url is None:
            return div(
                {"id": CONNECT_ID, "data-signals__ifmissing": signals, "data-effect": get},
                hidden=True,
            )
        config = {
            "path": stream_path,
            "mergePath": f"{stream_path}/merge",
            "maxTokens": chosen.max_tokens,
            "maxScopes": chosen.max_scopes,
            "mergeOver": MERGE_TOKENS_OVER,
            "share": chosen.share_across_tabs,
            "reload": chosen.reload_when_refused,
        }
        return div(
            {
                "id": CONNECT_ID,
                "data-signals__ifmissing": signals,
                "data-effect": _MIRROR,
                "data-streamui": json.dumps(config, separators=(",", ":")),
                "data-streamui-fallback": get,
            },
            hidden=True,
        )[script(type="module", src=chosen.client_url)]

    return _LazyComponent(render)


def JoinStream(*, tag: str = "div", endpoint: StreamEndpoint | None = None) -> _LazyComponent:
    """At the end of a fragment: add the scopes of the Watch elements rendered before it
    to the tab's stream. Renders nothing when the fragment registered no scope.

    Raises `TooManyScopesError` if the fragment alone watches more scopes than the
    endpoint's ``max_scopes`` (the page it joins is not known here)."""

    def render() -> Element | None:
        scopes, rendered_at = _consume()
        if not scopes:
            return None
        chosen = _current_endpoint(endpoint)
        _check_scope_count(scopes, chosen, "this fragment")
        signals = _token_signals(chosen, scopes, rendered_at)
        return Element(tag)({"data-signals__ifmissing": _signals_json(signals)}, hidden=True)

    return _LazyComponent(render)


def init_scope(*scopes: str, endpoint: StreamEndpoint | None = None) -> DatastarEvent:
    """A ``datastar-patch-signals`` event adding *scopes* to the tab: their keys (only if
    missing) and a token that makes the tab's stream watch them too.

    Raises `TooManyScopesError` for more scopes than the endpoint's ``max_scopes``."""
    values = _normalize(scopes)
    chosen = _current_endpoint(endpoint)
    _check_scope_count(values, chosen, "init_scope()")
    signals = _token_signals(chosen, values)
    return ServerSentEventGenerator.patch_signals(signals, only_if_missing=True)


def datastar_script(src: str | None = None) -> Element:
    """The ``<script type="module">`` tag that loads Datastar (default: the official CDN
    build of the version streamui is tested with)."""
    return script(type="module", src=src or DATASTAR_CDN_URL)
