"""The app of the many-tabs browser tests: small pages, each with two live components.

- ``GET /tab/{n}[?tamper=1]``: ``#board`` watches ``board``; ``#note`` watches ``board`` and
  ``note:{n}``; a "More" button loads ``/more/{n}``, a fragment whose ``#extra`` watches
  ``extra:{n}`` and ends with `JoinStream()`. Then `Connect()`, and ``#error`` showing
  ``$_streamError``. Page loads are counted per tab number. With ``tamper=1`` the
  page's stream token has a signature that does not match (the server refuses it).
- ``GET /board``, ``/note/{n}``, ``/extra/{n}``: what the components re-fetch; each shows
  the current version of its scopes, and every such request is counted by path.
- `TabsApp.bump` changes a scope's version and invalidates it, as an app's handler would.
- ``GET /datastar.js``: the local Datastar (no CDN in tests).
"""

# Annotations are evaluated at runtime (no `from __future__ import annotations`): Litestar
# reads the handlers' signatures.
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from htpy import Element, body, button, div, h1, head, html, link, p, script, title
from litestar import Litestar, MediaType, get
from litestar.params import FromPath, FromQuery
from litestar.response import File

from streamui import Broker, Connect, JoinStream, Watch
from streamui.broker import Watcher
from streamui.litestar import StreamConfig, StreamPlugin
from tests.support import stream_tokens

__all__ = ["TabsApp", "make_tabs_app"]

SECRET = "tabs-tests-secret-0123456789abcdef"


@dataclass
class TabsApp:
    app: Litestar
    broker: Broker
    versions: Counter[str] = field(default_factory=Counter)
    fetches: Counter[str] = field(default_factory=Counter)
    """Component requests by path (``/board``, ``/note/3``, ...)."""
    pages: Counter[int] = field(default_factory=Counter)
    """Page loads by tab number (``/tab/{n}``)."""

    async def bump(self, scope: str) -> None:
        self.versions[scope] += 1
        await self.broker.invalidate(scope)

    def streams(self) -> list[Watcher]:
        """The streams open on the server now."""
        watchers = {
            watcher for entry in self.broker._patterns.values() for watcher in entry.watchers
        }
        return sorted(watchers, key=id)


def make_tabs_app(
    datastar: Path,
    *,
    share: bool = True,
    broker: Broker | None = None,
    versions: Counter[str] | None = None,
    middleware: Sequence[Any] = (),
    **config: Any,
) -> TabsApp:
    """The app; *broker* (default: in-process) is started and closed by the app.
    *versions* carries the data over from an app this one replaces (a restart),
    *middleware* goes to the app, and *config* to `StreamConfig` (default secret:
    `SECRET`)."""
    broker = broker or Broker()
    config.setdefault("secret", SECRET)
    state: TabsApp

    def board() -> Element:
        return Watch("board", "/board", id="board")[p(".v")[f"board {state.versions['board']}"]]

    def note(n: int) -> Element:
        version = f"{state.versions['board']}.{state.versions[f'note:{n}']}"
        return Watch(["board", f"note:{n}"], f"/note/{n}", id="note")[p(".v")[f"note {version}"]]

    def extra(n: int) -> Element:
        version = state.versions[f"extra:{n}"]
        return Watch(f"extra:{n}", f"/extra/{n}", id="extra")[p(".v")[f"extra {version}"]]

    @get("/tab/{n:int}", media_type=MediaType.HTML)
    async def tab(n: FromPath[int], tamper: FromQuery[bool] = False) -> str:
        state.pages[n] += 1
        page = str(
            html[
                head[
                    title[f"tab {n}"],
                    link(rel="icon", href="data:,"),
                    script(type="module", src="/datastar.js"),
                ],
                body[
                    h1[f"tab {n}"],
                    board(),
                    note(n),
                    button("#more-button", {"data-on:click": f"@get('/more/{n}')"})["More"],
                    div("#more"),
                    Connect(),
                    p("#error", {"data-text": "$_streamError"}),
                ],
            ]
        )
        # ?tamper=1: the page's stream token carries a signature that does not match.
        for token in stream_tokens(page) if tamper else ():
            payload, _, mac = token.partition(".")
            page = page.replace(token, f"{payload}.{'A' * len(mac)}")
        return page

    @get("/board", media_type=MediaType.HTML)
    async def board_fragment() -> str:
        state.fetches["/board"] += 1
        return str(board())

    @get("/note/{n:int}", media_type=MediaType.HTML)
    async def note_fragment(n: FromPath[int]) -> str:
        state.fetches[f"/note/{n}"] += 1
        return str(note(n))

    @get("/more/{n:int}", media_type=MediaType.HTML)
    async def more(n: FromPath[int]) -> str:
        return str(div("#more")[extra(n), JoinStream()])

    @get("/extra/{n:int}", media_type=MediaType.HTML)
    async def extra_fragment(n: FromPath[int]) -> str:
        state.fetches[f"/extra/{n}"] += 1
        return str(extra(n))

    @get("/datastar.js")
    async def datastar_js() -> File:
        return File(datastar, content_disposition_type="inline", media_type="text/javascript")

    app = Litestar(
        route_handlers=[tab, board_fragment, note_fragment, more, extra_fragment, datastar_js],
        middleware=list(middleware),
        plugins=[StreamPlugin(StreamConfig(broker=broker, share_across_tabs=share, **config))],
    )
    state = TabsApp(app, broker)
    if versions is not None:
        state.versions = versions
    return state
