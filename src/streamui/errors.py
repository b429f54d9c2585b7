"""Every error streamui raises, under one base class.

```
StreamUIError
├── InvalidScopeError (ValueError)    a scope, key, subject or prefix broke the grammar
├── InvalidTokenError (ValueError)    a stream token is missing, malformed, tampered or stale
├── PayloadTooLargeError (ValueError) invalidation data encodes to more than max_data_bytes
├── TooManyScopesError (ValueError)   a page or fragment watches more than max_scopes
├── ConfigurationError                a setting cannot work (e.g. Connect without an endpoint)
└── BrokerStateError (RuntimeError)   the broker was used before start or after close
```

Usage errors (the first five) mean the caller must change what it passes; a
`BrokerStateError` means the caller used a long-lived object outside its lifetime.
"""

from __future__ import annotations

__all__ = [
    "BrokerStateError",
    "ConfigurationError",
    "InvalidScopeError",
    "InvalidTokenError",
    "PayloadTooLargeError",
    "StreamUIError",
    "TooManyScopesError",
]


class StreamUIError(Exception):
    """Base class of every error raised by streamui."""


class InvalidScopeError(StreamUIError, ValueError):
    """A scope, signal key, subject or subject prefix does not follow the grammar."""


class InvalidTokenError(StreamUIError, ValueError):
    """A stream token could not be verified."""


class PayloadTooLargeError(StreamUIError, ValueError):
    """The ``data`` of an invalidation encodes to more JSON than the broker's ``max_data_bytes``."""


class TooManyScopesError(StreamUIError, ValueError):
    """A page, fragment or `init_scope` call watches more scopes than one stream may
    (``max_scopes``): raised while rendering, since the stream would be refused."""


class ConfigurationError(StreamUIError):
    """streamui was set up in a way that cannot work."""


class BrokerStateError(StreamUIError, RuntimeError):
    """The broker was used before `start()` or after `close()`."""
