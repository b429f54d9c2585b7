"""Streams ended for a shutdown ask each browser for its own reconnect delay.

``broker.end_streams(reconnect_within=5.0)`` (what the plugin does on SIGTERM) ends
every stream with a last frame ``retry: <ms>``, ms drawn uniformly in [1000, 5000], so
a restart's reconnects spread over four seconds instead of arriving at once. What is
deterministic is checked over ~200 real streams: each stream completes cleanly with
one such delay, in range, and the delays do not bunch up. ``bench/restart.py``
measures what the spread does to a restart of a real server.
"""

from __future__ import annotations

import asyncio
import collections
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.support import WAIT

if TYPE_CHECKING:
    from tests.integration.conftest import Live, Start

pytestmark = pytest.mark.timeout(60)

STREAMS = 200


async def end_all_streams(live: Live, reconnect_within: float | None) -> list[list[int]]:
    """Open STREAMS streams, end them all with *reconnect_within*, and return each
    stream's ``retry:`` values after its opening frame."""
    url = await live.stream_url("invoice:1")
    opened = 0
    all_open = asyncio.Event()

    async def one(client: httpx.AsyncClient) -> list[int]:
        nonlocal opened
        async with client.stream("GET", url) as response:
            assert response.status_code == 200
            lines = response.aiter_lines()
            opening = []
            while (line := await anext(lines)) != "":
                opening.append(line)
            assert opening[0].startswith("id: "), opening
            assert opening[1] == "retry: 1000", opening
            opened += 1
            if opened == STREAMS:
                all_open.set()
            # The rest of the body, up to its clean end (a cut raises here).
            rest = [line async for line in lines]
        return [int(line.removeprefix("retry: ")) for line in rest if line.startswith("retry:")]

    # One connection per stream, as many browsers would open.
    limits = httpx.Limits(max_connections=STREAMS + 8, max_keepalive_connections=0)
    async with httpx.AsyncClient(
        base_url=live.base_url, timeout=WAIT, limits=limits, trust_env=False
    ) as client:
        tasks = [asyncio.create_task(one(client)) for _ in range(STREAMS)]
        try:
            async with asyncio.timeout(WAIT * 3):
                await all_open.wait()
            assert live.broker.watcher_count == STREAMS
            live.broker.end_streams(reconnect_within=reconnect_within)
            async with asyncio.timeout(WAIT * 3):
                return await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def test_each_stream_ends_with_its_own_delay_within_the_spread(start: Start) -> None:
    live = await start(heartbeat=3600)
    retries = await end_all_streams(live, reconnect_within=5.0)
    assert all(len(values) == 1 for values in retries), retries  # exactly one, last
    delays = [values[0] for values in retries]
    assert all(1000 <= delay <= 5000 for delay in delays), sorted(delays)
    # Uniform over 4 s: each 250 ms bucket expects 1/16 of the streams (6%); a bucket
    # with 20% would be a bunch, not chance (the odds are below 1e-12).
    buckets = collections.Counter((delay - 1000) // 250 for delay in delays)
    fullest, count = buckets.most_common(1)[0]
    assert count <= 0.2 * STREAMS, (fullest, count, sorted(delays))
    assert max(delays) - min(delays) >= 2000, sorted(delays)
    await live.wait_released()


async def test_without_a_spread_every_stream_reconnects_after_one_second(start: Start) -> None:
    # StreamConfig(reconnect_spread=0): the no-jitter close the benchmark compares with.
    live = await start(heartbeat=3600)
    retries = await end_all_streams(live, reconnect_within=0.0)
    assert retries == [[1000]] * STREAMS
    await live.wait_released()


async def test_ending_streams_without_a_delay_sends_no_retry(start: Start) -> None:
    # What closing the broker or max_lifetime do: the browser keeps the delay the
    # opening frame announced.
    live = await start(heartbeat=3600)
    retries = await end_all_streams(live, reconnect_within=None)
    assert retries == [[]] * STREAMS
    await live.wait_released()
