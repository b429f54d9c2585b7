"""``python -m bench.workloads``: workloads shaped like real apps, one figure each.

The fan-out benchmark (``python -m bench``) measures one scope watched by every stream.
Real apps mostly do other things, and each scenario here measures one of them against a
real server process (uvicorn, one worker, pinned to one CPU like the fan-out bench;
`bench.workload_servers`), reading the server's CPU time from /proc:

- ``per-user``: every stream watches 5 scopes of its own (``user:<i>:<k>``); each
  invalidation reaches exactly one stream. Server CPU per invalidation with 1,000 and
  with 10,000 streams open, each in a fresh server: the ratio shows whether it costs
  O(1) or O(streams). Every delivery is checked to arrive at the right stream, once,
  with only its key.
- ``unwatched``: 5,000 streams open while a server-side job invalidates scopes nobody
  watches at 10,000 per second; CPU per invalidation next to the same job with no
  stream open, and no stream may receive anything.
- ``burst``: 2,000 streams on one scope, invalidated 10,000 times as fast as the server
  can, (a) from one task that never yields, (b) with ``await asyncio.sleep(0)`` after
  each. Frames written per stream (counted at the client), and every stream must end
  on the last revision the server published. (b) is capped in time (server side).
- ``open``: streams opened and closed as fast as possible (connect, read the opening
  frame, close; many in flight), raw ASGI floor against streamui: opens per second and
  server CPU per open.
- ``render``: in this process, a page of 200 `Watch` components plus `Connect()`
  rendered to a string, against the same page with plain elements.

Prints one Markdown section (a table per scenario) and writes it to
build/bench-workloads.md; server logs go to build/workloads-*.log.

    python -m bench.workloads                      # every scenario, full size
    python -m bench.workloads --only burst,render  # some of them
    python -m bench.workloads --quick              # tiny sizes, a smoke test
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import random
import secrets
import statistics
import sys
import time
import timeit
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import htpy as h
import uvloop

from bench.client import BenchError
from bench.process import ASGI_SERVERS, ServerProcess, raise_open_file_limit
from bench.run import pick_cpus
from bench.servers import SECRET_ENV, STREAMUI_PATH
from bench.workload_client import Stream, StreamSet, finish, post_json, signals_of
from bench.workload_report import TABLES, heading
from streamui import Connect, StreamEndpoint, TokenSigner, Watch, scope_key, use_endpoint
from streamui import client as streamui_client

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator, Sequence

    from htpy import Element

__all__ = [
    "SCENARIOS",
    "BurstResult",
    "OpenResult",
    "PerUserResult",
    "RenderResult",
    "Settings",
    "UnwatchedResult",
    "main",
    "measure_burst",
    "measure_open",
    "measure_per_user",
    "measure_render",
    "measure_unwatched",
    "run_workloads",
]

SCENARIOS: Final = ("per-user", "unwatched", "burst", "open", "render")
BUILD: Final = Path("build")
WORKLOAD_APP: Final = "bench.workload_servers:workload_app"
RAW_APP: Final = "bench.servers:raw_app"
_STARTUP_TIMEOUT: Final = 30.0
_QUIESCE: Final = 0.3
"""Seconds for the server to finish its bookkeeping (writes, disconnects) before CPU is read."""
_WARMUP_OPENS: Final = 200


@dataclass(frozen=True, slots=True)
class Settings:
    """Sizes of every scenario, and where the servers run."""

    per_user_streams: tuple[int, ...] = (1_000, 10_000)
    per_user_scopes: int = 5
    per_user_invalidations: int = 30_000
    """Invalidations measured at each size (in rounds of `per_user_batch`)."""
    per_user_batch: int = 1_000
    """Invalidations per request; each round reaches that many distinct streams."""
    unwatched_streams: int = 5_000
    unwatched_rate: float = 10_000.0
    unwatched_seconds: float = 3.0
    unwatched_tick: float = 0.01
    burst_streams: int = 2_000
    burst_count: int = 10_000
    burst_cap: float = 20.0
    """Seconds the server may spend invalidating in one burst (it stops early after)."""
    open_count: int = 5_000
    open_concurrency: int = 128
    render_components: int = 200
    render_scopes: int = 20
    """Distinct scopes the page's components watch (several components share one)."""
    render_repeats: int = 15
    timeout: float = 120.0
    """Seconds any one step may take (opening streams, a round, a burst, ...)."""
    log_dir: Path = BUILD
    server_cpu: int | None = None
    on: str = "uvicorn"
    """The ASGI server, one of `bench.process.ASGI_SERVERS`."""
    seed: int = 1
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    @classmethod
    def quick(cls, **changes: Any) -> Settings:
        """Tiny sizes: every check, in seconds rather than minutes (tests, smoke runs)."""
        tiny = cls(
            per_user_streams=(20, 50),
            per_user_invalidations=200,
            per_user_batch=20,
            unwatched_streams=30,
            unwatched_rate=1_000.0,
            unwatched_seconds=0.5,
            burst_streams=20,
            burst_count=300,
            burst_cap=5.0,
            open_count=200,
            open_concurrency=16,
            render_components=20,
            render_scopes=4,
            render_repeats=3,
            timeout=30.0,
        )
        return replace(tiny, **changes)


