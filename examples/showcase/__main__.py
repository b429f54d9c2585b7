"""Serve the showcase: ``python -m examples.showcase`` from the repository root.

Environment: ``HOST`` (default 127.0.0.1), ``PORT`` (default 8000),
``STREAMUI_SECRET`` (the stream token secret; default: a fixed secret for this
demo, so open tabs reconnect after a restart; never use a fixed secret in
production) and ``STREAMUI_DATASTAR_JS`` (a local datastar.js to serve
instead of loading Datastar from its CDN).
"""

import os
import sys

import uvicorn

from examples.showcase.app import create_app

DEMO_SECRET = "streamui-showcase-demo-secret-not-for-production"


def main() -> None:
    host = os.environ.get("HOST", "127.0.0.1")
    port_text = os.environ.get("PORT", "8000")
    try:
        port = int(port_text)
    except ValueError:
        sys.exit(f"PORT must be a number, got {port_text!r}")
    app = create_app(secret=os.environ.get("STREAMUI_SECRET") or DEMO_SECRET)
    print(f"streamui showcase: http://{host}:{port} (open it in two windows)", flush=True)
    uvicorn.run(app, host=host, port=port)


if __name__ == "__main__":
    main()
