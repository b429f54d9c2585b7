"""streamui: server-rendered htpy pages that stay live.

Wrap a component in `Watch(scope, url)`, put `Connect()` at the end of the page, and
call ``await broker.invalidate(scope)`` when the data changes: every tab watching a
matching scope re-fetches exactly the components that depend on it. The Litestar
integration lives in `streamui.litestar`; the NATS transport in `streamui.nats`.
"""

from streamui.broker import Broker, Watcher
from streamui.components import (
    CONNECT_ID,
    DATASTAR_CDN_URL,
    DATASTAR_VERSION,
    ERROR_SIGNAL,
    TOKENS_NAMESPACE,
    Connect,
    JoinStream,
    StreamEndpoint,
    Watch,
    datastar_script,
    init_scope,
    scope_signals,
    use_endpoint,
    watch_attrs,
    watch_effect,
)
from streamui.errors import (
    BrokerStateError,
    ConfigurationError,
    InvalidScopeError,
    InvalidTokenError,
    PayloadTooLargeError,
    StreamUIError,
    TooManyScopesError,
)
from streamui.scopes import (
    DATA_NAMESPACE,
    DEFAULT_PREFIX,
    MAX_SCOPE_LENGTH,
    SIGNAL_NAMESPACE,
    is_pattern,
    scope,
    scope_from_key,
    scope_from_subject,
    scope_key,
    scope_matches,
    scope_subject,
    validate_prefix,
    validate_scope,
)
from streamui.stream import EventStream
from streamui.tokens import StreamToken, TokenSigner
from streamui.transports import InProcessTransport, Subscription, Transport

__version__ = "0.1.0.dev0"

__all__ = [
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
