"""Stream tokens: the signed list of scopes a tab may watch, and when it was rendered.

A token is ``<payload>.<mac>``, both URL-safe base64 without padding. The payload is
compact JSON ``{"s": [scopes…], "t": <unix time, ms>, "i": <instance>, "e": <unix time,
ms>}``; the MAC is
HMAC-SHA256 over the payload with the application's secret. A client cannot add a scope,
widen a wildcard or watch another tenant's scope by editing the URL: any change breaks
the MAC.

``"i"`` names the process that rendered the page: 8 random hex characters drawn once
per process (again in a forked child; `process_instance`). It grants nothing; the
stream endpoint reads it only to tell when several processes serve an app whose broker
or secret is per process, which would otherwise fail silently. Tokens without it (signed
before it existed) verify as before, with ``instance=None``.

``"t"`` is when the page was rendered (the stream catches up from it); ``"e"``, with a
*lifetime*, is when the token expires. A stream URL copied from an access log then
grants nothing after that; open tabs never notice, because their stream hands them a
renewed token (`TokenSigner.renew`: same scopes and render time, a new expiry) well
before. A token without ``"e"`` (signed before lifetimes existed) expires *lifetime*
after its render. ``max_age`` refuses tokens whose *render* is older than that, renewed
or not. Use the stream's authorization hook (run on every connect and every renewal)
for per-user checks.

Every process that serves streams for the same pages must share the secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import secrets
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from streamui.errors import (
    ConfigurationError,
    ExpiredTokenError,
    InvalidScopeError,
    InvalidTokenError,
)
from streamui.scopes import validate_scope

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["StreamToken", "TokenSigner", "process_instance", "unverified_claims"]

_MAX_TOKEN_LENGTH = 32_768
_INSTANCE = re.compile(r"[0-9A-Za-z_-]{1,32}")
"""What an instance id may be: short, and safe to show in a log line as it is."""


def _draw_instance() -> None:
    global _process_instance  # noqa: PLW0603 - one value per process, redrawn in a fork
    _process_instance = secrets.token_hex(4)


_process_instance = ""
_draw_instance()
if hasattr(os, "register_at_fork"):
    # A child forked from a process that already imported streamui (a server that loads
    # the app before forking its workers) is another process: it gets its own id.
    os.register_at_fork(after_in_child=_draw_instance)


def process_instance() -> str:
    """This process's instance id (8 hex characters), which its tokens carry as ``"i"``."""
    return _process_instance


