"""How the stream writes, and what happens when a write fails.

Every frame goes through the ``send`` the app was given (every middleware), so any
ASGI ``send`` works, whatever it returns. With eager writes (the default) the broker's
fan-out steps it in the stream's context, and the request's task finishes a write
that must wait; either way frames arrive in order and nothing is lost. A write that
fails for any reason other than a client that left is logged at WARNING with the
reason and ends the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import html
import logging
import re
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from htpy import body, div
from litestar import Litestar, MediaType, get

from streamui import Connect, Watch
from streamui.litestar import StreamConfig, StreamPlugin, past_exception_capture
from tests.integration.conftest import RecordingHandler
from tests.support import WAIT, SSEReader, revision_of, serve

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterator

    from litestar.types import ASGIApp, Message, Receive, Scope, Send

SECRET = "write-failures-secret-0123456789"


class _NotACoroutine:
    """An awaitable whose ``__await__`` is a plain iterator, like granian's ``send``."""

    def __init__(self, message: Message, send: Send) -> None:
        self._message = message
        self._send = send

    def __await__(self) -> Generator[Any, None, None]:
        return self._send(self._message).__await__()


def wrapping_middleware(
    wrap: Callable[[Message, Send], Any],
) -> Callable[[ASGIApp], ASGIApp]:
    """A route middleware whose ``send`` for the stream is ``wrap(message, send)``."""

    def middleware(app: ASGIApp) -> ASGIApp:
        async def call(scope: Scope, receive: Receive, send: Send) -> None:
            if not scope["path"].endswith("/stream"):
                await app(scope, receive, send)
                return

            def wrapped(message: Message) -> Any:
                return wrap(message, send)

            await app(scope, receive, wrapped)

        return call

    return middleware


def make_app(
    *middleware: Callable[[ASGIApp], ASGIApp], eager_writes: bool = True
) -> tuple[Litestar, StreamPlugin]:
    @get("/", media_type=MediaType.HTML)
    async def page() -> str:
        return str(body[div[Watch("a:1", "/a", id="a")], Connect()])

    plugin = StreamPlugin(StreamConfig(secret=SECRET, heartbeat=0.2, eager_writes=eager_writes))
    return Litestar([page], plugins=[plugin], middleware=list(middleware)), plugin


def is_event(message: Message) -> bool:
    return message["type"] == "http.response.body" and b"datastar-patch" in message["body"]


@contextlib.contextmanager
def recorded() -> Iterator[RecordingHandler]:
    """Every record of the ``streamui`` loggers."""
    handler = RecordingHandler(logging.DEBUG)
    logger = logging.getLogger("streamui")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


async def open_stream(client: httpx.AsyncClient) -> str:
    text = html.unescape((await client.get("/")).text)
    token = re.search(r'"_streamTokens":\{"\w+":"([^"]+)"', text)
    assert token is not None, text
    return f"/streamui/stream?t={token.group(1)}"


async def wait_released(plugin: StreamPlugin) -> None:
    async with asyncio.timeout(WAIT):
        while plugin.broker.watcher_count or plugin.broker.pattern_count:  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_any_awaitable_send_delivers_every_push_and_heartbeat() -> None:
    # granian's send returns an awaitable that is not a coroutine; the 0.1 writer
    # assumed one, delivered one push and then nothing while the connection stayed open.
    app, plugin = make_app(wrapping_middleware(_NotACoroutine))
    async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=WAIT) as client:
        url = await open_stream(client)
        async with client.stream("GET", url) as response:
            reader = SSEReader(response)
            assert (await reader.next()).id is not None
            for round_ in range(3):
                await plugin.broker.invalidate("a:1")
                event = await reader.next_event()
                assert event.signals["_stream"]["a_1"] == revision_of(event.id), round_
            heartbeat = await reader.next()
            while not heartbeat.comments:
                heartbeat = await reader.next()
            assert heartbeat.comments == ["keep-alive"]
    await wait_released(plugin)


async def test_a_failed_write_is_a_warning_with_the_reason_and_ends_the_stream() -> None:
    def refuse_events(message: Message, send: Send) -> Any:
        if message["type"] == "http.response.body" and b"datastar-patch" in message["body"]:
            raise RuntimeError("the proxy refused the frame")
        return send(message)

    app, plugin = make_app(wrapping_middleware(refuse_events))
    with recorded() as logged:
        async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=WAIT) as client:
            url = await open_stream(client)
            async with client.stream("GET", url) as response:
                reader = SSEReader(response)
                assert (await reader.next()).id is not None
                await plugin.broker.invalidate("a:1")
                # The stream ends (the browser reconnects) instead of staying open but deaf.
                with pytest.raises(EOFError):  # noqa: PT012 - read frames until the end
                    while True:
                        await reader.next()
            await wait_released(plugin)
    failures = [r for r in logged.records if r.levelno >= logging.WARNING]
    assert [(r.name, r.levelno, r.getMessage()) for r in failures] == [
        (
            "streamui.stream",
            logging.WARNING,
            "stream write failed, ending the stream: RuntimeError: the proxy refused the frame",
        )
    ]