# -- shared steps -----------------------------------------------------------------------


@contextlib.contextmanager
def _step(scenario: str, step: str) -> Iterator[None]:
    """Re-raise a `BenchError` from *step* with the scenario and the step in front."""
    try:
        yield
    except BenchError as error:
        raise BenchError(f"{scenario}: {step}: {error}") from None


@contextlib.asynccontextmanager
async def _server(
    scenario: str, label: str, settings: Settings, *, streams: int, factory: str = WORKLOAD_APP
) -> AsyncIterator[ServerProcess]:
    """A fresh server process for one measurement; always killed on the way out."""
    process = ServerProcess(
        f"{scenario}-{label}",
        factory,
        open_files=streams + 256,
        backlog=max(2048, streams),
        log_path=settings.log_dir / f"workloads-{scenario}-{label}.log",
        cpu=settings.server_cpu,
        env={SECRET_ENV: settings.secret},
        server=settings.on,
    )
    with process as server:
        with _step(scenario, f"starting the {label} server"):
            await server.wait_ready(_STARTUP_TIMEOUT)
        yield server


def _user_paths(settings: Settings, users: range) -> list[str]:
    """One stream URL per user, its token granting that user's own scopes, signed now
    (as a page rendered now: the stream's catch-up owes it nothing)."""
    signer = TokenSigner(settings.secret, lifetime=3600)
    count = settings.per_user_scopes
    return [
        f"{STREAMUI_PATH}?t={signer.sign([f'user:{user}:{k}' for k in range(count)])}"
        for user in users
    ]


async def _cpu_after_quiesce(server: ServerProcess) -> float:
    await asyncio.sleep(_QUIESCE)
    return server.cpu_seconds()


def _streams_before(count: int) -> None:
    """This process holds *count* streams at once: make sure it may."""
    raise_open_file_limit(count + 256)


# -- 1. per-user scopes -------------------------------------------------------------------


class PerUserStreams(StreamSet):
    """Streams that each watch their own scopes; every event must be the one expected.

    Before a round, `expected` maps each targeted stream to the key it must receive
    next; an event on a stream that expects nothing, with other keys, or with a
    revision not above the stream's last, fails the round.
    """

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)
        self.expected: dict[int, str] = {}
        self.deliveries = 0
        self.newest = 0

    def received(self, stream: Stream, events: list[bytes]) -> None:
        for frame in events:
            keys = signals_of(frame)
            want = self.expected.pop(stream.index, None)
            if want is None:
                raise BenchError(
                    f"received {sorted(keys)} but none of its scopes was invalidated "
                    "(or it had received its one event already)"
                )
            if list(keys) != [want]:
                raise BenchError(f"received {sorted(keys)}, expected only {want!r}")
            revision = keys[want]
            if revision <= stream.revision:
                raise BenchError(f"revision {revision} after {stream.revision}: not increasing")
            stream.revision = revision
            self.newest = max(self.newest, revision)
            self.deliveries += 1
            self.tick()


