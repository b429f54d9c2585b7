"""Fixtures for the browser tests: the showcase served by uvicorn, Chromium driven by
Playwright, and two people looking at it.

- `chromium_executable`: the system Chromium. Playwright's own browser downloads are
  not used. Without Chromium the tests skip on a developer machine and fail in CI
  (``CI=true``), so CI can never pass by skipping them.
- `datastar_file`: a local Datastar (see `tests.e2e.datastar`); the page loads it from
  the showcase (``STREAMUI_DATASTAR_JS``), never from a CDN.
- `launch(port=0, database=None)`: serves a new showcase (fixed secret, quiet clock, a
  `Broker` the test can invalidate through, in-memory data or a SQLite file) and returns
  a `Running` handle that can be stopped mid-test; starting another on the same port
  with the same file is a server restart.
- `people`: two independent browser contexts, A and B, each with one page. After the
  test, every console message of type "error" and every uncaught page error of every
  page fails the test (unless it came while the test tolerated it, with
  `Console.tolerating`), and so does any ERROR logged by the server (`launch`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol

import pytest
import uvicorn
from examples.showcase import create_app
from examples.showcase.app import DATASTAR_ENV
from playwright.async_api import async_playwright, expect

from streamui import Broker
from tests.e2e.datastar import datastar_js

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

    from litestar import Litestar
    from playwright.async_api import (
        Browser,
        BrowserContext,
        ConsoleMessage,
        Page,
        Request,
        Response,
        ViewportSize,
        WebError,
    )

SECRET: Final = "e2e-tests-secret-0123456789abcdef"
"""The stream token secret of every showcase: the same across a restart, so an open
page's token still verifies."""
QUIET: Final = 3600.0
"""A clock interval that never ticks during a test: no push but the ones a test causes."""
STREAM_PATH: Final = "/streamui/stream"
SEE: Final = 15_000
"""Milliseconds to wait for something a person would see (generous: a noisy machine)."""
SERVER_WAIT: Final = 15.0
"""Seconds to wait for the server to start or stop."""
CHROMIUM_ARGS: Final = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
)
SET_HIDDEN: Final = """(hidden) => {
    Object.defineProperty(document, "hidden", {value: hidden, configurable: true});
    Object.defineProperty(document, "visibilityState", {
        value: hidden ? "hidden" : "visible", configurable: true,
    });
    document.dispatchEvent(new Event("visibilitychange"));
}"""
"""Makes the page's document hidden (or visible again) as far as its scripts can tell."""
VIEWPORT: Final[ViewportSize] = {"width": 1200, "height": 900}
WATCHED_LOGGERS: Final = ("uvicorn.error", "litestar", "streamui", "examples.showcase")

expect.set_options(timeout=SEE)


# -- the browser -------------------------------------------------------------------------


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def find_chromium() -> str:
    """The system Chromium's path; else skip (developer machine) or fail (CI)."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None and Path("/usr/bin/chromium").is_file():
        path = "/usr/bin/chromium"
    if path is not None:
        return path
    reason = "browser tests need Chromium on PATH (Debian: apt-get install chromium)"
    if _in_ci():
        pytest.fail(f"{reason}; CI=true, so this is a failure, not a skip", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium_executable() -> str:
    return find_chromium()


@pytest.fixture(scope="session")
def datastar_file() -> Path:
    return datastar_js()


@pytest.fixture
async def browser(chromium_executable: str) -> AsyncIterator[Browser]:
    """A fresh Chromium for this test.

    Playwright starts each browser with a new empty profile directory of its own (and
    deletes it on close); the two contexts opened on it share nothing.
    """
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium_executable, args=list(CHROMIUM_ARGS), headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()


# -- the server --------------------------------------------------------------------------


class _Uvicorn(uvicorn.Server):
    """uvicorn that says when it has started, so nobody polls for it."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.should_exit:
            self.ready.set()


@dataclass
class Running:
    """A showcase served on ``127.0.0.1:<port>`` until `stop`."""

    app: Litestar
    broker: Broker
    port: int
    server: _Uvicorn
    task: asyncio.Task[None]
    listener: socket.socket

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        """Stop serving, the way a SIGTERM does: end the open streams (browsers retry),
        then shut the server down. Idempotent."""
        if self.task.done():
            return
        self.broker.end_streams()
        self.server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self.task), SERVER_WAIT)
        finally:
            self.listener.close()


