"""A refused stream stops, and says why: no dead tab, no request loop.

When the server refuses a tab's stream with a 4xx, streamui's module does not retry
it. The tab gets the reason in its ``_streamError`` signal (the test page shows it in
``#error``) and on the console. With a 403 (a token that no longer verifies after the
secret changed, or ``authorize`` said no), the page reloads once by default and then
shows fresh data over a working stream. Requests are counted: page loads on the server,
stream requests in the browser. The figures go to ``build/refused-results.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qs

import pytest
from playwright.async_api import expect

from streamui import Broker
from tests.e2e.conftest import (
    STREAM_PATH,
    Console,
    _serve,
    new_profile,
    wait_until,
    write_figures,
)
from tests.e2e.tabs_app import TabsApp, make_tabs_app

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

    from litestar.types import ASGIApp, Receive, Scope, Send
    from playwright.async_api import Browser, BrowserContext, Page, Request

    from tests.e2e.conftest import Running

RESULTS: Final = Path(__file__).resolve().parents[2] / "build" / "refused-results.md"
REFUSALS: Final = (
    r"the stream was refused \(40[03]\)",
    r"status of 40[03] \(Forbidden|Bad Request\)",
)
"""What the browser and the module log for a refusal (expected here)."""
QUIET: Final = 4.0
"""Seconds a refused tab is watched for more requests (it used to retry every second)."""

_figures: dict[str, str] = {}


@pytest.fixture(scope="module", autouse=True)
def _write_figures() -> Iterator[None]:
    yield
    write_figures(RESULTS, _figures)


class Site:
    """The tabs app on a fixed port, restartable with other settings, and one browser
    profile looking at it (stream requests counted)."""

    def __init__(self, browser: Browser, datastar: Path) -> None:
        self.browser = browser
        self.datastar = datastar
        self.console = Console()
        self.state: TabsApp | None = None
        self.running: Running | None = None
        self.stream_requests: list[str] = []
        self.context: BrowserContext | None = None

    async def serve(self, *, port: int = 0, **config: Any) -> TabsApp:
        versions = self.state.versions if self.state is not None else None
        self.state = make_tabs_app(self.datastar, broker=Broker(), versions=versions, **config)
        self.running = await _serve(self.state.app, self.state.broker, port)
        return self.state

    async def restart(self, **config: Any) -> TabsApp:
        assert self.running is not None
        port = self.running.port
        await self.running.stop()
        return await self.serve(port=port, **config)

    @property
    def url(self) -> str:
        assert self.running is not None
        return self.running.url

    async def tabs(self, count: int) -> list[Page]:
        if self.context is None:
            self.context = await new_profile(self.browser, self.console, "profile")

            def record(request: Request) -> None:
                if STREAM_PATH + "?" in request.url:
                    self.stream_requests.append(request.url)

            self.context.on("request", record)
        pages = []
        for n in range(count):
            page = await self.context.new_page()
            await page.goto(f"{self.url}/tab/{n}")
            pages.append(page)
        return pages

    async def until(self, what: str, condition: Callable[[], bool]) -> None:
        await wait_until(what, condition)

    def streaming(self, count: int) -> Callable[[], bool]:
        """*count* streams open on the server, and the browser reported as many stream
        requests (its events reach the test after the server saw the request)."""

        def check() -> bool:
            return (
                self.state is not None
                and len(self.state.streams()) == count
                and len(self.stream_requests) >= count
            )

        return check

    async def close(self) -> None:
        if self.context is not None:
            with contextlib.suppress(Exception):
                await self.context.close()
        if self.running is not None:
            await self.running.stop()


@pytest.fixture
async def site(browser: Browser, datastar_file: Path) -> AsyncIterator[Site]:
    result = Site(browser, datastar_file)
    try:
        yield result
    finally:
        await result.close()
    assert not result.console.errors, "\n".join(line[:300] for line in result.console.errors)


async def shows_board(page: Page, version: int) -> None:
    await expect(page.locator("#board .v")).to_have_text(f"board {version}")


@pytest.mark.parametrize("share", [True, False], ids=["shared", "per-tab"])
async def test_after_a_secret_rotation_each_tab_reloads_once_and_updates_again(
    site: Site, share: bool
) -> None:
    state = await site.serve(secret="the-first-secret-0123456789", share=share)
    pages = await site.tabs(2)
    await site.until("the tabs stream", site.streaming(1 if share else 2))
    assert state.pages == Counter({0: 1, 1: 1})

    # The app restarts with another secret, and the data changed meanwhile.
    state.versions["board"] += 1
    # (While the server restarts, a stream may be cut and a reconnect find no server.)
    with site.console.tolerating(*REFUSALS, "ERR_CONNECTION_REFUSED", "ERR_INCOMPLETE_CHUNKED"):
        before = len(site.stream_requests)
        state = await site.restart(secret="the-second-secret-0123456789", share=share)
        for page in pages:
            await shows_board(page, 1)  # after its reload: a fresh page
        await site.until("the reloaded tabs stream", site.streaming(1 if share else 2))
        for page in pages:
            await expect(page.locator("#error")).to_have_text("")
        # It streams: a change reaches every tab.
        await state.bump("board")
        for page in pages:
            await shows_board(page, 2)
    after = site.stream_requests[before:]
    mode = "shared" if share else "per tab"
    _figures[f"secret rotation, 2 tabs ({mode}): page reloads"] = str(sum(state.pages.values()))
    _figures[f"secret rotation, 2 tabs ({mode}): stream requests"] = str(len(after))
    # (A tab reloaded twice now and then while the module refused every tab of a request
    # whose refused token's tab had just reloaded: see the next test. What the tabs
    # logged and asked for is shown if it fails.)
    seen = "\n".join([*site.console.tolerated, *(url[-120:] for url in after)])
    assert state.pages == Counter({0: 1, 1: 1}), f"each tab reloads exactly once:\n{seen}"
    # Refused (one for the shared stream, one per tab without sharing), the new streams
    # (shared: one per tab that joins, one when the reloaded tabs' old selves are
    # forgotten), and perhaps a retry while the server was down.
    assert len(after) <= 6, after


class Gate:
    """Litestar middleware holding the stream requests that carry more than one token
    while it is closed (`held` counts them)."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.opened.set()
        self.held = 0

    def __call__(self, app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            if (
                scope["path"] == STREAM_PATH
                and len(parse_qs(scope["query_string"].decode()).get("t", ())) > 1
                and not self.opened.is_set()
            ):
                self.held += 1
                await self.opened.wait()
            await app(scope, receive, send)

        return middleware


async def test_a_refusal_for_a_tab_that_left_meanwhile_refuses_no_other_tab(site: Site) -> None:
    # The shared stream asks for tab 0's scopes and those of a tab 1 whose token does
    # not verify; tab 1 closes before the server's 403 (which names only tab 1's token)
    # arrives. Tab 0 must not be refused for it: no error, no reload, still live. (It
    # was: with the refused token's tab gone, every tab of the request was refused.)
    gate = Gate()
    state = await site.serve(middleware=[gate])
    (page,) = await site.tabs(1)
    await site.until("the tab streams", site.streaming(1))
    assert site.context is not None
    gate.opened.clear()
    with site.console.tolerating(*REFUSALS):
        stale = await site.context.new_page()
        await stale.goto(f"{site.url}/tab/1?tamper=1")
        await site.until("a stream for both tabs is asked for", lambda: gate.held == 1)
        await stale.close()
        await asyncio.sleep(1.0)  # its goodbye reaches the leader (a BroadcastChannel)
        gate.opened.set()
        await asyncio.sleep(QUIET)  # a refused tab would reload within 2 s
    await expect(page.locator("#error")).to_have_text("")
    await state.bump("board")
    await shows_board(page, 1)
    assert state.pages == Counter({0: 1, 1: 1})


async def test_a_refused_tab_that_does_not_reload_shows_why_and_stops_asking(site: Site) -> None:
    allowed = {"yes": True}

    def authorize(request: object, scopes: tuple[str, ...]) -> bool:
        return allowed["yes"]

    state = await site.serve(authorize=authorize, reload_when_refused=False)
    (page,) = await site.tabs(1)
    await site.until("the tab streams", site.streaming(1))
    allowed["yes"] = False
    with site.console.tolerating(*REFUSALS):
        before = len(site.stream_requests)
        state.broker.end_streams()  # the next connect runs authorize again
        await expect(page.locator("#error")).to_have_text("not authorized to watch these scopes")
        await asyncio.sleep(QUIET)  # what it does next: nothing
    after = site.stream_requests[before:]
    _figures[f"authorize refuses, no reload: stream requests in {QUIET:g} s"] = str(len(after))
    assert len(after) == 1, after
    assert state.pages == Counter({0: 1})


@pytest.mark.parametrize("share", [True, False], ids=["shared", "per-tab"])
async def test_a_tab_over_the_scope_limit_says_so_and_makes_no_request(
    site: Site, share: bool
) -> None:
    # The page watches 2 scopes; "More" joins a third, over the limit of 2.
    state = await site.serve(max_scopes=2, share=share)
    (page,) = await site.tabs(1)
    await site.until("the tab streams", site.streaming(1))
    before = len(site.stream_requests)
    with site.console.tolerating(*REFUSALS):
        await page.get_by_role("button", name="More").click()
        await expect(page.locator("#error")).to_have_text("too many scopes: 3, the limit is 2")
        await asyncio.sleep(QUIET)
    after = site.stream_requests[before:]
    assert after == [], after  # the module knows the limit: it does not ask
    assert state.pages == Counter({0: 1})


# -- short-lived tokens ------------------------------------------------------------------------

LIFETIME: Final = 1.0
"""Seconds a token lives in these tests (renewed every half second)."""


@pytest.mark.parametrize("share", [True, False], ids=["shared", "per-tab"])
async def test_tabs_open_across_several_token_lifetimes_keep_updating(
    site: Site, share: bool
) -> None:
    # Long enough that a renewed token outlives a reconnect's delay (1 s); in real use a
    # lifetime is an hour, and reconnects take seconds.
    lifetime = 4 * LIFETIME
    state = await site.serve(token_lifetime=lifetime, share=share)
    pages = await site.tabs(2)
    streams = 1 if share else 2
    await site.until("the tabs stream", site.streaming(streams))
    await asyncio.sleep(2 * lifetime)  # the tokens the pages were rendered with expired
    await state.bump("board")
    for page in pages:
        await shows_board(page, 1)
    # A reconnect now uses the renewed tokens: accepted, no reload.
    state.broker.end_streams()
    await site.until("the tabs stream again", site.streaming(streams))
    await state.bump("board")
    for page in pages:
        await shows_board(page, 2)
        await expect(page.locator("#error")).to_have_text("")
    assert state.pages == Counter({0: 1, 1: 1})


async def test_a_tab_away_longer_than_the_token_lifetime_reloads_once(site: Site) -> None:
    state = await site.serve(token_lifetime=LIFETIME)
    (page,) = await site.tabs(1)
    await site.until("the tab streams", site.streaming(1))
    assert site.running is not None
    port = site.running.port
    with site.console.tolerating(*REFUSALS, "ERR_CONNECTION_REFUSED", "ERR_INCOMPLETE_CHUNKED"):
        await site.running.stop()  # the server is away, and the tab's token expires
        await asyncio.sleep(3 * LIFETIME)
        state.versions["board"] += 1
        state = await site.serve(port=port, token_lifetime=LIFETIME)
        await shows_board(page, 1)  # after its reload
        await site.until("the reloaded tab streams", site.streaming(1))
    assert state.pages == Counter({0: 1})  # the reload, on the new server
    await state.bump("board")
    await shows_board(page, 2)