@dataclass(frozen=True, slots=True)
class PerUserPoint:
    streams: int
    scopes: int
    invalidations: int
    deliveries: int
    cpu_seconds: float
    round_cpu_seconds: tuple[float, ...]
    """Server CPU of each measured round (a request of `Settings.per_user_batch`)."""
    open_seconds: float

    @property
    def cpu_us_per_invalidation(self) -> float:
        """The mean over every measured round."""
        return self.cpu_seconds / self.invalidations * 1e6

    @property
    def median_us_per_invalidation(self) -> float:
        """The median round's: robust to a slow spell of a shared machine."""
        batch = self.invalidations / len(self.round_cpu_seconds)
        return statistics.median(self.round_cpu_seconds) / batch * 1e6


@dataclass(frozen=True, slots=True)
class PerUserResult:
    points: tuple[PerUserPoint, ...]
    seconds: float

    @property
    def ratio(self) -> float:
        """Median CPU per invalidation at the largest size over the smallest."""
        first, last = self.points[0], self.points[-1]
        return last.median_us_per_invalidation / first.median_us_per_invalidation


async def _per_user_round(
    client: PerUserStreams,
    server: ServerProcess,
    *,
    rng: random.Random,
    settings: Settings,
    users: int,
    batch: int,
) -> None:
    """Invalidate one scope of each of *batch* distinct streams, and check each arrives."""
    scopes = []
    for user in rng.sample(range(users), batch):
        scope = f"user:{user}:{rng.randrange(settings.per_user_scopes)}"
        scopes.append(scope)
        client.expected[user] = scope_key(scope)  # stream index == user
    client.arm(batch)
    answer = await post_json(
        server.host, server.port, "/invalidate", {"scopes": scopes}, settings.timeout
    )
    await client.settle(settings.timeout, f"deliveries of {batch} invalidations")
    if answer["count"] != batch or client.newest > answer["revision"]:
        raise BenchError(f"the server answered {answer} for {batch} invalidations")


