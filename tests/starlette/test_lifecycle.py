"""The broker lives with the app (around the app's own lifespan), and the stream passes
the middleware that Starlette and FastAPI apps use untouched."""

from __future__ import annotations

import gzip
from typing import TYPE_CHECKING

import pytest

from streamui import BrokerStateError
from tests.starlette.conftest import running

if TYPE_CHECKING:
    from tests.starlette.app import Framework
    from tests.starlette.conftest import Start


async def test_the_broker_is_up_around_the_apps_own_lifespan(framework: Framework) -> None:
    async with running(framework) as live:
        # The app's own startup invalidated a scope: the broker was already started.
        response = await live.client.get("/lifespan")
        assert response.json() == {
            "events": ["app startup"],
            # What the app's own lifespan yields still reaches request.state.
            "greeting": "state from the app's own lifespan",
        }
        assert live.broker.started_at is not None
        ui = live.ui
    # ... and its shutdown too, before the broker closed.
    assert live.lifecycle.events == ["app startup", "app shutdown"]
    with pytest.raises(BrokerStateError):
        await ui.broker.invalidate("after:shutdown")


async def test_app_state_holds_the_broker(framework: Framework) -> None:
    # The Starlette test app's POST /invalidate reads request.app.state.broker.
    async with running(framework) as live, live.stream(await live.stream_url("a:1")) as stream:
        assert (await live.client.post("/invalidate", params={"scope": "a:1"})).status_code == 204
        assert (await stream.next_push()).keys == {"a_1"}


async def test_gzip_compresses_pages_and_leaves_the_stream_alone(
    start: Start, framework: Framework
) -> None:
    live = await start(framework, gzip=True)
    headers = {"accept-encoding": "gzip"}
    async with live.client.stream("GET", "/big", headers=headers) as response:
        raw = b"".join([chunk async for chunk in response.aiter_raw()])
    assert response.headers["content-encoding"] == "gzip"  # the middleware is at work
    assert gzip.decompress(raw).startswith(b"<p>streamui")

    async with live.stream(await live.stream_url("a:1"), headers=headers) as stream:
        assert "content-encoding" not in stream.response.headers
        # Each push arrives on its own, not held back in a compressor's buffer.
        for _ in range(3):
            await live.broker.invalidate("a:1")
            assert (await stream.next_push()).keys == {"a_1"}


async def test_an_http_middleware_of_the_app_passes_every_push(
    start: Start, framework: Framework
) -> None:
    # BaseHTTPMiddleware (FastAPI's @app.middleware("http")) hands each message to
    # another task: a write does not complete at once, and the stream finishes it.
    live = await start(framework, http_middleware=True)
    async with live.stream(await live.stream_url("a:1")) as stream:
        assert stream.response.headers["x-stamped"] == "1"
        for _ in range(3):
            await live.broker.invalidate("a:1")
            assert (await stream.next_push()).keys == {"a_1"}
    assert (await live.client.get("/component/1")).headers["x-stamped"] == "1"
