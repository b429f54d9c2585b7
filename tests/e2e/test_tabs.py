"""Many tabs in one browser: one stream, shared by every tab (Chromium, real server).

A browser opens at most six HTTP/1.1 connections per host; with a stream per tab, six
visible tabs of an app used to stop updating. Here each browser context (a person's
browser profile) holds exactly one stream whatever its number of tabs, every tab
updates, the stream moves to another tab when its tab closes, hidden tabs wait until
they are shown, and two people have two streams. The figures (streams, fragment
requests per invalidation, takeover time) are written to ``build/tabs-results.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

import pytest
from playwright.async_api import expect

from tests.e2e.conftest import (
    SEE,
    SET_HIDDEN,
    Console,
    _serve,
    new_profile,
    write_figures,
)
from tests.e2e.tabs_app import TabsApp, make_tabs_app

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

    from playwright.async_api import Browser, BrowserContext, Page, Request

    from tests.e2e.conftest import Running

RESULTS: Final = Path(__file__).resolve().parents[2] / "build" / "tabs-results.md"

BUSY: Final = """(ms) => setTimeout(() => {
    const end = Date.now() + ms;
    while (Date.now() < end);
}, 0)"""
"""Blocks the page's event loop for *ms* (from a timer, so evaluate returns first)."""

_figures: dict[str, str] = {}


@pytest.fixture(scope="module", autouse=True)
def _write_figures() -> Iterator[None]:
    yield
    write_figures(RESULTS, _figures)


class Served:
    """The tabs app served by uvicorn, and the browser contexts looking at it."""

    def __init__(self, state: TabsApp, running: Running, browser: Browser) -> None:
        self.state = state
        self.running = running
        self.browser = browser
        self.console = Console()
        self.contexts: list[BrowserContext] = []

    @property
    def url(self) -> str:
        return self.running.url

    async def context(self) -> BrowserContext:
        """A new browser profile (a person)."""
        context = await new_profile(self.browser, self.console, f"context {len(self.contexts)}")
        self.contexts.append(context)
        return context

    async def tabs(self, context: BrowserContext, numbers: range) -> list[Page]:
        """Open ``/tab/<n>`` for each n in its own page, and wait until each shows."""
        pages = []
        for n in numbers:
            page = await context.new_page()
            await page.goto(f"{self.url}/tab/{n}")
            pages.append(page)
        for page in pages:
            await expect(page.locator("#note .v")).to_be_visible()
        return pages

    async def until(
        self, what: str, condition: Callable[[], bool], *, start: float | None = None
    ) -> float:
        """Wait until *condition* holds on the server; return the seconds since *start*
        (default: now)."""
        start = time.monotonic() if start is None else start
        deadline = start + SEE / 1000
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {SEE} ms: {what}")
            await asyncio.sleep(0.02)
        return time.monotonic() - start

    def serving(self, *scopes: str) -> Callable[[], bool]:
        """True once exactly one stream is open and it watches every one of *scopes*."""

        def check() -> bool:
            streams = self.state.streams()
            return len(streams) == 1 and set(scopes) <= set(streams[0].scopes)

        return check


@pytest.fixture
async def served(
    browser: Browser, datastar_file: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Served]:
    share = getattr(request, "param", True)
    state = make_tabs_app(datastar_file, share=share)
    running = await _serve(state.app, state.broker, 0)
    result = Served(state, running, browser)
    try:
        yield result
    finally:
        for context in result.contexts:
            with contextlib.suppress(Exception):
                await context.close()
        await running.stop()
    assert not result.console.errors, "\n".join(line[:300] for line in result.console.errors)


async def roles(pages: list[Page]) -> list[str | None]:
    return [
        await page.locator("#streamui-connect").get_attribute("data-streamui-role")
        for page in pages
    ]


