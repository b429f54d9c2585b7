"""The showcase in a real browser: two people, A and B, on one running showcase.

Each test opens pages in two independent browser contexts (Chromium, with the Datastar
that the showcase serves), acts as one person and checks what the other, or both, see.
Requests are counted only where the scenario is about requests. The fixtures
(`tests.e2e.conftest`) fail a test on any console error or uncaught error of any page,
and on any ERROR the server logs.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Final
from urllib.parse import parse_qs, urlsplit

import pytest
from examples.showcase.sqlite_store import SqliteStore
from playwright.async_api import expect

from streamui.broker import POINT
from streamui.components import MERGE_TOKENS_OVER
from tests.e2e.conftest import SEE, SET_HIDDEN, STREAM_PATH
from tests.support import revision_of

if TYPE_CHECKING:
    from collections.abc import Callable

    from playwright.async_api import Locator, Page, Request, Response, Route

    from tests.e2e.conftest import Launch, People, Person, Running

pytestmark = pytest.mark.timeout(90)

ROOT: Final = Path(__file__).resolve().parents[2]
SCREENSHOT: Final = ROOT / "build" / "screenshots" / "showcase.png"
RECONNECT: Final = 30_000
"""Milliseconds to wait for a tab to reconnect by itself: Datastar's retry backoff
grows to seconds."""
DEMO_INVOICES: Final = 10
OUTAGE_ERRORS: Final = (
    # Chromium, for each failed attempt to reach the stream:
    rf"Failed to load resource: net::ERR_\w+ \(http://127\.0\.0\.1:\d+{STREAM_PATH}\?",
    # Datastar, for each failed attempt (the fetch's error, then its retry plan):
    r"console error: Failed to fetch \(",
    rf"Datastar failed to reach http://127\.0\.0\.1:\d+{STREAM_PATH}\?\S* retrying in \d+ms",
)


# -- what a person sees and does ---------------------------------------------------------


def big_number(page: Page, card: str) -> Locator:
    return page.locator(f"#{card} .big-number")


def invoice_row(page: Page, invoice_id: int) -> Locator:
    return page.locator(f"#invoice-row-{invoice_id}")


def activity(page: Page) -> Locator:
    return page.locator("#activity")


async def open_dashboard(showcase: Running, *persons: Person) -> None:
    for person in persons:
        await person.open(showcase.url + "/")


async def add_invoice(person: Person, customer: str, amount: str) -> None:
    form = person.page.locator("#invoice-form")
    await form.get_by_label("Customer").fill(customer)
    await form.get_by_label("Amount").fill(amount)
    await form.get_by_role("button", name="Add invoice").click()


def paths(requests: list[Request]) -> list[str]:
    return [urlsplit(request.url).path for request in requests]


def is_stream_request(request: Request) -> bool:
    return urlsplit(request.url).path == STREAM_PATH


def stream_with_tokens(count: int) -> Callable[[Response], bool]:
    """Matches the response of a stream request that carries *count* tokens."""

    def matches(response: Response) -> bool:
        url = urlsplit(response.url)
        return url.path == STREAM_PATH and len(parse_qs(url.query).get("t", [])) == count

    return matches


def fragment(path: str) -> Callable[[Response], bool]:
    """Matches the response of a component's reload from *path*."""

    def matches(response: Response) -> bool:
        return urlsplit(response.url).path == path

    return matches


# -- scenarios ---------------------------------------------------------------------------


async def test_a_clicks_the_shared_counter_and_b_sees_it(showcase: Running, people: People) -> None:
    a, b = people.a, people.b
    await open_dashboard(showcase, a, b)
    await expect(big_number(b.page, "counter")).to_have_text("0")

    await a.page.get_by_role("button", name="+1").click()
    await expect(big_number(b.page, "counter")).to_have_text("1")
    await expect(big_number(a.page, "counter")).to_have_text("1")

    await a.page.get_by_role("button", name="+1").click()
    await expect(big_number(b.page, "counter")).to_have_text("2")
    await b.page.get_by_role("button", name="Reset").click()
    await expect(big_number(a.page, "counter")).to_have_text("0")


