"""Transports carry invalidations between brokers; `InProcessTransport` is the embedded one.

Contract of a `Transport` (the broker is its only caller, always on one event loop):

- ``publish(subject, payload)`` hands one message to every subscription whose subject
  pattern matches, NATS semantics (``*`` one token, ``>`` one or more trailing tokens).
  An empty payload is a plain invalidation.
- ``subscribe(pattern, handler)`` calls ``handler(subject, payload)`` on the event loop for
  every matching message, once per subscription (a message that matches two
  subscriptions is delivered to both), in publish order per publisher.
- Delivery is at most once; nothing is stored for a subscriber that was not there.
  A transport whose link can drop calls the ``on_reconnect`` callback given to
  ``start`` after each reconnect (messages may have been lost in between).
- ``sees_all_publishes`` is True when every publish of every process passes through this
  transport object, which only the in-process transport can promise; the broker uses it
  to decide whether it may rely on its own log of recent invalidations.
- ``sent_at``, while a handler runs, is when the message was published (the publisher's
  Unix time), if the transport carries that (NATS does, in a header); else None. Only
  the lag metric uses it, so a transport that cannot carry it loses nothing else.

`InProcessTransport` reaches the subscribers of one process only. It matches with a
token trie (cost grows with the subject's depth and the matching subscriptions, not the
number of subscriptions). Applications may use it directly in tests; for several
processes or machines use the NATS transport (``streamui[nats]``).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TypeAlias

__all__ = ["InProcessTransport", "MessageHandler", "SubjectTrie", "Subscription", "Transport"]

MessageHandler: TypeAlias = Callable[[str, bytes], None]
"""Called as ``handler(subject, payload)`` on the broker's event loop."""

logger = logging.getLogger("streamui.transport")


class Subscription(ABC):
    """One upstream subscription; `unsubscribe` is idempotent."""

    @abstractmethod
    async def unsubscribe(self) -> None:
        """Stop delivering messages to this subscription's handler."""


class Transport(ABC):
    """What a broker needs from a message bus."""

    sees_all_publishes: bool = False
    sent_at: float | None = None
    """The publish time of the message whose handler is running, if known (a side
    channel rather than a handler argument, so handlers keep their two arguments)."""

    async def start(self, on_reconnect: Callable[[], None] | None = None) -> None:  # noqa: B027
        """Connect; called once by the broker before any other method.

        A transport that can lose messages while its link is down calls *on_reconnect*
        (on the event loop) after every reconnect, so the broker can push every watched
        scope once.
        """

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release every resource; called once by the broker."""

    @abstractmethod
    async def publish(self, subject: str, payload: bytes) -> None:
        """Send one message to every matching subscription."""

    @abstractmethod
    async def subscribe(self, pattern: str, handler: MessageHandler) -> Subscription:
        """Deliver every message whose subject matches *pattern* to *handler*."""


class _Node:
    __slots__ = ("children", "values")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.values: list[object] = []


class SubjectTrie:
    """Maps NATS subject patterns to values; `match` finds the values for a concrete subject."""

    __slots__ = ("_root",)

    def __init__(self) -> None:
        self._root = _Node()

    def add(self, pattern: str, value: object) -> None:
        node = self._root
        for token in pattern.split("."):
            node = node.children.setdefault(token, _Node())
        node.values.append(value)

    def remove(self, pattern: str, value: object) -> None:
        """Remove one occurrence of *value* under *pattern*, pruning empty branches."""
        path = [self._root]
        tokens = pattern.split(".")
        for token in tokens:
            child = path[-1].children.get(token)
            if child is None:
                return
            path.append(child)
        values = path[-1].values
        for index, existing in enumerate(values):
            if existing is value:
                del values[index]
                break
        for depth in range(len(tokens), 0, -1):
            node = path[depth]
            if node.values or node.children:
                break
            del path[depth - 1].children[tokens[depth - 1]]

    def match(self, subject: str) -> list[object]:
        tokens = subject.split(".")
        found: list[object] = []
        self._collect(self._root, tokens, 0, found)
        return found

    def _collect(self, node: _Node, tokens: list[str], index: int, found: list[object]) -> None:
        if index == len(tokens):
            found.extend(node.values)
            return
        rest = node.children.get(">")
        if rest is not None:
            found.extend(rest.values)
        exact = node.children.get(tokens[index])
        if exact is not None:
            self._collect(exact, tokens, index + 1, found)
        star = node.children.get("*")
        if star is not None:
            self._collect(star, tokens, index + 1, found)

    def __bool__(self) -> bool:
        return bool(self._root.children)


class _InProcessSubscription(Subscription):
    __slots__ = ("_active", "_handler", "_pattern", "_transport")

    def __init__(self, transport: InProcessTransport, pattern: str, handler: MessageHandler):
        self._transport = transport
        self._pattern = pattern
        self._handler = handler
        self._active = True

    def deliver(self, subject: str, payload: bytes) -> None:
        if self._active:
            self._handler(subject, payload)

    async def unsubscribe(self) -> None:
        if self._active:
            self._active = False
            self._transport._trie.remove(self._pattern, self)


class InProcessTransport(Transport):
    """Delivers each publish synchronously to this process's matching subscriptions."""

    sees_all_publishes = True

    def __init__(self) -> None:
        self._trie = SubjectTrie()

    async def publish(self, subject: str, payload: bytes) -> None:
        # Snapshot the matches: a handler may unsubscribe (or subscribe) while we deliver.
        for subscription in self._trie.match(subject):
            assert isinstance(subscription, _InProcessSubscription)
            try:
                subscription.deliver(subject, payload)
            except Exception:  # one broken handler must not starve the others
                logger.exception("subscriber of %r failed on %r", subscription._pattern, subject)

    async def subscribe(self, pattern: str, handler: MessageHandler) -> Subscription:
        subscription = _InProcessSubscription(self, pattern, handler)
        self._trie.add(pattern, subscription)
        return subscription

    @property
    def subscription_count(self) -> int:
        """How many subscriptions are active (for tests and diagnostics)."""
        count = 0
        stack = [self._trie._root]
        while stack:
            node = stack.pop()
            count += len(node.values)
            stack.extend(node.children.values())
        return count
