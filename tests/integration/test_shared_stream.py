"""The server side of the stream that a browser's tabs share (real server, no browser).

- Connect() loads streamui's module, served at a URL that names its digest, cached for
  good; with sharing off, Connect() opens Datastar's own stream and no module exists.
- ``since=<ms>`` makes a stream catch up on what was invalidated after that time,
  whatever ``Last-Event-ID`` says; anything else is a 400 with a reason.
- ``<path>/merge`` merges tokens into one that grants exactly their scopes, with the
  same checks (and refusals) as the stream.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import json
import re
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import pytest

from streamui import ConfigurationError, TokenSigner, scope_key
from streamui.client import CACHE_CONTROL, source
from streamui.litestar import REFUSED_TOKENS_HEADER, StreamConfig
from tests.integration.conftest import SECRET, url_from
from tests.support import stream_tokens

if TYPE_CHECKING:
    import httpx

    from tests.integration.conftest import Live, Start

PATH = "/streamui/stream"


def connect_attributes(page: str) -> dict[str, str]:
    """The attributes of the page's Connect element (unescaped)."""
    match = re.search(r'<div id="streamui-connect"([^>]*)>', page)
    assert match, "no Connect element"
    return {
        name: html.unescape(value)
        for name, value in re.findall(r'([\w:.-]+)="([^"]*)"', match.group(1))
    }


def module_src(page: str) -> str:
    match = re.search(r'<div id="streamui-connect"[^>]*><script type="module" src="([^"]+)"', page)
    assert match, "Connect() does not load streamui's module"
    return match.group(1)


def stream_tokens_of(url: str) -> list[str]:
    return parse_qs(urlsplit(url).query)["t"]


def detail(response: httpx.Response) -> str:
    body: dict[str, Any] = response.json()
    value: str = body["detail"]
    return value


# -- the module ---------------------------------------------------------------------------


async def test_connect_loads_the_module_from_a_url_naming_its_digest(live: Live) -> None:
    page = await live.page("a", "b")
    src = module_src(page)
    digest = hashlib.sha256(source()).hexdigest()[:12]
    assert src == f"{PATH}.{digest}.js"
    response = await live.client.get(src)
    assert response.status_code == 200
    assert response.content == source()
    assert response.headers["content-type"] == "text/javascript; charset=utf-8"
    assert response.headers["cache-control"] == CACHE_CONTROL
    # What the module needs to know, and the per-tab stream it falls back to.
    attributes = connect_attributes(page)
    assert json.loads(attributes["data-streamui"]) == {
        "path": PATH,
        "mergePath": f"{PATH}/merge",
        "maxTokens": 16,
        "maxScopes": 64,
        "mergeOver": 4,
        "share": True,
        "reload": True,
    }
    assert "_streamTokens" in attributes["data-effect"]
    assert "data-streamui-state" not in attributes  # the effect sets it in the browser
    assert attributes["data-streamui-fallback"].startswith("@get(")


async def test_without_sharing_the_module_holds_a_stream_per_tab(start: Start) -> None:
    live = await start(share_across_tabs=False, reload_when_refused=False)
    page = await live.page("a")
    attributes = connect_attributes(page)
    assert json.loads(attributes["data-streamui"])["share"] is False
    assert json.loads(attributes["data-streamui"])["reload"] is False
    digest = hashlib.sha256(source()).hexdigest()[:12]
    assert (await live.client.get(f"{PATH}.{digest}.js")).status_code == 200


def test_the_module_needs_room_to_merge_tokens() -> None:
    for share in (True, False):
        with pytest.raises(ConfigurationError, match="max_tokens must be at least 2"):
            StreamConfig(secret=SECRET, max_tokens=1, share_across_tabs=share)
    assert StreamConfig(secret=SECRET, max_tokens=2).max_tokens == 2


async def test_tokens_that_do_not_verify_are_named_in_a_header(live: Live) -> None:
    first, second = await live.stream_url("a"), await live.stream_url("b")
    good, bad = stream_tokens_of(first)[0], stream_tokens_of(second)[0]
    other = TokenSigner("another-secret-0123456789abcdef").sign(["b"])
    forged = bad[:-2] + ("AA" if not bad.endswith("AA") else "BB")
    url = f"{PATH}?t={good}&t={other}&t={good}&t={forged}"
    for where in (url, url.replace(PATH, f"{PATH}/merge", 1)):
        response = await live.refused(where)
        assert response.status_code == 403
        assert response.headers[REFUSED_TOKENS_HEADER] == "1,3"
        assert detail(response).startswith("stream token signature does not match")
    assert live.broker.watcher_count == 0