async def test_an_invoice_added_in_a_reaches_the_list_and_the_count_in_b(
    showcase: Running, people: People
) -> None:
    a, b = people.a, people.b
    await open_dashboard(showcase, a, b)
    await expect(big_number(b.page, "invoice-count")).to_have_text(str(DEMO_INVOICES))
    new_id = DEMO_INVOICES + 1
    await expect(invoice_row(b.page, new_id)).to_have_count(0)

    await add_invoice(a, "  Oscorp   Industries ", "1234.5")

    # Two components watch invoices:all in B: one invalidation, both reload.
    row = invoice_row(b.page, new_id)
    await expect(row).to_contain_text("Oscorp Industries")
    await expect(row).to_contain_text("$1,234.50")
    await expect(row.locator(".badge")).to_have_text("Unpaid")
    await expect(big_number(b.page, "invoice-count")).to_have_text(str(DEMO_INVOICES + 1))
    await expect(b.page.locator("#invoice-count")).to_contain_text("8 unpaid")
    # A sees it too, and A's form is empty again for the next invoice.
    await expect(invoice_row(a.page, new_id)).to_contain_text("Oscorp Industries")
    await expect(a.page.locator("#invoice-form").get_by_label("Customer")).to_have_value("")


async def test_the_activity_card_reloads_on_each_of_its_two_scopes_every_time(
    showcase: Running, people: People
) -> None:
    a, b = people.a, people.b
    await open_dashboard(showcase, a, b)
    await expect(activity(a.page)).to_contain_text(f"billed in {DEMO_INVOICES} invoices")
    with a.requests() as requests:
        for round_ in (1, 2):
            # counter:shared only (the +1 handler invalidates nothing else)
            async with a.page.expect_response(fragment("/fragments/activity")):
                await b.page.get_by_role("button", name="+1").click()
            await expect(activity(a.page)).to_contain_text(f"Counter at {round_} ·")
            await expect(activity(a.page)).to_contain_text(f"Counter went up to {round_}")

            # invoices:all only
            async with a.page.expect_response(fragment("/fragments/activity")):
                await add_invoice(b, f"Round {round_} Ltd", f"{round_}.00")
            await expect(activity(a.page)).to_contain_text(
                f"Invoice #{DEMO_INVOICES + round_} for Round {round_} Ltd, ${round_}.00"
            )
            await expect(activity(a.page)).to_contain_text(
                f"billed in {DEMO_INVOICES + round_} invoices"
            )
    # Exactly one reload per invalidation: a revision per push, nothing resets.
    assert paths(requests).count("/fragments/activity") == 4, paths(requests)


async def test_an_invalidation_nobody_watches_makes_no_request(
    showcase: Running, people: People
) -> None:
    a, b = people.a, people.b
    await open_dashboard(showcase, a, b)
    with a.requests() as seen_by_a, b.requests() as seen_by_b:
        await showcase.broker.invalidate("nobody:watches")
        # The clock's push follows on the same streams, so a request caused by the first
        # invalidation would have been made before the clock's reload.
        async with (
            a.page.expect_response(fragment("/fragments/clock")),
            b.page.expect_response(fragment("/fragments/clock")),
        ):
            await showcase.broker.invalidate("clock")
    assert paths(seen_by_a) == ["/fragments/clock"]
    assert paths(seen_by_b) == ["/fragments/clock"]


async def test_rows_loaded_later_join_the_stream_and_reload_when_paid(
    showcase: Running, people: People
) -> None:
    a, b = people.a, people.b
    await open_dashboard(showcase, a, b)
    # "Load older invoices" brings rows 6..3, each watching invoice:<id>; their
    # JoinStream makes A's tab open its stream again with a second token, and abort the
    # first: one stream per tab.
    async with (
        a.page.expect_response(stream_with_tokens(2)) as rejoined,
        a.page.expect_event("requestfailed", is_stream_request) as aborted,
    ):
        await a.page.get_by_role("button", name="Load older invoices").click()
    assert (await rejoined.value).status == 200
    old_stream = await aborted.value
    assert len(parse_qs(urlsplit(old_stream.url).query)["t"]) == 1
    assert old_stream.failure == "net::ERR_ABORTED"
    for invoice_id in (6, 5, 4, 3):
        await expect(invoice_row(a.page, invoice_id)).to_be_visible()
    await expect(invoice_row(a.page, 5).locator(".badge")).to_have_text("Unpaid")
    await expect(invoice_row(a.page, 4).locator(".badge")).to_have_text("Unpaid")

    # B pays #5 on its detail page; A's row reloads by itself.
    await b.open(f"{showcase.url}/invoices/5")
    async with a.page.expect_response(fragment("/fragments/invoices/5/row")):
        await b.page.get_by_role("button", name="Mark paid").click()
    await expect(invoice_row(a.page, 5).locator(".badge")).to_have_text("Paid")
    await expect(b.page.locator("#invoice-detail")).to_contain_text("Paid")

    # Again, for another row: B pays #4 from its own "load more" rows.
    await open_dashboard(showcase, b)
    await b.page.get_by_role("button", name="Load older invoices").click()
    async with a.page.expect_response(fragment("/fragments/invoices/4/row")):
        await invoice_row(b.page, 4).get_by_role("button", name="Mark paid").click()
    await expect(invoice_row(a.page, 4).locator(".badge")).to_have_text("Paid")
    await expect(invoice_row(a.page, 5).locator(".badge")).to_have_text("Paid")
    await expect(invoice_row(a.page, 6).locator(".badge")).to_have_text("Paid")