async def _per_user_point(settings: Settings, users: int) -> PerUserPoint:
    scenario = "per-user"
    batch = min(settings.per_user_batch, users)
    rounds = max(1, settings.per_user_invalidations // batch)
    rng = random.Random(settings.seed + users)
    async with (
        _server(scenario, f"{users}-streams", settings, streams=users) as server,
        PerUserStreams(server.host, server.port) as client,
    ):
        with _step(scenario, f"opening {users:,} streams"):
            started = time.perf_counter()
            await client.open(_user_paths(settings, range(users)), settings.timeout)
            open_seconds = time.perf_counter() - started
        with _step(scenario, f"{users:,} streams: warm-up round"):
            await _per_user_round(
                client, server, rng=rng, settings=settings, users=users, batch=batch
            )
        cpu_before = server.cpu_seconds()
        client.deliveries = 0
        readings = [cpu_before]
        for number in range(rounds):
            with _step(scenario, f"{users:,} streams: round {number + 1} of {rounds}"):
                await _per_user_round(
                    client, server, rng=rng, settings=settings, users=users, batch=batch
                )
            readings.append(server.cpu_seconds())
        cpu_after = await _cpu_after_quiesce(server)
        with _step(scenario, f"{users:,} streams: after the last round"):
            client.arm(0)
            await client.settle(settings.timeout, "late events")  # raises if one came
    return PerUserPoint(
        streams=users,
        scopes=users * settings.per_user_scopes,
        invalidations=rounds * batch,
        deliveries=client.deliveries,
        cpu_seconds=cpu_after - cpu_before,
        round_cpu_seconds=tuple(after - before for before, after in itertools.pairwise(readings)),
        open_seconds=open_seconds,
    )


async def measure_per_user(settings: Settings) -> PerUserResult:
    """Each size in a fresh server: open the streams, then invalidate.

    Fresh, and streams opened before any invalidation: a page rendered after many
    invalidations in little time (the revision runs ahead of the clock) makes the
    opening catch-up scan the index of recent invalidations, which is another figure.
    """
    started = time.perf_counter()
    _streams_before(max(settings.per_user_streams))
    points = [await _per_user_point(settings, users) for users in settings.per_user_streams]
    return PerUserResult(tuple(points), time.perf_counter() - started)


# -- 2. unwatched invalidations -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UnwatchedRun:
    streams: int
    invalidations: int
    seconds: float
    """How long the server's paced job ran."""
    cpu_seconds: float
    events: int
    """Events the streams received (must be 0)."""

    @property
    def cpu_us_per_invalidation(self) -> float:
        return self.cpu_seconds / self.invalidations * 1e6

    @property
    def rate(self) -> float:
        return self.invalidations / self.seconds


@dataclass(frozen=True, slots=True)
class UnwatchedResult:
    runs: tuple[UnwatchedRun, ...]
    """With the streams open, then the publishes alone."""
    rate: float
    seconds: float


async def _pace(
    server: ServerProcess, settings: Settings, prefix: str, seconds: float
) -> tuple[int, float]:
    """Run the server's paced job; how many it invalidated, and in how many seconds."""
    answer = await post_json(
        server.host,
        server.port,
        "/pace",
        {
            "prefix": prefix,
            "rate": settings.unwatched_rate,
            "seconds": seconds,
            "tick": settings.unwatched_tick,
        },
        settings.timeout + seconds,
    )
    return int(answer["count"]), float(answer["seconds"])


async def _unwatched_run(settings: Settings, streams: int) -> UnwatchedRun:
    scenario = "unwatched"
    label = f"{streams}-streams" if streams else "alone"
    async with (
        _server(scenario, label, settings, streams=streams) as server,
        StreamSet(server.host, server.port) as client,
    ):
        if streams:
            with _step(scenario, f"opening {streams:,} streams"):
                await client.open(_user_paths(settings, range(streams)), settings.timeout)
        # After the streams opened: a fast job runs the revision ahead of the clock,
        # and streams opened then would pay a catch-up scan (see measure_per_user).
        with _step(scenario, f"{label}: warm-up job"):
            await _pace(server, settings, "warmup", min(0.2, settings.unwatched_seconds))
        cpu_before = server.cpu_seconds()
        with _step(scenario, f"{label}: the paced job"):
            count, seconds = await _pace(server, settings, "order", settings.unwatched_seconds)
        cpu_after = await _cpu_after_quiesce(server)
        events = sum(stream.events for stream in client.streams)
        with _step(scenario, label):
            client.arm(0)
            await client.settle(settings.timeout, "the streams")  # a stream lost raises
            if events:
                raise BenchError(f"the streams received {events} events; they watch none")
    return UnwatchedRun(
        streams=streams,
        invalidations=count,
        seconds=seconds,
        cpu_seconds=cpu_after - cpu_before,
        events=events,
    )


async def measure_unwatched(settings: Settings) -> UnwatchedResult:
    """The paced job with the streams open, then alone, each in a fresh server."""
    started = time.perf_counter()
    _streams_before(settings.unwatched_streams)
    runs = (
        await _unwatched_run(settings, settings.unwatched_streams),
        await _unwatched_run(settings, 0),
    )
    return UnwatchedResult(runs, settings.unwatched_rate, time.perf_counter() - started)


# -- 3. burst -------------------------------------------------------------------------------


_BURST_SCOPE: Final = "dashboard:1"


class BurstStreams(StreamSet):
    """Streams on one scope; each counts its events and keeps the newest revision.

    Only the last event of each read is parsed (revisions only grow within a stream,
    which is checked read to read): a burst may write millions of frames. Once
    `target` is set, a stream that reaches it ticks.
    """

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)
        self.key = scope_key(_BURST_SCOPE)
        self.target = 0

    def received(self, stream: Stream, events: list[bytes]) -> None:
        keys = signals_of(events[-1])
        revision = keys.get(self.key)
        if revision is None or len(keys) != 1:
            raise BenchError(f"received {sorted(keys)}, expected only {self.key!r}")
        if revision <= stream.revision:
            raise BenchError(f"revision {revision} after {stream.revision}: not increasing")
        stream.revision = revision
        if self.target:
            if revision > self.target:
                raise BenchError(f"revision {revision}, past the last published {self.target}")
            if revision == self.target:
                self.tick()

    def aim(self, target: int) -> None:
        """Expect every stream to reach revision *target*."""
        self.target = target
        self.arm(sum(1 for stream in self.streams if stream.revision != target))


@dataclass(frozen=True, slots=True)
class BurstRun:
    label: str
    streams: int
    requested: int
    invalidations: int
    burst_seconds: float
    """How long the server spent invalidating."""
    settle_seconds: float
    """From sending the request until every stream had the last revision."""
    cpu_seconds: float
    frames: tuple[int, ...]
    """Events each stream received."""

    @property
    def capped(self) -> bool:
        return self.invalidations < self.requested