# -- since --------------------------------------------------------------------------------


async def test_since_pushes_what_changed_after_it_and_nothing_before(live: Live) -> None:
    page = await live.page("a", "b", "c")
    await live.broker.invalidate("a")  # before since: the tabs have it
    await asyncio.sleep(1.2)  # more than the second of margin that since allows for
    # Read before "b" is invalidated: a revision is at least the time in ms it was
    # handed out at, so "b" is after since (read after it, the clock may have ticked).
    between = int(time.time() * 1000)
    await live.broker.invalidate("b")  # after since: it is pushed
    url = url_from(page) + f"&since={between}"
    # since wins over Last-Event-ID (which would push every scope).
    async with live.stream(url, headers={"last-event-id": "1"}) as stream:
        first = await stream.next_push()
        assert first.keys == {scope_key("b")}
        await live.broker.invalidate("c")
        assert (await stream.next_push()).keys == {scope_key("c")}


async def test_since_before_the_broker_started_pushes_every_scope(live: Live) -> None:
    page = await live.page("a", "b")
    started = live.broker.started_at
    assert started is not None
    url = url_from(page) + f"&since={int(started * 1000) - 60_000}"
    async with live.stream(url) as stream:
        assert (await stream.next_push()).keys == {scope_key("a"), scope_key("b")}


@pytest.mark.parametrize("since", ["", "soon", "-1", "1e3", "1.5", "12345678901234567", "0x10"])
async def test_a_since_that_is_not_milliseconds_is_400(live: Live, since: str) -> None:
    url = await live.stream_url("a")
    response = await live.refused(f"{url}&since={since}")
    assert response.status_code == 400
    assert detail(response).startswith(
        "since must be an event id (<revision>-<broker id>) or a time"
    )
    assert live.broker.watcher_count == 0


# -- merging tokens -----------------------------------------------------------------------


async def test_merge_gives_one_token_for_the_union(live: Live) -> None:
    first = await live.page("a", "b")
    later = await live.page("b", "c:1")
    tokens = stream_tokens(first) + stream_tokens(later)
    response = await live.client.get(f"{PATH}/merge", params=[("t", token) for token in tokens])
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    merged = response.json()["token"]
    signer = live.plugin.endpoint.signer
    claims = signer.verify(merged)
    assert claims.scopes == ("a", "b", "c:1")
    # It claims the oldest render of its parts, never a later one.
    assert claims.issued_at == min(signer.verify(token).issued_at for token in tokens)
    assert live.broker.watcher_count == 0
    async with live.stream(f"{PATH}?t={merged}") as stream:
        await live.broker.invalidate("c:1")
        assert (await stream.next_push()).keys == {scope_key("c:1")}


async def test_merge_refuses_what_the_stream_refuses(start: Start) -> None:
    live = await start(max_tokens=3, max_scopes=3)
    pages = [await live.page(f"s{n}") for n in range(4)]
    tokens = [token for page in pages for token in stream_tokens(page)]

    async def merge(*chosen: str) -> httpx.Response:
        return await live.client.get(f"{PATH}/merge", params=[("t", t) for t in chosen])

    missing = await merge()
    assert (missing.status_code, detail(missing)) == (
        400,
        "missing stream token: the URL needs ?t=<token> from Connect()",
    )
    too_many = await merge(*tokens)
    assert (too_many.status_code, detail(too_many)) == (
        400,
        "too many stream tokens: 4, the limit is 3",
    )
    tampered = await merge(tokens[0][:-2] + ("A" if tokens[0][-2] != "A" else "B") + tokens[0][-1])
    assert tampered.status_code == 403
    wide = await live.page("x", "y")
    over = await merge(tokens[0], *stream_tokens(wide), tokens[1])
    assert (over.status_code, detail(over)) == (400, "too many scopes: 4, the limit is 3")
    assert live.broker.watcher_count == 0
