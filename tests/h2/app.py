"""The app the HTTP/2 tests serve, built in the server's process by `build_app`.

The server (hypercorn, a child process) calls ``tests.h2.app:build_app()`` (hypercorn
evaluates what follows the colon); the environment sets the app up:
``STREAMUI_DATASTAR_JS`` names the local Datastar to serve, ``STREAMUI_H2_SHARE_ACROSS_TABS``
is ``1`` or ``0`` (`StreamConfig.share_across_tabs`). The secret is fixed. Routes:

- ``GET /page?scope=a&scope=b`` renders one `Watch` per scope (re-fetching
  ``/component/{index}``), then `Connect()`; Datastar comes from `DATASTAR_PATH`. Other
  query parameters (``tab=3``) are ignored: they only tell the tabs' requests apart.
- ``GET /component/{index}`` and ``POST /invalidate?scope=a``: the integration app's.
- ``GET /static/datastar.js``: the file named by ``STREAMUI_DATASTAR_JS``.
- ``GET /debug/counts``: the streams the server holds (``watchers``) and every other
  request it has received so far, each with its HTTP version, the client's port (one
  port per TCP connection) and its User-Agent, so a test can see what reached the server
  and how.
"""

import os
from pathlib import Path
from typing import Annotated, Any, Final

from htpy import Element, body, h1, head, html, link, p, title
from litestar import Litestar, MediaType, get
from litestar.enums import ScopeType
from litestar.params import QueryParameter
from litestar.response import File
from litestar.types import ASGIApp, Receive, Scope, Send

from streamui import Connect, Watch, datastar_script
from streamui.litestar import StreamConfig, StreamPlugin
from tests.integration.app import component, invalidate
from tests.support import log_streamui_warnings

__all__ = ["COUNTS_PATH", "DATASTAR_ENV", "DATASTAR_PATH", "SECRET", "SHARE_ENV", "build_app"]

DATASTAR_ENV: Final = "STREAMUI_DATASTAR_JS"
"""The showcase's variable (`examples.showcase.app.DATASTAR_ENV`): a local datastar.js."""
DATASTAR_PATH: Final = "/static/datastar.js"
SHARE_ENV: Final = "STREAMUI_H2_SHARE_ACROSS_TABS"
SECRET: Final = "h2-tests-secret-0123456789abcdef"
COUNTS_PATH: Final = "/debug/counts"

Scopes = Annotated[list[str], QueryParameter(name="scope")]


class Recorder:
    """ASGI middleware that notes every HTTP request: path, query, HTTP version and the
    client's port (hypercorn serves all of an HTTP/2 connection's streams with its one
    peer address)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.requests: list[dict[str, Any]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP and scope["path"] != COUNTS_PATH:
            client = scope["client"]
            headers = dict(scope["headers"])
            self.requests.append(
                {
                    "path": scope["path"],
                    "query": scope["query_string"].decode("latin-1"),
                    "http_version": scope["http_version"],
                    "client_port": client[1] if client else None,
                    "user_agent": headers.get(b"user-agent", b"").decode("latin-1"),
                }
            )
        await self.app(scope, receive, send)


def _page(scopes: list[str]) -> Element:
    return html[
        head[
            title["streamui over HTTP/2"],
            link(rel="icon", href="data:,"),  # no /favicon.ico request, no 404 in the console
            datastar_script(DATASTAR_PATH),
        ],
        body[
            h1["page"],
            [
                Watch(value, f"/component/{index}", id=f"watch-{index}")[p[f"watching {value}"]]
                for index, value in enumerate(scopes)
            ],
            Connect(),
        ],
    ]


def _datastar_file() -> Path:
    value = os.environ.get(DATASTAR_ENV, "")
    path = Path(value)
    if not value or not path.is_file():
        raise SystemExit(f"{DATASTAR_ENV}={value!r}: expected the path of a local datastar.js")
    return path


def _share_across_tabs() -> bool:
    value = os.environ.get(SHARE_ENV, "1")
    if value not in {"0", "1"}:
        raise SystemExit(f"{SHARE_ENV}={value!r}: expected 0 or 1")
    return value == "1"


def build_app() -> Recorder:
    """The app as the environment configures it, wrapped in its `Recorder`."""
    log_streamui_warnings()
    datastar = _datastar_file()
    plugin = StreamPlugin(StreamConfig(secret=SECRET, share_across_tabs=_share_across_tabs()))

    @get("/page", media_type=MediaType.HTML)
    async def page(scopes: Scopes) -> str:
        return str(_page(scopes))

    @get(DATASTAR_PATH, include_in_schema=False)
    async def datastar_js() -> File:
        return File(datastar, media_type="text/javascript", content_disposition_type="inline")

    @get(COUNTS_PATH)
    async def counts() -> dict[str, Any]:
        return {"watchers": plugin.broker.watcher_count, "requests": recorder.requests}

    recorder = Recorder(
        Litestar(
            route_handlers=[page, datastar_js, counts, component, invalidate],
            plugins=[plugin],
            debug=False,
        )
    )
    return recorder
