"""Lifecycle of streams and their upstream subscriptions: sharing, release on
disconnect, subscriptions still pending when the client leaves, broker close and app
shutdown."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import httpx
import pytest

from streamui import BrokerStateError, InProcessTransport
from streamui.litestar import StreamConfig
from tests.integration.app import make_app
from tests.integration.conftest import SECRET, url_from
from tests.support import WAIT, SSEReader, revision_of, serve

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from streamui.litestar import StreamPlugin
    from streamui.transports import MessageHandler, Subscription
    from tests.integration.conftest import Live, OpenStream, Start


async def test_streams_share_one_subscription_per_pattern_and_release_it(live: Live) -> None:
    tabs = 20
    async with contextlib.AsyncExitStack() as with_rows, contextlib.AsyncExitStack() as with_c:
        streams: list[OpenStream] = []
        for index in range(tabs):
            if index % 2:
                url = await live.stream_url("invoice:42", "rows:*")
                streams.append(await with_rows.enter_async_context(live.stream(url)))
            else:
                url = await live.stream_url("invoice:42", "c")
                streams.append(await with_c.enter_async_context(live.stream(url)))

        # One upstream subscription per distinct pattern: invoice:42, rows:*, c.
        assert live.broker.watcher_count == tabs
        assert live.broker.pattern_count == 3
        assert live.transport.subscription_count == 1

        await live.broker.invalidate("invoice:42")
        for stream in streams:
            push = await stream.next_push()
            assert push.signals == {"_stream": {"invoice_42": push.revision}}

        # The tabs watching rows:* go away: rows:* is dropped, the shared ones stay.
        await with_rows.aclose()
        await live.wait_until(
            lambda: live.broker.watcher_count == tabs // 2,
            "the server noticed the closed tabs",
        )
        assert live.broker.pattern_count == 2
        assert live.transport.subscription_count == 1

        # The remaining tabs still get their pushes.
        await live.broker.invalidate("c")
        for stream in streams[::2]:
            push = await stream.next_push()
            assert push.signals == {"_stream": {"c": push.revision}}

    await live.wait_released()
    assert live.broker.pattern_count == 0
    assert live.transport.subscription_count == 1


class GatedTransport(InProcessTransport):
    """The in-process transport with subscriptions that complete when `gate` opens (a
    bus shared by several processes as far as the broker knows, so it can subscribe per
    watched pattern)."""

    sees_all_publishes = False

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.waiting = 0

    async def subscribe(self, pattern: str, handler: MessageHandler) -> Subscription:
        self.waiting += 1
        await self.gate.wait()
        return await super().subscribe(pattern, handler)


@contextlib.asynccontextmanager
async def pending_request(live: Live, url: str) -> AsyncIterator[asyncio.Task[httpx.Response]]:
    """A GET of *url* running in a task; on exit the task is cancelled (which drops
    the connection) or, if it completed, its response is closed."""
    request = live.client.build_request("GET", url)
    task = asyncio.create_task(live.client.send(request, stream=True))
    try:
        yield task
    finally:
        if task.done() and not task.cancelled() and task.exception() is None:
            await task.result().aclose()
        else:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                await task


async def test_streams_waiting_for_one_pending_subscription_share_it(start: Start) -> None:
    transport = GatedTransport()
    live = await start(transport=transport, upstream="watched")
    url = await live.stream_url("invoice:42")

    async with pending_request(live, url) as first, pending_request(live, url) as second:
        await live.wait_until(
            lambda: transport.waiting == 1 and live.broker.watcher_count == 2,
            "both streams wait for the one subscription",
        )
        assert not first.done()
        assert not second.done()
        transport.gate.set()
        async with asyncio.timeout(WAIT):
            responses = await asyncio.gather(first, second)
        assert [response.status_code for response in responses] == [200, 200]
        assert transport.waiting == 1
        assert live.broker.pattern_count == 1
        assert live.transport.subscription_count == 1

        await live.broker.invalidate("invoice:42")
        for response in responses:
            reader = SSEReader(response)
            opening = await reader.next()
            assert opening.event is None
            assert opening.id is not None
            event = await reader.next_event()
            assert event.event == "datastar-patch-signals"
            assert event.signals == {"_stream": {"invoice_42": revision_of(event.id)}}

    await live.wait_released()


async def test_client_leaving_while_subscribing_leaves_nothing_behind(start: Start) -> None:
    transport = GatedTransport()
    live = await start(transport=transport, upstream="watched")
    url = await live.stream_url("invoice:42", "rows:*")

    async with pending_request(live, url) as request:
        await live.wait_until(lambda: transport.waiting == 1, "the stream is subscribing")
    assert request.cancelled()

    # The server finishes subscribing, then learns that the client has gone.
    transport.gate.set()
    await live.wait_released()

    # And the next tab is served normally: first the scopes this process did not watch
    # when the page was rendered (what happened to them is not known here), then news.
    async with live.stream(url) as stream:
        push = await stream.next_push()
        assert push.signals == {
            "_stream": {"invoice_42": push.revision, "rows_WILD": push.revision}
        }
        await live.broker.invalidate("rows:1")
        push = await stream.next_push()
        assert push.signals == {"_stream": {"rows_WILD": push.revision}}


async def test_broker_close_ends_every_stream_cleanly(live: Live) -> None:
    first_url = await live.stream_url("invoice:42")
    second_url = await live.stream_url("invoice:42", "rows:*")

    async with live.stream(first_url) as first, live.stream(second_url) as second:
        await live.broker.close()  # what the plugin does when the app shuts down
        # Both bodies complete: a clean end, which the browser answers by reconnecting.
        assert await first.read_to_end() == []
        assert await second.read_to_end() == []

    await live.wait_released()
    with pytest.raises(BrokerStateError, match="the Broker is closed"):
        await live.broker.invalidate("invoice:42")


async def shut_down_with_an_open_stream() -> tuple[str, StreamPlugin]:
    """Serve the app, open a stream, then leave serve() while it is open.

    Returns how the stream ended ("clean": the body completed; "cut": the connection
    was closed mid-body) and the plugin.
    """
    app, plugin = make_app(StreamConfig(secret=SECRET))
    async with contextlib.AsyncExitStack() as server:
        base_url = await server.enter_async_context(serve(app))
        async with httpx.AsyncClient(base_url=base_url, timeout=WAIT, trust_env=False) as client:
            page = await client.get("/page", params={"scope": "invoice:42"})
            async with client.stream("GET", url_from(page.text)) as response:
                assert response.status_code == 200
                reader = SSEReader(response)
                opening = await reader.next()
                assert opening.event is None
                assert opening.id is not None
                assert plugin.broker.watcher_count == 1

                stopping = asyncio.create_task(server.aclose())
                try:
                    async with asyncio.timeout(WAIT):
                        while True:
                            frame = await reader.next()
                            assert frame.event is None, frame
                except EOFError:
                    outcome = "clean"
                except httpx.TransportError:
                    outcome = "cut"
                async with asyncio.timeout(WAIT):
                    await stopping
    return outcome, plugin


async def test_app_shutdown_with_an_open_stream_closes_the_broker() -> None:
    outcome, plugin = await shut_down_with_an_open_stream()
    assert outcome in {"clean", "cut"}
    assert plugin.broker.watcher_count == 0
    assert plugin.broker.pattern_count == 0
    transport = plugin.broker.transport
    assert isinstance(transport, InProcessTransport)
    assert transport.subscription_count == 0
    with pytest.raises(BrokerStateError, match="the Broker is closed"):
        await plugin.broker.invalidate("invoice:42")
