"""Streams through a real nginx with the plain configuration of ``nginx.conf.template``.

nginx buffers proxied responses by default, and closes a proxied connection that sends
nothing for ``proxy_read_timeout`` (60 s by default). The stream answers with
``X-Accel-Buffering: no``, which turns buffering off for that response only, and
writes a heartbeat comment every ``heartbeat`` seconds. (Measured with nginx 1.22: a
buffered response still reaches the client chunk by chunk, but output filters such as
gzip then hold it back until their buffer fills; unbuffered, every chunk is flushed.)
Each property is tested through nginx next to a control that shows what happens
without it, so the tests would notice a proxy that delays or cuts the stream.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import httpx
import pytest

from streamui import scope_key
from tests.integration.conftest import url_from
from tests.support import WAIT, revision_of

if TYPE_CHECKING:
    from tests.proxy.conftest import Proxied

pytestmark = pytest.mark.timeout(60)

READ_TIMEOUT = 2.0
"""Seconds: the ``proxy_read_timeout`` of the heartbeat tests, shorter than an idle stream."""


async def invalidate(client: httpx.AsyncClient, scope: str) -> None:
    """Invalidate through the app's own handler, through nginx."""
    response = await client.post("/invalidate", params={"scope": scope})
    assert response.status_code == 204, response.text


GZIP = "gzip on; gzip_types text/event-stream;"
"""Directives of a proxy that also compresses streams (nginx's gzip holds output back
until its buffer fills, unless the proxied response is unbuffered)."""


@pytest.mark.parametrize("location_extra", ["", GZIP], ids=["plain", "gzip"])
async def test_an_event_arrives_at_once(proxied: Proxied, location_extra: str) -> None:
    # A 30 s heartbeat: nothing but the event itself can flush a buffer in this test.
    live = await proxied(heartbeat=30.0, read_timeout="60s", location_extra=location_extra)
    async with live.stream(await live.stream_url("invoice:1")) as stream:  # opening frame
        headers = stream.response.headers
        assert headers["content-type"].split(";")[0] == "text/event-stream"
        if location_extra:
            assert headers["content-encoding"] == "gzip"
        started = time.monotonic()
        await invalidate(live.client, "invoice:1")
        push = await stream.next_push()  # WAIT-bounded: a buffered event never comes
        assert push.keys == {scope_key("invoice:1")}
        assert time.monotonic() - started < WAIT


async def test_control_a_proxy_that_buffers_the_stream_delivers_nothing(
    proxied: Proxied,
) -> None:
    # The same compressing nginx told to ignore the stream's X-Accel-Buffering: no
    # buffers the response: not even its head arrives, so the test above would fail
    # behind a proxy that buffers.
    live = await proxied(
        heartbeat=30.0,
        read_timeout="60s",
        location_extra=f"proxy_ignore_headers X-Accel-Buffering; {GZIP}",
    )
    url = await live.stream_url("invoice:1")
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(2.0), live.client.stream("GET", url):
            pass
    # nginx noticed that the client left and closed the upstream connection.
    await live.wait_released()


async def test_heartbeats_keep_an_idle_stream_open_past_the_read_timeout(
    proxied: Proxied,
) -> None:
    live = await proxied(heartbeat=0.5, read_timeout=f"{READ_TIMEOUT:g}s")
    async with live.stream(await live.stream_url("invoice:1")) as stream:
        heartbeats = 0
        idle_until = time.monotonic() + 2.5 * READ_TIMEOUT
        while time.monotonic() < idle_until:
            frame = await stream.reader.next()
            assert frame.event is None, f"an event on an idle stream: {frame}"
            assert frame.comments, frame
            heartbeats += 1
        # ~10 expected; nginx would have cut the stream after READ_TIMEOUT without them.
        assert heartbeats >= 3, heartbeats
        await invalidate(live.client, "invoice:1")
        push = await stream.next_push()  # on the same connection, past 2.5 read timeouts
        assert push.keys == {scope_key("invoice:1")}


async def test_control_without_heartbeats_nginx_cuts_the_idle_stream(proxied: Proxied) -> None:
    live = await proxied(heartbeat=30.0, read_timeout=f"{READ_TIMEOUT:g}s")
    async with live.stream(await live.stream_url("invoice:1")) as stream:
        started = time.monotonic()
        # nginx closes the connection without completing the chunked body.
        with pytest.raises(httpx.RemoteProtocolError):
            await stream.reader.next(timeout=WAIT)
        assert READ_TIMEOUT * 0.9 < time.monotonic() - started < WAIT
    # nginx closed the upstream connection too: the server released the stream.
    await live.wait_released()


async def test_page_stream_fragment_and_resume_through_nginx(proxied: Proxied) -> None:
    live = await proxied(heartbeat=0.5, read_timeout=f"{READ_TIMEOUT:g}s")
    page = await live.page("invoice:1")
    async with live.stream(url_from(page)) as stream:
        await invalidate(live.client, "invoice:1")
        push = await stream.next_push()
        assert push.keys == {scope_key("invoice:1")}
        last_event_id = stream.reader.last_id
        # What the Watch element re-fetches on that push.
        component = await live.client.get("/component/0")
        assert component.status_code == 200
        assert 'id="watch-0"' in component.text
    # The client left through nginx: nginx closed the upstream connection.
    await live.wait_released()

    # A "load more" fragment brings a scope; the tab reconnects with both tokens and
    # Last-Event-ID, and is pushed what changed since that event: invoice:1 only.
    await invalidate(live.client, "invoice:1")
    fragment = await live.fragment("invoice:2")
    assert last_event_id is not None
    headers = {"Last-Event-ID": last_event_id}
    async with live.stream(url_from(page, fragment), headers=headers) as stream:
        push = await stream.next_push()
        assert push.keys == {scope_key("invoice:1")}
        assert push.revision > revision_of(last_event_id)
        await invalidate(live.client, "invoice:2")
        push = await stream.next_push()
        assert push.keys == {scope_key("invoice:2")}
    await live.wait_released()


async def test_a_stream_ended_by_the_server_ends_cleanly_through_nginx(proxied: Proxied) -> None:
    # What a shutdown does: the last frame asks for a reconnect delay, and the body
    # completes (a clean end, which the browser answers by reconnecting), not a cut.
    live = await proxied(heartbeat=0.5, read_timeout=f"{READ_TIMEOUT:g}s")
    url = await live.stream_url("invoice:1")
    async with live.client.stream("GET", url) as response:
        assert response.status_code == 200
        lines = response.aiter_lines()
        assert (await anext(lines)).startswith("id: ")  # the opening frame: subscribed
        live.broker.end_streams(reconnect_within=5.0)
        async with asyncio.timeout(WAIT):
            rest = [line async for line in lines]  # a cut would raise RemoteProtocolError
    retries = [int(line.removeprefix("retry: ")) for line in rest if line.startswith("retry: ")]
    assert len(retries) == 2, rest  # the opening frame's, then the last frame's
    assert retries[0] == 1000
    assert 1000 <= retries[1] <= 5000
    await live.wait_released()
