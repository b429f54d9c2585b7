"""Two app workers, each an OS process under uvicorn with its own broker, on one NATS.

What a load-balanced deployment does: a tab's page is rendered by one worker, its
stream is served by another, and the invalidation comes from whichever worker handled
the change. Everything goes through real HTTP and a real ``nats-server``.

Every worker receives every invalidation of the prefix from the moment it starts, so a
first connection is pushed exactly what changed between the render and the connect,
whichever worker rendered the page, served the stream or made the change: nothing if
nothing changed. A page rendered before the serving worker started (a restart) is
pushed every scope once, and the worker counts it (``GET /catch-ups``).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.nats.multiprocess import (
    SECRET,
    app_worker,
    expect_push,
    invalidate,
    open_stream,
    past_the_clock_margin,
    two_workers,
)
from tests.support import WAIT, stream_path, stream_tokens

if TYPE_CHECKING:
    from streamui.nats_server import NatsServer

pytestmark = pytest.mark.timeout(120)


async def test_an_invalidation_in_one_worker_reaches_a_stream_served_by_another(
    nats_server: NatsServer,
) -> None:
    async with (
        app_worker("worker A", nats_server.url) as a,
        app_worker("worker B", nats_server.url) as b,
        app_worker("worker C (another secret)", nats_server.url, secret="x" + SECRET) as c,
        httpx.AsyncClient(timeout=WAIT, trust_env=False) as client,
    ):
        await asyncio.gather(a.ready(), b.ready(), c.ready())
        pids = {(await client.get(f"{w.base_url}/pid")).json()["pid"] for w in (a, b, c)}
        assert len(pids) == 3, "the workers are not separate processes"

        await past_the_clock_margin()
        page = (await client.get(a.base_url, params={"scope": ["mp:target", "mp:other"]})).text
        # Rendered by A, served by B: the token verifies on B, which shares the secret.
        async with open_stream(client, b.base_url, page) as stream:
            await invalidate(client, a, "mp:target")
            await expect_push(stream, "mp_target")

        # A worker with another secret refuses the token: the workers must share one.
        response = await client.get(
            c.base_url + stream_path(page), params={"t": stream_tokens(page)}
        )
        assert response.status_code == 403, response.text

        await asyncio.gather(a.stop_cleanly(), b.stop_cleanly(), c.stop_cleanly())


async def test_every_worker_watching_a_wildcard_gets_an_invalidation_made_in_either(
    nats_server: NatsServer,
) -> None:
    async with two_workers(nats_server.url) as (a, b, client):
        page = (await client.get(a.base_url, params={"scope": ["orders:*"]})).text
        # Two tabs of one page, their streams served by different workers.
        async with (
            open_stream(client, a.base_url, page) as on_a,
            open_stream(client, b.base_url, page) as on_b,
        ):
            last_a = last_b = 0
            for worker, order in ((b, "orders:7"), (a, "orders:8")):
                await invalidate(client, worker, order)
                # The invalidating worker's own stream hears it through NATS too.
                last_a = await expect_push(on_a, "orders_WILD", after=last_a)
                last_b = await expect_push(on_b, "orders_WILD", after=last_b)


async def test_a_first_connect_is_pushed_exactly_what_changed_since_the_render(
    nats_server: NatsServer,
) -> None:
    async with two_workers(nats_server.url) as (a, b, client):
        scopes = ["cu:changed", "cu:same", "cu:rows:*", "cu:quiet:*"]
        page = (await client.get(a.base_url, params={"scope": scopes})).text
        # After the render, before the connect: changes made on either worker, to scopes
        # no stream of B (nor of A) had watched yet.
        for worker, scope in ((b, "cu:changed"), (a, "cu:rows:3"), (a, "cu:unwatched")):
            await invalidate(client, worker, scope)
        async with open_stream(client, b.base_url, page) as stream:
            await expect_push(stream, "cu_changed", "cu_rows_WILD")
            # Nothing else came: the next push is the next change.
            await invalidate(client, a, "cu:same")
            await expect_push(stream, "cu_same")
        # A page rendered after all that, served by A: nothing to catch up on. (Changes
        # within CLOCK_MARGIN before a render by another process are pushed again.)
        await past_the_clock_margin()
        page = (await client.get(b.base_url, params={"scope": scopes})).text
        async with open_stream(client, a.base_url, page) as stream:
            await invalidate(client, b, "cu:quiet:1")
            await expect_push(stream, "cu_quiet_WILD")
        counts = [(await client.get(f"{w.base_url}/catch-ups")).json() for w in (a, b)]
        assert counts == [{"exact": 1}, {"exact": 1}]


async def test_a_page_rendered_before_the_worker_started_is_pushed_every_scope_once(
    nats_server: NatsServer,
) -> None:
    async with (
        app_worker("worker A", nats_server.url) as a,
        httpx.AsyncClient(timeout=WAIT, trust_env=False) as client,
    ):
        await a.ready()
        page = (await client.get(a.base_url, params={"scope": ["rs:1", "rs:*"]})).text
        # B starts after the render (a restart, or a new worker): it cannot know what
        # changed in between, so it pushes everything once, and counts it.
        async with app_worker("worker B", nats_server.url) as b:
            await b.ready()
            async with open_stream(client, b.base_url, page) as stream:
                revision = await expect_push(stream, "rs_1", "rs_WILD")
                await invalidate(client, a, "rs:2")
                await expect_push(stream, "rs_WILD", after=revision)
            counts = (await client.get(f"{b.base_url}/catch-ups")).json()
            assert counts == {"everything": 1}
            await b.stop_cleanly()
        await a.stop_cleanly()