@dataclass(frozen=True, slots=True)
class BurstResult:
    runs: tuple[BurstRun, ...]
    cap: float
    seconds: float


async def _burst_run(settings: Settings, label: str, yield_each: bool) -> BurstRun:
    scenario = "burst"
    streams = settings.burst_streams
    signer = TokenSigner(settings.secret, lifetime=3600)
    async with (
        _server(scenario, label, settings, streams=streams) as server,
        BurstStreams(server.host, server.port) as client,
    ):
        with _step(scenario, f"{label}: opening {streams:,} streams"):
            path = f"{STREAMUI_PATH}?t={signer.sign([_BURST_SCOPE])}"
            await client.open([path] * streams, settings.timeout)
        cpu_before = server.cpu_seconds()
        started = time.perf_counter()
        with _step(scenario, f"{label}: the burst"):
            answer = await post_json(
                server.host,
                server.port,
                "/burst",
                {
                    "scope": _BURST_SCOPE,
                    "count": settings.burst_count,
                    "yield_each": yield_each,
                    "max_seconds": settings.burst_cap,
                },
                settings.timeout + settings.burst_cap,
            )
            client.aim(int(answer["revision"]))
            await client.settle(
                settings.timeout, f"streams on the last revision {answer['revision']}"
            )
        settle_seconds = time.perf_counter() - started
        cpu_after = await _cpu_after_quiesce(server)
    return BurstRun(
        label=label,
        streams=streams,
        requested=settings.burst_count,
        invalidations=int(answer["count"]),
        burst_seconds=float(answer["seconds"]),
        settle_seconds=settle_seconds,
        cpu_seconds=cpu_after - cpu_before,
        frames=tuple(stream.events for stream in client.streams),
    )


async def measure_burst(settings: Settings) -> BurstResult:
    """Both variants, each in a fresh server with fresh streams."""
    started = time.perf_counter()
    _streams_before(settings.burst_streams)
    runs = (
        await _burst_run(settings, "a-no-yield", yield_each=False),
        await _burst_run(settings, "b-sleep0", yield_each=True),
    )
    return BurstResult(runs, settings.burst_cap, time.perf_counter() - started)


# -- 4. opening streams ---------------------------------------------------------------------


class Churn(StreamSet):
    """Opens streams one after another on a fixed number of connections in flight:
    connect, send the request, read the opening frame, close."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)
        self._first: dict[int, asyncio.Future[None]] = {}

    def opened(self, stream: Stream) -> None:
        future = self._first.pop(stream.index, None)
        if future is not None and not future.done():
            future.set_result(None)

    def received(self, stream: Stream, events: list[bytes]) -> None:
        raise BenchError(f"a fresh stream received {len(events)} event(s)")

    def fail(self, error: BenchError) -> None:
        super().fail(error)
        for future in self._first.values():
            if not future.done():
                future.set_exception(error)

    async def _open_and_close(self, index: int, path: str) -> None:
        stream = Stream(self, index, self.request(path))
        self.streams.append(stream)
        future = self._first[index] = self.loop.create_future()
        await self.loop.create_connection(lambda: stream, self.host, self.port)
        await future
        stream.end()

    async def churn(self, paths: Sequence[str], concurrency: int, timeout: float) -> float:
        """Open (and close) one stream per path; the seconds it took."""
        first = len(self.streams)
        positions = iter(range(len(paths)))

        async def worker() -> None:
            for position in positions:
                await self._open_and_close(first + position, paths[position])

        started = time.perf_counter()
        workers = [self.loop.create_task(worker()) for _ in range(concurrency)]
        try:
            async with asyncio.timeout(timeout):
                await asyncio.gather(*workers)
        except TimeoutError:
            done = sum(1 for stream in self.streams[first:] if stream.opened)
            raise BenchError(
                f"only {done} of {len(paths)} streams opened within {timeout:g} s"
            ) from None
        except OSError as error:
            raise BenchError(f"could not connect to {self.host}:{self.port}: {error}") from None
        finally:
            await finish(workers)
        self._check()
        return time.perf_counter() - started


@dataclass(frozen=True, slots=True)
class OpenRun:
    server: str
    opens: int
    concurrency: int
    seconds: float
    cpu_seconds: float

    @property
    def per_second(self) -> float:
        return self.opens / self.seconds

    @property
    def cpu_us_per_open(self) -> float:
        return self.cpu_seconds / self.opens * 1e6

    @property
    def busy(self) -> float:
        """The server's CPU time over the wall time: 1.0 means its core was saturated."""
        return self.cpu_seconds / self.seconds