async def test_open_pages_reconnect_after_a_restart_and_show_the_new_data(
    launch: Launch, people: People, tmp_path: Path
) -> None:
    # The data lives in a file, so it outlives the server, like a database would.
    database = tmp_path / "showcase.db"
    a, b = people.a, people.b
    first = await launch(database=database)
    await open_dashboard(first, a, b)
    await expect(big_number(a.page, "counter")).to_have_text("0")

    # While the server is down, each tab's stream retries and fails, and the browser
    # says so on the console: expected here, and only here.
    with people.console.tolerating(*OUTAGE_ERRORS), a.requests() as requests:
        # Down long enough for both tabs to find the server gone (a refused retry).
        async with (
            a.page.expect_event("requestfailed", is_stream_request, timeout=RECONNECT),
            b.page.expect_event("requestfailed", is_stream_request, timeout=RECONNECT),
        ):
            await first.stop()
            with SqliteStore(database) as store:
                store.increment()
                store.increment()
                store.add_invoice("Back Again Ltd", 4_200)

        # Same port, same secret: the tabs' tokens are still good. Each tab comes back
        # saying where it stood (since=, the last event its browser saw), and the new
        # process, which cannot know what changed before it started, pushes every scope.
        await launch(port=first.port, database=database)
        for person in (a, b):
            page = person.page
            await expect(big_number(page, "counter")).to_have_text("2", timeout=RECONNECT)
            await expect(invoice_row(page, DEMO_INVOICES + 1)).to_contain_text(
                "Back Again Ltd", timeout=RECONNECT
            )
            await expect(big_number(page, "invoice-count")).to_have_text(
                str(DEMO_INVOICES + 1), timeout=RECONNECT
            )
            await expect(activity(page)).to_contain_text("Counter at 2 ·", timeout=RECONNECT)
    # Every attempt to reconnect (the failed ones included) said where the tab stood.
    attempts = [request for request in requests if is_stream_request(request)]
    assert len(attempts) >= 2, [request.url for request in attempts]
    for attempt in attempts:
        since = parse_qs(urlsplit(attempt.url).query).get("since", [""])
        assert POINT.fullmatch(since[0]), attempt.url

    # And the reconnected streams carry new invalidations as before.
    await b.page.get_by_role("button", name="+1").click()
    await expect(big_number(a.page, "counter")).to_have_text("3")


async def test_a_change_between_render_and_connect_is_not_lost(
    showcase: Running, people: People
) -> None:
    a, b = people.a, people.b
    await open_dashboard(showcase, a)
    # Hold B's stream request until A has changed the counter: B's page was rendered
    # before the change, its stream subscribes after it.
    held: asyncio.Queue[Route] = asyncio.Queue()
    await b.page.route(f"**{STREAM_PATH}?*", held.put)
    await b.page.goto(showcase.url + "/")
    await expect(big_number(b.page, "counter")).to_have_text("0")
    route = await asyncio.wait_for(held.get(), SEE / 1000)
    async with a.page.expect_response(fragment("/fragments/counter")):
        await a.page.get_by_role("button", name="+1").click()
    await route.continue_()
    await b.page.unroute(f"**{STREAM_PATH}?*")
    await expect(big_number(b.page, "counter")).to_have_text("1")


