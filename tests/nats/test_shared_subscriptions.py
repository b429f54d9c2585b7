"""One upstream subscription per watched pattern per process, as the NATS server sees it.

Hundreds of real SSE streams in one process watch the same scopes; the server's
monitoring endpoint (``/connz?subs=1``) must show one subscription per subject on that
process's connection while they are open, and none once they have closed.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import httpx

from tests.integration.conftest import Live, running
from tests.nats.conftest import wait_for_server_subscriptions, wait_until
from tests.support import WAIT

if TYPE_CHECKING:
    from nats.aio.client import Client

    from streamui.nats_server import NatsServer
    from tests.integration.conftest import OpenStream

STREAMS = 200
EXACT = "streamui.scope.dashboard.main"
WILDCARD = "streamui.scope.dashboard.*"


async def test_hundreds_of_streams_share_one_server_subscription_per_subject(
    nats_server: NatsServer, plain_client: Client
) -> None:
    async with (
        asyncio.timeout(6 * WAIT),
        # One upstream subscription per watched pattern (with the default, "all", there
        # is one for every scope whatever the streams watch).
        running(nats_url=nats_server.url, upstream="watched") as live,
        # A client of its own: the fixture's is limited to 100 connections.
        httpx.AsyncClient(
            base_url=live.base_url,
            timeout=WAIT,
            trust_env=False,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=0),
        ) as client,
    ):
        many = Live(live.base_url, client, plugin=live.plugin)
        # Every stream watches dashboard:main; every other one also dashboard:*.
        exact_only = await live.stream_url("dashboard:main")
        both = await live.stream_url("dashboard:main", "dashboard:*")
        urls = [both if number % 2 else exact_only for number in range(STREAMS)]
        async with contextlib.AsyncExitStack() as stack:
            streams: list[OpenStream] = await asyncio.gather(
                *(stack.enter_async_context(many.stream(url)) for url in urls)
            )
            assert live.broker.watcher_count == STREAMS
            held = await wait_for_server_subscriptions(nats_server, EXACT, 1)
            print(
                f"\n{STREAMS} open streams: the server shows {held.count(EXACT)} subscription "
                f"to {EXACT} and {held.count(WILDCARD)} to {WILDCARD} "
                f"(streamui's connection holds {held})"
            )
            assert sorted(held) == sorted([EXACT, WILDCARD]), held
            assert live.broker.pattern_count == 2

            # Shared, and still every stream hears one invalidation from another process.
            marker = live.broker.revision
            await plain_client.publish(EXACT, b"")
            await plain_client.flush()

            async def keys_after_marker(stream: OpenStream, expected: set[str]) -> set[str]:
                """What *stream* is pushed after the marker, until it has *expected*: the
                wildcard's copy of the message may come coalesced or as a second push."""
                seen: set[str] = set()
                while seen != expected:
                    push = await stream.next_push()
                    if push.revision > marker:  # not the connect's catch-up
                        assert push.keys <= expected, push
                        seen |= push.keys
                return seen

            expected = [
                {"dashboard_main", "dashboard_WILD"} if number % 2 else {"dashboard_main"}
                for number in range(STREAMS)
            ]
            pushed = await asyncio.gather(
                *(keys_after_marker(*pair) for pair in zip(streams, expected, strict=True))
            )
            assert pushed == expected
        # Every stream closed: the subscriptions go, on the server too.
        await wait_until(
            lambda: live.broker.watcher_count == 0 and live.broker.pattern_count == 0,
            "the broker released every stream and subscription",
        )
        await wait_for_server_subscriptions(nats_server, EXACT, 0)
        remaining = await wait_for_server_subscriptions(nats_server, WILDCARD, 0)
        print(f"after the streams closed: streamui's connection holds {remaining}")
        assert remaining == []
