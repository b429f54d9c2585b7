"""The servers the fan-out benchmark compares, as ASGI app factories (uvicorn, granian).

Each serves the same two routes, so one client drives all of them:

- ``GET <stream path>`` opens a Server-Sent-Events stream. Its first frame (a comment
  or an id-only frame, never an event) is written only once the stream is subscribed,
  so a client that has read it knows a fire will reach it.
- ``POST /fire`` makes every open stream receive exactly one ~100-byte
  ``datastar-patch-signals`` event.

``raw`` is the floor: a bare ASGI app that keeps the ``send`` callables of its streams
in a set and writes one prebuilt frame to each, inside the fire request. ``streamui``
is `StreamPlugin` with one scope, ``bench:1``. ``channels`` is what one would write
with Litestar alone: ``ChannelsPlugin`` (memory backend) and a `Stream` response
iterating a subscriber. ``streamui-nats`` is the streamui app with its broker on
`NatsTransport`, so every invalidation goes to a NATS server and back before the
fan-out. Run one with ``uvicorn --factory bench.servers:<name>_app``; the streamui apps
read their secret from ``STREAMUI_BENCH_SECRET``, the NATS one its server's URL from
``STREAMUI_BENCH_NATS_URL`` (not ``STREAMUI_NATS_URL``, which the plain streamui app
ignores, so a URL set in the shell cannot turn it into the NATS variant).
"""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING, Any, Final, TypeAlias

from litestar import Litestar, get, post
from litestar.channels import ChannelsPlugin
from litestar.channels.backends.memory import MemoryChannelsBackend
from litestar.response import Stream

from streamui.litestar import StreamConfig, StreamPlugin

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from streamui import Broker

    # The raw app is plain ASGI, typed loosely on purpose: no framework's types.
    Message: TypeAlias = dict[str, Any]
    Receive: TypeAlias = Callable[[], Awaitable[Message]]
    Send: TypeAlias = Callable[[Message], Awaitable[None]]
    RawApp: TypeAlias = Callable[[dict[str, Any], Receive, Send], Awaitable[None]]

__all__ = [
    "EVENT_FRAME",
    "NATS_URL_ENV",
    "SCOPE",
    "SECRET_ENV",
    "STREAMUI_PATH",
    "channels_app",
    "raw_app",
    "streamui_app",
    "streamui_nats_app",
]

SECRET_ENV: Final = "STREAMUI_BENCH_SECRET"
NATS_URL_ENV: Final = "STREAMUI_BENCH_NATS_URL"
SCOPE: Final = "bench:1"
STREAMUI_PATH: Final = "/streamui/stream"
CHANNEL: Final = "bench"

_SSE_HEADERS: Final = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
_OPENING: Final = b": open\n\n"


def _signals(revision: int) -> bytes:
    """The same JSON streamui sends for one invalidation of ``bench:1``."""
    return json.dumps({"_stream": {"bench_1": revision}}, separators=(",", ":")).encode()


def _event(signals: bytes, revision: int) -> bytes:
    return b"event: datastar-patch-signals\nid: %d\ndata: signals %s\n\n" % (revision, signals)


_REVISION: Final = int(time.time() * 1000)
EVENT_FRAME: Final = _event(_signals(_REVISION), _REVISION)
"""The raw server's prebuilt frame; the same shape and size as streamui's."""


# -- raw ASGI: the floor ----------------------------------------------------------------


def raw_app() -> RawApp:
    """A minimal ASGI app: fan-out is one ``await send(...)`` per open stream."""
    streams: set[Send] = set()

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if method == "GET" and path == "/stream":
            await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
            await send({"type": "http.response.body", "body": _OPENING, "more_body": True})
            streams.add(send)
            try:
                while (await receive())["type"] != "http.disconnect":
                    pass
            finally:
                streams.discard(send)
        elif method == "POST" and path == "/fire":
            while (await receive()).get("more_body", False):
                pass
            # Snapshot: a stream may end (and leave the set) while we await its write.
            for stream in list(streams):
                await stream({"type": "http.response.body", "body": EVENT_FRAME, "more_body": True})
            await send(
                {
                    "type": "http.response.start",
                    "status": 204,
                    "headers": [(b"content-length", b"0")],
                }
            )
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        else:
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


# -- streamui -----------------------------------------------------------------------------


@post("/fire", status_code=204)
async def fire_streamui(broker: Broker) -> None:
    await broker.invalidate(SCOPE)


def _required_env(name: str, what: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(f"set {name} to {what}")
    return value


def streamui_app() -> Litestar:
    """`StreamPlugin` at its default path, in-process broker; the client signs tokens with
    the same secret."""
    secret = _required_env(SECRET_ENV, "the secret the benchmark client signs with")
    config = StreamConfig(path=STREAMUI_PATH, secret=secret, heartbeat=3600, nats_url=None)
    return Litestar([fire_streamui], plugins=[StreamPlugin(config)])


def streamui_nats_app() -> Litestar:
    """`streamui_app` with its broker on `NatsTransport` (the nats-server the benchmark
    started); ``POST /fire`` publishes, and the fan-out runs when NATS delivers it back."""
    secret = _required_env(SECRET_ENV, "the secret the benchmark client signs with")
    url = _required_env(NATS_URL_ENV, "the URL of the benchmark's nats-server")
    config = StreamConfig(path=STREAMUI_PATH, secret=secret, heartbeat=3600, nats_url=url)
    return Litestar([fire_streamui], plugins=[StreamPlugin(config)])


# -- Litestar channels: what one would write without streamui ---------------------------


@get("/stream", cache=False)
async def stream_channels(channels: ChannelsPlugin) -> Stream:
    async def frames() -> AsyncIterator[bytes]:
        async with channels.start_subscription(CHANNEL) as subscriber:
            yield _OPENING
            async for message in subscriber.iter_events():
                yield b"event: datastar-patch-signals\ndata: signals " + message + b"\n\n"

    return Stream(frames(), media_type="text/event-stream", headers={"cache-control": "no-cache"})


@post("/fire", status_code=204)
async def fire_channels(channels: ChannelsPlugin) -> None:
    channels.publish(_signals(int(time.time() * 1000)), CHANNEL)


def channels_app() -> Litestar:
    """``ChannelsPlugin`` with the memory backend and a `Stream` per subscriber."""
    plugin = ChannelsPlugin(backend=MemoryChannelsBackend(), arbitrary_channels_allowed=True)
    return Litestar([stream_channels, fire_channels], plugins=[plugin])