async def test_a_client_that_left_is_not_a_warning() -> None:
    app, plugin = make_app(wrapping_middleware(lambda message, send: send(message)))
    with recorded() as logged:
        async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=WAIT) as client:
            url = await open_stream(client)
            async with client.stream("GET", url) as response:
                assert (await SSEReader(response).next()).id is not None
            await wait_released(plugin)
            for _ in range(3):
                await plugin.broker.invalidate("a:1")
    assert not [r for r in logged.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("eager_writes", [True, False])
@pytest.mark.parametrize("awaitable", ["coroutine", "not a coroutine"])
async def test_a_write_that_must_wait_is_finished_in_order_and_later_changes_coalesce(
    eager_writes: bool, awaitable: str
) -> None:
    # A middleware whose send waits (as flow control does for a slow client) while
    # the gate is closed; its send returns a coroutine, or another awaitable.
    gate, waiting = asyncio.Event(), asyncio.Event()

    async def gated(message: Message, send: Send) -> None:
        if is_event(message) and not gate.is_set():
            waiting.set()
            await gate.wait()
        await send(message)

    def wrap(message: Message, send: Send) -> Any:
        if awaitable == "coroutine":
            return gated(message, send)
        return _NotACoroutine(message, lambda message: gated(message, send))

    app, plugin = make_app(wrapping_middleware(wrap), eager_writes=eager_writes)
    async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=WAIT) as client:
        url = await open_stream(client)
        async with client.stream("GET", url) as response:
            reader = SSEReader(response)
            assert (await reader.next()).id is not None
            await plugin.broker.invalidate("a:1")
            first = plugin.broker.revision
            async with asyncio.timeout(WAIT):
                await waiting.wait()
            for _ in range(3):  # each in a turn of its own, while the write waits
                await plugin.broker.invalidate("a:1")
                await asyncio.sleep(0.02)
            held = plugin.broker.revision
            gate.set()
            revisions = [revision_of((await reader.next_event()).id) for _ in range(2)]
            # The waiting frame, then one frame for the three changes made meanwhile.
            assert revisions == [first, held]
            await plugin.broker.invalidate("a:1")
            event = await reader.next_event()
            assert event.signals["_stream"]["a_1"] == plugin.broker.revision
    await wait_released(plugin)


REQUEST_LABEL: contextvars.ContextVar[str] = contextvars.ContextVar("request_label")


def labelling_middleware(app: ASGIApp) -> ASGIApp:
    """Sets a context variable per request, as tracing and logging middleware do."""

    async def call(scope: Scope, receive: Receive, send: Send) -> None:
        REQUEST_LABEL.set(f"{scope['path']}?{scope['query_string'][-8:].decode()}")
        await app(scope, receive, send)

    return call


@pytest.mark.parametrize("eager_writes", [True, False])
async def test_every_frame_is_written_in_the_context_of_its_stream_request(
    eager_writes: bool,
) -> None:
    seen: list[str] = []

    def record(message: Message, send: Send) -> Any:
        if is_event(message):
            seen.append(REQUEST_LABEL.get("not the stream's context"))
        return send(message)

    app, plugin = make_app(
        labelling_middleware, wrapping_middleware(record), eager_writes=eager_writes
    )
    async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=WAIT) as client:
        url = await open_stream(client)
        async with client.stream("GET", url) as response:
            reader = SSEReader(response)
            assert (await reader.next()).id is not None
            REQUEST_LABEL.set("the invalidating task's context")
            for _ in range(2):
                await plugin.broker.invalidate("a:1")
                await reader.next_event()
    assert seen == [f"/streamui/stream?{url[-8:]}"] * 2
    await wait_released(plugin)


# -- the frames' send: Litestar's own wrappers left out, a middleware's never -----------


def app_recording_send(*middleware: Callable[[ASGIApp], ASGIApp]) -> tuple[Litestar, list[Send]]:
    given: list[Send] = []

    async def recorder(scope: Scope, receive: Receive, send: Send) -> None:
        given.append(send)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    @get("/stream")
    async def stream() -> ASGIApp:
        return recorder

    return Litestar([stream], middleware=list(middleware)), given


async def call(app: Litestar, server_send: Send) -> None:
    async def receive() -> Any:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope: Any = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": "/stream", "raw_path": b"/stream", "root_path": "",
        "query_string": b"", "headers": [], "client": None, "server": None,
    }  # fmt: skip
    await app(scope, receive, server_send)


async def test_frames_skip_litestar_exception_wrappers_and_nothing_else() -> None:
    async def server_send(message: Message) -> None:
        pass

    bare, given = app_recording_send()
    await call(bare, server_send)
    (send,) = given
    assert send is not server_send  # Litestar wrapped it ...
    assert past_exception_capture(send) is server_send  # ... only to note the start

    wrapped, given = app_recording_send(wrapping_middleware(lambda m, s: s(m)))
    await call(wrapped, server_send)
    (send,) = given
    # The middleware's send, not past it: the app's middleware sees every frame.
    unwrapped = past_exception_capture(send)
    assert unwrapped is not server_send
    assert (
        unwrapped.__qualname__
        == "wrapping_middleware.<locals>.middleware.<locals>.call.<locals>.wrapped"
    )
    assert past_exception_capture(server_send) is server_send
