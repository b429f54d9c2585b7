"""The Server-Sent-Events stream of one browser tab, as a plain ASGI application.

`EventStream` is framework-agnostic (the Litestar controller returns one after it has
verified the request). What it guarantees:

- Upstream subscriptions are taken before the response starts; if that fails the
  client gets a 503 with a reason, never a half-open stream.
- Every frame is written with the ``send`` the app was given, so it passes every
  middleware of the app (compression, CORS, sessions, ...) exactly as any other
  response body would, in order, on any ASGI server. While the stream waits, the
  broker's fan-out writes its frames itself (*eager_writes*): it calls ``send`` and
  steps it in the stream's context, and a write that completes in that step, as
  nearly all do, costs no task switch. A write that must wait (flow control, a
  middleware that awaits) is finished by a short-lived task before anything else is
  written.
- The first bytes are an id-only frame (``id:`` and ``retry:``): the browser's SSE
  parser records the id without dispatching an event, so even a tab hidden before its
  first invalidation reconnects with ``Last-Event-ID`` and is caught up exactly (the
  id is the point the stream started from, see `Broker.watch`).
- Each write carries every change coalesced since the previous write, as one
  ``datastar-patch-signals`` event with an ``id:``.
- A comment line is written every *heartbeat* seconds so proxies keep idle streams open.
- With *renew*, the stream calls it *renew_after* seconds after it opened, then every
  *renew_every*: what it returns (an event: the tab's renewed tokens) is written; None
  (not authorized any more) or an error ends the stream.
- When the server ends the stream (shutdown, *max_lifetime*, broker closed), the body
  is completed cleanly, so the browser reconnects; on shutdown the last frame carries
  a ``retry:`` delay chosen by the broker, so many tabs do not reconnect at once.
- A write that fails ends the stream. A client that left is normal (DEBUG); any other
  failure is logged at WARNING with the reason. A stream is never left open but deaf.
- Every body that started ends with a last message (``more_body`` false), also when
  the client left first: middleware that holds something until then (compression)
  lets it go. What a server does with that message after the disconnect (ignore it,
  raise) is dropped, at DEBUG. (Not when the server cancels the request itself.)
- When the client disconnects, the server cancels, or the broker closes, every
  subscription is released (the ``async with broker.watch(...)`` block always exits).

Memory per stream: the `EventStream` (which is also its watcher's writer and its own
clock), one `Watcher`, and the request task, which only waits for the disconnect; no
other task and no timer (heartbeats, renewals and lifetimes tick from one timer wheel
per event loop). A write that waits on the
server's flow control holds one frame; what changes meanwhile coalesces into the
next, so a slow reader costs at most two frames of memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import heapq
import logging
import math
import sys
import weakref
from types import CoroutineType
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from datastar_py.sse import SSE_HEADERS

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from litestar.types import Receive, Scope, Send

    from streamui.broker import Broker, Watcher

__all__ = ["RETRY_MS", "EventStream"]

logger = logging.getLogger("streamui.stream")

_HEADERS: Final = [(name.lower().encode(), value.encode()) for name, value in SSE_HEADERS.items()]

RETRY_MS: Final = 1000
"""The reconnect delay every stream announces when it opens (Datastar's default). It
resets a longer delay that a stream ended by a shutdown may have asked for."""


class EventStream:
    """ASGI app streaming invalidations of *scopes* from *broker* to one client (one
    request: make one per request).

    *greeting*, if given, is called with the opening frame's id and what it returns is
    written right after that frame (the Litestar controller uses it to merge a tab's
    stream tokens). *eager_writes* False writes every frame from a task (one task per
    delivery), for middleware whose ``send`` must be awaited there. *frame_send*, if
    given, is called with the ``send`` once the stream has opened and returns the one
    to write the frames after that with (the Litestar controller leaves out its own
    exception handlers' wrappers; never a middleware's).

    Once open, the stream is also its watcher's writer (`kick` and `write`, called by
    the broker's fan-out) and its own clock (ticked by the loop's timer wheel): an
    open stream is this one object, its `Watcher` and the request's waiting task.
    """

    __slots__ = (
        "_bucket",
        "_context",
        "_done",
        "_eager",
        "_ends_at",
        "_failure",
        "_heartbeat",
        "_heartbeat_at",
        "_opening",
        "_renew",
        "_renew_at",
        "_renew_every",
        "_renewing",
        "_send",
        "_task",
        "_watcher",
        "_writing",
    )
    _watcher: Watcher
    _send: Send
    _context: contextvars.Context

    def __init__(
        self,
        broker: Broker,
        scopes: Sequence[str],
        *,
        rendered_at: float | None = None,
        after: str | None = None,
        resume: bool = False,
        clock: str | None = None,
        heartbeat: float = 15.0,
        max_lifetime: float | None = None,
        greeting: Callable[[str], bytes] | None = None,
        renew: Callable[[], Awaitable[bytes | None]] | None = None,
        renew_after: float = 0.0,
        renew_every: float = 0.0,
        eager_writes: bool = True,
        frame_send: Callable[[Send], Send] | None = None,
    ) -> None:
        self._opening: _Opening | None = _Opening(
            broker,
            tuple(scopes),
            rendered_at,
            after,
            resume,
            clock,
            greeting,
            max_lifetime,
            renew_after,
            frame_send,
        )
        """What only opening the stream needs (dropped then: an open stream keeps what
        it keeps for hours)."""
        self._eager = eager_writes
        self._heartbeat = heartbeat
        self._renew = renew
        self._renew_every = renew_every
        # Set when the stream opens (`_start`): _watcher, _send, _context.
        self._task: asyncio.Task[Any] | None = None
        """The request's task while it waits for the disconnect (cancelled to end it)."""
        self._writing: asyncio.Task[None] | None = None
        """A write that must wait, and those after it."""
        self._done = False
        self._failure: Exception | None = None
        self._heartbeat_at = 0.0
        self._renew_at: float | None = None
        self._ends_at: float | None = None
        self._bucket: set[EventStream] | None = None
        """The wheel's bucket this stream waits in for its next tick."""
        self._renewing: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        opening = self._opening
        if opening is None:
            raise RuntimeError("an EventStream serves one request: make one per request")
        self._opening = None
        watcher = opening.broker.watch(
            opening.scopes,
            rendered_at=opening.rendered_at,
            after=opening.after,
            resume=opening.resume,
            clock=opening.clock,
        )
        try:
            await watcher.__aenter__()
        except Exception as error:
            logger.exception("could not subscribe for a stream")
            opening.broker.refused["unavailable"] += 1
            body = f"stream unavailable: {type(error).__name__}: {error}".encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 503,
                    "headers": [
                        (b"content-type", b"text/plain; charset=utf-8"),
                        (b"retry-after", b"2"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body, "more_body": False})
            return
        try:
            if not await self._open(watcher, send, opening.greeting):
                return
            self._start(watcher, send, opening)
            opening = None
            # From here on the request's task only listens: frames are written when the
            # broker's fan-out calls this stream as the watcher's writer, ticks come from
            # the loop's one wheel. (All in this one frame: it is what every open stream
            # keeps.)
            self.kick()  # what the catch-up marked before the stream was its writer
            task = asyncio.current_task()
            assert task is not None
            cancelling = task.cancelling()
            left = False
            try:
                if not self._done:
                    # An idle stream writes nothing for long stretches, so only this
                    # wait notices a client that left in time to release its
                    # subscriptions. `_end` cancels it when the stream ends.
                    self._task = task
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    left = True
            except asyncio.CancelledError:
                # Ours (the stream ended) unless someone else cancelled the request too.
                if self._task is not None or task.uncancel() > cancelling:
                    raise
            except Exception as error:  # a server that fails receive() once the client left
                logger.debug("receive() failed, taking the client as gone: %r", error)
                left = True
            finally:
                self._stop()
                watcher.close()
            if self._failure is not None:
                await self._report(receive, send, self._failure)
            elif left:
                await _complete(send)
        finally:
            await watcher.__aexit__(None, None, None)

    def _start(self, watcher: Watcher, send: Send, opening: _Opening) -> None:
        """Become *watcher*'s writer and start the clock."""
        loop = asyncio.get_running_loop()
        self._watcher = watcher
        self._send = send if opening.frame_send is None else opening.frame_send(send)
        if self._eager:
            _claim_asyncio()
        self._context = contextvars.copy_context()
        now = loop.time()
        self._heartbeat_at = now + self._heartbeat
        if self._renew is not None:
            self._renew_at = now + opening.renew_after
        if opening.max_lifetime is not None:
            self._ends_at = now + opening.max_lifetime
        self._bucket = _wheel(loop).add(self, self._due())
        watcher.attach(self)

    # The watcher's writer (`streamui.broker.StreamWriter`), called by the broker's
    # fan-out once per event-loop turn.
    #
    # With *eager_writes*, a write calls the app's ``send`` (the whole middleware chain)
    # and steps the coroutine by hand, in the stream's own context, so a frame travels
    # exactly the path any response body does, in order, on any server. A write that
    # completes in that one step (the common case: the server hands the bytes to the
    # socket) costs no task at all. A write that must wait (flow control, a middleware
    # that awaits) is finished by a task, which then writes what coalesced meanwhile and
    # ends. Without *eager_writes*, every write is made by such a task.
    #
    # When the watcher is closed by the server, the writer completes the body (with the
    # ``retry:`` delay the broker chose) and ends the request's wait; a failed write
    # ends it too, and is reported there.

    def kick(self) -> None:
        """Write what the watcher has ready, or complete the body if it was closed."""
        if self._writing is not None or self._done:
            return  # a write in flight writes what is pending when it finishes
        frame, more = self._next()
        if frame is not None:
            self.write(frame, more=more)

    def write(self, frame: bytes, *, more: bool = True) -> bool:
        """Write *frame* now, unless a write is in flight (then False: mark it)."""
        if self._writing is not None or self._done:
            return False
        message = {"type": "http.response.body", "body": frame, "more_body": more}
        started: _Suspended | None = None
        if self._eager:
            try:
                started = self._context.run(_first_step, self._send, message)
            except Exception as error:
                self._end(error)
                return True
            if started is None:  # written
                if not more:
                    self._end()
                return True
        self._writing = asyncio.get_running_loop().create_task(
            self._finish(started, message, more), context=self._context
        )
        return True

    def _next(self) -> tuple[bytes | None, bool]:
        """The next frame, and whether the body goes on after it."""
        watcher = self._watcher
        if watcher.closed:  # ended by the server: complete the body cleanly
            last = b""
            if watcher.reconnect_after is not None:
                last = f"retry: {watcher.reconnect_after}\n\n".encode()
            return last, False
        return watcher.take() or None, True

    async def _finish(
        self,
        started: _Suspended | None,
        message: dict[str, object],
        more: bool,
    ) -> None:
        """Drive a write to its end (*started*: stepped by hand until it waited), then
        write what is ready, as the stream's own task would have."""
        send = self._send
        try:
            if started is None:
                await send(message)  # type: ignore[arg-type]
            else:
                await _resume(started)
            while more:
                frame, more = self._next()
                if frame is None:
                    break
                await send(_body(frame, more=more))  # type: ignore[arg-type]
        except Exception as error:
            self._writing = None
            self._end(error)
            return
        self._writing = None
        if not more:
            self._end()

    def _end(self, failure: Exception | None = None) -> None:
        """The body is complete, or a write failed: stop writing, end the request's wait."""
        self._done = True
        self._failure = failure
        self._watcher.attach(None)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()

    def _stop(self) -> None:
        """No more writes or ticks; cancel a write or renewal in flight (the client
        left, or the request ends)."""
        self._done = True
        self._task = None
        self._watcher.attach(None)
        if self._writing is not None:
            self._writing.cancel()
        if self._bucket is not None:
            self._bucket.discard(self)
            self._bucket = None
        if self._renewing is not None:
            self._renewing.cancel()

    # The stream's clock: the next heartbeat, token renewal and the end of its maximum
    # lifetime, ticked by the loop's `_Wheel`.

    def _due(self) -> float:
        due = self._heartbeat_at
        if self._renew_at is not None:
            due = min(due, self._renew_at)
        if self._ends_at is not None:
            due = min(due, self._ends_at)
        return due

    def _tick(self, wheel: _Wheel, now: float) -> None:
        """Called by *wheel* when the stream's next due time has come."""
        watcher = self._watcher
        # What is due within the bucket is due now (rounding never leaves it behind).
        due = now + _RESOLUTION / 2
        if self._ends_at is not None and due >= self._ends_at:
            self._ends_at = None
            watcher.close()
        if due >= self._heartbeat_at:
            watcher.heartbeat()
            self._heartbeat_at = now + self._heartbeat
        if self._renew_at is not None and due >= self._renew_at:
            if self._renewing is None:
                self._renewing = wheel.loop.create_task(self._renewal())
            self._renew_at = now + self._renew_every
        self._bucket = wheel.add(self, self._due())

    async def _renewal(self) -> None:
        renew, watcher = self._renew, self._watcher
        assert renew is not None
        try:
            frame = await renew()
        except Exception as error:
            logger.warning("renewing a stream's tokens failed, ending it: %r", error)
            frame = None
        finally:
            self._renewing = None
        if frame is None:
            watcher.close()  # the browser reconnects, and is told why it may not
        else:
            watcher.push(frame)

    @staticmethod
    async def _open(watcher: Watcher, send: Send, greeting: Callable[[str], bytes] | None) -> bool:
        """Start the response and write the opening frame; False if that failed."""
        try:
            await _opening_write(
                send({"type": "http.response.start", "status": 200, "headers": _HEADERS}),
                started=False,
            )
            opening_id, watcher.opening_id = watcher.opening_id, ""  # used once
            opening = f"id: {opening_id}\nretry: {RETRY_MS}\n\n".encode()
            if greeting is not None:
                opening += greeting(opening_id)
            first = _body(opening, more=True)
            await _opening_write(send(first), started=True)  # type: ignore[arg-type]
        except _ClientLeft as left:
            if left.started:
                await _complete(send)
            return False
        except Exception as error:
            await _give_up(send, error)
            return False
        return True

    @staticmethod
    async def _report(receive: Receive, send: Send, error: Exception) -> None:
        """A write failed: the client left (DEBUG), or else a server, middleware or
        proxy refused it (WARNING, and the body is completed if it can be)."""
        if not isinstance(error, OSError):  # ECONNRESET, EPIPE, "client disconnected"
            # Servers differ in what a write to a closed connection raises; one that
            # left has its disconnect waiting.
            try:
                async with asyncio.timeout(_DISCONNECT_GRACE):
                    left = (await receive())["type"] == "http.disconnect"
            except TimeoutError:
                left = False
            except Exception:  # a server that fails receive() once the client left
                left = True
            if not left:
                await _give_up(send, error)
                return
        logger.debug("stream write failed, the client left: %r", error)
        await _complete(send)


