"""Stream tokens: the signed list of scopes a tab may watch, and when it was rendered.

A token is ``<payload>.<mac>``, both URL-safe base64 without padding. The payload is
compact JSON ``{"s": [scopes…], "t": <unix time, ms>}``; the MAC is HMAC-SHA256 over the
payload with the application's secret. A client cannot add a scope, widen a wildcard or
watch another tenant's scope by editing the URL: any change breaks the MAC.

Tokens do not expire by default, because a tab's stream URL never changes and must keep
reconnecting for as long as the tab is open; use the stream's authorization hook (run on
every connect) for per-user checks, and ``max_age`` where tokens must expire.

Every process that serves streams for the same pages must share the secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from streamui.errors import ConfigurationError, InvalidScopeError, InvalidTokenError
from streamui.scopes import validate_scope

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["StreamToken", "TokenSigner"]

_MAX_TOKEN_LENGTH = 32_768


@dataclass(frozen=True, slots=True)
class StreamToken:
    """What a verified token says."""

    scopes: tuple[str, ...]
    issued_at: float
    """Unix time (seconds) at which the page was rendered."""


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    """Signs and verifies stream tokens with one secret.

    ``TokenSigner()`` draws a random secret, which is right for one process only.
    """

    __slots__ = ("_key", "max_age")

    def __init__(self, secret: str | bytes | None = None, *, max_age: float | None = None):
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
        self._key = hashlib.sha256(b"streamui-token\x00" + secret).digest()
        self.max_age = max_age

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()

    def sign(self, scopes: Sequence[str], *, issued_at: float | None = None) -> str:
        """A token for *scopes* (validated), rendered at *issued_at* (default: now)."""
        checked = [validate_scope(value) for value in scopes]
        if not checked:
            raise InvalidScopeError(f"a stream token needs at least one scope, got {scopes!r}")
        when = time.time() if issued_at is None else issued_at
        payload = json.dumps({"s": checked, "t": int(when * 1000)}, separators=(",", ":"))
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
        scopes, issued_at = _parse_payload(raw)
        if self.max_age is not None and time.time() - issued_at > self.max_age:
            raise InvalidTokenError(
                f"stream token expired (older than {self.max_age:g} s); reload the page"
            )
        return StreamToken(scopes, issued_at)


def _parse_payload(raw: bytes) -> tuple[tuple[str, ...], float]:
    """Scopes and issue time from a payload whose MAC has been checked."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as error:
        raise InvalidTokenError(f"malformed stream token payload: {error}") from None
    if not isinstance(body, dict):
        raise InvalidTokenError("malformed stream token payload: not an object")
    scopes, issued = body.get("s"), body.get("t")
    if not isinstance(scopes, list) or not all(isinstance(value, str) for value in scopes):
        raise InvalidTokenError("malformed stream token payload: 's' is not a list of scopes")
    if not scopes:
        raise InvalidTokenError("malformed stream token payload: it names no scope")
    if isinstance(issued, bool) or not isinstance(issued, int) or not 0 <= issued < 2**53:
        raise InvalidTokenError("malformed stream token payload: 't' is not a time in ms")
    try:
        checked = tuple(validate_scope(value) for value in scopes)
    except ValueError as error:
        raise InvalidTokenError(f"malformed stream token payload: {error}") from None
    return checked, issued / 1000
