"""The showcase app, served by a real uvicorn: pages, fragments, actions and their pushes.

Each test starts `examples.showcase.create_app` on a free port and talks to it with
httpx the way a tab does: it renders a page, opens the stream with the tokens the page
carries, clicks (POSTs) and reads the ``datastar-patch-signals`` events. The fixture
checks after every test that the server never answered 5xx and nothing logged an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import socket
import sys
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import httpx
import pytest
from examples.showcase import create_app
from examples.showcase.app import DATASTAR_ENV, DATASTAR_LOCAL_PATH
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from streamui import DATASTAR_CDN_URL, Broker, TokenSigner
from tests.support import WAIT, Event, SSEReader, revision_of, serve, stream_path, stream_tokens

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
SECRET = "showcase-tests-secret-0123456789"
QUIET = 3600.0
"""A clock interval that never ticks during a test, so no push but the expected arrives."""
DEMO_INVOICES = 10
WATCHED_LOGGERS = ("uvicorn.error", "litestar", "streamui", "examples.showcase")


# -- reading HTML --------------------------------------------------------------------------


class _Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[dict[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append({"<tag>": tag, **{name: value or "" for name, value in attrs}})


def elements(document: str) -> list[dict[str, str]]:
    """Every element's attributes (unescaped), in document order; the tag under "<tag>"."""
    parser = _Elements()
    parser.feed(document)
    parser.close()
    return parser.found


def by_id(document: str, element_id: str) -> dict[str, str]:
    matches = [element for element in elements(document) if element.get("id") == element_id]
    assert len(matches) == 1, f"{len(matches)} elements with id {element_id!r}"
    return matches[0]


def root_id(fragment: str) -> str:
    """The id of a fragment's root element (what Datastar morphs it into)."""
    return elements(fragment)[0]["id"]


def watch_urls(document: str) -> dict[str, str]:
    """``{element id: the URL its data-effect re-fetches}`` for every Watch element."""
    urls = {}
    for element in elements(document):
        if "data-effect" in element and "id" in element and element["id"] != "streamui-connect":
            match = re.search(r'@get\(\((".*?")\)\)', element["data-effect"])
            assert match, element
            urls[element["id"]] = json.loads(match.group(1))
    return urls


def actions(document: str, method: str) -> list[str]:
    """The URLs of the ``@get``/``@post`` actions of the buttons, in document order."""
    urls = []
    for element in elements(document):
        for name, value in element.items():
            if element["<tag>"] == "button" and name.startswith("data-on:click"):
                match = re.search(rf'@{method}\((".*?")', value)
                if match:
                    urls.append(json.loads(match.group(1)))
    return urls


def load_more(document: str) -> str:
    [url] = [url for url in actions(document, "get") if url.startswith("/fragments/invoices/older")]
    return url


def scopes_of(token: str) -> tuple[str, ...]:
    return TokenSigner(SECRET).verify(token).scopes


# -- a running showcase --------------------------------------------------------------------


@dataclass
class Stream:
    """An open stream (200, opening id-only frame read) of one simulated tab."""

    reader: SSEReader
    opening_id: int
    last_revision: int = 0

    async def push(self) -> tuple[int, dict[str, int]]:
        """The next event: a well-formed push, newer than every earlier one."""
        event = await self.reader.next_event()
        revisions = check_push(event)
        revision = revision_of(event.id)
        assert revision > self.opening_id, (event, self.opening_id)
        assert revision > self.last_revision, (event, self.last_revision)
        self.last_revision = revision
        return revision, revisions

    async def push_for(self, key: str, allowed: set[str]) -> dict[str, int]:
        """Read pushes until one carries *key*; changes may coalesce, but only *allowed*
        keys may arrive."""
        while True:
            _, revisions = await self.push()
            assert set(revisions) <= allowed, (revisions, allowed)
            if key in revisions:
                return revisions


def check_push(event: Event) -> dict[str, int]:
    """Check that *event* is exactly a push: patch-signals with ``{"_stream": {key:
    revision}}``, every key at the revision the ``id:`` names. Return the keys."""
    assert event.event == "datastar-patch-signals", event
    assert event.id is not None, event
    assert revision_of(event.id) >= 0, event
    signals = event.signals
    assert list(signals) == ["_stream"], signals
    revisions: dict[str, int] = signals["_stream"]
    assert revisions, event
    assert all(value == revision_of(event.id) for value in revisions.values()), event
    return revisions


