"""The Server-Sent-Events stream of one browser tab, as a plain ASGI application.

`EventStream` is framework-agnostic (the Litestar controller returns one after it has
verified the request). What it guarantees:

- Upstream subscriptions are taken before the response starts; if that fails the
  client gets a 503 with a reason, never a half-open stream.
- The first bytes are an id-only frame (``id: <revision>``): the browser's SSE parser
  records the id without dispatching an event, so even a tab hidden before its first
  invalidation reconnects with ``Last-Event-ID`` and is caught up.
- Each write carries every change coalesced since the previous write, as one
  ``datastar-patch-signals`` event with an ``id:``. Writes happen in the broker's one
  callback per event-loop iteration, not in a task per stream.
- A comment line is written every *heartbeat* seconds so proxies keep idle streams open.
- After *max_lifetime* seconds the stream ends cleanly; the client reconnects (and the
  authorization hook runs again).
- When the client disconnects, the server cancels, or the broker closes, every
  subscription is released (the ``async with broker.watch(...)`` block always exits).

Memory per stream: one `Watcher`, one small writer object, one or two timers; the
request task itself waits for the disconnect, and no task exists per stream unless a
write is waiting for a slow client. A write that waits on the server's flow control
holds one frame; what changes meanwhile coalesces into the next, so a slow reader
costs at most two frames of memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from datastar_py.sse import SSE_HEADERS

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Sequence

    from litestar.types import Receive, Scope, Send

    from streamui.broker import Broker, Watcher

__all__ = ["SERVER_SEND_KEY", "EventStream"]

SERVER_SEND_KEY = "streamui.server_send"

logger = logging.getLogger("streamui.stream")

_HEADERS = [(name.lower().encode(), value.encode()) for name, value in SSE_HEADERS.items()]


class EventStream:
    """ASGI app streaming invalidations of *scopes* from *broker* to one client.

    *greeting*, if given, is called with the opening frame's id and what it returns is
    written right after that frame (the Litestar controller uses it to merge a tab's
    stream tokens). If ``scope["state"][SERVER_SEND_KEY]`` holds a ``send``, the event
    frames are written with it instead of the one the app was called with.
    """

    __slots__ = (
        "_broker",
        "_greeting",
        "_heartbeat",
        "_max_lifetime",
        "_rendered_at",
        "_resume",
        "_scopes",
    )

    def __init__(
        self,
        broker: Broker,
        scopes: Sequence[str],
        *,
        rendered_at: float | None = None,
        resume: bool = False,
        heartbeat: float = 15.0,
        max_lifetime: float | None = None,
        greeting: Callable[[str], bytes] | None = None,
    ) -> None:
        self._broker = broker
        self._scopes = tuple(scopes)
        self._rendered_at = rendered_at
        self._resume = resume
        self._heartbeat = heartbeat
        self._max_lifetime = max_lifetime
        self._greeting = greeting

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        watch = self._broker.watch(self._scopes, rendered_at=self._rendered_at, resume=self._resume)
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
            frame_send: Send = scope.get("state", {}).get(SERVER_SEND_KEY) or send
            await self._serve(watcher, receive, send, frame_send)
        finally:
            await watch.__aexit__(None, None, None)

    async def _serve(
        self, watcher: Watcher, receive: Receive, send: Send, frame_send: Send
    ) -> None:
        loop = asyncio.get_running_loop()
        timers: list[asyncio.TimerHandle] = []

        def heartbeat() -> None:
            watcher.heartbeat()
            timers[0] = loop.call_later(self._heartbeat, heartbeat)

        await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
        opening_id = str(self._broker.revision or self._broker.next_revision())
        opening = f"id: {opening_id}\n\n".encode()
        if self._greeting is not None:
            opening += self._greeting(opening_id)
        await send({"type": "http.response.body", "body": opening, "more_body": True})
        timers.append(loop.call_later(self._heartbeat, heartbeat))
        if self._max_lifetime is not None:
            timers.append(loop.call_later(self._max_lifetime, watcher.close))
        writer = _Writer(watcher, frame_send)
        watcher.attach(writer.write)
        # This (deep) request task only waits for the disconnect; writes happen in the
        # broker's batch callback (see _Writer). The server answers receive() with
        # http.disconnect when the client leaves, or once the response is complete.
        try:
            while (await receive())["type"] != "http.disconnect":
                pass
        finally:
            for timer in timers:
                timer.cancel()
            watcher.attach(None)
            watcher.close()
            await writer.stop()


class _Writer:
    """Writes a watcher's frames without a task of its own (the hot path).

    `write` runs in the broker's batch callback: it takes the pending frame and steps
    the server's ``send`` coroutine by hand. An unthrottled write completes in that one
    step (uvicorn writes to the socket and returns), so a push costs no task switch.
    A write that must wait (the client reads slowly, flow control paused the socket) is
    finished by a task, which then writes whatever coalesced meanwhile, in order.
    """

    __slots__ = ("_done", "_send", "_task", "_watcher")

    def __init__(self, watcher: Watcher, send: Send) -> None:
        self._watcher = watcher
        self._send = send
        self._task: asyncio.Task[None] | None = None
        self._done = False

    def write(self) -> None:
        if self._task is not None or self._done:
            return  # a write is in flight: it writes what is pending when it finishes
        watcher = self._watcher
        more = not watcher.closed
        frame = watcher.take() if more else b""
        if more and not frame:
            return
        self._done = not more
        step = self._send(
            {"type": "http.response.body", "body": frame, "more_body": more}
        ).__await__()
        try:
            awaiting = step.send(None)
        except StopIteration:
            return
        except Exception as error:  # the client went away mid-write (servers differ)
            self._fail(error)
            return
        self._task = asyncio.get_running_loop().create_task(self._finish(step, awaiting))

    async def _finish(self, step: Generator[Any, None, None], awaiting: Any) -> None:
        """Drive a suspended ``send`` to its end as a task would, then write on."""
        try:
            while True:
                if awaiting is None:  # a bare yield: give the loop one turn
                    await asyncio.sleep(0)
                else:
                    awaiting._asyncio_future_blocking = False
                    await asyncio.wait((awaiting,))
                try:
                    awaiting = step.send(None)
                except StopIteration:
                    break
        except asyncio.CancelledError:
            step.close()
            raise
        except Exception as error:
            self._fail(error)
            return
        finally:
            self._task = None
        if self._watcher.ready:
            self.write()

    def _fail(self, error: Exception) -> None:
        logger.debug("stream write failed: %r", error)
        self._done = True
        self._watcher.attach(None)

    async def stop(self) -> None:
        """No more writes; cancel one in flight (the client is gone)."""
        self._done = True
        task = self._task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
