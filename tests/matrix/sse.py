"""A browser-like SSE client over httpx: reads frames as they arrive, tells a clean end
of the body from a cut connection.

httpx decodes gzip and (with ``brotli`` installed) br incrementally, as a browser does,
so a frame read here while the stream is still open proves the server flushed it
(compressed or not) when it was written.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httpx

from streamui import SIGNAL_NAMESPACE
from tests.support import WAIT, Event, SSEReader, TruncatedFrame

__all__ = ["WAIT", "Frame", "StreamCut", "StreamReader"]


class StreamCut(AssertionError):
    """The connection broke before the body completed (a reset, not a clean end)."""


@dataclass
class Frame(Event):
    """One SSE frame (up to a blank line), every field as the browser's parser sees it."""

    @property
    def id_only(self) -> bool:
        """An id (and maybe retry) and nothing else: the parser records the id without
        dispatching an event."""
        return self.id is not None and self.event is None and not self.data and not self.comments

    @property
    def revisions(self) -> dict[str, int]:
        """The ``_stream`` keys this event sets, with their revisions."""
        value: dict[str, int] = self.signals[SIGNAL_NAMESPACE]
        return value


class StreamReader(SSEReader):
    """Reads `Frame`s from an open httpx streaming response; a broken connection or a
    body that ends inside a frame is a `StreamCut`."""

    frame_type = Frame

    async def next(self, timeout: float = WAIT) -> Frame:
        """The next frame; `EOFError` when the body completed, `StreamCut` when the
        connection broke first."""
        try:
            frame = await super().next(timeout)
        except httpx.TransportError as error:
            raise StreamCut(f"the connection broke mid-stream: {error!r}") from error
        except TruncatedFrame as error:
            raise StreamCut(str(error)) from error
        assert isinstance(frame, Frame)
        return frame

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
