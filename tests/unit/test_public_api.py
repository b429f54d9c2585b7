"""The public surface: pinned exports, the error tree, and parity with the Go package."""

from __future__ import annotations

import asyncio
import inspect
import re
import subprocess
import sys

import streamui
from streamui import (
    SIGNAL_NAMESPACE,
    Broker,
    BrokerStateError,
    ConfigurationError,
    Connect,
    InProcessTransport,
    InvalidScopeError,
    InvalidTokenError,
    PayloadTooLargeError,
    StreamEndpoint,
    StreamUIError,
    TokenSigner,
    TooManyScopesError,
    Transport,
    Watch,
    init_scope,
    scope_from_key,
    scope_key,
    scope_signals,
    use_endpoint,
    watch_attrs,
    watch_effect,
)

EXPECTED_ALL = [
    "CONNECT_ID",
    "DATASTAR_CDN_URL",
    "DATASTAR_VERSION",
    "DATA_NAMESPACE",
    "DEFAULT_PREFIX",
    "ERROR_SIGNAL",
    "MAX_SCOPE_LENGTH",
    "SIGNAL_NAMESPACE",
    "TOKENS_NAMESPACE",
    "Broker",
    "BrokerStateError",
    "ConfigurationError",
    "Connect",
    "EventStream",
    "InProcessTransport",
    "InvalidScopeError",
    "InvalidTokenError",
    "JoinStream",
    "PayloadTooLargeError",
    "StreamEndpoint",
    "StreamToken",
    "StreamUIError",
    "Subscription",
    "TokenSigner",
    "TooManyScopesError",
    "Transport",
    "Watch",
    "Watcher",
    "datastar_script",
    "init_scope",
    "is_pattern",
    "scope",
    "scope_from_key",
    "scope_from_subject",
    "scope_key",
    "scope_matches",
    "scope_signals",
    "scope_subject",
    "use_endpoint",
    "validate_prefix",
    "validate_scope",
    "watch_attrs",
    "watch_effect",
]


def isort_style(name: str) -> tuple[int, str]:
    """The order ruff's RUF022 keeps ``__all__`` in: CONSTANTS, then Classes, then the rest."""
    if name.isupper():
        return (0, name)
    if name[:1].isupper():
        return (1, name)
    return (2, name)


def test_all_is_pinned() -> None:
    # Changing the public surface is a deliberate act: update this list with it.
    assert streamui.__all__ == EXPECTED_ALL


def test_all_is_sorted() -> None:
    assert streamui.__all__ == sorted(streamui.__all__, key=isort_style)
    assert len(set(streamui.__all__)) == len(streamui.__all__)


def test_every_exported_name_exists_and_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from streamui import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(EXPECTED_ALL)
    for name in EXPECTED_ALL:
        assert getattr(streamui, name) is namespace[name]


def test_the_package_has_a_version() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", streamui.__version__)


def test_errors_form_one_tree() -> None:
    for error in (
        InvalidScopeError,
        InvalidTokenError,
        PayloadTooLargeError,
        ConfigurationError,
        BrokerStateError,
        TooManyScopesError,
    ):
        assert issubclass(error, StreamUIError)
    assert issubclass(InvalidScopeError, ValueError)
    assert issubclass(InvalidTokenError, ValueError)
    assert issubclass(PayloadTooLargeError, ValueError)
    assert issubclass(TooManyScopesError, ValueError)
    assert issubclass(BrokerStateError, RuntimeError)
    assert not issubclass(ConfigurationError, ValueError | RuntimeError)


def test_the_core_imports_neither_litestar_nor_nats() -> None:
    code = (
        "import sys, streamui; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'litestar', 'nats'}))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert completed.stdout.strip() == "[]"


# -- seed parity: every row of the Go package's table ----------------------------------------


def test_signal_namespace() -> None:
    assert SIGNAL_NAMESPACE == "_stream"


def test_scope_key_and_its_inverse() -> None:
    assert scope_key("invoice:42") == "invoice_42"
    assert scope_from_key("invoice_42") == "invoice:42"


def test_watch_effect_watch_and_watch_attrs() -> None:
    effect = watch_effect("invoice:42", "/invoices/42")
    assert "$_stream.invoice_42" in effect
    assert "data-effect" in str(Watch("invoice:42", "/invoices/42"))
    assert watch_attrs("invoice:42", "/invoices/42")["data-effect"] == effect


def test_scope_signals_and_init_scope() -> None:
    assert scope_signals("invoice:42") == {
        "_stream": {"invoice_42": 0},
        "_streamData": {"invoice_42": ""},
    }
    event = init_scope("invoice:42", endpoint=StreamEndpoint("/s", TokenSigner(b"k" * 32)))
    assert event.startswith("event: datastar-patch-signals\n")


async def test_connect_renders_nothing_without_scopes() -> None:
    # Async: rendered in this test's own task, whatever other tests registered in the
    # main thread. Connect() itself renders an idle element there, which a fragment's
    # JoinStream() can still join; joinable=False is the Go package's behaviour.
    with use_endpoint(StreamEndpoint()):
        assert str(Connect(joinable=False)) == ""


async def test_broker_invalidate_invalidate_many_and_prefix() -> None:
    assert inspect.iscoroutinefunction(Broker.invalidate)
    assert inspect.iscoroutinefunction(Broker.invalidate_many)
    assert isinstance(Broker().transport, InProcessTransport)
    async with Broker(prefix="webx.scope") as broker:
        assert broker.prefix == "webx.scope"
        async with broker.watch(["invoice:42"]) as watcher:
            await broker.invalidate("invoice:42")
            await broker.invalidate_many(["invoice:42"])
            await asyncio.sleep(0)  # watchers are marked in the next event-loop turn
            assert watcher.ready


def test_stream_controller_and_plugin_live_in_streamui_litestar() -> None:
    from litestar import Controller
    from litestar.plugins import InitPlugin

    from streamui.litestar import StreamController, StreamPlugin

    assert issubclass(StreamController, Controller)
    assert issubclass(StreamPlugin, InitPlugin)


def test_an_external_nats_transport_plugs_into_the_broker() -> None:
    # NewBroker(conn) with an external NATS connection -> Broker(NatsTransport(nc)).
    # A plain import: a missing streamui.nats fails this row, never skips it.
    from streamui.nats import NatsTransport

    assert issubclass(NatsTransport, Transport)
    assert "connection" in inspect.signature(NatsTransport).parameters
    broker = Broker(NatsTransport(servers="nats://127.0.0.1:4222"), prefix="webx.scope")
    assert isinstance(broker.transport, NatsTransport)