async def _serve(app: Litestar, broker: Broker, port: int) -> Running:
    """Serve *app* under uvicorn (httptools) on *port* (0: a free one)."""
    # IPPROTO_TCP so asyncio turns Nagle off; SO_REUSEADDR so a restart can bind the
    # port again while the previous server's connections are in TIME_WAIT.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    config = uvicorn.Config(
        app, log_level="warning", lifespan="on", http="httptools", timeout_graceful_shutdown=2
    )
    server = _Uvicorn(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    ready = asyncio.create_task(server.ready.wait())
    await asyncio.wait({task, ready}, timeout=SERVER_WAIT, return_when=asyncio.FIRST_COMPLETED)
    if not ready.done():
        ready.cancel()
        sock.close()
        if task.done():
            task.result()  # the startup error, if any
            raise RuntimeError("uvicorn stopped before it started")
        task.cancel()
        raise TimeoutError(f"uvicorn did not start within {SERVER_WAIT}s")
    return Running(app, broker, sock.getsockname()[1], server, task, sock)


class Launch(Protocol):
    async def __call__(self, *, port: int = 0, database: Path | None = None) -> Running: ...


class _ErrorRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
async def launch(datastar_file: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Launch]:
    """Serve a new showcase, with the local Datastar; stops every one after the test."""
    monkeypatch.setenv(DATASTAR_ENV, str(datastar_file))
    started: list[Running] = []
    errors = _ErrorRecords()

    async def launch_showcase(*, port: int = 0, database: Path | None = None) -> Running:
        broker = Broker()
        app = create_app(broker=broker, secret=SECRET, tick_interval=QUIET, database=database)
        running = await _serve(app, broker, port)
        # After the start: uvicorn's logging setup drops the handlers it finds.
        for name in WATCHED_LOGGERS:
            logging.getLogger(name).addHandler(errors)
        started.append(running)
        return running

    try:
        yield launch_showcase
        for running in reversed(started):
            await running.stop()
    finally:
        for running in started:
            running.listener.close()
        for name in WATCHED_LOGGERS:
            logging.getLogger(name).removeHandler(errors)
    assert not errors.records, [f"{r.name}: {r.getMessage()}" for r in errors.records]


@pytest.fixture
async def showcase(launch: Launch) -> Running:
    """A running showcase on a free port."""
    return await launch()


# -- the people --------------------------------------------------------------------------


@dataclass
class Console:
    """Console errors and uncaught page errors of every page of every context."""

    errors: list[str] = field(default_factory=list)
    tolerated: list[str] = field(default_factory=list)
    _tolerating: tuple[re.Pattern[str], ...] = ()

    def watch(self, name: str, context: BrowserContext) -> None:
        def on_console(message: ConsoleMessage) -> None:
            if message.type == "error":
                where = message.location.get("url", "")
                self._record(f"{name}: console error: {message.text} ({where})")

        def on_page_error(error: WebError) -> None:
            self._record(f"{name}: page error: {error.error}")

        context.on("console", on_console)
        context.on("weberror", on_page_error)

    def _record(self, line: str) -> None:
        if any(pattern.search(line) for pattern in self._tolerating):
            self.tolerated.append(line)
        else:
            self.errors.append(line)

    @contextlib.contextmanager
    def tolerating(self, *patterns: str) -> Iterator[None]:
        """Within the block, errors that match one of *patterns* do not fail the test."""
        previous = self._tolerating
        self._tolerating = (*previous, *(re.compile(pattern) for pattern in patterns))
        try:
            yield
        finally:
            self._tolerating = previous


@dataclass
class Person:
    """One person: a browser context of their own with one page."""

    name: str
    context: BrowserContext
    page: Page
    _recordings: list[list[Request]] = field(default_factory=list)

    def __post_init__(self) -> None:
        # One listener for the page's whole life: Playwright subscribes to request
        # events asynchronously when the first listener is added, so a listener added
        # just before an action could miss the requests that action makes at once.
        def record(request: Request) -> None:
            for recording in self._recordings:
                recording.append(request)

        self.page.on("request", record)

    async def open(self, url: str) -> None:
        """Load *url* and wait until its stream is open (the server has subscribed)."""
        async with self.page.expect_response(_is_stream) as opened:
            await self.page.goto(url)
        response = await opened.value
        assert response.status == 200, (response.status, await response.text())

    @contextlib.contextmanager
    def requests(self) -> Iterator[list[Request]]:
        """Record every request this person's page makes in the block."""
        seen: list[Request] = []
        self._recordings.append(seen)
        try:
            yield seen
        finally:
            self._recordings.remove(seen)


def _is_stream(response: Response) -> bool:
    return STREAM_PATH + "?" in response.url


@dataclass
class People:
    a: Person
    b: Person
    console: Console


@pytest.fixture
async def people(browser: Browser, launch: Launch) -> AsyncIterator[People]:
    """Person A and person B, each in a context of their own; checks their consoles.

    Depends on `launch` so that the browsers close before the servers stop.
    """
    console = Console()
    persons = []
    for name in ("A", "B"):
        context = await new_profile(browser, console, name)
        persons.append(Person(name, context, await context.new_page()))
    try:
        yield People(persons[0], persons[1], console)
    finally:
        for person in persons:
            await person.context.close()
    assert not console.errors, "\n".join(_shorten(line) for line in console.errors)


async def new_profile(browser: Browser, console: Console, name: str) -> BrowserContext:
    """A new browser context (a person's profile), its console watched by *console*."""
    context = await browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(SEE)
    console.watch(name, context)
    return context


async def wait_until(what: str, condition: Callable[[], bool]) -> None:
    """Wait until *condition* holds (checked every 20 ms), at most `SEE` ms."""
    deadline = time.monotonic() + SEE / 1000
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {SEE} ms: {what}")
        await asyncio.sleep(0.02)


def write_figures(path: Path, figures: dict[str, str]) -> None:
    """Write *figures* (what was measured: its value) to *path* as a Markdown table."""
    if figures:
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = ["| measured | value |", "|---|---|"]
        lines += [f"| {name} | {value} |" for name, value in sorted(figures.items())]
        path.write_text("\n".join(lines) + "\n")


def _shorten(line: str, limit: int = 300) -> str:
    """A console line for a failure message: stream URLs carry long tokens."""
    return line if len(line) <= limit else line[: limit - 1] + "…"