_DISCONNECT_GRACE: Final = 0.1
"""Seconds a failed write waits for the disconnect that would say the client left."""


class _ClientLeft(Exception):
    """The client disconnected while a frame was being written (*started*: after the
    response had started)."""

    def __init__(self, *, started: bool) -> None:
        super().__init__()
        self.started = started


async def _opening_write(sending: Awaitable[None], *, started: bool) -> None:
    try:
        await sending
    except OSError as error:  # ECONNRESET, EPIPE, a server's "client disconnected"
        logger.debug("stream write failed, the client left: %r", error)
        raise _ClientLeft(started=started) from error


async def _complete(send: Send) -> None:
    """End the body of a stream the client left, as every response body ends.

    Nobody reads it: it is for the middleware between the stream and the server, which
    may hold something until the body ends (Litestar's compression closes its
    compressor only then; left to the garbage collector, the compressor can be
    finalized after its buffer and fail, which Python 3.13 prints). Servers ignore or
    refuse a write after the disconnect, so what this one raises is dropped (DEBUG).
    """
    try:
        await send(_body(b"", more=False))  # type: ignore[arg-type]
    except Exception as error:
        logger.debug("completing the body of a stream the client left failed: %r", error)


async def _give_up(send: Send, error: Exception) -> None:
    # Not a client that left: a server, middleware or proxy refused the write. The
    # stream ends (the browser reconnects); the next connection may work.
    logger.warning("stream write failed, ending the stream: %s: %s", type(error).__name__, error)
    # Try to complete the body, so the server closes the response cleanly; if that
    # fails too, the server closes the connection (and may say so).
    with contextlib.suppress(Exception):
        await send(_body(b"", more=False))  # type: ignore[arg-type]


