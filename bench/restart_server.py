"""The server `bench.restart` restarts: streamui under uvicorn on an inherited socket.

``python -m bench.restart_server <fd> <reconnect_spread>`` serves, on the listening
socket inherited as file descriptor *fd*, `StreamPlugin` at its default path (one
scope, ``bench:1``; secret from ``STREAMUI_BENCH_SECRET``; no heartbeat in the run's
time) with ``StreamConfig(reconnect_spread=<reconnect_spread>)``, and ``GET /health``.

The socket belongs to the benchmark, like a socket a service manager holds across
restarts: the next server can start while the previous one shuts down, and a
reconnect that arrives between the two waits in the socket's backlog instead of being
refused. (``uvicorn --fd`` would take the socket for a Unix socket.)
"""

from __future__ import annotations

import os
import socket
import sys

import uvicorn
from litestar import Litestar, get

from bench.servers import SECRET_ENV, STREAMUI_PATH
from streamui.litestar import StreamConfig, StreamPlugin

__all__ = ["restart_app"]

READY_LINE = "Application startup complete"
"""What uvicorn logs (at INFO) once the app has started and the server accepts."""


@get("/health", cache=False)
async def health() -> str:
    return "ok"


def restart_app(reconnect_spread: float) -> Litestar:
    secret = os.environ.get(SECRET_ENV)
    if not secret:
        raise RuntimeError(f"set {SECRET_ENV} to the secret the benchmark client signs with")
    config = StreamConfig(
        path=STREAMUI_PATH, secret=secret, heartbeat=3600, reconnect_spread=reconnect_spread
    )
    return Litestar([health], plugins=[StreamPlugin(config)])


def main(argv: list[str]) -> None:
    fd, reconnect_spread = int(argv[0]), float(argv[1])
    sock = socket.socket(fileno=fd)  # family and type read from the descriptor
    config = uvicorn.Config(
        restart_app(reconnect_spread),
        loop="uvloop",
        http="httptools",
        lifespan="on",
        log_level="info",
        access_log=False,
        timeout_graceful_shutdown=2,
    )
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main(sys.argv[1:])