@dataclass
class Showcase:
    client: httpx.AsyncClient

    async def html(self, url: str, status: int = 200) -> str:
        response = await self.client.get(url)
        assert response.status_code == status, (url, response.status_code, response.text)
        assert response.headers["content-type"].startswith("text/html"), response.headers
        return response.text

    async def click(self, url: str, **form: str) -> None:
        """A Datastar ``@post``: 204 and no body; the news comes through the streams."""
        response = await self.client.post(url, data=form or None)
        assert response.status_code == 204, (url, response.status_code, response.text)
        assert response.content == b""

    @contextlib.asynccontextmanager
    async def stream(self, page: str, *more_tokens: str) -> AsyncIterator[Stream]:
        """Open the stream that *page*'s Connect() opens (plus JoinStream tokens)."""
        tokens = [*stream_tokens(page), *more_tokens]
        async with self.client.stream(
            "GET", stream_path(page), params={"t": tokens}, timeout=httpx.Timeout(WAIT, read=None)
        ) as response:
            assert response.status_code == 200, await response.aread()
            reader = SSEReader(response)
            opening = await reader.next()
            assert opening.event is None, opening
            assert opening.id is not None, opening
            yield Stream(reader, revision_of(opening.id))


class Start(Protocol):
    async def __call__(self, **options: Any) -> Showcase: ...


@pytest.fixture
async def start(caplog: pytest.LogCaptureFixture) -> AsyncIterator[Start]:
    """Start the showcase (``create_app(**options)``) under uvicorn; check it afterwards."""
    caplog.set_level(logging.WARNING)
    statuses: list[tuple[str, int]] = []

    async def record(response: httpx.Response) -> None:
        statuses.append((str(response.request.url), response.status_code))

    async with contextlib.AsyncExitStack() as stack:

        async def start_app(**options: Any) -> Showcase:
            options.setdefault("secret", SECRET)
            options.setdefault("tick_interval", QUIET)
            base = await stack.enter_async_context(serve(create_app(**options)))
            client = await stack.enter_async_context(
                httpx.AsyncClient(base_url=base, timeout=WAIT, event_hooks={"response": [record]})
            )
            return Showcase(client)

        yield start_app
    assert [entry for entry in statuses if entry[1] >= 500] == []
    errors = [
        record
        for record in caplog.records
        if record.levelno >= logging.ERROR and record.name.startswith(WATCHED_LOGGERS)
    ]
    assert errors == []


# -- pages and fragments -------------------------------------------------------------------


async def test_dashboard_renders_every_component_and_one_stream(start: Start) -> None:
    showcase = await start()
    page = await showcase.html("/")
    assert '<meta name="viewport"' in page
    assert f'<script type="module" src="{DATASTAR_CDN_URL}">' in page
    for element_id in ("counter", "invoice-count", "clock", "activity", "invoice-form"):
        by_id(page, element_id)
    # Connect() is last in <body>, after every Watch, with one token for all their scopes;
    # inside it, the module that shares the stream between the browser's tabs.
    *_, connect, module = elements(page)
    assert connect["id"] == "streamui-connect"
    assert module["<tag>"] == "script"
    assert module["type"] == "module"
    assert re.fullmatch(r"/streamui/stream\.[0-9a-f]{12}\.js", module["src"])
    [token] = stream_tokens(page)
    assert set(scopes_of(token)) == {"counter:shared", "invoices:all", "clock"}
    # The newest invoices are listed, newest first.
    rows = [e["id"] for e in elements(page) if e.get("id", "").startswith("invoice-row-")]
    assert rows == [f"invoice-row-{n}" for n in range(DEMO_INVOICES, DEMO_INVOICES - 4, -1)]


async def test_every_watch_url_answers_with_the_same_component(start: Start) -> None:
    showcase = await start()
    for page_url in ("/", "/invoices/1"):
        urls = watch_urls(await showcase.html(page_url))
        assert urls
        for element_id, url in urls.items():
            fragment = await showcase.html(url)
            assert root_id(fragment) == element_id, (url, fragment[:200])
            # A fragment is one element: Datastar morphs it in by that id.
            assert watch_urls(fragment).get(element_id) == url


