"""The streamui showcase: a small live dashboard of a counter, invoices and a clock.

``python -m examples.showcase`` serves it on http://127.0.0.1:8000 (``HOST``/``PORT``
to change); `create_app` builds the Litestar app, e.g. for tests.
"""

import os
import sys

from examples.showcase.app import create_app

__all__ = ["address_from_env", "create_app"]


def address_from_env() -> tuple[str, int]:
    """``HOST`` (default 127.0.0.1) and ``PORT`` (default 8000); exits on a bad port."""
    host = os.environ.get("HOST", "127.0.0.1")
    port_text = os.environ.get("PORT", "8000")
    try:
        return host, int(port_text)
    except ValueError:
        sys.exit(f"PORT must be a number, got {port_text!r}")
