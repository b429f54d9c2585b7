"""Helpers for testing an application that uses streamui, in-process and fast.

Record what a piece of code invalidated::

    with recorded_invalidations(broker) as seen:
        await checkout(order)
    assert "invoice:42" in seen
    assert seen.data("invoice:42") == {"total": 3}

Render a page, open its stream and await what the tabs showing it would reload::

    async with LiveClient(app) as client:  # runs the app's lifespan (the broker starts)
        page = await client.get("/")
        async with client.open_stream(page) as stream:
            await client.post("/vote")
            change = await stream.next_change()
        assert change.scopes == {"poll:1"}
        assert change.urls == ("/tally",)  # the Watch components that re-fetch

`LiveClient` is an ``httpx.AsyncClient`` that serves the app in this event loop (no
server, no browser): the whole round trip takes milliseconds. Any ASGI app works:
Litestar, Starlette, FastAPI. The framework test clients cannot serve a stream (they
read a response to its end) and run the app's lifespan on another thread's loop, where
the broker would live apart from the test; `LiveClient` does neither.

With pytest, the ``streamui`` plugin (installed with the package) adds the fixtures
``streamui_client`` and ``streamui_invalidations`` for the app a test module's
``streamui_app`` fixture returns (see `streamui.pytest_plugin`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Any, Final, Self
from urllib.parse import urlencode

import httpx

from streamui.broker import Broker
from streamui.components import CONNECT_ID, TOKENS_NAMESPACE
from streamui.scopes import DATA_NAMESPACE, SIGNAL_NAMESPACE, scope_from_key, scope_matches

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
    from types import TracebackType

__all__ = [
    "Change",
    "Invalidation",
    "Invalidations",
    "LiveClient",
    "LiveStream",
    "StreamRefusedError",
    "broker_of",
    "recorded_invalidations",
]

DEFAULT_TIMEOUT: Final = 5.0
"""Seconds `LiveStream.next_change` waits by default: generous, since a change that
arrives comes in milliseconds; a test waits this long only when it is going to fail."""

# -- recording invalidations -------------------------------------------------------------


@dataclass(frozen=True)
class Invalidation:
    """One scope invalidated, with the ``data=`` it carried (None for none)."""

    scope: str
    data: object = None


class Invalidations:
    """The invalidations made through a broker while recording, in order (a sequence of
    `Invalidation`).

    ``"invoice:42" in seen`` is true when that scope was invalidated; a pattern such as
    ``"invoice:*" in seen`` when any scope it matches was (the way a tab watching the
    pattern would see it).
    """

    def __init__(self) -> None:
        self._seen: list[Invalidation] = []

    def __getitem__(self, index: int) -> Invalidation:
        return self._seen[index]

    def __iter__(self) -> Iterator[Invalidation]:
        return iter(self._seen)

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, item: str | Invalidation) -> bool:
        if isinstance(item, Invalidation):
            return item in self._seen
        return any(scope_matches(item, seen.scope) for seen in self._seen)

    def __repr__(self) -> str:
        return f"Invalidations({self._seen!r})"

    @property
    def scopes(self) -> list[str]:
        """The scopes invalidated, in order (a scope invalidated twice is listed twice)."""
        return [seen.scope for seen in self._seen]

    def data(self, scope: str) -> object:
        """The ``data=`` of the last invalidation of *scope*; KeyError if there was none."""
        for seen in reversed(self._seen):
            if seen.scope == scope:
                return seen.data
        raise KeyError(f"{scope!r} was not invalidated (invalidated: {self.scopes!r})")

    def clear(self) -> None:
        """Forget what was recorded so far (keep recording)."""
        self._seen.clear()

    def _record(self, scopes: Sequence[str], data: object) -> None:
        self._seen.extend(Invalidation(value, data) for value in scopes)


@contextlib.contextmanager
def recorded_invalidations(broker: Broker) -> Iterator[Invalidations]:
    """Record every invalidation made through *broker* inside the ``with`` block.

    Records what this process asked for (``invalidate``, ``invalidate_many``,
    ``invalidate_threadsafe``), validated, in the order the broker took them; not what
    arrives from other processes. It may start recording before the broker starts.
    """
    seen = Invalidations()
    broker._recorders.append(seen._record)
    try:
        yield seen
    finally:
        broker._recorders.remove(seen._record)


def broker_of(app: object) -> Broker:
    """The `Broker` that streamui's integration added to *app*: a Litestar app's
    `StreamPlugin`, or the `streamui.starlette.StreamUI` installed in a Starlette or
    FastAPI app (``app.state.streamui``)."""
    from streamui.litestar import StreamPlugin

    plugins = getattr(app, "plugins", None)
    if plugins is not None and hasattr(plugins, "get"):
        with contextlib.suppress(KeyError):
            plugin = plugins.get(StreamPlugin)
            if isinstance(plugin, StreamPlugin):
                return plugin.broker
    state = getattr(app, "state", None)
    found = getattr(state, "streamui", None)
    broker = getattr(found, "broker", None)
    if isinstance(broker, Broker):
        return broker
    raise ValueError(
        f"{app!r} has no streamui broker: add StreamPlugin to the Litestar app (or "
        "streamui.starlette to a Starlette/FastAPI app), or pass the broker yourself"
    )


# -- reading a page ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Watch:
    keys: tuple[str, ...]
    url: str


@dataclass
class _Page:
    stream_path: str | None = None
    tokens: dict[str, str] = field(default_factory=dict)
    watches: list[_Watch] = field(default_factory=list)


_READS: Final = re.compile(rf"\${SIGNAL_NAMESPACE}\.(\w+)")
_WATCH_URL: Final = re.compile(r"@get\((\(\"(?:[^\"\\]|\\.)*\"\))\); el\.streamuiSeen = seen$")
_STREAM_URL: Final = re.compile(r"@get\(\(\"((?:[^\"\\]|\\.)*)\?\" \+")


class _PageParser(HTMLParser):
    """Finds what streamui rendered into a page: its tokens (`Connect`, `JoinStream`),
    the stream's path, and each `Watch` (the keys its effect reads, the URL it gets)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = _Page()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        signals = values.get("data-signals__ifmissing")
        if signals:
            with contextlib.suppress(ValueError):
                tokens = json.loads(signals).get(TOKENS_NAMESPACE)
                if isinstance(tokens, dict):
                    self.page.tokens.update(tokens)
        if values.get("id") == CONNECT_ID:
            self._connect(values)
            return
        effect = values.get("data-effect", "")
        url = _WATCH_URL.search(effect)
        if url is not None:
            # The URL is a JSON string literal in parentheses (see components._js_string).
            keys = tuple(dict.fromkeys(_READS.findall(effect)))
            self.page.watches.append(_Watch(keys, json.loads(url.group(1)[1:-1])))

    def _connect(self, values: Mapping[str, str]) -> None:
        config = values.get("data-streamui")
        if config:
            self.page.stream_path = json.loads(config)["path"]
            return
        found = _STREAM_URL.search(values.get("data-effect", ""))
        if found is not None:
            self.page.stream_path = json.loads(f'"{found.group(1)}"')


