"""streamui's browser module, which lets all tabs of a browser share one stream.

The module (``static/streamui.js``, plain JavaScript type-checked in CI) is served by the
Litestar plugin at ``<stream path>.<digest>.js``: the digest of its content is in the URL,
so browsers may cache it for a year and a new release is fetched at once. Another
framework serves `source()` the same way and passes the URL as
``StreamEndpoint(client_url=...)``.
"""

from __future__ import annotations

import functools
import hashlib
from importlib import resources
from typing import Final

__all__ = ["CACHE_CONTROL", "MEDIA_TYPE", "digest", "source", "url_for"]

MEDIA_TYPE: Final = "text/javascript"
"""Litestar adds the charset (utf-8)."""
CACHE_CONTROL: Final = "public, max-age=31536000, immutable"
"""For a URL that names the content's digest: it never changes."""


@functools.cache
def source() -> bytes:
    """The module's text, as shipped in the package."""
    return (resources.files("streamui") / "static" / "streamui.js").read_bytes()


@functools.cache
def digest() -> str:
    """12 hex characters of the SHA-256 of `source`."""
    return hashlib.sha256(source()).hexdigest()[:12]


def url_for(stream_path: str) -> str:
    """Where the plugin serves the module for a stream served at *stream_path*."""
    return f"{stream_path}.{digest()}.js"
