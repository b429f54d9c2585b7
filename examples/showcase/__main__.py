"""Serve the showcase: ``python -m examples.showcase`` from the repository root.

Environment: ``HOST`` (default 127.0.0.1), ``PORT`` (default 8000),
``STREAMUI_SECRET`` (the stream token secret; default: a fixed secret for this
demo, so open tabs reconnect after a restart; never use a fixed secret in
production), ``STREAMUI_DATASTAR_JS`` (a local datastar.js to serve
instead of loading Datastar from its CDN), ``STREAMUI_SHOWCASE_DB`` (a SQLite
file to keep the data in, shared by every worker that names it; default: in
memory) and ``STREAMUI_NATS_URL`` (the NATS server(s) that carry invalidations
between workers; default: none, one process). ``python3 dev.py demo-cluster``
sets the last two for two workers (`examples.showcase.cluster`).
"""

import os

import uvicorn

from examples.showcase import address_from_env
from examples.showcase.app import create_app
from examples.showcase.sqlite_store import DATABASE_ENV
from streamui.litestar import NATS_URL_ENV, SECRET_ENV

DEMO_SECRET = "streamui-showcase-demo-secret-not-for-production"


def main() -> None:
    host, port = address_from_env()
    database = os.environ.get(DATABASE_ENV) or None
    nats_url = os.environ.get(NATS_URL_ENV) or None
    app = create_app(
        secret=os.environ.get(SECRET_ENV) or DEMO_SECRET,
        database=database,
        nats_url=nats_url,
    )
    if nats_url is None:
        print(f"streamui showcase: http://{host}:{port} (open it in two windows)", flush=True)
    else:
        print(
            f"streamui showcase worker: http://{host}:{port} "
            f"(data in {database or 'memory'}, invalidations over NATS at {nats_url})",
            flush=True,
        )
    uvicorn.run(app, host=host, port=port)


if __name__ == "__main__":
    main()
