"""The showcase, tested as an application's own suite would test it: with
`streamui.testing` (in-process, each test in milliseconds), not a server and a browser.

`tests/integration/test_showcase.py` covers the same app under a real server, byte by
byte; these read as its users' tests would: this action reloads those components.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from examples.showcase import create_app

from streamui.testing import LiveClient, broker_of, recorded_invalidations

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from litestar import Litestar

SECRET = "showcase-tests-secret-0123456789"
QUIET = 3600.0
"""A clock interval that never ticks during a test."""


@pytest.fixture
def app() -> Litestar:
    return create_app(secret=SECRET, tick_interval=QUIET)


@pytest.fixture
async def client(app: Litestar) -> AsyncIterator[LiveClient]:
    async with LiveClient(app) as client:
        yield client


async def test_incrementing_reloads_the_counter_and_the_activity(
    app: Litestar, client: LiveClient
) -> None:
    async with client.open_stream(await client.get("/")) as stream:
        with recorded_invalidations(broker_of(app)) as seen:
            assert (await client.post("/counter/increment")).status_code == 204
        change = await stream.next_change()
    assert seen.scopes == ["counter:shared"]
    assert change.scopes == {"counter:shared"}
    assert change.urls == ("/fragments/counter", "/fragments/activity")
    assert '<p class="big-number">1</p>' in (await client.get(change.urls[0])).text


async def test_paying_an_invoice_reloads_its_detail_page_and_every_list(
    app: Litestar, client: LiveClient
) -> None:
    detail = await client.get("/invoices/2")
    dashboard = await client.get("/")
    async with client.open_stream(detail) as on_detail, client.open_stream(dashboard) as on_list:
        with recorded_invalidations(broker_of(app)) as seen:
            assert (await client.post("/invoices/2/pay")).status_code == 204
        assert seen.scopes == ["invoice:2", "invoices:all"]
        detail_change = await on_detail.next_change()
        assert detail_change.scopes == {"invoice:2"}
        [detail_url] = detail_change.urls
        assert "Paid" in (await client.get(detail_url)).text
        # The dashboard watches the list, not the invoice: it reloads the list and count.
        changes = await on_list.expect("invoices:all")
        urls = {url for change in changes for url in change.urls}
        assert {"/fragments/invoice-count", "/fragments/activity"} <= urls
        assert any(url.startswith("/fragments/invoices?since=") for url in urls), urls
        assert "invoice:2" not in {value for change in changes for value in change.scopes}


async def test_rows_loaded_later_reload_by_themselves(client: LiveClient) -> None:
    page = await client.get("/")
    older = await client.get("/fragments/invoices/older?before=7")
    async with client.open_stream(page.text + older.text) as stream:
        assert (await client.post("/invoices/5/pay")).status_code == 204
        changes = await stream.expect("invoice:5")
    assert "/fragments/invoices/5/row" in {url for change in changes for url in change.urls}


async def test_a_bad_form_changes_nothing(app: Litestar, client: LiveClient) -> None:
    with recorded_invalidations(broker_of(app)) as seen:
        response = await client.post("/invoices", data={"customer": "", "amount": "1"})
    assert response.status_code == 400
    assert "customer is required" in response.text
    assert len(seen) == 0
