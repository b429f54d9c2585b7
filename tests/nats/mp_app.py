"""The app the multi-process tests run, one OS process per worker, under uvicorn:

    python -m uvicorn --factory tests.nats.mp_app:create_app --port 0

Every worker reads ``STREAMUI_NATS_URL`` (required: the point is to share a NATS) and
``STREAMUI_SECRET`` (the workers of one test share it, so a page rendered by one
worker opens its stream on any other).

- ``GET /?scope=a&scope=b`` renders one `Watch` per scope, then `Connect()` (no
  scope: a page without a stream, which the tests use to see that a worker is up);
- ``GET /component/{index}`` is what the watchers re-fetch;
- ``POST /invalidate?scope=a`` calls ``await broker.invalidate(scope)`` (204);
- ``GET /pid`` answers the worker's process id, so a test can tell its workers apart;
- ``GET /catch-ups`` answers ``broker.catch_ups`` (how this worker's streams started:
  exact, or pushing every scope because it could not know).
"""

import os
from typing import Annotated

from htpy import body, div, h1, head, html, p, title
from litestar import Litestar, MediaType, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, QueryParameter

from streamui import Broker, Connect, Watch, datastar_script
from streamui.errors import ConfigurationError
from streamui.litestar import NATS_URL_ENV, StreamConfig, StreamPlugin

__all__ = ["create_app"]

# Annotations are evaluated at runtime (no `from __future__ import annotations`): Litestar
# reads the handlers' signatures.
Scopes = Annotated[list[str] | None, QueryParameter(name="scope")]


@get("/", media_type=MediaType.HTML)
async def page(scopes: Scopes = None) -> str:
    watchers = [
        Watch(value, f"/component/{index}", id=f"watch-{index}")[p[f"watching {value}"]]
        for index, value in enumerate(scopes or [])
    ]
    return str(
        html[
            head[title["streamui worker"], datastar_script()],
            body[h1[f"worker {os.getpid()}"], watchers, Connect()],
        ]
    )


@get("/component/{index:int}", media_type=MediaType.HTML)
async def component(index: FromPath[int]) -> str:
    return str(div(id=f"watch-{index}")[p[f"component {index} from worker {os.getpid()}"]])


@post("/invalidate", status_code=204)
async def invalidate(
    scope_name: Annotated[str, QueryParameter(name="scope")], broker: NamedDependency[Broker]
) -> None:
    await broker.invalidate(scope_name)


@get("/pid")
async def pid() -> dict[str, int]:
    return {"pid": os.getpid()}


@get("/catch-ups")
async def catch_ups(broker: NamedDependency[Broker]) -> dict[str, int]:
    return dict(broker.catch_ups)


def create_app() -> Litestar:
    """The worker app, configured from the environment (see the module docstring)."""
    if not os.environ.get(NATS_URL_ENV):
        raise ConfigurationError(f"the multi-process test app needs {NATS_URL_ENV}")
    # StreamConfig reads STREAMUI_NATS_URL and STREAMUI_SECRET by default.
    return Litestar(
        route_handlers=[page, component, invalidate, pid, catch_ups],
        plugins=[StreamPlugin(StreamConfig())],
        debug=False,
    )