def _parse_page(html: str) -> _Page:
    parser = _PageParser()
    parser.feed(html)
    parser.close()
    return parser.page


# -- reading a stream -----------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One frame of the stream that makes components reload.

    *scopes* are the watched scopes (as the page's `Watch` elements name them: a pattern
    stays a pattern) whose revision moved; *urls* the URLs that the page's Watch
    components reading them re-fetch, in page order; *data* the ``data=`` values sent
    along, by watched scope (for a pattern: ``{"scope": <scope>, "data": <data>}``).
    """

    scopes: frozenset[str]
    urls: tuple[str, ...]
    data: Mapping[str, object]
    event_id: str | None


class StreamRefusedError(Exception):
    """The app answered the stream request with something other than a stream."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"the stream was refused with {status}: {reason}")
        self.status = status
        self.reason = reason


@dataclass
class _Event:
    kind: str = "message"
    data: list[str] = field(default_factory=list)
    id: str | None = None
    retry: int | None = None


class LiveStream:
    """The stream of one rendered page, served by the app in this event loop.

    Use it as an async context manager (`LiveClient.open_stream`); entering it opens the
    stream (raising `StreamRefusedError` for a 4xx or 503), leaving it disconnects, as a
    closed tab does.
    """

    def __init__(self, client: LiveClient, page: _Page, *, since: str | None = None) -> None:
        if page.stream_path is None or not page.tokens:
            raise ValueError(
                "the page has no stream to open: it renders no Connect() element with a "
                "token (no Watch before Connect(), or no Connect() at all)"
            )
        self._client = client
        self._page = page
        self._since = since
        self._events: asyncio.Queue[_Event | None] = asyncio.Queue()
        self._disconnect = asyncio.Event()
        self._started: asyncio.Future[tuple[int, bytes]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._buffer = b""
        self._pending = _Event()
        self.ended = False
        """True once the app ended the stream (its last frame was read)."""
        self.retry: int | None = None
        """The last ``retry:`` the stream sent (ms): when a browser would reconnect."""
        self.last_event_id: str | None = None

    async def __aenter__(self) -> Self:
        loop = asyncio.get_running_loop()
        self._started = loop.create_future()
        self._task = loop.create_task(self._run())
        try:
            status, reason = await asyncio.wait_for(asyncio.shield(self._started), DEFAULT_TIMEOUT)
        except BaseException:
            await self.aclose()
            raise
        if status != 200:
            await self.aclose()
            raise StreamRefusedError(status, reason.decode("utf-8", "replace"))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Disconnect (as a tab that closes) and wait for the app to finish the request."""
        self._disconnect.set()
        task, self._task = self._task, None
        if task is not None:
            await asyncio.wait_for(task, DEFAULT_TIMEOUT)

    async def next_change(self, timeout: float = DEFAULT_TIMEOUT) -> Change:
        """The next frame that moves watched revisions (skipping heartbeats, token
        renewals and other signals); TimeoutError if none comes within *timeout*."""
        async with asyncio.timeout(timeout):
            while True:
                event = await self._events.get()
                if event is None:
                    self._events.put_nowait(None)  # every later call sees the end too
                    raise EOFError("the app ended the stream")
                change = self._change(event)
                if change is not None:
                    return change

    async def expect(self, *scopes: str, timeout: float = DEFAULT_TIMEOUT) -> list[Change]:
        """Wait until every watched scope in *scopes* was pushed (in one frame or
        several); returns the changes read meanwhile."""
        missing = set(scopes)
        changes = []
        async with asyncio.timeout(timeout):
            while missing:
                change = await self.next_change(timeout=timeout)
                changes.append(change)
                missing -= change.scopes
        return changes

    def received(self) -> list[Change]:
        """The changes that arrived and were not read yet, without waiting."""
        changes = []
        while not self._events.empty():
            event = self._events.get_nowait()
            if event is None:
                self._events.put_nowait(None)
                break
            change = self._change(event)
            if change is not None:
                changes.append(change)
        return changes

    def _change(self, event: _Event) -> Change | None:
        if event.kind != "datastar-patch-signals":
            return None
        signals: dict[str, Any] = {}
        for line in event.data:
            name, _, value = line.partition(" ")
            if name == "signals":
                signals.update(json.loads(value))
        revisions = signals.get(SIGNAL_NAMESPACE)
        if not revisions:
            return None
        keys = set(revisions)
        data = signals.get(DATA_NAMESPACE) or {}
        urls = tuple(
            dict.fromkeys(
                watch.url for watch in self._page.watches if keys.intersection(watch.keys)
            )
        )
        return Change(
            scopes=frozenset(scope_from_key(key) for key in keys),
            urls=urls,
            data={scope_from_key(key): value for key, value in data.items()},
            event_id=event.id,
        )

    # The request, driven by hand: an ASGI test client would read the body to its end.

    async def _run(self) -> None:
        client = self._client
        query = [("t", token) for token in self._page.tokens.values()]
        if self._since is not None:
            query.append(("since", self._since))
        path = self._page.stream_path or ""
        request = client.build_request(
            "GET", path, params=urlencode(query), headers={"accept": "text/event-stream"}
        )
        scope = client._http_scope(request)
        first = True

        async def receive() -> dict[str, Any]:
            nonlocal first
            if first:
                first = False
                return {"type": "http.request", "body": b"", "more_body": False}
            await self._disconnect.wait()
            return {"type": "http.disconnect"}

        status = 0
        body = b""

        async def send(message: Mapping[str, Any]) -> None:
            nonlocal status, body
            if message["type"] == "http.response.start":
                status = message["status"]
                if status == 200:
                    self._set_started(200, b"")
                return
            if message["type"] != "http.response.body":
                return
            chunk = message.get("body", b"")
            if status != 200:
                body += chunk
                if not message.get("more_body", False):
                    self._set_started(status, body)
                return
            self._feed(chunk)
            if not message.get("more_body", False):
                self.ended = True
                self._events.put_nowait(None)

        try:
            await client._app(scope, receive, send)
        except BaseException as error:
            if self._started is not None and not self._started.done():
                self._started.set_exception(error)
            raise
        finally:
            self._set_started(status or 500, body or b"the app answered nothing")
            self._events.put_nowait(None)

    def _set_started(self, status: int, body: bytes) -> None:
        if self._started is not None and not self._started.done():
            self._started.set_result((status, body))

    def _feed(self, chunk: bytes) -> None:
        """Parse Server-Sent Events (the WHATWG rules, for what streamui writes)."""
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        for raw in lines:
            line = raw.rstrip(b"\r").decode("utf-8")
            if not line:
                event, self._pending = self._pending, _Event()
                if event.data:
                    self._events.put_nowait(event)
                continue
            if line.startswith(":"):
                continue  # a heartbeat
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                self._pending.kind = value
            elif name == "data":
                self._pending.data.append(value)
            elif name == "id":
                self._pending.id = self.last_event_id = value
            elif name == "retry" and value.isdigit():
                self.retry = int(value)


# -- the client ---------------------------------------------------------------------------


class LiveClient(httpx.AsyncClient):
    """An ``httpx.AsyncClient`` serving *app* (any ASGI app) in this event loop.

    ``async with LiveClient(app)`` runs the app's lifespan (startup on entering, shutdown
    on leaving; *lifespan=False* leaves it to you), so streamui's broker runs in the
    test's own loop. Requests keep cookies like any httpx client; `open_stream` sends
    them (and the client's headers) with the stream request too, for ``authorize``.
    """

    def __init__(
        self,
        app: Any,
        *,
        base_url: str = "http://testserver",
        lifespan: bool = True,
        **kwargs: Any,
    ) -> None:
        self._lifespan_state: dict[str, Any] = {}
        """What the app's lifespan put in its ``state``: each request gets a copy."""
        self._app = _with_state(app, self._lifespan_state)
        self._lifespan_app = app if lifespan else None
        self._lifespan: _Lifespan | None = None
        self._streams: list[LiveStream] = []
        super().__init__(transport=httpx.ASGITransport(app=self._app), base_url=base_url, **kwargs)

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        if self._lifespan_app is not None:
            self._lifespan = _Lifespan(self._lifespan_app, self._lifespan_state)
            try:
                await self._lifespan.startup()
            except BaseException:
                await super().__aexit__(None, None, None)
                raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        try:
            for stream in self._streams:
                await stream.aclose()
            if self._lifespan is not None:
                await self._lifespan.shutdown()
        finally:
            await super().__aexit__(exc_type, exc, traceback)

    @contextlib.asynccontextmanager
    async def open_stream(
        self, page: httpx.Response | str, *, since: str | None = None
    ) -> AsyncIterator[LiveStream]:
        """Open the stream that the page's `Connect` (and `JoinStream` elements) would:
        every token the page carries. *page* is a response or its HTML; *since* an event
        id to catch up from, as a reconnecting tab would."""
        html = page if isinstance(page, str) else page.text
        stream = LiveStream(self, _parse_page(html), since=since)
        async with stream:
            self._streams.append(stream)
            try:
                yield stream
            finally:
                self._streams.remove(stream)

    def _http_scope(self, request: httpx.Request) -> dict[str, Any]:
        url = request.url
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": request.method,
            "scheme": url.scheme,
            "path": url.path,
            "raw_path": url.raw_path.split(b"?")[0],
            "query_string": url.query,
            "root_path": "",
            "headers": [(name.lower(), value) for name, value in request.headers.raw],
            "client": ("127.0.0.1", 123),
            "server": (url.host, url.port or (443 if url.scheme == "https" else 80)),
            "extensions": {},
        }


