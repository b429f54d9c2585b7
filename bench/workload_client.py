"""The workload benchmark's client: streams that each have their own URL, and say what
arrived on them.

The fan-out client (`bench.client.FanOutClient`) opens N identical streams and only
counts events. The workloads need more: each stream has its own token (its own
scopes), the checks need each event's ``_stream`` signals (which keys, which
revision), and one workload opens and closes streams as fast as it can. So a stream
here is the same kind of bare `asyncio.Protocol` (no task per stream; the response
head and chunked body read by `bench.client.StreamBody`), but it hands each chunk's
events to its `StreamSet`,
whose subclasses decide what an event means and what is wrong.

Control requests (``POST`` with a JSON body, JSON answer) go over a connection of their
own with asyncio streams; they are few.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any, Final, cast

from bench.client import BenchError, ChunkedDecoder, StreamBody, split_head
from streamui import SIGNAL_NAMESPACE

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import TracebackType
    from typing import Self

__all__ = ["Stream", "StreamSet", "finish", "post_json", "signals_of"]

CONNECT_CONCURRENCY: Final = 128
"""Connections being set up at once when opening streams that stay open (as the fan-out
client does: more overflows the server's accept backlog)."""
_SIGNALS_LINE: Final = b"data: signals "


def signals_of(frame: bytes) -> dict[str, int]:
    """The ``_stream`` signals (key -> revision) of one ``datastar-patch-signals`` event."""
    for line in frame.split(b"\n"):
        if line.startswith(_SIGNALS_LINE):
            value = json.loads(line[len(_SIGNALS_LINE) :])
            stream = value.get(SIGNAL_NAMESPACE) if isinstance(value, dict) else None
            if not isinstance(stream, dict):
                raise BenchError(f"an event without {SIGNAL_NAMESPACE} signals: {frame[:200]!r}")
            return cast("dict[str, int]", stream)
    raise BenchError(f"an event without a 'data: signals' line: {frame[:200]!r}")


class Stream(asyncio.Protocol):
    """One SSE connection. Reports its opening frame (the first frame that is not an
    event) and the events of each chunk it reads to its `StreamSet`."""

    __slots__ = (
        "_body",
        "_owner",
        "_request",
        "_text",
        "closed",
        "ending",
        "events",
        "index",
        "opened",
        "revision",
        "transport",
    )

    def __init__(self, owner: StreamSet, index: int, request: bytes) -> None:
        self._owner = owner
        self.index = index
        self._request = request
        self._body = StreamBody()
        self._text = b""
        self.transport: asyncio.Transport | None = None
        self.opened = False
        self.closed = False
        self.ending = False
        """Set before this side closes the connection: its loss is expected."""
        self.events = 0
        self.revision = 0
        """For the owner's bookkeeping: the last revision it saw here."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast("asyncio.Transport", transport)
        if self._owner.closing:  # connected after the client gave up
            self.end()
            return
        self.transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        try:
            self._received(data)
        except BenchError as error:
            self._owner.fail(BenchError(f"stream {self.index}: {error}"))
        except ValueError as error:
            self._owner.fail(BenchError(f"stream {self.index}: unparsable response: {error}"))

    def _received(self, data: bytes) -> None:
        data = self._body.feed(data)
        if self._body.ended and not self.ending:
            raise BenchError("the server ended the stream (last chunk)")
        text = self._text + data if self._text else data
        if b"\n\n" not in text:
            self._text = text
            return
        *frames, self._text = text.split(b"\n\n")
        events = [frame for frame in frames if frame.startswith(b"data:") or b"\ndata:" in frame]
        if not self.opened and len(events) < len(frames):
            self.opened = True
            self._owner.opened(self)
        if events:
            self.events += len(events)
            self._owner.received(self, events)

    def end(self) -> None:
        """Close the connection from this side."""
        self.ending = True
        if self.transport is not None and not self.closed:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._owner.lost(self, exc)


class StreamSet:
    """Streams to one server, each on its own path; ``async with`` closes them all.

    `open` opens a batch and waits for every opening frame. A subclass overrides
    `received` to check events, and uses `arm` / `settle` / `pending` to wait for what
    it expects (a count of things, each ticked by `tick`); anything wrong goes to `fail`,
    which makes the wait raise.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.streams: list[Stream] = []
        self.closing = False
        self.loop = asyncio.get_running_loop()
        self.error: BenchError | None = None
        self._opening = 0
        self._all_open: asyncio.Future[None] | None = None
        self._pending = 0
        self._done: asyncio.Future[None] | None = None
        self._unclosed: set[Stream] = set()
        self._all_closed: asyncio.Future[None] | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def request(self, path: str) -> bytes:
        return (
            f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            "Accept: text/event-stream\r\n\r\n"
        ).encode()

    # -- opening -----------------------------------------------------------------------

    async def open(self, paths: Sequence[str], timeout: float) -> list[Stream]:
        """Open one stream per path (indexes follow those already open) and wait until
        each has read its opening frame."""
        limit = asyncio.Semaphore(CONNECT_CONCURRENCY)
        first = len(self.streams)
        batch = [
            Stream(self, first + offset, self.request(path)) for offset, path in enumerate(paths)
        ]
        self.streams.extend(batch)
        self._opening = len(batch)
        self._all_open = self.loop.create_future()

        async def connect(stream: Stream) -> None:
            async with limit:
                await self.loop.create_connection(lambda: stream, self.host, self.port)

        connecting = [self.loop.create_task(connect(stream)) for stream in batch]
        try:
            async with asyncio.timeout(timeout):
                await asyncio.gather(*connecting)
                if self._opening:
                    await self._all_open
        except TimeoutError:
            raise BenchError(
                f"only {len(batch) - self._opening} of {len(batch)} streams opened "
                f"within {timeout:g} s"
            ) from None
        except OSError as error:
            raise BenchError(f"could not connect to {self.host}:{self.port}: {error}") from None
        finally:
            await finish(connecting)
        self._check()
        return batch

    def opened(self, stream: Stream) -> None:
        """A stream read its opening frame (hot path while opening)."""
        self._opening -= 1
        if self._opening == 0 and self._all_open is not None and not self._all_open.done():
            self._all_open.set_result(None)

    # -- what arrives ------------------------------------------------------------------

    def received(self, stream: Stream, events: list[bytes]) -> None:
        """Events arrived on *stream* (hot path); by default they are only counted."""

    def lost(self, stream: Stream, exc: Exception | None) -> None:
        if self.closing:
            self._unclosed.discard(stream)
            closed = self._all_closed
            if not self._unclosed and closed is not None and not closed.done():
                closed.set_result(None)
        elif not stream.ending:
            reason = f": {exc}" if exc else ""
            self.fail(BenchError(f"the server closed stream {stream.index}{reason}"))

    # -- waiting -----------------------------------------------------------------------

    def arm(self, pending: int) -> None:
        """Expect *pending* `tick` calls before `settle` returns."""
        self._check()
        self._pending = pending
        self._done = self.loop.create_future()
        if pending == 0:
            self._done.set_result(None)

    def tick(self) -> None:
        self._pending -= 1
        if self._pending == 0 and self._done is not None and not self._done.done():
            self._done.set_result(None)

    @property
    def pending(self) -> int:
        """How many `tick` calls the armed wait still expects."""
        return self._pending

    async def settle(self, timeout: float, what: str) -> None:
        """Wait for the armed ticks; `BenchError` saying *what* was awaited if they do
        not all come within *timeout*, or if anything failed."""
        if self._done is None:
            raise RuntimeError("arm() before settle()")
        try:
            async with asyncio.timeout(timeout):
                await self._done
        except TimeoutError:
            raise BenchError(f"{what}: {self._pending} still missing after {timeout:g} s") from None
        self._check()

    def fail(self, error: BenchError) -> None:
        if self.error is None:
            self.error = error
        for future in (self._all_open, self._done):
            if future is not None and not future.done():
                future.set_exception(error)

    def _check(self) -> None:
        if self.error is not None:
            raise self.error

    async def close(self, timeout: float = 5.0) -> None:
        """Close every stream; wait (up to *timeout*) until the sockets are closed, so
        the server has seen the disconnects before anything else happens to it."""
        self.closing = True
        for future in (self._all_open, self._done):
            if future is not None and not future.done():
                future.cancel()
            elif future is not None and not future.cancelled():
                future.exception()  # retrieved: a failure was already raised
        self._unclosed = {s for s in self.streams if s.transport is not None and not s.closed}
        self._all_closed = self.loop.create_future()
        for stream in self.streams:
            stream.end()
        if not self._unclosed:
            return
        try:
            async with asyncio.timeout(timeout):
                await self._all_closed
        except TimeoutError:
            for stream in self._unclosed:
                if stream.transport is not None:
                    stream.transport.abort()


async def finish(tasks: Sequence[asyncio.Task[None]]) -> None:
    """Cancel whichever of *tasks* still run (one failed, or the wait timed out) and wait
    for them, so none is left behind connecting after its step has given up."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def post_json(
    host: str, port: int, path: str, body: object, timeout: float
) -> dict[str, Any]:
    """``POST path`` with *body* as JSON on a connection of its own; the JSON answer.

    `BenchError` for anything but a 2xx answer with a JSON object, or no answer within
    *timeout* (seconds).
    """
    payload = json.dumps(body, separators=(",", ":")).encode()
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
    ).encode() + payload
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(request)
                answer = await reader.read(-1)
            finally:
                writer.close()
    except TimeoutError:
        raise BenchError(f"POST {path} got no answer within {timeout:g} s") from None
    except OSError as error:
        raise BenchError(f"POST {path} failed: {error}") from None
    split = split_head(answer)
    if isinstance(split, bytes):
        raise BenchError(f"POST {path}: an incomplete answer {answer[:300]!r}")
    head, content = split
    if head[9:10] != b"2":
        raise BenchError(f"POST {path} was answered {head[:300]!r} {content[:300]!r}")
    if b"transfer-encoding: chunked" in head.lower():
        decoder = ChunkedDecoder()
        content = decoder.feed(content)
    value = json.loads(content)
    if not isinstance(value, dict):
        raise BenchError(f"POST {path}: expected a JSON object, got {content[:300]!r}")
    return value