async def leader_of(pages: list[Page]) -> Page:
    """The one page whose tab holds the stream (waits until there is exactly one)."""
    deadline = time.monotonic() + SEE / 1000
    while time.monotonic() < deadline:
        found = [
            page for page, role in zip(pages, await roles(pages), strict=True) if role == "leader"
        ]
        if len(found) == 1:
            return found[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no single leader among the tabs: {await roles(pages)}")


@contextlib.contextmanager
def fragment_requests(page: Page) -> Iterator[list[str]]:
    """The paths of the component requests *page* makes in the block."""
    seen: list[str] = []

    def record(request: Request) -> None:
        path = urlsplit(request.url).path
        if path == "/board" or path.startswith(("/note/", "/extra/")):
            seen.append(path)

    page.on("request", record)
    try:
        yield seen
    finally:
        page.remove_listener("request", record)


@pytest.mark.parametrize("count", [1, 6, 20])
async def test_every_tab_updates_over_one_stream(served: Served, count: int) -> None:
    context = await served.context()
    pages = await served.tabs(context, range(count))
    notes = [f"note:{n}" for n in range(count)]
    await served.until(f"one stream for all {count} tabs", served.serving("board", *notes))
    assert (await roles(pages)).count("leader") == 1

    before = dict(served.state.fetches)
    await served.state.bump("board")
    for page in pages:
        await expect(page.locator("#board .v")).to_have_text("board 1")
        await expect(page.locator("#note .v")).to_have_text("note 1.0")
    # Then one more, for one tab only: it arrives after anything the first could cause.
    await served.state.bump(f"note:{count - 1}")
    await expect(pages[-1].locator("#note .v")).to_have_text("note 1.1")
    assert served.state.fetches["/board"] - before.get("/board", 0) == count
    notes_fetched = sum(
        served.state.fetches[f"/note/{n}"] - before.get(f"/note/{n}", 0) for n in range(count)
    )
    assert notes_fetched == count + 1
    assert len(served.state.streams()) == 1
    _figures[f"{count} tabs: open streams"] = "1"
    _figures[f"{count} tabs: fragment requests for one invalidation"] = (
        f"{served.state.fetches['/board'] - before.get('/board', 0) + count} "
        f"({count} tabs, 2 components each)"
    )


async def test_the_stream_moves_to_another_tab_when_its_tab_closes(served: Served) -> None:
    context = await served.context()
    pages = await served.tabs(context, range(4))
    await served.until("one stream", served.serving("board", "note:0", "note:3"))
    leader = await leader_of(pages)
    rest = [page for page in pages if page is not leader]
    notes = [f"note:{pages.index(page)}" for page in rest]

    # Closed, then an invalidation at once: it lands during the handover.
    before = set(served.state.streams())
    wanted = {"board", *notes}

    def successor() -> bool:
        return any(
            stream not in before and wanted <= set(stream.scopes)
            for stream in served.state.streams()
        )

    closed = time.monotonic()
    await leader.close()
    handover = asyncio.create_task(served.until("a successor's stream", successor, start=closed))
    await served.state.bump("board")
    for page in rest:
        await expect(page.locator("#board .v")).to_have_text("board 1")
    updated = time.monotonic() - closed
    takeover = await handover
    await served.until("one stream", served.serving(*wanted))
    await leader_of(rest)
    _figures["takeover: from the leader's tab closing to a successor's stream serving the rest"] = (
        f"{takeover:.2f} s"
    )
    _figures["takeover: from the leader's tab closing to a change made then shown in every tab"] = (
        f"{updated:.2f} s"
    )
    # And the new stream carries what comes next.
    await served.state.bump(notes[0])
    await expect(rest[0].locator("#note .v")).to_have_text("note 1.1")


async def test_a_scope_added_by_a_fragment_becomes_live(served: Served) -> None:
    context = await served.context()
    pages = await served.tabs(context, range(3))
    leader = await leader_of(pages)
    follower = next(page for page in pages if page is not leader)
    n = pages.index(follower)
    await follower.get_by_role("button", name="More").click()
    await expect(follower.locator("#extra .v")).to_have_text("extra 0")
    await served.until("the new scope in the stream", served.serving(f"extra:{n}"))
    with fragment_requests(follower) as requests:
        await served.state.bump(f"extra:{n}")
        await expect(follower.locator("#extra .v")).to_have_text("extra 1")
    assert requests == [f"/extra/{n}"]


async def test_two_people_have_a_stream_each(served: Served) -> None:
    people = [await served.context(), await served.context()]
    pages = [await served.tabs(people[0], range(2)), await served.tabs(people[1], range(2, 4))]

    def two_streams() -> bool:
        return len(served.state.streams()) == 2

    await served.until("a stream per person", two_streams)
    scopes = sorted(sorted(stream.scopes) for stream in served.state.streams())
    assert scopes == [["board", "note:0", "note:1"], ["board", "note:2", "note:3"]]
    await served.state.bump("board")
    for page in pages[0] + pages[1]:
        await expect(page.locator("#board .v")).to_have_text("board 1")


@pytest.mark.parametrize("served", [False], indirect=True, ids=["sharing off"])
async def test_without_sharing_every_tab_has_its_own_stream(served: Served) -> None:
    context = await served.context()
    pages = await served.tabs(context, range(3))

    def three_streams() -> bool:
        return len(served.state.streams()) == 3

    await served.until("a stream per tab", three_streams)
    # streamui's module holds each tab's stream (a group of one).
    assert await roles(pages) == ["tab", "tab", "tab"]
    await served.state.bump("board")
    for page in pages:
        await expect(page.locator("#board .v")).to_have_text("board 1")
        await expect(page.locator("#note .v")).to_have_text("note 1.0")


async def test_a_hidden_tab_waits_then_fetches_each_changed_component_once(
    served: Served,
) -> None:
    context = await served.context()
    pages = await served.tabs(context, range(3))
    await served.until("one stream", served.serving("note:0", "note:1", "note:2"))
    hidden = pages[1]
    await hidden.evaluate(SET_HIDDEN, True)
    with fragment_requests(hidden) as while_hidden:
        for change in ("board", "note:1", "board"):
            await served.state.bump(change)
            await expect(pages[0].locator("#board .v")).to_have_text(
                f"board {served.state.versions['board']}"
            )
        # The stream stays open for the visible tabs, and the hidden one fetches nothing.
        assert len(served.state.streams()) == 1
    assert while_hidden == []
    await expect(hidden.locator("#note .v")).to_have_text("note 0.0")
    with fragment_requests(hidden) as when_shown:
        await hidden.evaluate(SET_HIDDEN, False)
        await expect(hidden.locator("#board .v")).to_have_text("board 2")
        await expect(hidden.locator("#note .v")).to_have_text("note 2.1")
        # One more change, so anything the catch-up could still cause has arrived.
        await served.state.bump("note:1")
        await expect(hidden.locator("#note .v")).to_have_text("note 2.2")
    assert sorted(when_shown) == ["/board", "/note/1", "/note/1"]


async def test_the_stream_closes_when_every_tab_is_hidden(served: Served) -> None:
    context = await served.context()
    pages = await served.tabs(context, range(2))
    await served.until("one stream", served.serving("note:0", "note:1"))
    for page in pages:
        await page.evaluate(SET_HIDDEN, True)

    def no_stream() -> bool:
        return not served.state.streams()

    await served.until("no stream while every tab is hidden", no_stream)
    await served.state.bump("board")  # nobody listens: the tabs catch up when shown
    await pages[1].evaluate(SET_HIDDEN, False)
    await expect(pages[1].locator("#board .v")).to_have_text("board 1")
    await served.until("the stream again", served.serving("note:0", "note:1"))
    await expect(pages[0].locator("#board .v")).to_have_text("board 0")  # still hidden
    await pages[0].evaluate(SET_HIDDEN, False)
    await expect(pages[0].locator("#board .v")).to_have_text("board 1")


async def test_a_leader_that_stops_answering_loses_the_stream(served: Served) -> None:
    """A tab whose event loop stops (frozen, or busy) keeps its Web Lock: the others
    notice the silence, and one takes the lock from it."""
    context = await served.context()
    pages = await served.tabs(context, range(2))
    await served.until("one stream", served.serving("note:0", "note:1"))
    leader = await leader_of(pages)
    other = pages[1 - pages.index(leader)]
    stuck = time.monotonic()
    await leader.evaluate(BUSY, 12_000)
    await expect(other.locator("#streamui-connect")).to_have_attribute(
        "data-streamui-role", "leader"
    )
    _figures["takeover: from the leader's tab stopping to another tab leading"] = (
        f"{time.monotonic() - stuck:.2f} s"
    )
    await served.state.bump("board")
    await expect(other.locator("#board .v")).to_have_text("board 1")
    # Once it runs again, the old leader follows, and both keep updating.
    await expect(leader.locator("#streamui-connect")).to_have_attribute(
        "data-streamui-role", "follower", timeout=30_000
    )
    await served.state.bump("board")
    for page in pages:
        await expect(page.locator("#board .v")).to_have_text("board 2")


async def test_the_stream_drops_the_scopes_of_a_tab_that_closed(served: Served) -> None:
    context = await served.context()
    pages = await served.tabs(context, range(3))
    await served.until("one stream", served.serving("note:0", "note:1", "note:2"))
    leader = await leader_of(pages)
    gone, staying = (page for page in pages if page is not leader)
    remaining = sorted(["board", *(f"note:{pages.index(page)}" for page in (leader, staying))])

    def without_it() -> bool:
        streams = served.state.streams()
        return len(streams) == 1 and sorted(streams[0].scopes) == remaining

    with fragment_requests(leader) as by_leader, fragment_requests(staying) as by_staying:
        await gone.close()
        await served.until("a stream without the closed tab's scope", without_it)
        await served.state.bump("board")
        for page in (leader, staying):
            await expect(page.locator("#board .v")).to_have_text("board 1")
            await expect(page.locator("#note .v")).to_have_text("note 1.0")
    # Replacing the stream pushed nothing: each component was fetched once, for the change.
    assert sorted(by_leader) == ["/board", f"/note/{pages.index(leader)}"]
    assert sorted(by_staying) == ["/board", f"/note/{pages.index(staying)}"]


async def test_without_web_locks_each_tab_streams_on_its_own(served: Served) -> None:
    """The fallback: in a browser without Web Locks (or BroadcastChannel) each tab holds
    a stream of its own, as with sharing off."""
    context = await served.context()
    await context.add_init_script(
        "Object.defineProperty(Navigator.prototype, 'locks', {get: () => undefined})"
    )
    pages = await served.tabs(context, range(2))

    def two_streams() -> bool:
        return len(served.state.streams()) == 2

    await served.until("a stream per tab", two_streams)
    assert await roles(pages) == ["tab", "tab"]
    await served.state.bump("board")
    for page in pages:
        await expect(page.locator("#board .v")).to_have_text("board 1")
