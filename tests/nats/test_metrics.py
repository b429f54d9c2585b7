"""The lag metric across processes: the publish time travels in a NATS header.

Two brokers, each with its own connection to a real nats-server, stand for two
processes: one invalidates, the other writes to its stream and measures the lag from
the publisher's clock. The subject and payload stay what the Go package sends, so a
plain client sees the same message as before, and a message without the header (the
Go package's, ``nats pub``'s) is delivered as ever, with no lag sample.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from streamui import Broker
from streamui.nats import SENT_AT_HEADER, NatsTransport
from tests.support import WAIT
from tests.unit.test_metrics import Writer

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg

    from streamui.nats_server import NatsServer


async def heard(publisher: Broker, server: Broker) -> None:
    """Publish ``probe`` until *server* receives one.

    Right after a connection subscribed, nats-server (2.15) sometimes drops a message
    another connection publishes at once, flush or not (seen about once in 15 tries,
    without this branch's changes too); a later one arrives."""
    async with asyncio.timeout(WAIT):
        while not server.invalidations_received:
            await publisher.invalidate("probe")
            await asyncio.sleep(0.05)
    # Messages of one publisher arrive in order: no probe is still on its way.


async def test_the_lag_is_measured_from_the_publishing_process(
    nats_server: NatsServer, plain_client: Client
) -> None:
    wire: asyncio.Queue[Msg] = asyncio.Queue()

    async def seen(message: Msg) -> None:
        await wire.put(message)

    await plain_client.subscribe("streamui.scope.>", cb=seen)
    await plain_client.flush()
    async with (
        asyncio.timeout(4 * WAIT),
        Broker(NatsTransport(servers=nats_server.url)) as publisher,
        Broker(NatsTransport(servers=nats_server.url)) as server,
        server.watch(["invoice:*"]) as watcher,
    ):
        writer = Writer(watcher)
        await heard(publisher, server)
        published, received = publisher.invalidations_published, server.invalidations_received
        before = time.time()
        await publisher.invalidate("invoice:42")
        await writer.next()
        after = time.time()
        assert publisher.invalidations_published == published + 1
        assert server.invalidations_received == received + 1
        assert server.frames_written == 1
        assert server.lag.count == 1
        assert 0 <= server.lag.sum <= after - before
        # On the wire: the Go package's subject and (empty) payload, plus the header.
        message = await wire.get()
        while message.subject == "streamui.scope.probe":
            message = await wire.get()
        assert (message.subject, message.data) == ("streamui.scope.invoice.42", b"")
        assert message.headers is not None
        assert before <= float(message.headers[SENT_AT_HEADER]) <= after

        # A publish time from another clock: the lag is counted from it.
        await plain_client.publish(
            "streamui.scope.invoice.7", b"", headers={SENT_AT_HEADER: f"{time.time() - 3:.6f}"}
        )
        await writer.next()
        assert server.lag.count == 2
        assert server.lag.sum >= 3
        assert dict(server.lag.cumulative())[2.5] == 1

        # No header (the Go package, nats pub), or one that is not a time: delivered,
        # counted as received and written, and no lag sample.
        await plain_client.publish("streamui.scope.invoice.8", b"")
        await writer.next()
        await plain_client.publish(
            "streamui.scope.invoice.9", b"", headers={SENT_AT_HEADER: "yesterday"}
        )
        await writer.next()
        assert server.invalidations_received == received + 4
        assert server.frames_written == 4
        assert server.lag.count == 2