async def test_a_hidden_tab_catches_up_when_it_is_shown_again(
    showcase: Running, people: People
) -> None:
    a, b = people.a, people.b
    await open_dashboard(showcase, a, b)
    # A stream closes a few seconds after every tab of the browser is hidden and opens
    # again when one is shown; headless pages are never hidden, so say so the way the
    # browser does.
    async with a.page.expect_event("requestfailed", is_stream_request):
        await a.page.evaluate(SET_HIDDEN, True)
    with a.requests() as requests:
        await b.page.get_by_role("button", name="+1").click()
        await expect(big_number(b.page, "counter")).to_have_text("1")
        await add_invoice(b, "While Hidden Ltd", "5")
        await expect(invoice_row(b.page, DEMO_INVOICES + 1)).to_contain_text("While Hidden Ltd")
    assert paths(requests) == []  # A missed both while hidden
    await expect(big_number(a.page, "counter")).to_have_text("0")

    async with a.page.expect_response(stream_with_tokens(1)) as reopened:
        await a.page.evaluate(SET_HIDDEN, False)
    # It asks to catch up from the last event the tab saw (an event id of the server's).
    since = parse_qs(urlsplit((await reopened.value).url).query).get("since", [""])
    assert revision_of(since[0]) > 0
    await expect(big_number(a.page, "counter")).to_have_text("1")
    await expect(invoice_row(a.page, DEMO_INVOICES + 1)).to_contain_text("While Hidden Ltd")


async def test_a_tab_stays_live_after_many_load_more(showcase: Running, people: People) -> None:
    """Each "load more" adds a stream token; the stream merges them once there are more
    than MERGE_TOKENS_OVER, so the tab's URL stays short and under max_tokens (16)."""
    a, b = people.a, people.b
    # 60 invoices: the newest 4, then 14 pages of 4 older ones (3 + 56 scopes <= 64).
    for n in range(50):
        added = await b.context.request.post(
            showcase.url + "/invoices", form={"customer": f"Customer {n}", "amount": "1"}
        )
        assert added.status == 204
    await open_dashboard(showcase, a, b)
    most_tokens = 0

    def count_tokens(response: Response) -> None:
        nonlocal most_tokens
        url = urlsplit(response.url)
        if url.path == STREAM_PATH:
            assert response.status == 200, f"stream refused: {response.status}"
            most_tokens = max(most_tokens, len(parse_qs(url.query).get("t", [])))

    a.page.on("response", count_tokens)
    for load in range(1, 15):
        await a.page.get_by_role("button", name="Load older invoices").click()
        # Each load brings the next 4 older rows: 56..53, then 52..49, ..., 4..1.
        await expect(invoice_row(a.page, 57 - 4 * load)).to_be_visible()
    await expect(a.page.get_by_role("button", name="Load older invoices")).to_have_count(0)
    assert most_tokens <= MERGE_TOKENS_OVER + 1
    # Still live: the counter, and one of the oldest rows, which joined last.
    await b.page.get_by_role("button", name="+1").click()
    await expect(big_number(a.page, "counter")).to_have_text("1")
    await b.open(f"{showcase.url}/invoices/1")
    await b.page.get_by_role("button", name="Mark paid").click()
    await expect(invoice_row(a.page, 1).locator(".badge")).to_have_text("Paid")


async def test_screenshot_of_the_showcase(showcase: Running, people: People) -> None:
    """Takes build/screenshots/showcase.png (the README's picture comes from it)."""
    a, b = people.a, people.b
    await open_dashboard(showcase, a, b)
    for count in ("1", "2", "3"):
        await b.page.get_by_role("button", name="+1").click()
        await expect(big_number(a.page, "counter")).to_have_text(count)
    await add_invoice(b, "Oscorp Industries", "1234.50")
    await expect(invoice_row(a.page, DEMO_INVOICES + 1)).to_contain_text("Oscorp Industries")
    async with a.page.expect_response(stream_with_tokens(2)):
        await a.page.get_by_role("button", name="Load older invoices").click()
    await b.open(f"{showcase.url}/invoices/7")
    await b.page.get_by_role("button", name="Mark paid").click()
    await expect(invoice_row(a.page, 7).locator(".badge")).to_have_text("Paid")
    await expect(activity(a.page)).to_contain_text("Invoice #7 paid by Wayne Enterprises")

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    await a.page.screenshot(path=SCREENSHOT, full_page=True, animations="disabled")
    assert SCREENSHOT.stat().st_size > 10_000
