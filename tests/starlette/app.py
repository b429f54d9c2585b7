"""Small Starlette and FastAPI apps for the tests, built fresh for every test.

Both serve the same routes as `tests.integration.app` does for Litestar:

- ``GET /page?scope=a&scope=b``: one `Watch` per ``scope`` value, then `Connect()`;
- ``GET /fragment?scope=c``: `Watch` elements followed by `JoinStream()`;
- ``GET /component/{index}``: what the watchers re-fetch;
- ``POST /invalidate?scope=a``: invalidates through the broker the framework provides
  (FastAPI: ``Depends(ui.provide_broker)``; Starlette: ``request.app.state.broker``);
- ``GET /big``: a page large enough for GZipMiddleware to compress;
- ``GET /lifespan``: what the app's own lifespan recorded and the state it yielded.

The Starlette app is put together piece by piece (``routes``, ``middleware``,
``wrap_lifespan``), the FastAPI app with ``install``. Each has a lifespan of its own,
which invalidates a scope at startup and shutdown: that only works while the broker is
up.
"""

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations.
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Query
from fastapi.responses import HTMLResponse
from htpy import Element, body, div, h1, head, html, p, title
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse as StarletteHTML
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from streamui import Broker, Connect, JoinStream, Watch, datastar_script
from streamui.starlette import StreamConfig, StreamUI

__all__ = ["Framework", "Lifecycle", "make_app"]

Framework = Literal["fastapi", "starlette"]


@dataclass
class Lifecycle:
    """What the app's own lifespan saw."""

    events: list[str] = field(default_factory=list)


def _watchers(scopes: list[str], first: int) -> list[Element]:
    return [
        Watch(value, f"/component/{index}", id=f"watch-{index}")[p[f"watching {value}"]]
        for index, value in enumerate(scopes, start=first)
    ]


def _page(scopes: list[str]) -> str:
    return str(
        html[
            head[title["streamui on Starlette"], datastar_script()],
            body[h1["page"], _watchers(scopes, first=0), Connect()],
        ]
    )


def _fragment(scopes: list[str]) -> str:
    return str(div(id="more")[_watchers(scopes, first=1000), JoinStream()])


def _component(index: int) -> str:
    return str(div(id=f"watch-{index}")[p[f"component {index}"]])


BIG = "<p>" + "streamui " * 2000 + "</p>"


def _own_lifespan(
    ui: StreamUI, lifecycle: Lifecycle
) -> Callable[[Any], contextlib.AbstractAsyncContextManager[dict[str, Any]]]:
    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
        await ui.broker.invalidate("app:startup")  # raises unless the broker is up
        lifecycle.events.append("app startup")
        yield {"greeting": "state from the app's own lifespan"}
        await ui.broker.invalidate("app:shutdown")
        lifecycle.events.append("app shutdown")

    return lifespan


def make_app(
    config: StreamConfig,
    framework: Framework,
    *,
    gzip: bool = False,
    http_middleware: bool = False,
) -> tuple[Callable[..., Awaitable[None]], StreamUI, Lifecycle]:
    """A new app serving streams with *config*, its `StreamUI` and its lifecycle record.

    *gzip* adds Starlette's GZipMiddleware (compressing anything of 500 bytes or more);
    *http_middleware* a ``BaseHTTPMiddleware`` (FastAPI's ``@app.middleware("http")``),
    which passes each response through a task of its own.
    """
    ui = StreamUI(config)
    lifecycle = Lifecycle()
    if framework == "fastapi":
        return _fastapi(ui, lifecycle, gzip=gzip, http_middleware=http_middleware), ui, lifecycle
    return _starlette(ui, lifecycle, gzip=gzip, http_middleware=http_middleware), ui, lifecycle


def _fastapi(ui: StreamUI, lifecycle: Lifecycle, *, gzip: bool, http_middleware: bool) -> FastAPI:
    app = FastAPI(lifespan=_own_lifespan(ui, lifecycle))
    if gzip:
        app.add_middleware(GZipMiddleware, minimum_size=500)
    if http_middleware:

        @app.middleware("http")
        async def stamp(request: Request, call_next: Any) -> Response:
            response: Response = await call_next(request)
            response.headers["x-stamped"] = "1"
            return response

    ui.install(app)

    @app.get("/page", response_class=HTMLResponse)
    async def page(scope: Annotated[list[str], Query()]) -> str:
        return _page(scope)

    @app.get("/fragment", response_class=HTMLResponse)
    def fragment(scope: Annotated[list[str], Query()]) -> str:  # sync: FastAPI's threads
        return _fragment(scope)

    @app.get("/component/{index}", response_class=HTMLResponse)
    async def component(index: int) -> str:
        return _component(index)

    @app.post("/invalidate", status_code=204)
    async def invalidate(scope: str, broker: Annotated[Broker, Depends(ui.provide_broker)]) -> None:
        await broker.invalidate(scope)

    @app.get("/big", response_class=HTMLResponse)
    async def big() -> str:
        return BIG

    @app.get("/lifespan")
    async def lifespan_record(request: Request) -> dict[str, Any]:
        return {"events": lifecycle.events, "greeting": request.state.greeting}

    return app


def _starlette(
    ui: StreamUI, lifecycle: Lifecycle, *, gzip: bool, http_middleware: bool
) -> Starlette:
    async def page(request: Request) -> Response:
        return StarletteHTML(_page(request.query_params.getlist("scope")))

    def fragment(request: Request) -> Response:  # sync: Starlette's threads
        return StarletteHTML(_fragment(request.query_params.getlist("scope")))

    async def component(request: Request) -> Response:
        return StarletteHTML(_component(request.path_params["index"]))

    async def invalidate(request: Request) -> Response:
        broker: Broker = request.app.state.broker
        await broker.invalidate(request.query_params["scope"])
        return Response(status_code=204)

    async def big(request: Request) -> Response:
        return StarletteHTML(BIG)

    async def lifespan_record(request: Request) -> Response:
        return JSONResponse({"events": lifecycle.events, "greeting": request.state.greeting})

    middleware = [ui.middleware]
    if gzip:
        middleware.append(Middleware(GZipMiddleware, minimum_size=500))
    if http_middleware:
        from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint

        async def stamp(request: Request, call_next: RequestResponseEndpoint) -> Response:
            response = await call_next(request)
            response.headers["x-stamped"] = "1"
            return response

        middleware.append(Middleware(BaseHTTPMiddleware, dispatch=stamp))
    return Starlette(
        routes=[
            *ui.routes,
            Route("/page", page),
            Route("/fragment", fragment),
            Route("/component/{index:int}", component),
            Route("/invalidate", invalidate, methods=["POST"]),
            Route("/big", big),
            Route("/lifespan", lifespan_record),
        ],
        middleware=middleware,
        lifespan=ui.wrap_lifespan(_own_lifespan(ui, lifecycle)),
    )
