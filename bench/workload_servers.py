"""The server the workload benchmark drives: streamui plus three control endpoints.

``uvicorn --factory bench.workload_servers:workload_app`` serves `StreamPlugin` at
``/streamui/stream`` (secret from ``STREAMUI_BENCH_SECRET``, no heartbeat within a run)
and three ``POST`` endpoints that invalidate from inside the server, the way an
application's own handlers and jobs do, so the client's HTTP costs stay out of the
per-invalidation figures:

- ``/invalidate`` ``{"scopes": [...]}``: ``await broker.invalidate(scope)`` for each,
  one after another in the request's task.
- ``/pace`` ``{"prefix", "rate", "seconds", "tick"}``: invalidates ``<prefix>:<n>``
  for n = 0, 1, ... at *rate* per second for *seconds*, in batches every *tick*
  seconds (a batch catches up on any tick it missed), like a background job.
- ``/burst`` ``{"scope", "count", "yield_each", "max_seconds"}``: invalidates *scope*
  *count* times as fast as it can; with *yield_each*, ``await asyncio.sleep(0)`` after
  every invalidation (a job that awaits something in between). Stops early after
  *max_seconds* (so a run that writes a frame per invalidation to every stream stays
  bounded), and says how many it did.

Each answers ``{"count": <invalidations>, "revision": <the broker's last revision>,
"seconds": <time spent>}``. The in-process transport delivers synchronously, so the
revision read right after the last ``invalidate`` is the one that invalidation got.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from litestar import Litestar, post

from bench.servers import SECRET_ENV, STREAMUI_PATH
from streamui.litestar import StreamConfig, StreamPlugin

if TYPE_CHECKING:
    from streamui import Broker

__all__ = ["MAX_SCOPES", "MAX_TOKENS", "Burst", "Invalidate", "Pace", "workload_app"]

MAX_SCOPES: Final = 64
MAX_TOKENS: Final = 16


def _answer(count: int, broker: Broker, started: float) -> dict[str, float]:
    return {"count": count, "revision": broker.revision, "seconds": time.perf_counter() - started}


@dataclass
class Invalidate:
    scopes: list[str]


@dataclass
class Pace:
    prefix: str
    rate: float
    seconds: float
    tick: float


@dataclass
class Burst:
    scope: str
    count: int
    yield_each: bool
    max_seconds: float


@post("/invalidate", status_code=200)
async def invalidate(data: Invalidate, broker: Broker) -> dict[str, float]:
    started = time.perf_counter()
    scopes = data.scopes
    for scope in scopes:
        await broker.invalidate(scope)
    return _answer(len(scopes), broker, started)


@post("/pace", status_code=200)
async def pace(data: Pace, broker: Broker) -> dict[str, float]:
    prefix, rate, seconds, tick = data.prefix, data.rate, data.seconds, data.tick
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    begin = loop.time()
    end = begin + seconds
    sent = 0
    ticks = 0
    while True:
        now = loop.time()
        # Everything due by now (a late tick catches up), never past the end.
        due = int(rate * (min(now, end) - begin))
        while sent < due:
            await broker.invalidate(f"{prefix}:{sent}")
            sent += 1
        if now >= end:
            break
        ticks += 1
        await asyncio.sleep(max(0.0, begin + ticks * tick - loop.time()))
    return _answer(sent, broker, started)


@post("/burst", status_code=200)
async def burst(data: Burst, broker: Broker) -> dict[str, float]:
    scope, count, yield_each = data.scope, data.count, data.yield_each
    deadline = time.perf_counter() + data.max_seconds
    started = time.perf_counter()
    done = 0
    while done < count:
        await broker.invalidate(scope)
        done += 1
        if yield_each:
            await asyncio.sleep(0)
            if time.perf_counter() > deadline:
                break
        elif done % 1024 == 0 and time.perf_counter() > deadline:
            break
    return _answer(done, broker, started)


def workload_app() -> Litestar:
    """`StreamPlugin` at its default path and the three invalidating endpoints."""
    secret = os.environ.get(SECRET_ENV)
    if not secret:
        raise RuntimeError(f"set {SECRET_ENV} to the secret the benchmark client signs with")
    config = StreamConfig(
        path=STREAMUI_PATH,
        secret=secret,
        heartbeat=3600,
        max_scopes=MAX_SCOPES,
        max_tokens=MAX_TOKENS,
    )
    return Litestar([invalidate, pace, burst], plugins=[StreamPlugin(config)])
