"""The streamui showcase: a small live dashboard of a counter, invoices and a clock.

``python -m examples.showcase`` serves it on http://127.0.0.1:8000 (``HOST``/``PORT``
to change); `create_app` builds the Litestar app, e.g. for tests.
"""

from examples.showcase.app import create_app

__all__ = ["create_app"]
