"""A small Litestar app for the integration tests, built fresh for every test.

- ``GET /page?scope=a&scope=b`` renders one `Watch` per ``scope`` value (repeat a value
  to get two watchers of one scope) followed by `Connect()`.
- ``GET /fragment?scope=c`` renders `Watch` elements followed by `JoinStream()`, like
  rows loaded by "load more".
- ``GET /page/streamed?scope=…&mode=sync|async`` is the same page, streamed by Litestar
  from htpy's ``iter_chunks`` (run chunk by chunk in worker threads) or
  ``aiter_chunks`` (with an awaitable child, rendered on the event loop).
- ``GET /component/{index}`` is what the watchers re-fetch.
- ``POST /invalidate?scope=a`` invalidates through the ``broker`` dependency, as an
  application's own handler would.
"""

import asyncio
from typing import Annotated, Literal

from htpy import Element, Node, body, div, h1, head, html, p, title
from litestar import Litestar, MediaType, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.response import Stream

from streamui import Broker, Connect, JoinStream, Watch, datastar_script
from streamui.litestar import StreamConfig, StreamPlugin

__all__ = ["component", "invalidate", "make_app", "page_document"]

# Annotations are evaluated at runtime (no `from __future__ import annotations`): Litestar
# reads the handlers' signatures.
Scopes = Annotated[list[str], QueryParameter(name="scope")]


def _watchers(scopes: list[str], first: int) -> list[Element]:
    return [
        Watch(value, f"/component/{index}", id=f"watch-{index}")[p[f"watching {value}"]]
        for index, value in enumerate(scopes, start=first)
    ]


def page_document(scopes: list[str], *, extra: Node = None) -> Element:
    """One Watch per scope (re-fetching ``/component/{index}``), *extra*, then Connect()."""
    return html[
        head[title["streamui integration"], datastar_script()],
        body[h1["page"], _watchers(scopes, first=0), extra, Connect()],
    ]


async def _footer() -> Element:
    await asyncio.sleep(0)  # suspend mid-render, as a real data fetch would
    return p["rendered asynchronously"]


@get("/component/{index:int}", media_type=MediaType.HTML)
async def component(index: FromPath[int]) -> str:
    """What the watchers of `page_document` re-fetch."""
    return str(div(id=f"watch-{index}")[p[f"component {index}"]])


@post("/invalidate", status_code=204)
async def invalidate(
    scope_name: Annotated[str, QueryParameter(name="scope")], broker: NamedDependency[Broker]
) -> None:
    """Invalidate ``?scope=`` through the ``broker`` dependency, as an app's handler would."""
    await broker.invalidate(scope_name)


def make_app(config: StreamConfig) -> tuple[Litestar, StreamPlugin]:
    """A new app serving streams with *config*, and its plugin (which owns the broker)."""
    plugin = StreamPlugin(config)

    @get("/page", media_type=MediaType.HTML)
    async def page(scopes: Scopes) -> str:
        return str(page_document(scopes))

    @get("/page/streamed", media_type=MediaType.HTML)
    async def streamed_page(scopes: Scopes, mode: FromQuery[Literal["sync", "async"]]) -> Stream:
        if mode == "sync":
            return Stream(page_document(scopes).iter_chunks(), media_type=MediaType.HTML)
        return Stream(
            page_document(scopes, extra=_footer()).aiter_chunks(), media_type=MediaType.HTML
        )

    @get("/fragment", media_type=MediaType.HTML)
    async def fragment(scopes: Scopes, first: FromQuery[int] = 1000) -> str:
        return str(div(id="more")[_watchers(scopes, first=first), JoinStream()])

    app = Litestar(
        route_handlers=[page, streamed_page, fragment, component, invalidate],
        plugins=[plugin],
        debug=False,
    )
    return app, plugin
