"""`NatsTransport`: invalidations between processes and machines over NATS (nats-py).

Install with ``pip install 'streamui[nats]'``.

Contract (beyond the `Transport` one):

- Subjects are ``<prefix>.<segments>``; an empty payload is a plain invalidation (what
  the Go package publishes). The broker subscribes to ``<prefix>.>`` (every
  invalidation, for exact catch-up) or, with ``upstream="watched"``, once per watched
  pattern with NATS wildcards, so the NATS server does the matching and each process
  receives only what its streams watch.
- Built from server URLs (``NatsTransport(servers=...)`` or `NatsTransport.from_env`),
  the transport owns its connection: it reconnects forever, and drains and closes it on
  `close`. Built from an existing nats-py connection, it only removes its own
  subscriptions on `close` and leaves the connection to its owner.
- While the connection is down, nats-py keeps published messages in its pending buffer
  (``pending_size``, 2 MiB by default) and sends them after the reconnect. When that
  buffer is full, or the connection is closed, `publish` raises `PublishError` at once.
  It never waits for the server to come back.
- After every reconnect the broker pushes every watched scope once: messages published
  by other processes while the link was down are lost to this one.
- Each message carries its publish time in a ``Streamui-Sent-At`` header (Unix seconds),
  for the lag metric across processes; subject and payload stay what the Go package
  sends and reads (headers are invisible to it). A message without the header (from
  the Go package, ``nats pub``) just gives no lag sample.
- A new subscription is flushed to this process's NATS server before it is used.
  In a cluster, other nodes learn of it a moment later (NATS propagates interest
  asynchronously, typically well under a millisecond on one network): an invalidation
  published on another node in that instant is not delivered. With the default
  ``upstream="all"`` that instant is at the broker's start, before any stream; with
  ``"watched"`` it follows each new pattern, and nothing covers it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from typing import TYPE_CHECKING, Any

from streamui.errors import ConfigurationError, StreamUIError
from streamui.transports import MessageHandler, Subscription, Transport

try:
    from nats.errors import Error as NatsError

    import nats
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError("streamui.nats needs nats-py: pip install 'streamui[nats]'") from error

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription as NatsSubscription

__all__ = ["NATS_URL_ENV", "SENT_AT_HEADER", "NatsTransport", "PublishError"]

logger = logging.getLogger("streamui.nats")

NATS_URL_ENV = "STREAMUI_NATS_URL"
"""Environment variable read by `NatsTransport.from_env`: comma-separated server URLs."""
SENT_AT_HEADER = "Streamui-Sent-At"
"""The NATS header with a message's publish time (Unix seconds), for the lag metric."""


class PublishError(StreamUIError):
    """NATS did not take an invalidation (connection closed, or its buffer is full)."""


class _Subscription(Subscription):
    __slots__ = ("_owner", "_subscription")

    def __init__(self, owner: NatsTransport, subscription: NatsSubscription) -> None:
        self._owner = owner
        self._subscription: NatsSubscription | None = subscription

    async def unsubscribe(self) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is None:
            return
        self._owner._subscriptions.discard(self)
        try:
            await subscription.unsubscribe()
        except NatsError as error:  # closed or draining connection: nothing left to drop
            logger.debug("unsubscribe from %r: %s", subscription.subject, error)


def parse_servers(value: str | Sequence[str]) -> list[str]:
    """``"nats://a:4222, nats://b:4222"`` or a list -> a list of URLs."""
    items = value.split(",") if isinstance(value, str) else list(value)
    servers = [item.strip() for item in items if item.strip()]
    if not servers:
        raise ConfigurationError(f"no NATS server URL in {value!r}")
    return servers


