"""Noticing that the ASGI server has started to shut down, whichever server it is.

ASGI servers finish open connections before they run the lifespan shutdown, and an SSE
stream never finishes by itself: without an earlier notice, a shutdown waits for the
server's graceful timeout (uvicorn's default: forever). `on_server_shutdown` calls a
function as soon as the server is told to stop, in either of the two ways servers tell
a worker:

- a SIGINT/SIGTERM delivered to this process (uvicorn, granian, ``hypercorn --workers
  0``): a handler is chained before the server's own, which still runs;
- a multiprocessing event that the parent sets, passed to the worker function as
  ``shutdown_event`` (hypercorn's worker processes, which get no signal): it is polled,
  as hypercorn itself polls it.

Signal handlers can only be chained on the main thread: an app served from another
thread, with no such event, is not told, and the server's graceful timeout applies.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import signal
import threading
from typing import TYPE_CHECKING, Any, Final, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType

__all__ = ["on_server_shutdown"]

_POLL: Final = 0.1
"""Seconds between two looks at a parent's shutdown event (hypercorn polls as often)."""


def on_server_shutdown(callback: Callable[[], None]) -> Callable[[], None]:
    """Call *callback* on this event loop once the server starts shutting down.

    Must be called on the loop (e.g. in the lifespan startup). Returns a function that
    stops watching and restores the signal handlers.
    """
    loop = asyncio.get_running_loop()
    restore = _chain_exit_signals(loop, callback)
    event = _parent_shutdown_event()
    poller = loop.create_task(_poll(event, callback)) if event is not None else None

    def stop() -> None:
        if restore is not None:
            restore()
        if poller is not None:
            poller.cancel()

    return stop


class _SettableEvent(Protocol):
    def is_set(self) -> bool: ...


def _parent_shutdown_event() -> _SettableEvent | None:
    """The ``shutdown_event`` a parent process handed this worker process, if any."""
    if multiprocessing.parent_process() is None:
        return None
    kwargs = getattr(multiprocessing.current_process(), "_kwargs", None)
    event = kwargs.get("shutdown_event") if isinstance(kwargs, dict) else None
    return event if callable(getattr(event, "is_set", None)) else None


async def _poll(event: _SettableEvent, callback: Callable[[], None]) -> None:
    # A multiprocessing event offers nothing to await.
    while not event.is_set():  # noqa: ASYNC110
        await asyncio.sleep(_POLL)
    callback()


def _chain_exit_signals(
    loop: asyncio.AbstractEventLoop, callback: Callable[[], None]
) -> Callable[[], None] | None:
    """Chain a SIGINT/SIGTERM handler that schedules *callback*, then calls the server's.

    Only handlers installed from Python are chained (uvicorn's, and the no-op that
    asyncio and uvloop install for ``loop.add_signal_handler``, whose real handler
    still runs). Returns a function that restores them.
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    previous: dict[signal.Signals, Callable[[int, FrameType | None], Any]] = {}

    def handler(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(callback)
        chained = previous.get(signal.Signals(signum))
        if chained is not None:
            chained(signum, frame)

    for sig in (signal.SIGINT, signal.SIGTERM):
        current = signal.getsignal(sig)
        if callable(current):
            previous[sig] = current
            signal.signal(sig, handler)

    def restore() -> None:
        for sig, original in previous.items():
            if signal.getsignal(sig) is handler:
                signal.signal(sig, original)

    return restore
