"""Test support: a real uvicorn server on a free port, and an SSE reader for httpx streams."""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import logging
import re
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import uvicorn

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import httpx
    from litestar.types import ASGIApp

WAIT = 10.0
"""Generous timeout (seconds) for anything a test waits on."""


@contextlib.asynccontextmanager
async def serve(app: ASGIApp) -> AsyncIterator[str]:
    """Run *app* under uvicorn (httptools) on a free loopback port; yield its base URL."""
    # IPPROTO_TCP (not 0) so asyncio turns Nagle off; otherwise replies wait ~40 ms on
    # the client's delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, log_level="warning", lifespan="on", http="httptools", timeout_graceful_shutdown=2
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(WAIT):
            while not server.started:
                if task.done():
                    task.result()
                    raise RuntimeError("uvicorn stopped before it started")
                await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, WAIT)
        sock.close()


@dataclass
class Event:
    """One SSE frame as the browser's parser sees it."""

    event: str | None = None
    id: str | None = None
    retry: int | None = None
    data: list[str] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)

    @property
    def signals(self) -> dict[str, Any]:
        """The JSON of a datastar-patch-signals event."""
        assert self.event == "datastar-patch-signals", self
        lines = [line.removeprefix("signals ") for line in self.data if line.startswith("signals ")]
        value: dict[str, Any] = json.loads("\n".join(lines))
        return value


class TruncatedFrame(AssertionError):
    """The body ended inside a frame (a frame with no blank line after it)."""


class SSEReader:
    """Reads frames from an open httpx streaming response.

    `next` raises `EOFError` at the clean end of the body, `TruncatedFrame` when the
    body ends inside a frame, and httpx's `TransportError` when the connection breaks.
    """

    frame_type: type[Event] = Event

    def __init__(self, response: httpx.Response) -> None:
        self._lines = response.aiter_lines()
        self.last_id: str | None = None
        """The last ``id:`` seen, as the browser would send it in ``Last-Event-ID``."""

    async def next(self, timeout: float = WAIT) -> Event:
        """The next frame (an event, an id-only frame or a comment-only frame)."""
        frame = self.frame_type()
        seen = False
        async with asyncio.timeout(timeout):
            async for line in self._lines:
                if line == "":
                    if seen:
                        if frame.id is not None:
                            self.last_id = frame.id
                        return frame
                    continue
                seen = True
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "":
                    frame.comments.append(value)
                elif name == "event":
                    frame.event = value
                elif name == "id":
                    frame.id = value
                elif name == "retry":
                    frame.retry = int(value)
                elif name == "data":
                    frame.data.append(value)
        if seen:
            raise TruncatedFrame(f"the body ended inside a frame: {frame}")
        raise EOFError("the stream ended")

    async def next_event(self, timeout: float = WAIT) -> Event:
        """The next frame that is an event (skipping id-only and comment frames)."""
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.next(timeout)
                if frame.event is not None:
                    return frame


_TOKENS = re.compile(r'"_streamTokens":\{"\w+":"([^"]+)"\}')


EVENT_ID = re.compile(r"([0-9]{1,16})-([0-9a-f]{8})")
"""A stream event's id: ``<revision>-<broker id>``."""


def revision_of(event_id: str | None) -> int:
    """The revision in a stream event's id (which must be well-formed)."""
    match = EVENT_ID.fullmatch(event_id or "")
    assert match is not None, f"not an event id: {event_id!r}"
    return int(match[1])


def stream_tokens(page_html: str) -> list[str]:
    """The stream tokens that Connect()/JoinStream() rendered into a page."""
    return _TOKENS.findall(html.unescape(page_html))


def stream_path(page_html: str) -> str:
    """The stream path from Connect()'s data-effect."""
    match = re.search(r'@get\(\("([^"?]+)\?"', html.unescape(page_html))
    assert match, "no Connect() element with a stream URL in the page"
    return match.group(1)


def log_streamui_warnings() -> None:
    """In a server process: print streamui's records (WARNING and up) with their level,
    so that the test reading the server's output sees them (servers configure only their
    own loggers)."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("streamui")
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