async def test_activity_watches_two_scopes(start: Start) -> None:
    showcase = await start()
    page = await showcase.html("/")
    effect = by_id(page, "activity")["data-effect"]
    assert "$_stream.counter_shared" in effect
    assert "$_stream.invoices_all" in effect
    async with showcase.stream(page) as stream:
        await showcase.click("/counter/increment")
        assert await stream.push_for("counter_shared", {"counter_shared"}) == {
            "counter_shared": stream.last_revision
        }
        await showcase.click("/invoices", customer="Activity Ltd", amount="1")
        await stream.push_for("invoices_all", {"invoices_all"})
    activity = await showcase.html("/fragments/activity")
    assert "Counter at <strong>1</strong>" in activity
    assert "Counter went up to 1" in activity
    assert "Invoice #11 for Activity Ltd, $1.00" in activity


# -- actions and their pushes --------------------------------------------------------------


async def test_increment_pushes_counter_shared_to_every_tab(start: Start) -> None:
    showcase = await start()
    first_tab, second_tab = await showcase.html("/"), await showcase.html("/")
    async with showcase.stream(first_tab) as first, showcase.stream(second_tab) as second:
        await showcase.click("/counter/increment")
        for stream in (first, second):
            revision, revisions = await stream.push()
            assert revisions == {"counter_shared": revision}
        await showcase.click("/counter/increment")
        for stream in (first, second):
            before = stream.last_revision
            revision, revisions = await stream.push()
            assert revisions == {"counter_shared": revision}
            assert revision > before
    counter = await showcase.html("/fragments/counter")
    assert root_id(counter) == "counter"
    assert '<p class="big-number">2</p>' in counter
    await showcase.click("/counter/reset")
    assert '<p class="big-number">0</p>' in await showcase.html("/fragments/counter")


async def test_adding_an_invoice_reloads_the_list_and_the_count(start: Start) -> None:
    showcase = await start()
    page = await showcase.html("/")
    urls = watch_urls(page)
    async with showcase.stream(page) as stream:
        await showcase.click("/invoices", customer="  Oscorp   Industries ", amount="1234.5")
        revision, revisions = await stream.push()
        assert revisions == {"invoices_all": revision}
    newest = await showcase.html(urls["newest-invoices"])
    rows = [e["id"] for e in elements(newest) if e.get("id", "").startswith("invoice-row-")]
    assert rows[0] == f"invoice-row-{DEMO_INVOICES + 1}"
    assert "Oscorp Industries" in newest
    assert "$1,234.50" in newest
    count = await showcase.html(urls["invoice-count"])
    assert '<p class="big-number">11</p>' in count
    detail = await showcase.html(f"/invoices/{DEMO_INVOICES + 1}")
    assert "Oscorp Industries" in detail


async def test_marking_an_invoice_paid_pushes_its_scope(start: Start) -> None:
    showcase = await start()
    page = await showcase.html("/invoices/2")
    [token] = stream_tokens(page)
    assert scopes_of(token) == ("invoice:2",)
    detail_url = watch_urls(page)["invoice-detail"]
    assert "Unpaid" in await showcase.html(detail_url)
    [pay] = actions(page, "post")
    assert pay == "/invoices/2/pay"
    async with showcase.stream(page) as stream:
        await showcase.click(pay)
        revision, revisions = await stream.push()
        assert revisions == {"invoice_2": revision}
    detail = await showcase.html(detail_url)
    assert "Paid" in detail
    assert "Unpaid" not in detail
    assert "/invoices/2/pay" not in detail
    await showcase.click(pay)  # paying twice changes nothing and is no error


