"""The load generator: N SSE streams and one fire connection to one server.

One asyncio process drives thousands of streams, so each stream is a bare
`asyncio.Protocol` with a hand-written HTTP/1.1 GET and a hand-written chunked-body
and SSE-frame parser: an arriving frame is timestamped in ``data_received`` itself, on
the loop's first look at the socket, with no task to wake per stream (asyncio streams
would add a task switch per stream and event, and a Python client on one core would
then queue arrivals behind its own work and inflate the latency it measures).

A round is: note t0, send ``POST /fire``, and wait until every stream has received
exactly one event (a frame with a ``data:`` line; comments and id-only frames are
not events). A second event on a stream in one round, an event outside a round, a
stream the server closes, or a round that does not complete within its timeout raise
`BenchError` naming what went wrong. The fire connection uses asyncio streams.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Final, cast

if TYPE_CHECKING:
    from types import TracebackType
    from typing import Self

__all__ = ["BenchError", "ChunkedDecoder", "FanOutClient", "StreamBody", "split_head"]

_CONNECT_CONCURRENCY: Final = 128
"""Connections being set up at once; more overflows the server's accept backlog."""
_MAX_HEAD: Final = 16_384


class BenchError(Exception):
    """Something in a benchmark run failed or hung; the message says what."""


def split_head(received: bytes) -> tuple[bytes, bytes] | bytes:
    """(response head, the body bytes after it), or *received* itself while the head is
    incomplete; `BenchError` if it grows past any sane head."""
    end = received.find(b"\r\n\r\n")
    if end >= 0:
        return received[:end], received[end + 4 :]
    if len(received) > _MAX_HEAD:
        raise BenchError("the stream response head is too long")
    return received


class ChunkedDecoder:
    """Decodes an HTTP/1.1 chunked body fed in arbitrary pieces; `ended` once the last
    (empty) chunk arrived."""

    __slots__ = ("_buffer", "_remaining", "ended")

    def __init__(self) -> None:
        self._buffer = b""
        self._remaining = -1  # bytes of chunk data still expected; -1: a size line is next
        self.ended = False

    def feed(self, data: bytes) -> bytes:
        if not self._buffer and self._remaining < 0:
            # Fast path: exactly one whole chunk (one server write, one read here).
            end = data.find(b"\r\n")
            if end > 0:
                size = int(data[:end], 16)
                if size and end + size + 4 == len(data):
                    return data[end + 2 : end + 2 + size]
        buffer = self._buffer + data if self._buffer else data
        out: list[bytes] = []
        position = 0
        while position < len(buffer) and not self.ended:
            if self._remaining < 0:
                end = buffer.find(b"\r\n", position)
                if end < 0:
                    break
                size = int(buffer[position:end].split(b";", 1)[0], 16)
                position = end + 2
                if size == 0:
                    self.ended = True
                    break
                self._remaining = size + 2  # the data and its trailing CRLF
            take = min(self._remaining, len(buffer) - position)
            # Keep data bytes only, never the chunk's trailing CRLF.
            data_left = self._remaining - 2
            if data_left > 0:
                out.append(buffer[position : position + min(take, data_left)])
            position += take
            self._remaining -= take
            if self._remaining == 0:
                self._remaining = -1
        self._buffer = buffer[position:]
        return b"".join(out)


class StreamBody:
    """The body of one streamed HTTP/1.1 response, fed in arbitrary pieces as they
    arrive: the head is read and must say 200, a chunked body is decoded; `ended` once
    its last chunk arrived."""

    __slots__ = ("_decoder", "_head")

    def __init__(self) -> None:
        self._head: bytes | None = b""  # None once the head has been read
        self._decoder: ChunkedDecoder | None = None

    def feed(self, data: bytes) -> bytes:
        """The body bytes in *data* (b"" while the head is incomplete); `BenchError` for
        a response that is not a 200."""
        if self._head is not None:
            split = split_head(self._head + data)
            if isinstance(split, bytes):
                self._head = split
                return b""
            self._head = None
            head, data = split
            status, _, fields = head.partition(b"\r\n")
            if not status.startswith(b"HTTP/1.1 200"):
                raise BenchError(f"the stream request was answered {head[:500]!r}")
            if b"transfer-encoding: chunked" in fields.lower():
                self._decoder = ChunkedDecoder()
        return data if self._decoder is None else self._decoder.feed(data)

    @property
    def ended(self) -> bool:
        return self._decoder is not None and self._decoder.ended


class _Stream(asyncio.Protocol):
    """One SSE connection; reports its opening frame and each event to the client."""

    __slots__ = (
        "_body",
        "_client",
        "_request",
        "_text",
        "closed",
        "events",
        "opened",
        "transport",
    )

    def __init__(self, client: FanOutClient, request: bytes) -> None:
        self._client = client
        self._request = request
        self._body = StreamBody()
        self._text = b""
        self.transport: asyncio.Transport | None = None
        self.opened = False
        self.closed = False
        self.events = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast("asyncio.Transport", transport)
        if self._client._closing:  # connected after the client gave up
            self.transport.close()
            return
        self.transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        try:
            self._received(data, now)
        except BenchError as error:
            self._client._fail(error)
        except ValueError as error:
            self._client._fail(BenchError(f"unparsable stream response: {error}"))

    def _received(self, data: bytes, now: float) -> None:
        data = self._body.feed(data)
        if self._body.ended:
            raise BenchError("the server ended a stream (last chunk)")
        text = self._text + data if self._text else data
        if b"\n\n" not in text:
            self._text = text
            return
        *frames, self._text = text.split(b"\n\n")
        for frame in frames:
            if frame.startswith(b"data:") or b"\ndata:" in frame:
                self._client._arrived(self, now)
            elif frame and not self.opened:
                self.opened = True
                self._client._opened()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._client._lost(exc)


