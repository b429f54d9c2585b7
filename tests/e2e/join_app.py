"""The app of the join-and-data browser tests: pages that bind ``_streamData``, a page
that watches nothing until "load more" brings rows, and pages with many scopes.

- ``GET /data``: ``#note`` watches ``note:1`` and shows ``$_streamData.note_1.msg``;
  ``#count`` watches ``count:1`` and shows ``$_streamData.count_1`` (a number);
  ``#notes`` watches ``notes:*`` and shows the scope and ``data.msg`` of its data. After
  them ``#ready``, which Datastar fills only if it set up the whole page. Then `Connect()`.
- ``GET /empty``: no Watch; a "More" button loads ``/rows``, a fragment whose ``#row-1``
  watches ``row:1`` and ends with `JoinStream()`. Then `Connect()` and ``#ready``.
- ``GET /many/{n}``: n rows, each watching its own ``invoice:<id>``, then `Connect()`.
- ``GET /note/1``, ``/count/1``, ``/notes``, ``/row/{id}``: what the components re-fetch;
  each shows the version of its scope.
- `JoinApp.bump` changes a scope's version and invalidates it (with *data*, if given).
- ``GET /datastar.js``: the local Datastar (no CDN in tests).

The app runs with ``debug=True``: a render error answers with its message, which is what a
developer sees while building the page.
"""

# Annotations are evaluated at runtime (no `from __future__ import annotations`): Litestar
# reads the handlers' signatures.
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from htpy import Element, body, button, div, h1, head, html, link, p, script, span, title, ul
from litestar import Litestar, MediaType, get
from litestar.params import FromPath
from litestar.response import File

from streamui import Broker, Connect, JoinStream, Watch
from streamui.litestar import StreamConfig, StreamPlugin

__all__ = ["FIRST_INVOICE", "JoinApp", "make_join_app"]

SECRET = "join-tests-secret-0123456789abcdef"
FIRST_INVOICE = 10_000
"""Invoice ids on ``/many/{n}`` start here: realistic scopes (``invoice:10000``)."""


@dataclass
class JoinApp:
    app: Litestar
    broker: Broker
    versions: Counter[str] = field(default_factory=Counter)

    async def bump(self, scope: str, data: object = None) -> None:
        self.versions[scope] += 1
        await self.broker.invalidate(scope, data=data)

    def watched(self) -> list[tuple[str, ...]]:
        """The scopes of each stream open on the server now."""
        watchers = {
            watcher for entry in self.broker._patterns.values() for watcher in entry.watchers
        }
        return sorted(watcher.scopes for watcher in watchers)


def _page(name: str, *content: Element) -> str:
    return str(
        html[
            head[
                title[name],
                link(rel="icon", href="data:,"),
                script(type="module", src="/datastar.js"),
            ],
            body[h1[name], content, Connect(), span("#ready", {"data-text": "'ready'"})],
        ]
    )


def make_join_app(datastar: Path, *, share: bool = True) -> JoinApp:
    broker = Broker()
    state: JoinApp

    def version(scope: str) -> Element:
        return p(".v")[f"{scope} {state.versions[scope]}"]

    def note() -> Element:
        return Watch("note:1", "/note/1", id="note")[
            version("note:1"),
            span("#msg", {"data-text": "$_streamData.note_1.msg"}),
            span("#msg-or-empty", {"data-text": "$_streamData.note_1.msg ?? ''"}),
        ]

    def count() -> Element:
        return Watch("count:1", "/count/1", id="count")[
            version("count:1"), span("#count-data", {"data-text": "$_streamData.count_1"})
        ]

    def notes() -> Element:
        return Watch("notes:*", "/notes", id="notes")[
            version("notes:*"),
            span("#notes-scope", {"data-text": "$_streamData.notes_WILD.scope"}),
            span("#notes-msg", {"data-text": "$_streamData.notes_WILD.data.msg ?? ''"}),
        ]

    def row(number: int) -> Element:
        return Watch(f"row:{number}", f"/row/{number}", id=f"row-{number}")[
            version(f"row:{number}")
        ]

    def invoice(number: int) -> Element:
        scope = f"invoice:{number}"
        return Watch(scope, f"/invoice/{number}", tag="li", id=f"invoice-{number}")[version(scope)]

    @get("/data", media_type=MediaType.HTML)
    async def data_page() -> str:
        return _page("data", note(), count(), notes())

    @get("/note/1", media_type=MediaType.HTML)
    async def note_fragment() -> str:
        return str(note())

    @get("/count/1", media_type=MediaType.HTML)
    async def count_fragment() -> str:
        return str(count())

    @get("/notes", media_type=MediaType.HTML)
    async def notes_fragment() -> str:
        return str(notes())

    @get("/empty", media_type=MediaType.HTML)
    async def empty_page() -> str:
        more = button("#more", {"data-on:click": "@get('/rows')"})["More"]
        return _page("empty", more, div("#rows"))

    @get("/rows", media_type=MediaType.HTML)
    async def rows_fragment() -> str:
        return str(div("#rows")[row(1), JoinStream()])

    @get("/row/{number:int}", media_type=MediaType.HTML)
    async def row_fragment(number: FromPath[int]) -> str:
        return str(row(number))

    @get("/many/{count:int}", media_type=MediaType.HTML)
    async def many_page(count: FromPath[int]) -> str:
        return _page("many", ul[(invoice(FIRST_INVOICE + n) for n in range(count))])

    @get("/invoice/{number:int}", media_type=MediaType.HTML)
    async def invoice_fragment(number: FromPath[int]) -> str:
        return str(invoice(number))

    @get("/datastar.js")
    async def datastar_js() -> File:
        return File(datastar, content_disposition_type="inline", media_type="text/javascript")

    app = Litestar(
        route_handlers=[
            data_page,
            note_fragment,
            count_fragment,
            notes_fragment,
            empty_page,
            rows_fragment,
            row_fragment,
            many_page,
            invoice_fragment,
            datastar_js,
        ],
        plugins=[StreamPlugin(StreamConfig(secret=SECRET, broker=broker, share_across_tabs=share))],
        debug=True,
    )
    state = JoinApp(app, broker)
    return state