async def test_load_more_rows_join_the_stream_and_reload_by_themselves(start: Start) -> None:
    showcase = await start()
    page = await showcase.html("/")
    placeholder = next(e for e in elements(page) if e.get("id", "").startswith("invoices-before-"))
    older = await showcase.html(load_more(page))
    assert root_id(older) == placeholder["id"]
    rows = {
        element_id: url
        for element_id, url in watch_urls(older).items()
        if element_id.startswith("invoice-row-")
    }
    ids = [int(element_id.removeprefix("invoice-row-")) for element_id in rows]
    assert ids == [6, 5, 4, 3]
    for element_id, url in rows.items():
        assert root_id(await showcase.html(url)) == element_id
    # The fragment ends with JoinStream(): a token for exactly the new rows' scopes.
    [join_token] = stream_tokens(older)
    assert scopes_of(join_token) == tuple(f"invoice:{n}" for n in ids)
    unpaid = next(n for n in ids if n % 3)
    assert "Unpaid" in await showcase.html(rows[f"invoice-row-{unpaid}"])
    async with showcase.stream(page, join_token) as stream:
        await showcase.click(f"/invoices/{unpaid}/pay")
        revisions = await stream.push_for(
            f"invoice_{unpaid}", {f"invoice_{unpaid}", "invoices_all"}
        )
        assert set(revisions) >= {f"invoice_{unpaid}"}
    assert "Paid" in await showcase.html(rows[f"invoice-row-{unpaid}"])
    # The next "load more" is the last one.
    last = await showcase.html(load_more(older))
    assert list(watch_urls(last)) == ["invoice-row-2", "invoice-row-1"]
    assert scopes_of(stream_tokens(last)[0]) == ("invoice:2", "invoice:1")
    assert "That is all of them." in last
    assert actions(last, "get") == []
    # Asking past the oldest invoice answers with the placeholder, and no token.
    nothing = await showcase.html("/fragments/invoices/older?before=1")
    assert root_id(nothing) == "invoices-before-1"
    assert stream_tokens(nothing) == []


async def test_the_clock_is_pushed_by_a_background_task(start: Start) -> None:
    showcase = await start(tick_interval=0.2)
    page = await showcase.html("/")
    async with showcase.stream(page) as stream:
        revisions = await stream.push_for("clock", {"clock"})
        assert revisions == {"clock": stream.last_revision}
    assert "Tick #" in await showcase.html("/fragments/clock")


async def test_the_background_task_starts_and_stops_with_the_app() -> None:
    def clock_tasks() -> list[asyncio.Task[Any]]:
        return [task for task in asyncio.all_tasks() if task.get_name() == "showcase-clock"]

    async with Broker() as broker:
        app = create_app(broker=broker, secret=SECRET, tick_interval=QUIET)
        assert clock_tasks() == []
        async with serve(app):
            assert len(clock_tasks()) == 1
        assert clock_tasks() == []


# -- metrics -------------------------------------------------------------------------------


async def scrape(showcase: Showcase) -> dict[str, float]:
    """``GET /metrics``, parsed: every streamui sample by name (and labels)."""
    response = await showcase.client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = ",".join(f"{name}={value}" for name, value in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    assert all(name.startswith("streamui_") for name in samples), samples
    return samples


async def test_metrics_move_with_streams_and_invalidations(start: Start) -> None:
    showcase = await start()
    before = await scrape(showcase)
    assert before["streamui_open_streams"] == 0
    page = await showcase.html("/")
    async with showcase.stream(page) as stream:
        opened = await scrape(showcase)
        assert opened["streamui_open_streams"] == 1
        assert opened["streamui_catch_ups_total{reason=exact}"] == 1  # from the render
        await showcase.click("/counter/increment")
        await stream.push_for("counter_shared", {"counter_shared"})
        after = await scrape(showcase)
    assert after["streamui_open_streams"] == 1

    def moved(name: str) -> float:
        return after[name] - before[name]

    assert moved("streamui_invalidations_published_total") == 1
    assert moved("streamui_invalidations_received_total") == 1
    assert moved("streamui_frames_written_total") == 1
    assert moved("streamui_lag_seconds_count") == 1
    assert 0 <= moved("streamui_lag_seconds_sum") < WAIT
    assert after["streamui_lag_seconds_bucket{le=+Inf}"] == after["streamui_lag_seconds_count"]
    assert after["streamui_upstream_subscriptions"] == 1
    # A stream refused by the endpoint is counted by its reason.
    response = await showcase.client.get(stream_path(page))
    assert response.status_code == 400
    refused = (await scrape(showcase))["streamui_refused_streams_total{reason=missing_token}"]
    assert refused == before["streamui_refused_streams_total{reason=missing_token}"] + 1


# -- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("form", "reason"),
    [
        ({"customer": "", "amount": "10"}, "customer is required"),
        ({"customer": "   ", "amount": "10"}, "customer is required"),
        ({"amount": "10"}, "customer is required"),
        ({"customer": "x" * 81, "amount": "10"}, "at most 80"),
        ({"customer": "Acme"}, "amount is required"),
        ({"customer": "Acme", "amount": "ten"}, "amount must be a number like 12.50, got 'ten'"),
        ({"customer": "Acme", "amount": "NaN"}, "amount must be a number"),
        ({"customer": "Acme", "amount": "Infinity"}, "amount must be a number"),
        ({"customer": "Acme", "amount": "0"}, "amount must be positive"),
        ({"customer": "Acme", "amount": "-5"}, "amount must be positive"),
        ({"customer": "Acme", "amount": "1.234"}, "more than two decimals"),
        ({"customer": "Acme", "amount": "1e999999999"}, "at most $1,000,000.00"),
        ({"customer": "Acme", "amount": "9" * 50}, "amount must be a number"),
    ],
)
async def test_bad_invoice_form_is_a_400_with_the_reason(
    start: Start, form: dict[str, str], reason: str
) -> None:
    showcase = await start()
    response = await showcase.client.post("/invoices", data=form)
    assert response.status_code == 400
    assert reason in response.json()["detail"]
    count = await showcase.html("/fragments/invoice-count")
    assert f'<p class="big-number">{DEMO_INVOICES}</p>' in count


