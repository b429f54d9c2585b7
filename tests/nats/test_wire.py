"""Wire compatibility with the Go package, end to end over HTTP and a real nats-server.

With prefix ``webx.scope`` a service in either language invalidates the other's pages: a
plain NATS client (what the Go package is, on the wire) publishes ``webx.scope.invoice.42``
with an empty payload, and every stream watching ``invoice:42`` or ``invoice:*`` is pushed.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
from typing import TYPE_CHECKING

import pytest

from streamui import DATA_NAMESPACE, SIGNAL_NAMESPACE
from tests.integration.conftest import running, url_from
from tests.nats.conftest import recording_logs, settle, wait_for_server_subscriptions
from tests.support import WAIT

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from nats.aio.client import Client
    from nats.aio.msg import Msg

    from streamui.nats_server import NatsServer
    from tests.integration.conftest import Live, OpenStream, Push

SCOPES = ("invoice:42", "invoice:*", "probe:wire")
KEYS = {"invoice_42", "invoice_WILD"}


@contextlib.asynccontextmanager
async def go_compatible_stream(server: NatsServer) -> AsyncIterator[tuple[Live, OpenStream]]:
    """The test app on ``prefix="webx.scope"`` over *server*, a page watching ``invoice:42``
    and ``invoice:*`` and an open stream for it, settled (its catch-up read)."""
    async with running(prefix="webx.scope", nats_url=server.url) as live:
        page = html.unescape(await live.page(*SCOPES))
        # The keys the pushes must carry are the ones the page's effects read.
        assert "[$_stream.invoice_42].join()" in page
        assert "[$_stream.invoice_WILD].join()" in page
        async with live.stream(url_from(page)) as stream:
            await settle(live, stream, "probe:wire")
            yield live, stream


async def pushes_for_both_keys(stream: OpenStream) -> list[Push]:
    """Read pushes until both invoice keys were seen: they arrive coalesced in one event or
    in two (one message per subscription); nothing else may be pushed."""
    pushes: list[Push] = []
    seen: set[str] = set()
    while seen != KEYS:
        push = await stream.next_push()
        assert push.keys <= KEYS, f"pushed a scope nobody invalidated: {push}"
        pushes.append(push)
        seen |= push.keys
    assert len(pushes) <= 2, pushes
    return pushes


async def test_an_empty_message_from_a_plain_client_pushes_exact_and_wildcard_watchers(
    nats_server: NatsServer, plain_client: Client
) -> None:
    async with asyncio.timeout(4 * WAIT), go_compatible_stream(nats_server) as (_, stream):
        await plain_client.publish("webx.scope.invoice.42", b"")
        await plain_client.flush()
        pushes = await pushes_for_both_keys(stream)
    for push in pushes:
        # Exactly the revisions, no payload: an empty message is a plain invalidation.
        assert push.signals == {SIGNAL_NAMESPACE: dict.fromkeys(push.keys, push.revision)}


async def test_a_json_payload_from_a_plain_client_reaches_the_page_as_stream_data(
    nats_server: NatsServer, plain_client: Client
) -> None:
    payload = {"total": "12.50", "lines": [1, 2], "paid": False, "note": "é\n</script>"}
    async with asyncio.timeout(4 * WAIT), go_compatible_stream(nats_server) as (_, stream):
        await plain_client.publish("webx.scope.invoice.42", json.dumps(payload).encode())
        await plain_client.flush()
        pushes = await pushes_for_both_keys(stream)
    data = {key: value for push in pushes for key, value in push.data.items()}
    # The wildcard watcher is told which scope the data is for.
    assert data == {"invoice_42": payload, "invoice_WILD": {"scope": "invoice:42", "data": payload}}


async def test_a_payload_that_is_not_json_is_a_plain_invalidation(
    nats_server: NatsServer, plain_client: Client
) -> None:
    async with asyncio.timeout(4 * WAIT), go_compatible_stream(nats_server) as (live, stream):
        with recording_logs() as logs:
            await plain_client.publish("webx.scope.invoice.42", b"\xffnot json {")
            await plain_client.flush()
            pushes = await pushes_for_both_keys(stream)
        # The stream carried on: the next invalidation is pushed too.
        await live.broker.invalidate("invoice:42")
        await pushes_for_both_keys(stream)
    assert all(DATA_NAMESPACE not in push.signals for push in pushes), pushes
    # The bad payload is reported as a warning (naming the subject), not as an error.
    warnings = [record.getMessage() for record in logs.records]
    assert warnings, "the payload that is not JSON was dropped silently"
    assert all("not JSON" in message and "webx.scope.invoice.42" in message for message in warnings)
    assert not logs.tracebacks


async def test_invalidations_from_streamui_are_what_the_go_package_listens_for(
    nats_server: NatsServer, plain_client: Client
) -> None:
    received: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()

    async def record(message: Msg) -> None:
        received.put_nowait((message.subject, message.data))

    await plain_client.subscribe("webx.scope.>", cb=record)
    await plain_client.flush()
    async with (
        asyncio.timeout(2 * WAIT),
        running(prefix="webx.scope", nats_url=nats_server.url) as live,
    ):
        await live.broker.invalidate("invoice:42")
        await live.broker.invalidate("workspace:1:doc:7", data={"title": "Q3"})
        first = await received.get()
        second = await received.get()
    assert first == ("webx.scope.invoice.42", b"")
    assert second == ("webx.scope.workspace.1.doc.7", b'{"title":"Q3"}')


@pytest.mark.parametrize(
    ("scope", "upstream", "subject"),
    [
        ("invoice:42", "all", "webx.scope.>"),
        ("invoice:*", "all", "webx.scope.>"),
        ("invoice:42", "watched", "webx.scope.invoice.42"),
        ("invoice:*", "watched", "webx.scope.invoice.*"),
    ],
)
async def test_a_stream_subscribes_under_the_go_prefix(
    nats_server: NatsServer, scope: str, upstream: str, subject: str
) -> None:
    async with (
        asyncio.timeout(2 * WAIT),
        running(prefix="webx.scope", nats_url=nats_server.url, upstream=upstream) as live,
        live.stream(await live.stream_url(scope)),
    ):
        held = await wait_for_server_subscriptions(nats_server, subject, 1)
        assert held == [subject]
