"""A three-node NATS cluster, with app workers attached to different nodes.

Three ``nats-server`` processes joined by routes (each lists the other two); the test
waits until every node's ``/routez`` shows routes to both others. nats-server 2.10+
pools routes (several connections per peer, plus one for the system account), so
``num_routes`` is a multiple of 2, not 2: the check is on the remote servers' names.

Each worker knows one node only; an invalidation made on one node must reach streams
served by workers on the others. NATS propagates a subscription to the other nodes
asynchronously (the subscriber's flush proves only that its own node has it), so
before invalidating, the tests wait until the publisher's node lists the interest on
its routes (``/routez?subs=1``): the invalidation then cannot race the propagation.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from streamui import DEFAULT_PREFIX
from streamui.nats_server import free_port
from tests.nats.conftest import nats_server_running
from tests.nats.multiprocess import (
    START_WAIT,
    Worker,
    app_worker,
    expect_push,
    invalidate,
    open_stream,
    past_the_clock_margin,
)
from tests.support import WAIT

EVERY_SCOPE = f"{DEFAULT_PREFIX}.>"
"""What each worker subscribes to, once, when it starts (``upstream="all"``)."""

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from streamui.nats_server import NatsServer

pytestmark = pytest.mark.timeout(120)

CLUSTER = "streamui-test"


async def monitor(node: NatsServer, endpoint: str, **params: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=WAIT, trust_env=False) as client:
        response = await client.get(f"{node.monitor_url}/{endpoint}", params=params)
    response.raise_for_status()
    value: dict[str, Any] = response.json()
    return value


async def poll(check: Any, what: str, timeout: float) -> None:
    """Await *check()* until it is true (state no event announces), bounded by *timeout*."""
    try:
        async with asyncio.timeout(timeout):
            while not await check():  # noqa: ASYNC110 - only the monitoring API tells
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout} s waiting until {what}") from None


def peers(routez: dict[str, Any]) -> set[str]:
    return {route["remote_name"] for route in routez.get("routes") or []}


@contextlib.asynccontextmanager
async def cluster(size: int = 3) -> AsyncIterator[list[NatsServer]]:
    """*size* nats-servers in a full mesh of routes, once every route is up."""
    ports = [free_port() for _ in range(size)]
    names = [f"node-{index}" for index in range(size)]
    async with contextlib.AsyncExitStack() as stack:
        nodes = []
        for name, port in zip(names, ports, strict=True):
            routes = [f"nats-route://127.0.0.1:{other}" for other in ports if other != port]
            node = nats_server_running(
                name=name, cluster_name=CLUSTER, cluster_port=port, routes=routes
            )
            nodes.append(await stack.enter_async_context(node))

        async def meshed() -> bool:
            found = [peers(await monitor(node, "routez")) for node in nodes]
            return all(seen == set(names) - {name} for name, seen in zip(names, found, strict=True))

        await poll(meshed, "every node has routes to every other", START_WAIT)
        yield nodes


async def wait_for_interest(node: NatsServer, subject: str, *remotes: NatsServer) -> None:
    """Wait until *node* knows that each of *remotes* has a subscription to *subject*."""

    async def known() -> bool:
        routez = await monitor(node, "routez", subs="1")
        interested = {
            route["remote_name"]
            for route in routez.get("routes") or []
            if subject in (route.get("subscriptions_list") or [])
        }
        return {remote.name for remote in remotes} <= interested

    names = [remote.name for remote in remotes]
    await poll(known, f"{node.name} routes {subject!r} to {names}", WAIT)


async def wait_for_local_subscription(node: NatsServer, subject: str) -> None:
    """Wait until a streamui connection on *node* itself subscribes to *subject*."""

    async def subscribed() -> bool:
        connz = await monitor(node, "connz", subs="1")
        return any(
            subject in (connection.get("subscriptions_list") or [])
            for connection in connz.get("connections") or []
            if connection["name"] == "streamui"
        )

    await poll(subscribed, f"a streamui connection on {node.name} subscribes to {subject!r}", WAIT)


async def streamui_connections(node: NatsServer) -> int:
    connz = await monitor(node, "connz")
    return sum(
        1 for connection in connz.get("connections") or [] if connection["name"] == "streamui"
    )


@contextlib.asynccontextmanager
async def start_workers(*nodes: NatsServer) -> AsyncIterator[list[Worker]]:
    """One worker per node, each given only that node's URL."""
    async with contextlib.AsyncExitStack() as stack:
        workers = [
            await stack.enter_async_context(app_worker(f"worker on {node.name}", node.url))
            for node in nodes
        ]
        await asyncio.gather(*(worker.ready() for worker in workers))
        for node in nodes:
            assert await streamui_connections(node) == 1, f"no worker attached to {node.name}"
        yield workers


async def stop_all(workers: Sequence[Worker]) -> None:
    await asyncio.gather(*(worker.stop_cleanly() for worker in workers))


async def test_an_invalidation_reaches_workers_attached_to_other_nodes() -> None:
    target, other = "cluster:target", "cluster:other"
    async with (
        cluster() as nodes,
        start_workers(*nodes) as (a, b, c),
        httpx.AsyncClient(timeout=WAIT, trust_env=False) as client,
    ):
        await past_the_clock_margin()
        page = (await client.get(a.base_url, params={"scope": [target, other]})).text
        async with (
            open_stream(client, b.base_url, page) as on_b,
            open_stream(client, c.base_url, page) as on_c,
        ):
            last_b = last_c = 0
            # Made on node-0, delivered through the routes to node-1 and node-2 (each
            # worker subscribed to every scope when it started).
            await wait_for_interest(nodes[0], EVERY_SCOPE, nodes[1], nodes[2])
            await invalidate(client, a, target)
            last_b = await expect_push(on_b, "cluster_target", after=last_b)
            last_c = await expect_push(on_c, "cluster_target", after=last_c)

            # Made on node-2: its own worker's stream and node-1's both get it.
            await wait_for_interest(nodes[2], EVERY_SCOPE, nodes[1])
            await invalidate(client, c, other)
            await expect_push(on_b, "cluster_other", after=last_b)
            await expect_push(on_c, "cluster_other", after=last_c)

        await stop_all((a, b, c))


async def test_a_worker_whose_node_dies_fails_over_and_still_gets_invalidations() -> None:
    target = "cluster:target"
    async with (
        cluster() as nodes,
        start_workers(nodes[0], nodes[1]) as (a, b),
        httpx.AsyncClient(timeout=WAIT, trust_env=False) as client,
    ):
        await past_the_clock_margin()
        page = (await client.get(a.base_url, params={"scope": [target]})).text
        async with open_stream(client, b.base_url, page) as on_b:
            last = 0
            # B was given node-1 only; nats-py learned the other nodes from the cluster.
            await nodes[1].kill()
            # After the reconnect the broker pushes every watched scope once: what was
            # invalidated while the link was down is unknowable.
            last = await expect_push(on_b, "cluster_target", after=last, timeout=START_WAIT)
            subject = EVERY_SCOPE
            if await streamui_connections(nodes[0]) == 2:  # A's and B's
                await wait_for_local_subscription(nodes[0], subject)
            else:
                assert await streamui_connections(nodes[2]) == 1, "B is on no surviving node"
                await wait_for_interest(nodes[0], subject, nodes[2])
            await invalidate(client, a, target)
            await expect_push(on_b, "cluster_target", after=last)

        await asyncio.gather(a.stop_cleanly(), b.stop_cleanly(warnings=True))
