"""Faults: the NATS server crashes (SIGKILL) under open streams and comes back on its port.

What a user relies on: open tabs keep their streams (no EOF, no traceback), an
invalidation during the outage neither hangs nor crashes (nats-py buffers it, or it raises
`PublishError` at once), every tab re-fetches everything it watches once the link is back
(the broker cannot know what it missed), and invalidations flow again afterwards.
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Any

import pytest

import nats
from streamui import Broker, BrokerStateError, scope_key
from streamui.nats import NatsTransport, PublishError
from tests.integration.conftest import running
from tests.nats.conftest import recording_logs, settle, wait_until
from tests.support import WAIT

if TYPE_CHECKING:
    from streamui.nats_server import NatsServer
    from tests.integration.conftest import Live, OpenStream, Push

# Three tabs; each has a probe scope of its own to settle it (see `settle`).
TABS = {
    "orders": ("order:1", "order:*", "probe:orders"),
    "order": ("order:1", "probe:order"),
    "customer": ("customer:7", "probe:customer"),
}
DURING_OUTAGE = {"order_1", "order_WILD"}
"""The keys the invalidation made during the outage (``order:1``) may push."""


def transport_of(live: Live) -> NatsTransport:
    transport = live.broker.transport
    assert isinstance(transport, NatsTransport)
    return transport


async def disconnect(server: NatsServer, transport: NatsTransport) -> None:
    """SIGKILL the server and wait until the transport's client noticed."""
    await server.kill()
    await wait_until(
        lambda: not transport.connection.is_connected, "the client noticed the server died"
    )


async def invalidate_during_outage(broker: Broker, scope: str, **options: Any) -> str:
    """Invalidate while the server is down: 'buffered', or 'raised: <message>'. Never hangs."""
    try:
        async with asyncio.timeout(WAIT):
            await broker.invalidate(scope, **options)
    except PublishError as error:
        return f"raised: {error}"
    except TimeoutError:
        pytest.fail(f"invalidate({scope!r}) hung while NATS was down")
    return "buffered"


async def resync_pushes(stream: OpenStream, keys: set[str]) -> list[Push]:
    """Read pushes until every key was pushed; one push must carry them all (the resync).

    Before it, only the keys invalidated during the outage may come (nats-py sends its
    buffer right after the reconnect, before the reconnect callback runs).
    """
    pushes: list[Push] = []
    while not any(push.keys == keys for push in pushes):
        push = await stream.next_push()
        assert push.keys == keys or push.keys <= DURING_OUTAGE, (
            f"pushed {push.keys}, neither the resync of {keys} nor the outage's invalidation"
        )
        pushes.append(push)
    return pushes


async def test_streams_survive_a_nats_crash_and_are_resynced_after_the_restart(
    nats_server: NatsServer,
) -> None:
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(6 * WAIT), running(nats_url=nats_server.url, heartbeat=0.2) as live:
        transport = transport_of(live)
        urls = {name: await live.stream_url(*scopes) for name, scopes in TABS.items()}
        async with (
            live.stream(urls["orders"]) as orders,
            live.stream(urls["order"]) as order,
            live.stream(urls["customer"]) as customer,
        ):
            streams = {"orders": orders, "order": order, "customer": customer}
            for name, stream in streams.items():
                await settle(live, stream, TABS[name][-1])
            with recording_logs() as logs:
                await disconnect(nats_server, transport)
                # The streams stay open while NATS is down: heartbeats keep coming.
                for stream in streams.values():
                    frame = await stream.reader.next()
                    assert (frame.event, frame.comments) == (None, ["keep-alive"]), frame
                started = loop.time()
                outcome = await invalidate_during_outage(
                    live.broker, "order:1", data={"sent": "during the outage"}
                )
                invalidate_took = loop.time() - started

                restarted = loop.time()
                await nats_server.start()
                pushed: dict[str, list[Push]] = {}
                resynced_after: dict[str, float] = {}

                async def resync(name: str, stream: OpenStream) -> None:
                    keys = {scope_key(value) for value in TABS[name]}
                    pushed[name] = await resync_pushes(stream, keys)
                    resynced_after[name] = loop.time() - restarted

                await asyncio.gather(*(resync(name, s) for name, s in streams.items()))
                print(
                    f"\ninvalidate during the outage: {outcome} (returned after "
                    f"{invalidate_took * 1000:.2f} ms); resync push after the restart: "
                    + ", ".join(f"{name} {after:.2f} s" for name, after in resynced_after.items())
                )

                # The resync came once: up to a probe, only the outage's invalidation may
                # still arrive (when nats-py delivered it after the reconnect callback).
                for name, stream in streams.items():
                    probe = TABS[name][-1]
                    later = await settle(live, stream, probe)
                    assert all(p.keys <= DURING_OUTAGE | {scope_key(probe)} for p in later), later
                    pushed[name] += later
                # New invalidations flow again, from this process and from another one.
                other = await nats.connect(nats_server.url, name="another-process")
                try:
                    marker = live.broker.revision
                    await other.publish("streamui.scope.customer.7", b"")
                    await other.publish("streamui.scope.order.2", b"")
                    await other.flush()
                    assert await keys_after(customer, marker, {"customer_7"})
                    assert await keys_after(orders, marker, {"order_WILD"})
                finally:
                    await other.close()
                marker = live.broker.revision
                await live.broker.invalidate("order:1")
                assert await keys_after(orders, marker, {"order_1", "order_WILD"})
                assert await keys_after(order, marker, {"order_1"})
            for stream in streams.values():
                assert not stream.response.is_closed
    # (running() also checked: no ERROR from uvicorn, Litestar or streamui, and no 5xx.)
    assert not logs.tracebacks, logs.tracebacks
    assert not logs.errors, logs.errors
    assert outcome == "buffered" or re.fullmatch(r"raised: NATS did not take .*", outcome), outcome
    if outcome == "buffered":
        # A buffered invalidation is sent once the link is back: its data reaches the tabs.
        for name in ("orders", "order"):
            data = [push.data for push in pushed[name] if "order_1" in push.data]
            assert data, f"the buffered invalidation never reached the {name} tab"
            assert data[0]["order_1"] == {"sent": "during the outage"}


