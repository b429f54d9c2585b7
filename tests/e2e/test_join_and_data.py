"""Pages that bind ``_streamData``, pages that join later, and pages with too many scopes
(Chromium, Datastar 1.0.1, a real uvicorn).

- A binding such as ``data-text="$_streamData.note_1.msg"`` works from the first render
  (before any data arrived, Datastar threw on it and stopped setting up the page, its
  stream included), and shows the data an invalidation carries.
- A page that watches nothing still gets a stream once a "load more" fragment ending with
  `JoinStream()` brings scopes, with a shared stream and with a stream per tab, and
  requests no stream before that (a request without a token is a 400).
- A page with more scopes than ``max_scopes`` fails to render (a 500 naming
  `TooManyScopesError`) instead of rendering a page whose stream is refused; at the limit
  it works.

Every test fails on any console error or uncaught page error.
"""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import expect

from tests.e2e.conftest import Console, _serve, new_profile, wait_until
from tests.e2e.join_app import FIRST_INVOICE, JoinApp, make_join_app

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

    from playwright.async_api import Browser, Page, Request, Response

    from tests.e2e.conftest import Running

STREAM_PATH: Final = "/streamui/stream"

TWO_BEATS: Final = """(path) => new Promise((resolve) => {
    // The leader posts a beat every second and reconciles its stream right after:
    // two beats heard means it has looked at this tab's state at least once since.
    const channel = new BroadcastChannel("streamui:" + path);
    let beats = 0;
    channel.onmessage = (message) => {
        if (message.data?.type === "beat" && ++beats === 2) {
            channel.close();
            resolve(beats);
        }
    };
})"""


class Served:
    """The join app served by uvicorn, one browser page on it, and the stream requests
    that page made."""

    def __init__(self, state: JoinApp, running: Running, page: Page, console: Console) -> None:
        self.state = state
        self.running = running
        self.page = page
        self.console = console
        self.streams: list[Request] = []
        """Requests to the stream itself (not its module or merge endpoint)."""

    @property
    def url(self) -> str:
        return self.running.url

    async def until(self, what: str, condition: Callable[[], bool]) -> None:
        """Wait until *condition* holds on the server."""
        await wait_until(what, condition)

    def streaming(self, *scopes: str) -> Callable[[], bool]:
        """True once exactly one stream is open and it watches exactly *scopes*."""
        return lambda: self.state.watched() == [scopes]


@pytest.fixture(params=[True, False], ids=["shared", "per-tab"])
async def served(
    browser: Browser, datastar_file: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Served]:
    share: bool = request.param
    state = make_join_app(datastar_file, share=share)
    running = await _serve(state.app, state.broker, 0)
    console = Console()
    context = await new_profile(browser, console, "page")
    page = await context.new_page()
    result = Served(state, running, page, console)

    def record(sent: Request) -> None:
        if urlsplit(sent.url).path == STREAM_PATH:
            result.streams.append(sent)

    # Registered before the first navigation, so no request can be missed.
    page.on("request", record)
    try:
        yield result
    finally:
        with contextlib.suppress(Exception):
            await context.close()
        await running.stop()
    assert not console.errors, "\n".join(line[:300] for line in console.errors)


async def stream_opened(served: Served) -> Response:
    """The response of the (single) stream request the page made; must be a 200."""
    assert len(served.streams) == 1, [r.url[:120] for r in served.streams]
    response = await served.streams[0].response()
    assert response is not None
    assert response.status == 200
    return response


# -- (a) _streamData from the first render ------------------------------------------------


async def test_data_bindings_work_from_the_first_render(served: Served) -> None:
    page = served.page
    await page.goto(f"{served.url}/data")
    # Datastar set up the whole page: the element after the bindings, and the stream.
    await expect(page.locator("#ready")).to_have_text("ready")
    await served.until("the stream", served.streaming("note:1", "count:1", "notes:*"))
    # Before any data: a missing field of an object reads undefined (not an exception).
    await expect(page.locator("#msg")).to_have_text("undefined")
    await expect(page.locator("#msg-or-empty")).to_have_text("")
    await expect(page.locator("#count-data")).to_have_text("")
    await expect(page.locator("#notes-scope")).to_have_text("")

    await served.state.bump("note:1", data={"msg": "hello"})
    await expect(page.locator("#note .v")).to_have_text("note:1 1")
    await expect(page.locator("#msg")).to_have_text("hello")
    await expect(page.locator("#msg-or-empty")).to_have_text("hello")

    # A number, then the component reloads (its fragment carries the initial signals
    # again): the number stays.
    await served.state.bump("count:1", data=7)
    await expect(page.locator("#count .v")).to_have_text("count:1 1")
    await expect(page.locator("#count-data")).to_have_text("7")
    await served.state.bump("count:1")
    await expect(page.locator("#count .v")).to_have_text("count:1 2")
    await expect(page.locator("#count-data")).to_have_text("7")

    # A pattern's data names the scope that changed.
    await served.state.bump("notes:3", data={"msg": "third"})
    await expect(page.locator("#notes-scope")).to_have_text("notes:3")
    await expect(page.locator("#notes-msg")).to_have_text("third")
    await stream_opened(served)


# -- (b) a page that watches nothing joins when a fragment does -------------------------


async def test_a_page_that_watches_nothing_streams_once_a_fragment_joins(served: Served) -> None:
    page = served.page
    await page.goto(f"{served.url}/empty")
    connect = page.locator("#streamui-connect")
    await expect(page.locator("#ready")).to_have_text("ready")
    await expect(connect).to_be_attached()
    # streamui's module has read the empty state; shared, the tab leads (it is the only
    # one) and beats twice; per tab, it holds its own stream (a group of one).
    await expect(connect).to_have_attribute("data-streamui-state", "[{},[]]")
    shared = json.loads(await connect.get_attribute("data-streamui") or "{}")["share"]
    await expect(connect).to_have_attribute("data-streamui-role", "leader" if shared else "tab")
    if shared:
        assert await page.evaluate(TWO_BEATS, STREAM_PATH) == 2
    else:
        await page.wait_for_timeout(2 * 1000)  # as long as two beats: no request either
    assert served.streams == []
    assert served.state.watched() == []

    await page.locator("#more").click()
    await expect(page.locator("#row-1 .v")).to_have_text("row:1 0")
    await served.until("the stream for the joined row", served.streaming("row:1"))
    await served.state.bump("row:1")
    await expect(page.locator("#row-1 .v")).to_have_text("row:1 1")
    await served.state.bump("row:1")
    await expect(page.locator("#row-1 .v")).to_have_text("row:1 2")
    response = await stream_opened(served)
    assert "t=" in response.url


# -- (c) limits ------------------------------------------------------------------------------


async def test_a_page_over_the_scope_limit_fails_to_render(served: Served) -> None:
    async with httpx.AsyncClient(base_url=served.url) as client:
        over = await client.get("/many/65")
    assert over.status_code == 500
    assert "TooManyScopesError" in over.text
    assert "this page watches 65 scopes ('invoice:10000'" in over.text
    assert "StreamConfig(max_scopes=...)" in over.text

    # At the limit, the page streams and updates.
    page = served.page
    await page.goto(f"{served.url}/many/64")
    last = FIRST_INVOICE + 63
    await expect(page.locator("#ready")).to_have_text("ready")
    await served.until("the stream", lambda: len(served.state.watched()) == 1)
    assert len(served.state.watched()[0]) == 64
    await served.state.bump(f"invoice:{last}")
    await expect(page.locator(f"#invoice-{last} .v")).to_have_text(f"invoice:{last} 1")
    await stream_opened(served)
