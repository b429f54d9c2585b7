"""Two app workers, each an OS process under uvicorn with its own broker, on one NATS.

What a load-balanced deployment does: a tab's page is rendered by one worker, its
stream is served by another, and the invalidation comes from whichever worker handled
the change. Everything goes through real HTTP and a real ``nats-server``.

A first connection over NATS is pushed every scope it watches once (the catch-up: the
serving worker subscribed after the page was rendered, so it cannot know what changed
in between); the tests read that push, then look for the push of one invalidation.
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
    open_stream,
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

        page = (await client.get(a.base_url, params={"scope": ["mp:target", "mp:other"]})).text
        # Rendered by A, served by B: the token verifies on B, which shares the secret.
        async with open_stream(client, b.base_url, page) as stream:
            caught_up = await expect_push(stream, "mp_other", "mp_target")
            response = await client.post(f"{a.base_url}/invalidate", params={"scope": "mp:target"})
            assert response.status_code == 204, response.text
            await expect_push(stream, "mp_target", after=caught_up)

        # A worker with another secret refuses the token: the workers must share one.
        response = await client.get(
            c.base_url + stream_path(page), params={"t": stream_tokens(page)}
        )
        assert response.status_code == 403, response.text

        await asyncio.gather(a.stop_cleanly(), b.stop_cleanly(), c.stop_cleanly())


async def test_every_worker_watching_a_wildcard_gets_an_invalidation_made_in_either(
    nats_server: NatsServer,
) -> None:
    async with (
        app_worker("worker A", nats_server.url) as a,
        app_worker("worker B", nats_server.url) as b,
        httpx.AsyncClient(timeout=WAIT, trust_env=False) as client,
    ):
        await asyncio.gather(a.ready(), b.ready())
        page = (await client.get(a.base_url, params={"scope": ["orders:*"]})).text
        # Two tabs of one page, their streams served by different workers.
        async with (
            open_stream(client, a.base_url, page) as on_a,
            open_stream(client, b.base_url, page) as on_b,
        ):
            last_a = await expect_push(on_a, "orders_WILD")
            last_b = await expect_push(on_b, "orders_WILD")
            for worker, order in ((b, "orders:7"), (a, "orders:8")):
                url = f"{worker.base_url}/invalidate"
                response = await client.post(url, params={"scope": order})
                assert response.status_code == 204, response.text
                # The invalidating worker's own stream hears it through NATS too.
                last_a = await expect_push(on_a, "orders_WILD", after=last_a)
                last_b = await expect_push(on_b, "orders_WILD", after=last_b)

        await asyncio.gather(a.stop_cleanly(), b.stop_cleanly())
