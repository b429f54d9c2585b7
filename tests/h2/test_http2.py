"""streamui served over HTTP/2, where the browser's six-connections-per-host limit of
HTTP/1.1 does not apply.

Over HTTP/1.1 each open tab's stream holds one of the (at most six) connections Chromium
opens to a host, for as long as the tab is open. Over HTTP/2 one connection carries all
of a browser's requests to the host, the streams included. The app is served by a real
hypercorn with TLS (``h2`` negotiated by ALPN), the tabs are pages of one Chromium
context (one profile, so one connection pool), and every tab is visible.

`test_shared_stream_across_tabs_over_http2` tests the default mode
(``share_across_tabs=True``, one stream per browser); it is marked ``shared_tabs`` and
expects the shared-mode JavaScript.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final

import pytest
from playwright.async_api import expect

from tests.h2.conftest import STREAM_PATH, WAIT

if TYPE_CHECKING:
    from tests.h2.conftest import AppServer, Serve, Tab, Tabs

SCOPE: Final = "h2"
TABS: Final = 10
HTTP1_LIMIT: Final = 6
"""Chromium's connections per host (per profile) over HTTP/1.1."""
OBSERVE: Final = 3.0
"""Seconds to watch for something that must NOT happen (a request reaching the server).
On loopback a free connection serves a request in milliseconds; a request still
missing after this long is waiting for a connection, and would wait for ever."""


def page_url(server: AppServer, tab: Tab) -> str:
    return f"{server.base_url}/page?scope={SCOPE}&tab={tab.number}"


async def assert_updated(tab: Tab) -> None:
    await expect(tab.page.locator("#watch-0")).to_have_text("component 0", timeout=WAIT * 1000)


async def open_tabs(tabs: Tabs, server: AppServer, count: int) -> list[Tab]:
    """Open *count* tabs one after the other, each until its stream has answered."""
    opened = []
    for _ in range(count):
        tab = await tabs.new()
        await tab.open(page_url(server, tab))
        opened.append(tab)
    return opened


async def test_page_and_stream_over_http2(serve: Serve, tabs: Tabs) -> None:
    """The page, Datastar, the stream and the re-fetched component all travel over h2."""
    server = await serve(tls=True, share_across_tabs=False)
    (tab,) = await open_tabs(tabs, server, 1)
    await server.until_streams(1)

    assert await tab.navigation_protocol() == "h2"
    (stream,) = tab.stream_responses()
    assert stream.protocol == "h2", tab.responses
    await server.invalidate(SCOPE)
    await assert_updated(tab)

    assert {seen.protocol for seen in tab.responses} == {"h2"}, tab.responses
    counts = await server.counts()
    assert {request["http_version"] for request in counts.from_browser} == {"2"}, (
        counts.from_browser
    )
    paths = {request["path"] for request in counts.from_browser}
    assert {"/page", "/static/datastar.js", STREAM_PATH, "/component/0"} <= paths, paths


async def test_ten_tabs_with_a_stream_each_over_http2(serve: Serve, tabs: Tabs) -> None:
    """Ten visible tabs, each with its own stream: all load, the server holds ten
    streams at once, and one invalidation updates every tab. Over HTTP/1.1 the seventh
    tab would wait for a connection (see the contrast test below)."""
    server = await serve(tls=True, share_across_tabs=False)
    opened = await open_tabs(tabs, server, TABS)

    counts = await server.until_streams(TABS)
    for tab in opened:
        assert await tab.visibility() == "visible", tab.number
        assert await tab.navigation_protocol() == "h2", tab.number
        assert [seen.protocol for seen in tab.stream_responses()] == ["h2"], tab.responses
    streams = counts.to(STREAM_PATH)
    assert len(streams) == TABS, streams
    assert {request["http_version"] for request in streams} == {"2"}, streams

    await server.invalidate(SCOPE)
    await asyncio.gather(*(assert_updated(tab) for tab in opened))

    counts = await server.counts()
    assert counts.watchers == TABS  # still all open
    assert len(counts.to("/component/0")) == TABS, counts.to("/component/0")
    assert {request["http_version"] for request in counts.from_browser} == {"2"}, (
        counts.from_browser
    )
    # One connection for every tab: Chromium's and hypercorn's view of it agree.
    connections = {seen.connection_id for tab in opened for seen in tab.responses}
    assert len(connections) == 1, connections
    ports = {request["client_port"] for request in counts.from_browser}
    assert len(ports) == 1, ports


