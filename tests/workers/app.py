"""The app the worker tests run, as ``uvicorn tests.workers.app:app --workers 2``.

The routes of `tests.nats.mp_app` (a page watching ``?scope=`` values, the components,
``POST /invalidate?scope=``), configured as a plain deployment is: ``StreamConfig()``
reads ``STREAMUI_NATS_URL`` (unset: the in-process broker) and ``STREAMUI_SECRET``
(unset: a random secret per process). Every response, the stream's included, carries
``x-worker-pid``: the worker that answered, so a test can tell uvicorn's workers apart.
"""

import os

from litestar import Litestar
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from streamui.litestar import StreamConfig, StreamPlugin
from tests.nats.mp_app import component, invalidate, page, pid

__all__ = ["PID_HEADER", "app"]

PID_HEADER = "x-worker-pid"


def with_pid_header(app: ASGIApp) -> ASGIApp:
    """Middleware: add ``x-worker-pid: <this process>`` to every response's headers."""
    header = (PID_HEADER.encode(), str(os.getpid()).encode())

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_pid(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        await app(scope, receive, send_with_pid)

    return middleware


# Built at import: each uvicorn worker process imports this module (and so draws its own
# random secret when STREAMUI_SECRET is unset, as a real deployment would).
app = Litestar(
    route_handlers=[page, component, invalidate, pid],
    plugins=[StreamPlugin(StreamConfig())],
    middleware=[with_pid_header],
    debug=False,
)
