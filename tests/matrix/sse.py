"""A browser-like SSE client over httpx: reads frames as they arrive, tells a clean end
of the body from a cut connection.

httpx decodes gzip and (with ``brotli`` installed) br incrementally, as a browser does,
so a frame read here while the stream is still open proves the server flushed it
(compressed or not) when it was written.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import httpx

from streamui import SIGNAL_NAMESPACE

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["WAIT", "Frame", "StreamCut", "StreamReader"]

WAIT: Final = 10.0
"""Generous timeout (seconds) for anything a test waits on."""


class StreamCut(AssertionError):
    """The connection broke before the body completed (a reset, not a clean end)."""


@dataclass
class Frame:
    """One SSE frame (up to a blank line), every field as the browser's parser sees it."""

    event: str | None = None
    id: str | None = None
    retry: int | None = None
    data: list[str] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)

    @property
    def id_only(self) -> bool:
        """An id (and maybe retry) and nothing else: the parser records the id without
        dispatching an event."""
        return self.id is not None and self.event is None and not self.data and not self.comments

    @property
    def signals(self) -> dict[str, Any]:
        """The JSON of a datastar-patch-signals event."""
        assert self.event == "datastar-patch-signals", self
        lines = [line.removeprefix("signals ") for line in self.data if line.startswith("signals ")]
        value: dict[str, Any] = json.loads("\n".join(lines))
        return value

    @property
    def revisions(self) -> dict[str, int]:
        """The ``_stream`` keys this event sets, with their revisions."""
        value: dict[str, int] = self.signals[SIGNAL_NAMESPACE]
        return value


class StreamReader:
    """Reads frames from an open httpx streaming response."""

    def __init__(self, response: httpx.Response) -> None:
        self._lines: AsyncIterator[str] = response.aiter_lines()
        self.last_id: str | None = None
        """The last ``id:`` seen, as the browser would send it in ``Last-Event-ID``."""

    async def next(self, timeout: float = WAIT) -> Frame:
        """The next frame; `EOFError` when the body completed, `StreamCut` when the
        connection broke first."""
        frame = Frame()
        seen = False
        try:
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
        except httpx.TransportError as error:
            raise StreamCut(f"the connection broke mid-stream: {error!r}") from error
        if seen:
            raise StreamCut(f"the body ended inside a frame: {frame}")
        raise EOFError("the stream ended")

    async def next_event(self, timeout: float = WAIT) -> Frame:
        """The next frame that is an event (skipping id-only and comment frames)."""
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.next(timeout)
                if frame.event is not None:
                    return frame

    async def until(self, what: str, timeout: float = WAIT) -> list[Frame]:
        """Frames up to and including the first comment *what*."""
        frames: list[Frame] = []
        async with asyncio.timeout(timeout):
            while what not in (frames[-1].comments if frames else []):
                frames.append(await self.next(timeout))
        return frames

    async def to_end(self, timeout: float = WAIT) -> list[Frame]:
        """Every frame up to the clean end of the body."""
        frames: list[Frame] = []
        async with asyncio.timeout(timeout):
            while True:
                try:
                    frames.append(await self.next(timeout))
                except EOFError:
                    return frames
