"""Refetch if, and only if, it changed: fragment requests counted on the server.

A component re-fetches when one of its scopes was invalidated after the data it shows
was rendered, and never otherwise: not on page load (with the in-process broker, and
over NATS with scopes no stream of the process watched before), not when a tab is shown
again after its stream closed, and exactly the changed components when something did
change meanwhile. Each case runs with tabs sharing one stream (streamui's module) and
with a stream per tab (Datastar's own reconnect, with ``Last-Event-ID``). The counts are
written to ``build/catch-up-results.md``.

Every test page shows two components, ``#board`` (scope ``board``) and ``#note``
(scopes ``board`` and ``note:<n>``), and the server counts each component request.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Final

import pytest
from playwright.async_api import expect

from streamui import Broker
from streamui.nats import NatsTransport
from tests.e2e.conftest import SET_HIDDEN, Console, _serve, new_profile, wait_until
from tests.e2e.tabs_app import TabsApp, make_tabs_app
from tests.nats.conftest import nats_server_running

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

    from playwright.async_api import Browser, Page

    from tests.e2e.conftest import Running

RESULTS: Final = Path(__file__).resolve().parents[2] / "build" / "catch-up-results.md"

_figures: dict[tuple[str, str, str], str] = {}


@pytest.fixture(scope="module", autouse=True)
def _write_figures() -> Iterator[None]:
    yield
    if _figures:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        lines = [
            "| case | broker | streams | extra fragment requests |",
            "|---|---|---|---|",
            *(
                f"| {case} | {broker} | {mode} | {value} |"
                for (case, broker, mode), value in sorted(_figures.items())
            ),
        ]
        RESULTS.write_text("\n".join(lines) + "\n")


class Tab:
    """One tab of the tabs app, and the app's count of component requests."""

    def __init__(self, state: TabsApp, page: Page, broker_name: str, mode: str) -> None:
        self.state = state
        self.page = page
        self.broker_name = broker_name
        self.mode = mode

    def fetched(self, since: Counter[str]) -> Counter[str]:
        """Component requests since the *since* snapshot."""
        return Counter(self.state.fetches) - since

    async def until(self, what: str, condition: Callable[[], bool]) -> None:
        await wait_until(what, condition)

    async def streaming(self) -> None:
        def one_stream() -> bool:
            streams = self.state.streams()
            return len(streams) == 1 and {"board", "note:1"} <= set(streams[0].scopes)

        await self.until("the tab's stream is open", one_stream)

    async def no_stream(self) -> None:
        await self.until("no stream open", lambda: not self.state.streams())

    async def shows(self, board: int, note: int) -> None:
        await expect(self.page.locator("#board .v")).to_have_text(f"board {board}")
        await expect(self.page.locator("#note .v")).to_have_text(f"note {board}.{note}")

    async def settle(self) -> Counter[str]:
        """Two more changes, each seen on the page: any request that an earlier push
        (a catch-up) could still cause has reached the server by then. Returns the
        requests these two changes cause (3: both components, then #note)."""
        versions = self.state.versions
        await self.state.bump("board")
        await self.shows(versions["board"], versions["note:1"])
        await self.state.bump("note:1")
        await self.shows(versions["board"], versions["note:1"])
        return Counter({"/board": 1, "/note/1": 2})

    def record(self, case: str, extra: Counter[str]) -> None:
        _figures[(case, self.broker_name, self.mode)] = str(sum(extra.values())) + (
            f" ({', '.join(f'{path} x{count}' for path, count in sorted(extra.items()))})"
            if extra
            else ""
        )


@pytest.fixture(params=["in-process", "NATS"])
async def broker_factory(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[str, Callable[[], Broker]]]:
    if request.param == "in-process":
        yield "in-process", Broker
        return
    async with nats_server_running() as server:
        yield "NATS", lambda: Broker(NatsTransport(servers=server.url))


@pytest.fixture(params=["shared", "per-tab"])
async def tab(
    request: pytest.FixtureRequest,
    browser: Browser,
    datastar_file: Path,
    broker_factory: tuple[str, Callable[[], Broker]],
) -> AsyncIterator[Tab]:
    """Tab 1 of a fresh app, loaded, its stream open."""
    mode = request.param
    broker_name, factory = broker_factory
    state = make_tabs_app(datastar_file, share=mode == "shared", broker=factory())
    running: Running = await _serve(state.app, state.broker, 0)
    console = Console()
    context = await new_profile(browser, console, "tab")
    try:
        page = await context.new_page()
        await page.goto(f"{running.url}/tab/1")
        await expect(page.locator("#note .v")).to_be_visible()
        result = Tab(state, page, broker_name, mode)
        await result.streaming()
        yield result
    finally:
        with contextlib.suppress(Exception):
            await context.close()
        await running.stop()
    assert not console.errors, "\n".join(line[:300] for line in console.errors)


async def test_a_page_load_fetches_nothing(tab: Tab) -> None:
    before: Counter[str] = Counter()
    expected = await tab.settle()
    extra = tab.fetched(before) - expected
    tab.record("page load", extra)
    assert tab.fetched(before) == expected, f"requests beyond the changes: {dict(extra)}"


async def hidden_until_the_stream_closed(tab: Tab) -> None:
    await tab.page.evaluate(SET_HIDDEN, True)
    await tab.no_stream()


async def test_a_tab_shown_again_without_a_change_fetches_nothing(tab: Tab) -> None:
    await tab.settle()  # the tab saw events before it was hidden
    await hidden_until_the_stream_closed(tab)
    before = Counter(tab.state.fetches)
    await tab.page.evaluate(SET_HIDDEN, False)
    await tab.streaming()
    expected = await tab.settle()
    extra = tab.fetched(before) - expected
    tab.record("shown again, nothing changed", extra)
    assert tab.fetched(before) == expected, f"requests beyond the changes: {dict(extra)}"


async def test_a_tab_shown_again_fetches_exactly_what_changed(tab: Tab) -> None:
    await tab.settle()
    await hidden_until_the_stream_closed(tab)
    await tab.state.bump("note:1")  # while nobody listens
    before = Counter(tab.state.fetches)
    await tab.page.evaluate(SET_HIDDEN, False)
    versions = tab.state.versions
    await tab.shows(versions["board"], versions["note:1"])
    expected = Counter({"/note/1": 1}) + await tab.settle()
    extra = tab.fetched(before) - expected
    tab.record("shown again after note:1 changed", extra)
    assert tab.fetched(before) == expected, f"requests beyond the changes: {dict(extra)}"
