"""The Server-Sent-Events stream of one browser tab, as a plain ASGI application.

`EventStream` is framework-agnostic (the Litestar controller returns one after it has
verified the request). What it guarantees:

- Upstream subscriptions are taken before the response starts; if that fails the
  client gets a 503 with a reason, never a half-open stream.
- Every frame is written with the ``send`` the app was given, so it passes every
  middleware of the app (compression, CORS, sessions, ...) exactly as any other
  response body would, in order, on any ASGI server. While the stream waits, the
  broker's fan-out writes its frames itself (*eager_writes*): it calls ``send`` and
  steps the coroutine in the stream's context, and a write that completes in that
  step, as nearly all do, costs no task switch. A write that must wait (flow
  control, a middleware that awaits) is finished by the request's task before it
  writes anything else.
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
- When the client disconnects, the server cancels, or the broker closes, every
  subscription is released (the ``async with broker.watch(...)`` block always exits).

Memory per stream: one `Watcher` and its writer, the request task (parked until a
write must wait, a heartbeat or the end) and one idle task waiting for the
disconnect, one or two timers. A write that waits on the server's flow
control holds one frame; what changes meanwhile coalesces into the next, so a slow
reader costs at most two frames of memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from types import CoroutineType
from typing import TYPE_CHECKING, Any, Final, NoReturn

from datastar_py.sse import SSE_HEADERS

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine, Sequence

    from litestar.types import Receive, Scope, Send

    from streamui.broker import Broker, Watcher

__all__ = ["RETRY_MS", "EventStream"]

logger = logging.getLogger("streamui.stream")

_HEADERS: Final = [(name.lower().encode(), value.encode()) for name, value in SSE_HEADERS.items()]

RETRY_MS: Final = 1000
"""The reconnect delay every stream announces when it opens (Datastar's default). It
resets a longer delay that a stream ended by a shutdown may have asked for."""


class _ClientLeft(Exception):
    """The client disconnected while a frame was being written."""


class EventStream:
    """ASGI app streaming invalidations of *scopes* from *broker* to one client.

    *greeting*, if given, is called with the opening frame's id and what it returns is
    written right after that frame (the Litestar controller uses it to merge a tab's
    stream tokens). *eager_writes* False writes every frame from the request's task
    (one task wake-up per delivery), for middleware whose ``send`` must be awaited
    there.
    """

    __slots__ = (
        "_after",
        "_broker",
        "_clock",
        "_eager",
        "_greeting",
        "_heartbeat",
        "_max_lifetime",
        "_rendered_at",
        "_renew",
        "_renew_after",
        "_renew_every",
        "_resume",
        "_scopes",
    )

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
    ) -> None:
        self._broker = broker
        self._eager = eager_writes
        self._scopes = tuple(scopes)
        self._rendered_at = rendered_at
        self._after = after
        self._resume = resume
        self._clock = clock
        self._heartbeat = heartbeat
        self._max_lifetime = max_lifetime
        self._greeting = greeting
        self._renew = renew
        self._renew_after = renew_after
        self._renew_every = renew_every

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        watch = self._broker.watch(
            self._scopes,
            rendered_at=self._rendered_at,
            after=self._after,
            resume=self._resume,
            clock=self._clock,
        )
        try:
            watcher = await watch.__aenter__()
        except Exception as error:
            logger.exception("could not subscribe for a stream")
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
            await self._serve(watcher, receive, send)
        finally:
            await watch.__aexit__(None, None, None)

    async def _serve(self, watcher: Watcher, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        # The server answers receive() with http.disconnect when the client leaves (or
        # once the response is complete). An idle stream writes nothing for long
        # stretches, so only this listener notices a client that left in time to
        # release its subscriptions.
        listener = loop.create_task(_until_disconnect(receive, watcher))
        timers: _Timers | None = None
        eager: _EagerWriter | None = None

        try:
            await _write(
                listener,
                send({"type": "http.response.start", "status": 200, "headers": _HEADERS}),
            )
            opening_id = watcher.opening_id
            opening = f"id: {opening_id}\nretry: {RETRY_MS}\n\n".encode()
            if self._greeting is not None:
                opening += self._greeting(opening_id)
                self._greeting = None  # used once: what it holds need not live on
            await _write(listener, send(_body(opening, more=True)))  # type: ignore[arg-type]
            timers = _Timers(loop, self, watcher)
            eager = _EagerWriter(watcher, send) if self._eager else None
            while True:
                await watcher.wait()
                if eager is not None:
                    await eager.settle(listener)
                if watcher.closed:
                    break
                frame = watcher.take()
                if frame:
                    await _write(listener, send(_body(frame, more=True)))  # type: ignore[arg-type]
            if not listener.done():  # ended by the server: complete the body cleanly
                last = b""
                if watcher.reconnect_after is not None:
                    last = f"retry: {watcher.reconnect_after}\n\n".encode()
                await _write(listener, send(_body(last, more=False)))  # type: ignore[arg-type]
        except _ClientLeft:
            pass
        except Exception as error:
            # Not a client that left: a server, middleware or proxy refused the write.
            # The stream ends (the browser reconnects); the next connection may work.
            logger.warning(
                "stream write failed, ending the stream: %s: %s", type(error).__name__, error
            )
            # Try to complete the body, so the server closes the response cleanly; if
            # that fails too, the server closes the connection (and may say so).
            with contextlib.suppress(Exception):
                await send(_body(b"", more=False))  # type: ignore[arg-type]
        finally:
            watcher.attach(None)
            if timers is not None:
                timers.cancel()
            listener.cancel()
            watcher.close()


class _Timers:
    """A stream's clock: heartbeats and token renewals share one timer, the maximum
    lifetime has one, and a renewal in flight is one task. An idle stream holds two
    timers at most, and nothing else."""

    __slots__ = (
        "_heartbeat_at",
        "_lifetime",
        "_loop",
        "_renew_at",
        "_stream",
        "_tick",
        "_watcher",
        "renewing",
    )

    def __init__(
        self, loop: asyncio.AbstractEventLoop, stream: EventStream, watcher: Watcher
    ) -> None:
        self._loop = loop
        self._stream = stream
        self._watcher = watcher
        self.renewing: asyncio.Task[None] | None = None
        now = loop.time()
        self._heartbeat_at = now + stream._heartbeat
        self._renew_at = now + stream._renew_after if stream._renew is not None else None
        self._tick = loop.call_at(self._next(), self._on_tick)
        self._lifetime = (
            loop.call_later(stream._max_lifetime, watcher.close)
            if stream._max_lifetime is not None
            else None
        )

    def _next(self) -> float:
        renew_at = self._renew_at
        return self._heartbeat_at if renew_at is None else min(self._heartbeat_at, renew_at)

    def _on_tick(self) -> None:
        now = self._loop.time()
        stream = self._stream
        if now >= self._heartbeat_at:
            self._watcher.heartbeat()
            self._heartbeat_at = now + stream._heartbeat
        if self._renew_at is not None and now >= self._renew_at:
            if self.renewing is None:
                self.renewing = self._loop.create_task(self._renew())
            self._renew_at = now + stream._renew_every
        self._tick = self._loop.call_at(self._next(), self._on_tick)

    async def _renew(self) -> None:
        renew = self._stream._renew
        assert renew is not None
        try:
            frame = await renew()
        except Exception as error:
            logger.warning("renewing a stream's tokens failed, ending it: %r", error)
            frame = None
        finally:
            self.renewing = None
        if frame is None:
            self._watcher.close()  # the browser reconnects, and is told why it may not
        else:
            self._watcher.push(frame)

    def cancel(self) -> None:
        self._tick.cancel()
        if self._lifetime is not None:
            self._lifetime.cancel()
        if self.renewing is not None:
            self.renewing.cancel()


def _body(frame: bytes, *, more: bool) -> dict[str, object]:
    return {"type": "http.response.body", "body": frame, "more_body": more}


async def _write(listener: asyncio.Task[None], sending: Awaitable[None]) -> None:
    """Await *sending* (a ``send(...)`` call); raise `_ClientLeft` if it failed because
    the client left."""
    try:
        await sending
    except Exception as error:
        _raise_for(listener, error)
    if listener.done():
        raise _ClientLeft  # some servers drop writes after a disconnect without a word


def _raise_for(listener: asyncio.Task[None], error: Exception) -> NoReturn:
    """Raise `_ClientLeft` if *error*, raised by a write, means the client left, else
    *error* itself."""
    if isinstance(error, OSError):  # ECONNRESET, EPIPE, a server's "client disconnected"
        logger.debug("stream write failed, the client left: %r", error)
        raise _ClientLeft from error
    if listener.done():  # the failure followed a disconnect: the client left
        logger.debug("stream write failed after the client left: %r", error)
        raise _ClientLeft from error
    raise error


class _EagerWriter:
    """Writes a parked stream's frames from the broker's batch callback (the hot path).

    It calls the app's ``send`` (the whole middleware chain) and steps the coroutine by
    hand, in the stream's own context, so a frame travels exactly the path any
    response body does, in order, on any server. A write that completes in that one
    step (the common case: the server hands the bytes to the socket) costs no task
    switch. A write that must wait (flow control, a middleware that awaits) is handed
    to the stream's task, which finishes it before anything else; what changes
    meanwhile coalesces into the task's next frame. A failed write is handed over too,
    and ends the stream there.
    """

    __slots__ = ("_context", "_send", "_watcher", "failure", "suspended")

    def __init__(self, watcher: Watcher, send: Send) -> None:
        self._watcher = watcher
        self._send = send
        self._context = contextvars.copy_context()
        self.suspended: tuple[Coroutine[Any, Any, None], Any] | None = None
        """A write that must wait: its coroutine and what it waits on."""
        self.failure: Exception | None = None
        watcher.attach(self)

    def __call__(self) -> None:
        watcher = self._watcher
        frame = watcher.take()
        if not frame:
            return
        coroutine = _sending(self._send, _body(frame, more=True))
        try:
            awaiting = self._context.run(coroutine.send, None)
        except StopIteration:
            return
        except Exception as error:
            self.failure = error
            watcher.attach(None)
        else:
            self.suspended = (coroutine, awaiting)
        watcher.wake()

    async def settle(self, listener: asyncio.Task[None]) -> None:
        """In the stream's task: finish a write handed over, or raise its failure."""
        if self.suspended is not None:
            await _write(listener, self._finish())
        if self.failure is not None:
            _raise_for(listener, self.failure)

    async def _finish(self) -> None:
        """Drive the suspended write to its end, as a task would have."""
        assert self.suspended is not None
        (coroutine, awaiting), self.suspended = self.suspended, None
        try:
            while True:
                if awaiting is None:  # a bare yield: give the loop one turn
                    await asyncio.sleep(0)
                else:  # a future: wait for it without cancelling it if we are cancelled
                    awaiting._asyncio_future_blocking = False
                    await asyncio.wait((awaiting,))
                try:
                    awaiting = self._context.run(coroutine.send, None)
                except StopIteration:
                    return
        except BaseException:
            coroutine.close()
            raise


def _sending(send: Send, message: dict[str, object]) -> Coroutine[Any, Any, None]:
    """``send(message)`` as a coroutine to step (servers' own send may be another
    kind of awaitable)."""
    awaitable = send(message)  # type: ignore[arg-type]
    if type(awaitable) is CoroutineType:  # not isinstance(Coroutine): an ABC check is slow
        return awaitable
    return _awaiting(awaitable)


async def _awaiting(awaitable: Awaitable[None]) -> None:
    await awaitable


async def _until_disconnect(receive: Receive, watcher: Watcher) -> None:
    """Return once the client left; closing the watcher wakes the writer."""
    try:
        while (await receive())["type"] != "http.disconnect":
            pass
    except Exception as error:  # a server that fails receive() once the client is gone
        logger.debug("receive() failed, taking the client as gone: %r", error)
    watcher.close()