_RESOLUTION: Final = 0.05
"""Seconds: the granularity of stream clocks (heartbeats, renewals, lifetimes)."""


def _claim_asyncio() -> None:
    """Tell sniffio, in the request's task and so in the stream's context, that it runs
    on asyncio.

    Eager writes step the app's ``send`` in a copy of the stream's context but outside
    any task, where sniffio (which anyio asks; Litestar and Starlette need anyio) finds
    no event loop: middleware that passes messages through anyio (Starlette's
    BaseHTTPMiddleware, FastAPI's ``@app.middleware("http")``) would fail every write
    and end the stream. Set before the stream copies its context (one variable per
    stream), the answer is there for every write, and true. Not imported here: a chain
    with anyio in it has imported sniffio by the time a stream opens.
    """
    sniffio = sys.modules.get("sniffio")
    if sniffio is not None:
        sniffio.current_async_library_cvar.set("asyncio")


class _Wheel:
    """One timer for the clocks of every stream on an event loop: streams wait in
    buckets of `_RESOLUTION` seconds, so an open stream holds no timer of its own."""

    __slots__ = ("__weakref__", "_buckets", "_handle", "_slots", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._buckets: dict[int, set[EventStream]] = {}
        self._slots: list[int] = []
        """The buckets' numbers, as a heap: the first is the next to fire."""
        self._handle: asyncio.TimerHandle | None = None

    def add(self, stream: EventStream, when: float) -> set[EventStream]:
        """Tick *stream* at *when* (or up to `_RESOLUTION` later); returns the bucket it
        waits in (a stream that stops discards itself from it)."""
        slot = math.ceil(when / _RESOLUTION)
        bucket = self._buckets.get(slot)
        if bucket is None:
            bucket = self._buckets[slot] = set()
            heapq.heappush(self._slots, slot)
            if self._slots[0] == slot:
                if self._handle is not None:
                    self._handle.cancel()
                self._handle = self.loop.call_at(slot * _RESOLUTION, self._fire)
        bucket.add(stream)
        return bucket

    def _fire(self) -> None:
        self._handle = None
        now = self.loop.time()
        due = []
        slots = self._slots
        while slots and slots[0] * _RESOLUTION <= now:
            due.append(self._buckets.pop(heapq.heappop(slots)))
        for bucket in due:
            for stream in list(bucket):
                if stream not in bucket:
                    continue  # stopped by a tick before it
                try:
                    stream._tick(self, now)
                except Exception:  # one broken stream must not stop every clock
                    logger.exception("a stream's clock failed")
        if slots and self._handle is None:
            self._handle = self.loop.call_at(slots[0] * _RESOLUTION, self._fire)


_wheels: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Wheel] = weakref.WeakKeyDictionary()


