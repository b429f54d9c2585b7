"""Every frame of a stream passes the app's middleware and its ``before_send`` hooks.

A stream's frames are written with ``await send(message)`` from the request's task, the
``send`` the route was called with: the one that every middleware of the app wrapped and
that runs Litestar's ``before_send`` hooks. So a middleware that changes the bytes
(compression) or only watches them (metrics, logging) sees the response start, the
opening frame, every heartbeat and event, and the frame that ends the body, in order,
and the client receives exactly those bytes.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import httpx
import pytest
from htpy import body, div
from litestar import Litestar, MediaType, get

from streamui import Connect, Watch
from streamui.litestar import StreamConfig, StreamPlugin
from tests.matrix.sse import WAIT
from tests.support import serve, stream_path, stream_tokens

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from litestar.types import ASGIApp, Message, Receive, Scope, Send

STREAM = "/streamui/stream"


class Recorder:
    """What passed one place of the app for the stream: a list of messages, with the
    body of each body message."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []

    def record(self, message: Message, scope: Scope) -> None:
        if scope["path"] != STREAM:
            return
        if message["type"] == "http.response.body":
            self.messages.append(
                (message["type"], message.get("body", b""), message.get("more_body", False))
            )
        else:
            self.messages.append((message["type"], b"", False))

    @property
    def body(self) -> bytes:
        return b"".join(chunk for _, chunk, _ in self.messages)


async def read_until(chunks: AsyncIterator[bytes], received: bytearray, needle: bytes) -> None:
    """Read the stream into *received* until it holds *needle* (bounded by WAIT)."""
    async with asyncio.timeout(WAIT):
        while needle not in received:
            received += await anext(chunks)


@pytest.mark.timeout(30)
async def test_every_frame_passes_the_middleware_and_the_before_send_hooks() -> None:
    through_middleware = Recorder()
    through_hook = Recorder()

    def middleware(app: ASGIApp) -> ASGIApp:
        async def recording(scope: Scope, receive: Receive, send: Send) -> None:
            async def send_and_record(message: Message) -> None:
                through_middleware.record(message, scope)
                await send(message)

            await app(scope, receive, send_and_record)

        return recording

    async def before_send(message: Message, scope: Scope) -> None:
        through_hook.record(message, scope)

    @get("/", media_type=MediaType.HTML)
    async def page() -> str:
        return str(body[div[Watch("a:1", "/a", id="a")], Connect()])

    plugin = StreamPlugin(StreamConfig(secret="matrix-middleware-secret-0123", heartbeat=0.2))
    app = Litestar([page], plugins=[plugin], middleware=[middleware], before_send=[before_send])
    received = bytearray()
    async with (
        serve(app) as base,
        httpx.AsyncClient(base_url=base, timeout=WAIT, trust_env=False) as client,
    ):
        text = (await client.get("/")).text
        params = {"t": stream_tokens(text)}
        async with client.stream("GET", stream_path(text), params=params) as response:
            assert response.status_code == 200
            chunks = response.aiter_raw()
            await read_until(chunks, received, b"retry: 1000\n\n")  # the opening frame
            await read_until(chunks, received, b": keep-alive\n\n")
            await plugin.broker.invalidate("a:1")
            await read_until(chunks, received, b"event: datastar-patch-signals")
            await read_until(chunks, received, b"\n\n")
            plugin.broker.end_streams(reconnect_within=2.0)  # as a shutdown does
            async with asyncio.timeout(WAIT):
                async for chunk in chunks:  # to the clean end of the body
                    received += chunk

    for recorder in (through_middleware, through_hook):
        kinds = [kind for kind, _, _ in recorder.messages]
        assert kinds[0] == "http.response.start", kinds
        assert set(kinds[1:]) == {"http.response.body"}, kinds
        more = [more_body for _, _, more_body in recorder.messages[1:]]
        assert more[-1] is False, "the body was not completed"
        assert all(more[:-1]), more
        assert b"retry: " in recorder.messages[-1][1], recorder.messages[-1]
        frames = [chunk for _, chunk, _ in recorder.messages]
        assert any(b"datastar-patch-signals" in frame for frame in frames), frames
        assert any(b": keep-alive\n\n" in frame for frame in frames), frames
    # The same messages, in the same order, through both; and those are what arrived.
    assert through_middleware.messages == through_hook.messages
    assert through_middleware.body == bytes(received)