async def keys_after(stream: OpenStream, marker: int, expected: set[str]) -> set[str]:
    """Read pushes newer than *marker* until *expected* keys came; nothing else may."""
    seen: set[str] = set()
    while seen != expected:
        push = await stream.next_push()
        assert push.revision > marker, f"a push older than the invalidation: {push}"
        assert push.keys <= expected, push
        seen |= push.keys
    return seen


async def test_a_full_pending_buffer_raises_publish_error_at_once(
    nats_server: NatsServer,
) -> None:
    async with (
        asyncio.timeout(6 * WAIT),
        running(nats_url=nats_server.url, nats_options={"pending_size": 1}) as live,
        live.stream(await live.stream_url("order:1", "probe:order")) as stream,
    ):
        await settle(live, stream, "probe:order")
        await disconnect(nats_server, transport_of(live))
        outcomes = [await invalidate_during_outage(live.broker, "order:1") for _ in range(3)]
        raised = [outcome for outcome in outcomes if outcome.startswith("raised")]
        assert raised, f"a 1-byte buffer took three invalidations: {outcomes}"
        assert raised[0] == (
            "raised: NATS did not take the invalidation on 'streamui.scope.order.1': nats: "
            "outbound buffer limit exceeded (connection closed, or its pending buffer is full "
            "while reconnecting)"
        )
        # The link comes back: the tab is resynced and invalidations flow again.
        await nats_server.start()
        await resync_pushes(stream, {"order_1", "probe_order"})
        await settle(live, stream, "probe:order")
    print(f"\nwith pending_size=1, three invalidations during the outage: {outcomes}")


async def test_a_connection_passed_in_keeps_its_owners_reconnect_callback(
    nats_server: NatsServer,
) -> None:
    owner_reconnected = asyncio.Event()

    async def on_reconnect() -> None:
        owner_reconnected.set()

    async def quiet(error: Exception) -> None:
        """The owner's error callback (nats-py's default logs the crash at ERROR)."""

    connection = await nats.connect(
        nats_server.url, reconnected_cb=on_reconnect, error_cb=quiet, reconnect_time_wait=0.2
    )
    try:
        async with (
            asyncio.timeout(4 * WAIT),
            Broker(NatsTransport(connection)) as broker,
            broker.watch(["order:1", "order:*"]) as watcher,
        ):
            await nats_server.kill()
            await wait_until(lambda: not connection.is_connected, "the client noticed")
            await nats_server.start()
            await watcher.wait()
            await owner_reconnected.wait()
            frame = watcher.take().decode()
            # The broker's resync pushes every watched scope, next to the owner's callback.
            assert '"order_1":' in frame
            assert '"order_WILD":' in frame
    finally:
        await connection.close()


async def test_closing_during_an_outage_does_not_hang(nats_server: NatsServer) -> None:
    broker = Broker(NatsTransport(servers=nats_server.url))
    await broker.start()
    async with asyncio.timeout(WAIT), broker.watch(["order:1"]):
        transport = broker.transport
        assert isinstance(transport, NatsTransport)
        connection = transport.connection
        await disconnect(nats_server, transport)
    async with asyncio.timeout(WAIT):
        await broker.close()
    assert connection.is_closed


async def test_closing_during_an_outage_with_a_buffered_invalidation_does_not_raise(
    nats_server: NatsServer,
) -> None:
    broker = Broker(NatsTransport(servers=nats_server.url))
    await broker.start()
    try:
        async with asyncio.timeout(WAIT):
            transport = broker.transport
            assert isinstance(transport, NatsTransport)
            await disconnect(nats_server, transport)
            assert await invalidate_during_outage(broker, "order:1") == "buffered"
    finally:
        async with asyncio.timeout(WAIT):
            await broker.close()


async def test_invalidate_after_close_raises_a_clear_error(nats_server: NatsServer) -> None:
    async with asyncio.timeout(WAIT):
        broker = Broker(NatsTransport(servers=nats_server.url))
        await broker.start()
        await broker.close()
        with pytest.raises(BrokerStateError, match=r"^the Broker is closed$"):
            await broker.invalidate("order:1")


async def test_publishing_on_a_connection_its_owner_closed_raises_publish_error(
    nats_server: NatsServer,
) -> None:
    async with asyncio.timeout(WAIT):
        connection = await nats.connect(nats_server.url)
        async with Broker(NatsTransport(connection)) as broker:
            await connection.close()
            with pytest.raises(
                PublishError,
                match=r"^NATS did not take the invalidation on 'streamui\.scope\.order\.1': "
                r"nats: connection closed \(connection closed, or its pending buffer",
            ):
                await broker.invalidate("order:1")


async def test_publishing_on_a_closed_transport_raises_publish_error(
    nats_server: NatsServer,
) -> None:
    async with asyncio.timeout(WAIT):
        transport = NatsTransport(servers=nats_server.url)
        await transport.start()
        await transport.close()
        try:
            await transport.publish("streamui.scope.order.1", b"")
        except Exception as error:
            raised: BaseException = error
        else:
            pytest.fail("publish on a closed transport did not raise")
    assert isinstance(raised, PublishError), repr(raised)
    assert "closed" in str(raised), str(raised)