def _wheel(loop: asyncio.AbstractEventLoop) -> _Wheel:
    wheel = _wheels.get(loop)
    if wheel is None:
        wheel = _wheels[loop] = _Wheel(loop)
    return wheel


class _Opening(NamedTuple):
    """What an `EventStream` needs only to open."""

    broker: Broker
    scopes: tuple[str, ...]
    rendered_at: float | None
    after: str | None
    resume: bool
    clock: str | None
    greeting: Callable[[str], bytes] | None
    max_lifetime: float | None
    renew_after: float
    frame_send: Callable[[Send], Send] | None


class _Suspended(NamedTuple):
    """A write stepped by hand that must wait: how to step it on, and what it waits on."""

    step: Callable[[], Any]
    """Advance the write: returns what it waits on next; StopIteration once written."""
    close: Callable[[], object] | None
    awaiting: Any


async def _resume(suspended: _Suspended) -> None:
    """Drive a write, stepped by hand until it had to wait, to its end."""
    step, close, awaiting = suspended
    try:
        while True:
            if awaiting is None:  # a bare yield: give the loop one turn
                await asyncio.sleep(0)
            else:  # a future: wait for it without cancelling it if we are cancelled
                awaiting._asyncio_future_blocking = False
                await asyncio.wait((awaiting,))
            try:
                awaiting = step()
            except StopIteration:
                return
    except BaseException:
        if close is not None:
            close()
        raise


def _first_step(send: Send, message: dict[str, object]) -> _Suspended | None:
    """Call ``send(message)`` and step it once: None if that wrote it, else how to go
    on. A coroutine is stepped with ``send``; any other awaitable (granian's send
    returns a done one) through its ``__await__`` iterator, without a coroutine."""
    awaitable = send(message)  # type: ignore[arg-type]
    if type(awaitable) is CoroutineType:  # (not isinstance: an ABC check is slow)
        try:
            awaiting = awaitable.send(None)
        except StopIteration:
            return None
        return _Suspended(functools.partial(awaitable.send, None), awaitable.close, awaiting)
    iterator = awaitable.__await__()
    try:
        awaiting = next(iterator)
    except StopIteration:
        return None
    return _Suspended(iterator.__next__, getattr(iterator, "close", None), awaiting)


def _body(frame: bytes, *, more: bool) -> dict[str, object]:
    return {"type": "http.response.body", "body": frame, "more_body": more}