class NatsTransport(Transport):
    """Publishes and subscribes through one NATS connection."""

    sees_all_publishes = False

    def __init__(
        self,
        connection: Client | None = None,
        *,
        servers: str | Sequence[str] | None = None,
        **connect_options: Any,
    ) -> None:
        if (connection is None) == (servers is None):
            raise ConfigurationError(
                "NatsTransport takes an existing nats-py connection or servers=..., "
                "exactly one of them"
            )
        if connection is not None and connect_options:
            raise ConfigurationError("connect options only apply with servers=...")
        self._connection = connection
        self._owns_connection = connection is None
        self.servers = parse_servers(servers) if servers is not None else []
        self._connect_options = connect_options
        self._subscriptions: set[_Subscription] = set()
        self._closing = False

    @classmethod
    def from_env(cls, **connect_options: Any) -> NatsTransport:
        """Build from ``STREAMUI_NATS_URL`` (comma-separated URLs)."""
        value = os.environ.get(NATS_URL_ENV, "")
        if not value.strip():
            raise ConfigurationError(f"{NATS_URL_ENV} is not set (e.g. nats://127.0.0.1:4222)")
        return cls(servers=value, **connect_options)

    @property
    def connection(self) -> Client:
        if self._connection is None:
            raise ConfigurationError("the NATS transport is not started")
        return self._connection

    async def start(self, on_reconnect: Callable[[], None] | None = None) -> None:
        self._closing = False  # (started again after a close: a broker that restarts)

        async def reconnected() -> None:
            url = self.connection.connected_url
            logger.info("reconnected to NATS at %s", url.geturl() if url else "?")
            if on_reconnect is not None:
                on_reconnect()

        if self._connection is not None:
            # nats-py has one reconnected callback per connection, set at connect time:
            # chain ours after the owner's so both run.
            previous: Callable[[], Awaitable[None]] | None = self._connection._reconnected_cb

            async def chained() -> None:
                if previous is not None:
                    await previous()
                await reconnected()

            self._connection._reconnected_cb = chained
            return

        async def disconnected() -> None:
            if self._closing:  # our own drain/close: nothing is being reconnected
                logger.debug("disconnected from NATS (closing)")
            else:
                logger.warning("disconnected from NATS; reconnecting")

        options: dict[str, Any] = {
            "name": "streamui",
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": 0.5,
            "error_cb": _log_error,
            "disconnected_cb": disconnected,
        }
        options.update(self._connect_options)
        user_reconnected = options.pop("reconnected_cb", None)

        async def reconnected_for_both() -> None:
            if user_reconnected is not None:
                await user_reconnected()
            await reconnected()

        self._connection = await nats.connect(
            servers=self.servers, reconnected_cb=reconnected_for_both, **options
        )

    async def close(self) -> None:
        self._closing = True
        for subscription in list(self._subscriptions):
            await subscription.unsubscribe()
        connection = self._connection
        if self._owns_connection:
            self._connection = None  # a start after this connects anew
        if self._owns_connection and connection is not None and not connection.is_closed:
            if connection.is_connected:
                try:
                    # Drain: deliver what is in flight, send what is buffered, then close.
                    await asyncio.wait_for(connection.drain(), timeout=5)
                except (TimeoutError, NatsError, OSError) as error:
                    logger.warning("NATS drain failed (%s); closing", error)
            if not connection.is_closed:
                # Not connected (e.g. NATS is down): what is still buffered cannot be
                # sent; closing must not fail on the dead socket.
                try:
                    await connection.close()
                except Exception as error:  # nats-py writing to a dead socket; varies by
                    # Python version (OSError on 3.11, TypeError from asyncio on 3.13)
                    logger.debug("closing the NATS connection: %r", error)

    async def publish(self, subject: str, payload: bytes) -> None:
        if self._closing:
            raise PublishError(f"the NATS transport is closed; cannot publish on {subject!r}")
        try:
            await self.connection.publish(
                subject, payload, headers={SENT_AT_HEADER: f"{time.time():.6f}"}
            )
        except NatsError as error:
            reason = str(error) or type(error).__name__
            raise PublishError(
                f"NATS did not take the invalidation on {subject!r}: {reason} "
                "(connection closed, or its pending buffer is full while reconnecting)"
            ) from error

    async def subscribe(self, pattern: str, handler: MessageHandler) -> Subscription:
        async def deliver(message: Msg) -> None:
            headers = message.headers
            self.sent_at = _sent_at(headers.get(SENT_AT_HEADER)) if headers else None
            try:
                handler(message.subject, message.data)
            except Exception:  # a broken handler must not reach nats-py's error callback
                logger.exception("subscriber of %r failed on %r", pattern, message.subject)
            finally:
                self.sent_at = None

        subscription = _Subscription(self, await self.connection.subscribe(pattern, cb=deliver))
        self._subscriptions.add(subscription)
        # Wait until the server has the subscription, so an invalidation published
        # right after a stream opened (by anyone) reaches it. While reconnecting there
        # is nothing to wait for: nats-py re-sends every subscription on reconnect.
        if self.connection.is_connected:
            try:
                await self.connection.flush(timeout=5)
            except (TimeoutError, NatsError) as error:
                logger.warning("NATS flush after subscribing to %r failed: %s", pattern, error)
        return subscription


def _sent_at(value: str | None) -> float | None:
    """The publish time a header gives, or None if it is missing or not a time."""
    if value is None:
        return None
    try:
        sent_at = float(value)
    except ValueError:
        return None
    return sent_at if math.isfinite(sent_at) and sent_at > 0 else None


async def _log_error(error: Exception) -> None:
    logger.warning("NATS error: %s", error)