@dataclass(frozen=True, slots=True)
class OpenResult:
    runs: tuple[OpenRun, ...]
    """The raw floor, then streamui."""
    seconds: float


async def _open_run(settings: Settings, name: str) -> OpenRun:
    scenario = "open"
    count, concurrency = settings.open_count, settings.open_concurrency
    factory = RAW_APP if name == "raw" else WORKLOAD_APP
    async with (
        _server(scenario, name, settings, streams=concurrency, factory=factory) as server,
        Churn(server.host, server.port) as client,
    ):
        # Signed once the server runs: a token from before its broker started would be
        # owed every scope (an event right after the opening frame).
        users = range(count + _WARMUP_OPENS)
        paths = ["/stream"] * len(users) if name == "raw" else _user_paths(settings, users)
        with _step(scenario, f"{name}: warm-up"):
            await client.churn(paths[:_WARMUP_OPENS], concurrency, settings.timeout)
            await asyncio.sleep(_QUIESCE)
        cpu_before = server.cpu_seconds()
        with _step(scenario, f"{name}: opening {count:,} streams"):
            seconds = await client.churn(paths[_WARMUP_OPENS:], concurrency, settings.timeout)
        cpu_after = await _cpu_after_quiesce(server)
    return OpenRun(name, count, concurrency, seconds, cpu_after - cpu_before)


async def measure_open(settings: Settings) -> OpenResult:
    started = time.perf_counter()
    _streams_before(settings.open_concurrency)
    runs = (await _open_run(settings, "raw"), await _open_run(settings, "streamui"))
    return OpenResult(runs, time.perf_counter() - started)


# -- 5. rendering ---------------------------------------------------------------------------


def _card(index: int) -> Element:
    """A task card: what one component of a real list page holds."""
    owner = index % 37
    return h.article(class_="card")[
        h.h3[f"Task {index}: review the quarterly figures"],
        h.p(class_="meta")[
            "Assigned to ",
            h.a(href=f"/users/{owner}")[f"user {owner}"],
            " · due ",
            h.span(class_="due")["1 March"],
        ],
        h.ul(class_="tags")[h.li["finance"], h.li[f"priority {index % 3}"]],
        h.button(type="button", class_="done")["Done"],
    ]


def watched_page(components: int, scopes: int) -> Element:
    """*components* cards, each in a `Watch` of its project's scope, then `Connect()`."""
    cards = (
        Watch(f"project:{index % scopes}:tasks", f"/tasks/{index}", id=f"task-{index}")[
            _card(index)
        ]
        for index in range(components)
    )
    return h.html[h.body[h.main[cards], Connect()]]


def plain_page(components: int) -> Element:
    """The same cards in plain ``div`` elements with the same ids: no Watch, no Connect."""
    cards = (h.div(id=f"task-{index}")[_card(index)] for index in range(components))
    return h.html[h.body[h.main[cards]]]


@dataclass(frozen=True, slots=True)
class RenderResult:
    components: int
    scopes: int
    watched_us: float
    plain_us: float
    watched_bytes: int
    plain_bytes: int
    seconds: float

    @property
    def slowdown(self) -> float:
        return self.watched_us / self.plain_us - 1


def _best_us(functions: Sequence[Callable[[], object]], repeats: int) -> list[float]:
    """Each function's best of *repeats* timings, in µs per call.

    The repeats alternate between the functions, so a slow spell of a shared machine
    hits all of them; each timing makes as many calls as timeit's autorange picks for
    the first function (at least 0.2 s of it).
    """
    number, _ = timeit.Timer(functions[0]).autorange()
    timers = [timeit.Timer(function) for function in functions]
    best = [float("inf")] * len(functions)
    for _ in range(repeats):
        for index, timer in enumerate(timers):
            best[index] = min(best[index], timer.timeit(number))
    return [seconds / number * 1e6 for seconds in best]