async def test_a_json_body_is_a_400_not_a_500(start: Start) -> None:
    showcase = await start()
    response = await showcase.client.post("/invoices", json={"customer": "A", "amount": "1"})
    assert response.status_code == 400


async def test_unknown_invoice_is_a_404(start: Start) -> None:
    showcase = await start()
    page = await showcase.html("/invoices/999", status=404)
    assert "There is no invoice #999." in page
    assert stream_tokens(page) == []  # nothing watched, so no stream
    for url in ("/fragments/invoices/999", "/fragments/invoices/999/row"):
        response = await showcase.client.get(url)
        assert response.status_code == 404
        assert response.json()["detail"] == "there is no invoice #999"
    response = await showcase.client.post("/invoices/999/pay")
    assert response.status_code == 404
    assert (await showcase.client.get("/invoices/not-a-number")).status_code == 404


# -- loading Datastar ----------------------------------------------------------------------


async def test_datastar_src_is_configurable(start: Start) -> None:
    showcase = await start(datastar_src="/assets/my-datastar.js")
    page = await showcase.html("/")
    assert '<script type="module" src="/assets/my-datastar.js">' in page


async def test_a_local_datastar_is_served_when_the_env_names_one(
    start: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = tmp_path / "datastar.js"
    local.write_text("export const datastar = 'local copy'\n")
    monkeypatch.setenv(DATASTAR_ENV, str(local))
    showcase = await start()
    page = await showcase.html("/")
    assert f'<script type="module" src="{DATASTAR_LOCAL_PATH}">' in page
    response = await showcase.client.get(DATASTAR_LOCAL_PATH)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert response.text == local.read_text()


def test_a_missing_local_datastar_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DATASTAR_ENV, str(tmp_path / "nope.js"))
    with pytest.raises(FileNotFoundError, match=r"STREAMUI_DATASTAR_JS=.*nope\.js.* is not a file"):
        create_app()


# -- the command a person runs -------------------------------------------------------------


async def test_python_dash_m_serves_the_showcase() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port), "PYTHONUNBUFFERED": "1"}
    env.pop(DATASTAR_ENV, None)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "examples.showcase",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    try:
        async with asyncio.timeout(WAIT):
            # uvicorn says so once it listens: wait for that line, not for a while.
            async for line in process.stderr:
                if f"Uvicorn running on http://127.0.0.1:{port}".encode() in line:
                    break
            else:
                raise AssertionError("the showcase exited before it listened")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            response = await client.get("/")
            assert response.status_code == 200
            assert "streamui showcase" in response.text
    finally:
        if process.returncode is None:
            process.terminate()
        stdout, stderr = await asyncio.wait_for(process.communicate(), WAIT)
    # uvicorn shuts down gracefully on SIGTERM, then exits by re-raising the signal.
    assert process.returncode in (0, -signal.SIGTERM), stderr.decode()
    assert b"Application shutdown complete." in stderr
    assert b"Traceback" not in stderr
    assert f"http://127.0.0.1:{port}".encode() in stdout