def _with_state(app: Any, state: dict[str, Any]) -> Any:
    """*app*, with the lifespan's state in each request's scope, as servers give it."""

    async def with_state(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            scope = {**scope, "state": dict(state)}
        await app(scope, receive, send)

    return with_state


class _Lifespan:
    """The ASGI lifespan protocol, spoken to *app* in this loop."""

    def __init__(self, app: Any, state: dict[str, Any]) -> None:
        self._app = app
        self._lifespan_state = state
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": self._lifespan_state}
        self._task = asyncio.get_running_loop().create_task(
            self._app(scope, self._inbox.get, self._outbox.put)
        )
        await self._step("startup")

    async def shutdown(self) -> None:
        await self._step("shutdown")
        if self._task is not None:
            await asyncio.wait_for(self._task, DEFAULT_TIMEOUT)

    async def _step(self, phase: str) -> None:
        assert self._task is not None
        await self._inbox.put({"type": f"lifespan.{phase}"})
        answer = asyncio.ensure_future(self._outbox.get())
        done, _ = await asyncio.wait(
            {answer, self._task}, timeout=DEFAULT_TIMEOUT * 2, return_when="FIRST_COMPLETED"
        )
        if answer not in done:
            answer.cancel()
            if self._task in done:
                self._task.result()  # raises what the app raised
                raise RuntimeError(f"the app's lifespan ended without answering {phase}")
            raise TimeoutError(f"the app's lifespan did not answer {phase}")
        message = answer.result()
        if message["type"] == f"lifespan.{phase}.failed":
            raise RuntimeError(f"the app's lifespan {phase} failed: {message.get('message')}")
