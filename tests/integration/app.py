"""A small Litestar app for the integration tests, built fresh for every test.

- ``GET /page?scope=a&scope=b`` renders one `Watch` per ``scope`` value (repeat a value
  to get two watchers of one scope) followed by `Connect()`.
- ``GET /fragment?scope=c`` renders `Watch` elements followed by `JoinStream()`, like
  rows loaded by "load more".
- ``GET /component/{index}`` is what the watchers re-fetch.
- ``POST /invalidate?scope=a`` invalidates through the ``broker`` dependency, as an
  application's own handler would.
"""

from typing import Annotated

from htpy import Element, body, div, h1, head, html, p, title
from litestar import Litestar, MediaType, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, QueryParameter

from streamui import Broker, Connect, JoinStream, Watch, datastar_script
from streamui.litestar import StreamConfig, StreamPlugin

__all__ = ["make_app"]

# Annotations are evaluated at runtime (no `from __future__ import annotations`): Litestar
# reads the handlers' signatures.
Scopes = Annotated[list[str], QueryParameter(name="scope")]


def _watchers(scopes: list[str], first: int) -> list[Element]:
    return [
        Watch(value, f"/component/{index}", id=f"watch-{index}")[p[f"watching {value}"]]
        for index, value in enumerate(scopes, start=first)
    ]


def make_app(config: StreamConfig) -> tuple[Litestar, StreamPlugin]:
    """A new app serving streams with *config*, and its plugin (which owns the broker)."""
    plugin = StreamPlugin(config)

    @get("/page", media_type=MediaType.HTML)
    async def page(scopes: Scopes) -> str:
        document = html[
            head[title["streamui integration"], datastar_script()],
            body[h1["page"], _watchers(scopes, first=0), Connect()],
        ]
        return str(document)

    @get("/fragment", media_type=MediaType.HTML)
    async def fragment(scopes: Scopes, first: FromQuery[int] = 1000) -> str:
        return str(div(id="more")[_watchers(scopes, first=first), JoinStream()])

    @get("/component/{index:int}", media_type=MediaType.HTML)
    async def component(index: FromPath[int]) -> str:
        return str(div(id=f"watch-{index}")[p[f"component {index}"]])

    @post("/invalidate", status_code=204)
    async def invalidate(
        scope_name: Annotated[str, QueryParameter(name="scope")], broker: NamedDependency[Broker]
    ) -> None:
        await broker.invalidate(scope_name)

    app = Litestar(
        route_handlers=[page, fragment, component, invalidate],
        plugins=[plugin],
        debug=False,
    )
    return app, plugin