class FanOutClient:
    """*count* SSE streams on ``GET stream_path`` and one connection for ``POST /fire``.

    ``async with FanOutClient(...) as client:`` then `open`, then `round` as often as
    needed; leaving the block closes every connection.
    """

    def __init__(self, host: str, port: int, stream_path: str, count: int) -> None:
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count!r}")
        self.host = host
        self.port = port
        self.count = count
        self._stream_request = (
            f"GET {stream_path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Accept: text/event-stream\r\n\r\n"
        ).encode()
        self._fire_request = (
            f"POST /fire HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        self._streams: list[_Stream] = []
        self._fire: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._loop = asyncio.get_running_loop()
        self._opened_count = 0
        self._all_open: asyncio.Future[None] = self._loop.create_future()
        self._round = 0
        self._t0 = 0.0
        self._pending = 0
        self._latencies: list[float] = []
        self._round_done: asyncio.Future[None] = self._loop.create_future()
        self._round_done.set_result(None)  # no round in progress
        self._error: BenchError | None = None
        self._closing = False
        self._to_close = 0
        self._all_closed: asyncio.Future[None] = self._loop.create_future()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    # -- driving -----------------------------------------------------------------------

    async def open(self, timeout: float) -> None:
        """Open every stream and wait until each has read its opening frame."""
        limit = asyncio.Semaphore(_CONNECT_CONCURRENCY)

        async def connect() -> None:
            async with limit:
                stream = _Stream(self, self._stream_request)
                self._streams.append(stream)
                await self._loop.create_connection(lambda: stream, self.host, self.port)

        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(self.host, self.port)
                self._fire = reader, writer
                await asyncio.gather(*(connect() for _ in range(self.count)))
                await self._all_open
        except TimeoutError:
            raise BenchError(
                f"only {self._opened_count} of {self.count} streams opened within {timeout:g} s"
            ) from None
        except OSError as error:
            raise BenchError(f"could not connect to {self.host}:{self.port}: {error}") from None

    async def round(self, timeout: float) -> list[float]:
        """Fire once; return each stream's latency (seconds from the fire to its event)."""
        if self._fire is None or not self._all_open.done():
            raise RuntimeError("open() the streams before the first round")
        self._check()
        reader, writer = self._fire
        self._round += 1
        self._pending = self.count
        self._latencies = []
        self._round_done = self._loop.create_future()
        answered = False
        self._t0 = time.perf_counter()
        writer.write(self._fire_request)
        try:
            async with asyncio.timeout(timeout):
                await _read_response(reader)
                answered = True
                await self._round_done
        except TimeoutError:
            fire = "" if answered else " (and POST /fire got no answer)"
            raise BenchError(
                f"round {self._round}: {self._pending} of {self.count} streams got no event "
                f"within {timeout:g} s{fire}"
            ) from None
        except (OSError, asyncio.IncompleteReadError) as error:
            raise BenchError(f"round {self._round}: the fire connection failed: {error}") from None
        return self._latencies

    async def close(self, timeout: float = 5.0) -> None:
        """Close every connection and wait (up to *timeout*) until the sockets are closed,
        so the server sees the disconnects before anything else happens to it."""
        self._closing = True
        for future in (self._all_open, self._round_done):
            if not future.done():
                future.cancel()
        if self._fire is not None:
            self._fire[1].close()
        open_streams = [
            stream for stream in self._streams if stream.transport is not None and not stream.closed
        ]
        self._to_close = len(open_streams)
        for stream in open_streams:
            assert stream.transport is not None
            stream.transport.close()
        if not open_streams:
            return
        try:
            async with asyncio.timeout(timeout):
                await self._all_closed
        except TimeoutError:
            for stream in open_streams:
                if not stream.closed and stream.transport is not None:
                    stream.transport.abort()

    # -- callbacks from the streams (hot path) -----------------------------------------

    def _opened(self) -> None:
        self._opened_count += 1
        if self._opened_count == self.count and not self._all_open.done():
            self._all_open.set_result(None)

    def _arrived(self, stream: _Stream, now: float) -> None:
        stream.events += 1
        if stream.events != self._round or self._round_done.done():
            self._fail(
                BenchError(
                    f"a stream received its event #{stream.events} during round {self._round}: "
                    "expected exactly one event per stream per round"
                )
            )
            return
        self._latencies.append(now - self._t0)
        self._pending -= 1
        if self._pending == 0:
            self._round_done.set_result(None)

    def _lost(self, exc: Exception | None) -> None:
        if self._closing:
            self._to_close -= 1
            if self._to_close == 0 and not self._all_closed.done():
                self._all_closed.set_result(None)
        else:
            reason = f": {exc}" if exc else ""
            self._fail(BenchError(f"the server closed a stream{reason}"))

    def _fail(self, error: BenchError) -> None:
        if self._error is None:
            self._error = error
        for future in (self._all_open, self._round_done):
            if not future.done():
                future.set_exception(error)

    def _check(self) -> None:
        if self._error is not None:
            raise self._error


async def _read_response(reader: asyncio.StreamReader) -> None:
    """Read one keep-alive response to ``POST /fire`` and require a 2xx status."""
    head = await reader.readuntil(b"\r\n\r\n")
    status, _, fields = head.partition(b"\r\n")
    if status[9:10] != b"2":
        raise BenchError(f"POST /fire was answered {head[:300]!r}")
    length = 0
    for line in fields.lower().split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            raise BenchError("POST /fire must answer with a Content-Length, not chunked")
    if length:
        await reader.readexactly(length)
