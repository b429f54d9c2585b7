"""Every error streamui raises, under one base class.

```
StreamUIError
├── InvalidScopeError (ValueError)    a scope, key, subject or prefix broke the grammar
├── InvalidTokenError (ValueError)    a stream token is missing, malformed, tampered or stale
│   └── ExpiredTokenError             ... or only too old (its page is to be reloaded)
├── PayloadTooLargeError (ValueError) invalidation data encodes to more than max_data_bytes
├── TooManyScopesError (ValueError)   a page or fragment watches more than max_scopes
├── ConfigurationError                a setting cannot work (e.g. Connect without an endpoint)
├── BrokerStateError (RuntimeError)   the broker was used before start or after close
└── StreamRefused                     the stream endpoint answers a request with a 4xx
```

Usage errors (the first five) mean the caller must change what it passes; a
`BrokerStateError` means the caller used a long-lived object outside its lifetime. A
`StreamRefused` never reaches application code: each framework integration turns it
into its own error response.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "BrokerStateError",
    "ConfigurationError",
    "ExpiredTokenError",
    "InvalidScopeError",
    "InvalidTokenError",
    "PayloadTooLargeError",
    "RefusalKind",
    "StreamRefused",
    "StreamUIError",
    "TooManyScopesError",
]


class StreamUIError(Exception):
    """Base class of every error raised by streamui."""


class InvalidScopeError(StreamUIError, ValueError):
    """A scope, signal key, subject or subject prefix does not follow the grammar."""


class InvalidTokenError(StreamUIError, ValueError):
    """A stream token could not be verified."""


class ExpiredTokenError(InvalidTokenError):
    """A stream token that verified once is too old now (``token_lifetime`` or
    ``token_max_age``): a fresh page brings a fresh one."""


class PayloadTooLargeError(StreamUIError, ValueError):
    """The ``data`` of an invalidation encodes to more JSON than the broker's ``max_data_bytes``."""


class TooManyScopesError(StreamUIError, ValueError):
    """A page, fragment or `init_scope` call watches more scopes than one stream may
    (``max_scopes``): raised while rendering, since the stream would be refused."""


class ConfigurationError(StreamUIError):
    """streamui was set up in a way that cannot work."""


class BrokerStateError(StreamUIError, RuntimeError):
    """The broker was used before `start()` or after `close()`."""


RefusalKind = Literal[
    "not_found",
    "missing_token",
    "too_many_tokens",
    "too_many_scopes",
    "bad_since",
    "invalid_token",
    "expired_token",
    "unauthorized",
]
"""Why the stream endpoint refused a request, as a label for logs and metrics (a closed
set, so a counter keyed by it stays small)."""


class StreamRefused(StreamUIError):
    """The stream endpoint refuses a request: *status* (4xx), *reason* (for the body,
    which streamui's browser module shows in ``_streamError``), *kind* and extra
    response *headers*."""

    def __init__(
        self,
        status: int,
        reason: str,
        *,
        kind: RefusalKind,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.kind: RefusalKind = kind
        self.headers: Mapping[str, str] = headers or {}