@dataclass(frozen=True, slots=True)
class StreamToken:
    """What a verified token says."""

    scopes: tuple[str, ...]
    issued_at: float
    """Unix time (seconds) at which the page was rendered."""
    instance: str | None = field(default=None, compare=False)
    """The process that signed it (`process_instance` there); None in older tokens.
    Not part of what the token grants, so not part of its equality."""
    expires_at: float | None = field(default=None, compare=False)
    """Unix time (seconds) after which it no longer verifies; None: never (or, for a
    signer with a lifetime, its render time plus that lifetime)."""


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    """Signs and verifies stream tokens with one secret.

    ``TokenSigner()`` draws a random secret, which is right for one process only.
    Tokens are stamped with *instance*, by default this process's `process_instance`
    (read when signing, so a signer built before a fork stamps the child's id).
    """

    __slots__ = ("_instance", "_key", "lifetime", "max_age")

    def __init__(
        self,
        secret: str | bytes | None = None,
        *,
        max_age: float | None = None,
        lifetime: float | None = None,
        instance: str | None = None,
    ):
        if secret is None:
            secret = secrets.token_bytes(32)
        if isinstance(secret, str):
            secret = secret.encode()
        if len(secret) < 16:
            raise ConfigurationError(
                f"the stream secret is {len(secret)} bytes; use at least 16 "
                "(e.g. secrets.token_urlsafe(32))"
            )
        if max_age is not None and max_age <= 0:
            raise ConfigurationError(f"max_age must be positive seconds, got {max_age!r}")
        if lifetime is not None and not lifetime > 0:
            raise ConfigurationError(f"lifetime must be positive seconds, got {lifetime!r}")
        if instance is not None and not _INSTANCE.fullmatch(instance):
            raise ConfigurationError(
                "instance must be 1 to 32 characters of A-Z a-z 0-9 _ - "
                f"(e.g. secrets.token_hex(4)), got {instance!r}"
            )
        self._instance = instance
        self._key = hashlib.sha256(b"streamui-token\x00" + secret).digest()
        self.max_age = max_age
        self.lifetime = lifetime
        """Seconds a token verifies after it was signed (renewed); None: forever."""

    @property
    def instance(self) -> str:
        """The instance id this signer stamps on its tokens."""
        return self._instance or _process_instance

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()

    def sign(self, scopes: Sequence[str], *, issued_at: float | None = None) -> str:
        """A token for *scopes* (validated), rendered at *issued_at* (default: now),
        expiring *lifetime* from now."""
        checked = [validate_scope(value) for value in scopes]
        if not checked:
            raise InvalidScopeError(f"a stream token needs at least one scope, got {scopes!r}")
        now = time.time()
        when = now if issued_at is None else issued_at
        body: dict[str, object] = {"s": checked, "t": int(when * 1000), "i": self.instance}
        if self.lifetime is not None:
            body["e"] = int((now + self.lifetime) * 1000)
        payload = json.dumps(body, separators=(",", ":"))
        raw = payload.encode()
        return f"{_b64encode(raw)}.{_b64encode(self._mac(raw))}"

    def verify(self, token: str) -> StreamToken:
        """Return what *token* says, or raise `InvalidTokenError` saying why not."""
        if not token:
            raise InvalidTokenError("missing stream token")
        if len(token) > _MAX_TOKEN_LENGTH:
            raise InvalidTokenError(f"stream token too long ({len(token)} characters)")
        payload_text, dot, mac_text = token.partition(".")
        try:
            raw = _b64decode(payload_text)
        except (binascii.Error, ValueError):
            raise InvalidTokenError("malformed stream token (not base64)") from None
        # Compare the canonical text of both parts, so no other spelling of a token
        # (padding bits, ignored characters) verifies: one token, one string.
        if (
            not dot
            or _b64encode(raw) != payload_text
            or not hmac.compare_digest(mac_text.encode(), _b64encode(self._mac(raw)).encode())
        ):
            raise InvalidTokenError(
                "stream token signature does not match (tampered, or signed with another secret)"
            )
        claims = _parse_payload(raw)
        now = time.time()
        if self.max_age is not None and now - claims.issued_at > self.max_age:
            raise ExpiredTokenError(
                f"stream token expired (older than {self.max_age:g} s); reload the page"
            )
        expires_at = self.expiry(claims)
        if expires_at is not None and now > expires_at:
            raise ExpiredTokenError(
                f"stream token expired {now - expires_at:.0f} s ago (it lives "
                f"{self.lifetime:g} s unless its stream renews it); reload the page"
            )
        return claims

    def expiry(self, token: StreamToken) -> float | None:
        """When *token* (verified) stops verifying here, if ever."""
        if self.lifetime is None:
            return None
        if token.expires_at is not None:
            return token.expires_at
        return token.issued_at + self.lifetime

    def renew(self, token: StreamToken) -> str:
        """*token* signed again: the same scopes and render time, a new expiry."""
        return self.sign(token.scopes, issued_at=token.issued_at)


def unverified_claims(token: str) -> StreamToken | None:
    """What *token* says WITHOUT checking its MAC, or None if it does not parse.

    Anyone can write such a token: use this only to explain why a token was refused
    (e.g. it names another process that has another random secret), never to grant
    anything.
    """
    if len(token) > _MAX_TOKEN_LENGTH:
        return None
    try:
        return _parse_payload(_b64decode(token.partition(".")[0]))
    except ValueError:  # binascii.Error and InvalidTokenError are ValueErrors
        return None


def _parse_payload(raw: bytes) -> StreamToken:
    """What a payload says (for a verified token: one whose MAC has been checked)."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as error:
        raise InvalidTokenError(f"malformed stream token payload: {error}") from None
    if not isinstance(body, dict):
        raise InvalidTokenError("malformed stream token payload: not an object")
    scopes, issued, instance = body.get("s"), body.get("t"), body.get("i")
    expires = body.get("e")
    if not isinstance(scopes, list) or not all(isinstance(value, str) for value in scopes):
        raise InvalidTokenError("malformed stream token payload: 's' is not a list of scopes")
    if not scopes:
        raise InvalidTokenError("malformed stream token payload: it names no scope")
    if isinstance(issued, bool) or not isinstance(issued, int) or not 0 <= issued < 2**53:
        raise InvalidTokenError("malformed stream token payload: 't' is not a time in ms")
    if instance is not None and not (isinstance(instance, str) and _INSTANCE.fullmatch(instance)):
        raise InvalidTokenError("malformed stream token payload: 'i' is not an instance id")
    if expires is not None and (
        isinstance(expires, bool) or not isinstance(expires, int) or not 0 <= expires < 2**53
    ):
        raise InvalidTokenError("malformed stream token payload: 'e' is not a time in ms")
    try:
        # Interned: every open stream keeps its scopes, and most streams share them.
        checked = tuple(sys.intern(validate_scope(value)) for value in scopes)
    except ValueError as error:
        raise InvalidTokenError(f"malformed stream token payload: {error}") from None
    return StreamToken(
        checked,
        issued / 1000,
        None if instance is None else sys.intern(instance),
        None if expires is None else expires / 1000,
    )
