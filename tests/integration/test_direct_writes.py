"""Which ``send`` a stream's event frames travel through.

By default (``direct_writes=True``) event frames skip the route's middleware chain but
still pass the app's ``before_send`` hooks; the response start passes everything.
With ``direct_writes=False`` every frame passes the whole chain.
"""

from __future__ import annotations

import html
import re
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from htpy import body, div
from litestar import Litestar, MediaType, get

from streamui import Connect, Watch
from streamui.litestar import StreamConfig, StreamPlugin
from tests.support import WAIT, SSEReader, serve

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Message, Receive, Scope, Send


@pytest.mark.parametrize("direct_writes", [True, False])
async def test_event_frames_pass_before_send_hooks_and_the_start_passes_middleware(
    direct_writes: bool,
) -> None:
    hooked: list[bytes] = []
    through_middleware: list[Any] = []

    async def before_send(message: Message, scope: Scope) -> None:
        if message["type"] == "http.response.body" and scope["path"].endswith("/stream"):
            hooked.append(message["body"])

    def middleware(app: ASGIApp) -> ASGIApp:
        async def recording(scope: Scope, receive: Receive, send: Send) -> None:
            async def send_and_record(message: Message) -> None:
                if scope["path"].endswith("/stream"):
                    through_middleware.append(message.get("body", message["type"]))
                await send(message)

            await app(scope, receive, send_and_record)

        return recording

    @get("/", media_type=MediaType.HTML)
    async def page() -> str:
        return str(body[div[Watch("a:1", "/a", id="a")], Connect()])

    plugin = StreamPlugin(
        StreamConfig(secret="direct-writes-secret-0123", direct_writes=direct_writes)
    )
    app = Litestar([page], plugins=[plugin], before_send=[before_send], middleware=[middleware])
    async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=WAIT) as client:
        text = html.unescape((await client.get("/")).text)
        token = re.search(r'"_streamTokens":\{"\w+":"([^"]+)"', text)
        assert token is not None
        params = {"t": token.group(1)}
        async with client.stream("GET", "/streamui/stream", params=params) as response:
            reader = SSEReader(response)
            await reader.next()
            await plugin.broker.invalidate("a:1")
            event = await reader.next_event()
            assert event.signals["_stream"]["a_1"] > 0

    frames = [body for body in hooked if b"datastar-patch-signals" in body]
    assert len(frames) == 1, hooked  # the app's before_send hooks see every event frame
    # The route's middleware sees the response start (and the opening frame) either way,
    # and the event frames only without direct writes.
    assert "http.response.start" in through_middleware
    seen_by_middleware = [
        body for body in through_middleware if isinstance(body, bytes) and b"datastar" in body
    ]
    assert len(seen_by_middleware) == (0 if direct_writes else 1)
