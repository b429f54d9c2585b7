"""The README's poll, as a FastAPI app: ``uvicorn examples.fastapi_app:app`` or
``python -m examples.fastapi_app`` from the repository root.

Open http://127.0.0.1:8000 in two windows and vote in one: the tally updates in both.
`create_app` builds a fresh app (with its own votes and broker), for tests.
"""

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations.
import os
from typing import Annotated

from fastapi import Depends, FastAPI
from fastapi.responses import HTMLResponse
from htpy import Element, body, button, h1, head, html, p, title

from streamui import Broker, Connect, Watch, datastar_script
from streamui.starlette import SECRET_ENV, StreamConfig, StreamUI

__all__ = ["DEMO_SECRET", "app", "create_app"]

DEMO_SECRET = "streamui-fastapi-demo-secret-not-for-production"
"""A fixed secret, so open tabs reconnect after a restart; never use one in production."""


def create_app(secret: str | None = None) -> FastAPI:
    """The poll: a page with the tally (a Watch of ``poll:1``) and a vote button."""
    votes = {"yes": 0}
    ui = StreamUI(StreamConfig(secret=secret or os.environ.get(SECRET_ENV) or DEMO_SECRET))
    app = FastAPI(title="streamui poll")
    ui.install(app)  # the stream's routes, the signing middleware, the broker's lifespan

    def tally() -> Element:
        # Re-fetched from /tally whenever "poll:1" is invalidated; the answer keeps the id.
        return Watch("poll:1", "/tally", id="tally")[p[f"{votes['yes']} votes"]]

    @app.get("/", response_class=HTMLResponse)
    async def index() -> str:
        return str(
            html[
                head[title["Poll"], datastar_script()],
                body[
                    h1["Poll"],
                    tally(),
                    button({"data-on:click": "@post('/vote')"})["Vote"],
                    Connect(),  # after the content: opens the stream for every scope above
                ],
            ]
        )

    @app.get("/tally", response_class=HTMLResponse)
    async def tally_fragment() -> str:
        return str(tally())

    @app.post("/vote", status_code=204)
    async def vote(broker: Annotated[Broker, Depends(ui.provide_broker)]) -> None:
        votes["yes"] += 1
        await broker.invalidate("poll:1")  # every tab showing the tally reloads it

    return app


app = create_app()