async def measure_render(settings: Settings) -> RenderResult:
    """Build and render each page to a string, as a request handler does.

    Runs on the event loop, as a handler does (a Watch registers with the current
    task), and the watched page within `use_endpoint`, as the plugin's middleware
    does for every request.
    """
    started = time.perf_counter()
    components, scopes = settings.render_components, settings.render_scopes
    endpoint = StreamEndpoint(
        STREAMUI_PATH,
        TokenSigner(settings.secret, lifetime=3600),
        client_url=streamui_client.url_for(STREAMUI_PATH),
    )

    def watched() -> str:
        with use_endpoint(endpoint):
            return str(watched_page(components, scopes))

    def plain() -> str:
        return str(plain_page(components))

    watched_text, plain_text = watched(), plain()
    if watched_text.count("data-effect") != components + 1 or 'id="streamui-connect"' not in (
        watched_text
    ):
        raise BenchError("render: the watched page lacks its Watch or Connect elements")
    if "data-effect" in plain_text or plain_text.count("<article") != components:
        raise BenchError("render: the plain page is not the same cards without Watch")
    watched_us, plain_us = _best_us([watched, plain], settings.render_repeats)
    return RenderResult(
        components=components,
        scopes=scopes,
        watched_us=watched_us,
        plain_us=plain_us,
        watched_bytes=len(watched_text.encode()),
        plain_bytes=len(plain_text.encode()),
        seconds=time.perf_counter() - started,
    )


_MEASURES: Final[dict[str, Callable[[Settings], Any]]] = {
    "per-user": measure_per_user,
    "unwatched": measure_unwatched,
    "burst": measure_burst,
    "open": measure_open,
    "render": measure_render,
}


async def run_workloads(names: Sequence[str], settings: Settings | None = None) -> str:
    """Run the named scenarios (of `SCENARIOS`) one after another; the Markdown report.

    Raises `BenchError` naming the scenario and step that failed or hung.
    """
    settings = settings or Settings()
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown:
        raise ValueError(f"unknown scenario(s) {unknown!r}; choose from {', '.join(SCENARIOS)}")
    lines = heading(settings)
    for name in names:
        result = await _MEASURES[name](settings)
        lines += ["", *TABLES[name](result)]
    return "\n".join(lines) + "\n"


# -- command line ---------------------------------------------------------------------------


def _scenarios(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown scenario(s) {unknown!r}; choose from {', '.join(SCENARIOS)}"
        )
    return names


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.workloads",
        description="Workloads shaped like real apps (per-user scopes, unwatched "
        "invalidations, bursts, opening streams, rendering), one table each.",
    )
    parser.add_argument(
        "--only",
        type=_scenarios,
        default=list(SCENARIOS),
        help=f"comma-separated subset of {','.join(SCENARIOS)} (all)",
    )
    parser.add_argument(
        "--on", choices=ASGI_SERVERS, default="uvicorn", help="the ASGI server (uvicorn)"
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    parser.add_argument(
        "--timeout", type=float, default=None, help="seconds any one step may take (120)"
    )
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="do not pin the server to one CPU and the client to the others",
    )
    parser.add_argument(
        "--output", type=Path, default=BUILD / "bench-workloads.md", help="%(default)s"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    if not sys.platform.startswith("linux"):
        print("python -m bench.workloads: reads /proc, so it runs on Linux only", file=sys.stderr)
        return 2
    server_cpu, client_cpus = pick_cpus() if arguments.pin else (None, None)
    changes: dict[str, Any] = {"server_cpu": server_cpu, "on": arguments.on}
    if arguments.timeout is not None:
        changes["timeout"] = arguments.timeout
    settings = Settings.quick(**changes) if arguments.quick else replace(Settings(), **changes)
    try:
        if client_cpus is not None:
            os.sched_setaffinity(0, client_cpus)
        report = uvloop.run(run_workloads(arguments.only, settings))
    except BenchError as error:
        print(f"python -m bench.workloads: {error}", file=sys.stderr)
        return 1
    print(report)
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(report)
    print(f"(written to {arguments.output})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