async def test_seven_tabs_with_a_stream_each_stall_over_http1(serve: Serve, tabs: Tabs) -> None:
    """Contrast: the same app and browser over plain HTTP/1.1 (hypercorn without TLS).

    Six tabs hold Chromium's six connections with their streams. A seventh tab's page
    request never reaches the server, and after an invalidation the six tabs' component
    re-fetches do not either, so no tab updates. Closing two tabs frees two connections,
    and everything that waited goes through: the seventh tab's stream takes one of them
    again, the other serves the rest. (Closing only one tab is not enough in every run:
    the seventh tab's stream may get the freed connection before the re-fetches do, and
    the re-fetches left then wait for ever.)
    """
    server = await serve(tls=False, share_across_tabs=False)
    six = await open_tabs(tabs, server, HTTP1_LIMIT)
    await server.until_streams(HTTP1_LIMIT)
    assert await six[0].navigation_protocol() == "http/1.1"

    seventh = await tabs.new()
    url = page_url(server, seventh)
    loading = asyncio.create_task(seventh.page.goto(url, timeout=(OBSERVE + 4 * WAIT) * 1000))
    try:
        async with asyncio.timeout(WAIT):
            await seventh.until_requested(url)  # the browser has asked for the page
        await server.invalidate(SCOPE)
        # Every stream got the event: each of the six tabs has asked for its component.
        async with asyncio.timeout(WAIT):
            for tab in six:
                await tab.until_requested("/component/0")
        await asyncio.sleep(OBSERVE)  # watching for requests that must not arrive

        counts = await server.counts()
        assert counts.watchers == HTTP1_LIMIT
        assert [r for r in counts.to("/page") if f"tab={seventh.number}" in r["query"]] == []
        assert counts.to("/component/0") == []
        assert not loading.done()
        for tab in six:
            await expect(tab.page.locator("#watch-0")).to_have_text("watching h2")

        # Two connections freed: the seventh page loads and the other tabs update.
        closed, remaining = six[:2], six[2:]
        for tab in closed:
            await tab.page.close()
        await loading
        await asyncio.gather(*(assert_updated(tab) for tab in remaining))
        # Tabs 3-7: the first two tabs' streams have ended, the seventh's is open.
        await server.until(
            "the seventh tab's stream instead of the first two",
            lambda counts: (
                counts.watchers == HTTP1_LIMIT - 1
                and len(counts.to(STREAM_PATH)) == HTTP1_LIMIT + 1
            ),
        )
        assert {r["http_version"] for r in (await server.counts()).from_browser} == {"1.1"}
    finally:
        if not loading.done():
            loading.cancel()
        await asyncio.gather(loading, return_exceptions=True)


@pytest.mark.shared_tabs
async def test_shared_stream_across_tabs_over_http2(serve: Serve, tabs: Tabs) -> None:
    """The default mode (``share_across_tabs=True``): the ten tabs of one browser share
    one stream, and one invalidation still updates every tab. Needs the shared-mode
    JavaScript; run it with ``pytest -m shared_tabs tests/h2``."""
    server = await serve(tls=True, share_across_tabs=True)
    opened = []
    for _ in range(TABS):
        tab = await tabs.new()
        await tab.page.goto(page_url(server, tab))
        opened.append(tab)
    for tab in opened:
        assert await tab.visibility() == "visible", tab.number
        assert await tab.navigation_protocol() == "h2", tab.number
    await server.until_streams(1)

    await server.invalidate(SCOPE)
    await asyncio.gather(*(assert_updated(tab) for tab in opened))

    counts = await server.counts()
    assert counts.watchers == 1
    assert {request["http_version"] for request in counts.from_browser} == {"2"}, (
        counts.from_browser
    )
