"""streamui.testing, as an application's tests use it: in-process, no server, no browser."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import pytest
from examples.fastapi_app import create_app as create_fastapi_app
from htpy import body, div, p
from litestar import Litestar, get, post
from litestar.di import NamedDependency  # noqa: TC002 - Litestar reads it at runtime
from litestar.response import Response

from streamui import Broker, Connect, JoinStream, StreamEndpoint, TokenSigner, Watch
from streamui.components import use_endpoint
from streamui.litestar import StreamConfig, StreamPlugin
from streamui.testing import (
    Invalidation,
    LiveClient,
    StreamRefusedError,
    _parse_page,
    broker_of,
    recorded_invalidations,
)
from tests.integration.test_readme import readme_code, readme_example

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

SECRET = "a test secret of enough bytes"


@pytest.fixture
async def readme() -> AsyncIterator[tuple[LiveClient, Any]]:
    example = readme_example()
    async with LiveClient(example["app"]) as client:
        yield client, example


async def test_the_readme_poll_pushes_a_vote_to_the_page_that_shows_the_tally(
    readme: tuple[LiveClient, Any],
) -> None:
    client, example = readme
    started = time.perf_counter()
    page = await client.get("/")
    assert "0 votes" in page.text
    async with client.open_stream(page) as stream:
        with recorded_invalidations(broker_of(example["app"])) as seen:
            assert (await client.post("/vote")).status_code == 204
        change = await stream.next_change()
        assert change.scopes == {"poll:1"}
        assert change.urls == ("/tally",)
        assert change.event_id is not None
        fragment = await client.get(change.urls[0])
        assert "1 votes" in fragment.text
    assert seen.scopes == ["poll:1"]
    assert "poll:1" in seen
    assert "poll:*" in seen
    assert "poll:2" not in seen
    # In-process: a render, a stream, a vote and a reload in well under a second (a
    # generous bound: the point is that no server or browser is involved).
    assert time.perf_counter() - started < 1.0


async def test_the_readme_testing_example_passes_as_written() -> None:
    namespace: dict[str, Any] = {"app": readme_example()["app"]}
    exec(readme_code("Testing your app"), namespace)
    await namespace["test_a_vote_reloads_the_tally"]()


async def test_nothing_is_pushed_for_a_scope_the_page_does_not_watch(
    readme: tuple[LiveClient, Any],
) -> None:
    client, example = readme
    broker = broker_of(example["app"])
    async with client.open_stream(await client.get("/")) as stream:
        await broker.invalidate("poll:2")
        await broker.invalidate("poll:1")  # after poll:2: its push proves poll:2 had none
        change = await stream.next_change()
        assert change.scopes == {"poll:1"}
        assert stream.received() == []


def _app(broker: Broker | None = None, **config: Any) -> Litestar:
    @get("/")
    async def index() -> Response[str]:
        page = body[
            Watch("invoice:*", "/invoices", id="invoices")[p["invoices"]],
            Watch(["invoice:1", "customer:7"], "/invoice/1", id="invoice")[p["one"]],
            Watch("customer:7", "/customer/7", id="customer")[p["customer"]],
            Connect(),
        ]
        return Response(str(page), media_type="text/html")

    @get("/more")
    async def more() -> Response[str]:
        fragment = div[Watch("row:9", "/row/9", id="row-9")[p["9"]], JoinStream()]
        return Response(str(fragment), media_type="text/html")

    @post("/pay", status_code=204)
    async def pay(broker: NamedDependency[Broker]) -> None:
        await broker.invalidate("invoice:1", data={"paid": True})

    return Litestar(
        [index, more, pay],
        plugins=[StreamPlugin(StreamConfig(secret=SECRET, broker=broker, **config))],
    )


async def test_a_change_names_the_watched_scopes_the_urls_that_reload_and_the_data() -> None:
    app = _app()
    async with LiveClient(app) as client, client.open_stream(await client.get("/")) as stream:
        assert (await client.post("/pay")).status_code == 204
        change = await stream.next_change()
    assert change.scopes == {"invoice:*", "invoice:1"}
    assert change.urls == ("/invoices", "/invoice/1")
    assert change.data == {
        "invoice:*": {"scope": "invoice:1", "data": {"paid": True}},
        "invoice:1": {"paid": True},
    }


async def test_expect_waits_for_every_scope_over_several_frames() -> None:
    app = _app()
    broker = broker_of(app)
    async with LiveClient(app) as client, client.open_stream(await client.get("/")) as stream:
        await broker.invalidate("customer:7")
        await asyncio.sleep(0.01)  # its own frame, most likely; expect() does not care
        await broker.invalidate("invoice:2")
        changes = await stream.expect("customer:7", "invoice:*")
    assert set().union(*(change.scopes for change in changes)) == {"customer:7", "invoice:*"}


async def test_a_fragment_joined_with_join_stream_is_streamed_too() -> None:
    app = _app()
    broker = broker_of(app)
    async with LiveClient(app) as client:
        page = await client.get("/")
        fragment = await client.get("/more")
        async with client.open_stream(page.text + fragment.text) as stream:
            await broker.invalidate("row:9")
            change = await stream.next_change()
    assert change.scopes == {"row:9"}
    assert change.urls == ("/row/9",)


async def test_a_refused_stream_raises_with_the_status_and_the_reason() -> None:
    app = _app(authorize=lambda request, scopes: "customer:7" not in scopes)
    async with LiveClient(app) as client:
        page = await client.get("/")
        with pytest.raises(StreamRefusedError) as refused:
            async with client.open_stream(page):
                pass
    assert refused.value.status == 403
    assert "not authorized" in refused.value.reason


async def test_a_page_without_a_stream_is_a_clear_error() -> None:
    async with LiveClient(_app()) as client:
        with pytest.raises(ValueError, match="no stream to open"):
            async with client.open_stream("<p>static</p>"):
                pass


async def test_closing_the_client_ends_the_streams_and_the_broker() -> None:
    broker = Broker()
    app = _app(broker)
    async with LiveClient(app) as client:
        stream_cm = client.open_stream(await client.get("/"))
        await stream_cm.__aenter__()
        assert broker.watcher_count == 1
    # Left without closing the stream: the client disconnected it, then shut the app down.
    assert broker.watcher_count == 0
    with pytest.raises(Exception, match=r"not started|closed"):
        await broker.invalidate("invoice:1")


async def test_a_stream_ended_by_the_server_reports_its_end_and_retry() -> None:
    broker = Broker()
    async with (
        LiveClient(_app(broker)) as client,
        client.open_stream(await client.get("/")) as stream,
    ):
        broker.end_streams(reconnect_within=2.0)
        with pytest.raises(EOFError):
            await stream.next_change()
        assert stream.ended
        assert stream.retry is not None
        assert 1000 <= stream.retry <= 2000


def test_recorded_invalidations_keeps_order_data_and_threadsafe_calls() -> None:
    async def main() -> list[Invalidation]:
        async with Broker() as broker:
            with recorded_invalidations(broker) as seen:
                await broker.invalidate("a:1")
                await broker.invalidate_many(["b:1", "b:2"], data=[1, 2])
                await asyncio.wrap_future(broker.invalidate_threadsafe("c:1", data="x"))
                with pytest.raises(ValueError, match="c:\\*"):
                    await broker.invalidate("c:*")  # refused: never recorded
            await broker.invalidate("after:1")
            assert seen.data("b:2") == [1, 2]
            with pytest.raises(KeyError, match="after:1"):
                seen.data("after:1")
            return list(seen)

    assert asyncio.run(main()) == [
        Invalidation("a:1"),
        Invalidation("b:1", [1, 2]),
        Invalidation("b:2", [1, 2]),
        Invalidation("c:1", "x"),
    ]


def test_broker_of_names_what_is_missing() -> None:
    with pytest.raises(ValueError, match="no streamui broker"):
        broker_of(Litestar([]))


@pytest.mark.parametrize("client_url", [None, "/streamui/stream.0123456789ab.js"])
def test_the_page_is_read_with_or_without_streamuis_module(client_url: str | None) -> None:
    endpoint = StreamEndpoint('/live/str"eam', TokenSigner(SECRET), client_url=client_url)
    with use_endpoint(endpoint):
        html = str(body[Watch("a:1", '/a?x=1&y="2"', id="a"), Connect()])
    page = _parse_page(html)
    assert page.stream_path == '/live/str"eam'
    assert len(page.tokens) == 1
    assert [(watch.keys, watch.url) for watch in page.watches] == [(("a_1",), '/a?x=1&y="2"')]


async def test_a_fastapi_app_is_tested_the_same_way() -> None:
    app = create_fastapi_app(secret=SECRET)
    async with LiveClient(app) as client:
        page = await client.get("/")
        async with client.open_stream(page) as stream:
            with recorded_invalidations(broker_of(app)) as seen:
                assert (await client.post("/vote")).status_code == 204
            change = await stream.next_change()
        assert change.urls == ("/tally",)
        assert "1 votes" in (await client.get("/tally")).text
    assert seen.scopes == ["poll:1"]
