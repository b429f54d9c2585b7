"""How the stream writes, and what happens when a write fails.

Every frame goes through ``await send(message)`` from the request's task, so any ASGI
``send`` works, whatever it returns; a write that fails for any reason other than a
client that left is logged at WARNING with the reason and ends the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import re
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from htpy import body, div
from litestar import Litestar, MediaType, get

from streamui import Connect, Watch
from streamui.litestar import StreamConfig, StreamPlugin
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


def make_app(middleware: Callable[[ASGIApp], ASGIApp]) -> tuple[Litestar, StreamPlugin]:
    @get("/", media_type=MediaType.HTML)
    async def page() -> str:
        return str(body[div[Watch("a:1", "/a", id="a")], Connect()])

    plugin = StreamPlugin(StreamConfig(secret=SECRET, heartbeat=0.2))
    return Litestar([page], plugins=[plugin], middleware=[middleware]), plugin


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
