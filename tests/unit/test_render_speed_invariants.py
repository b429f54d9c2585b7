"""What the rendering caches must not change: the bytes of the HTML, the errors, the bounds.

The expected strings below were produced by the code *before* Watch and Connect were made
fast (caches of per-scope work, attribute strings escaped once), and are kept as literals:
any byte of difference is a regression. Signing is made deterministic with a fixed clock
and a fixed signer instance, so the Connect and JoinStream elements are pinned too.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import sys
import time
from html import unescape
from typing import TYPE_CHECKING, Any

import pytest
from datastar_py.attributes import JSExpression, action_generator
from htpy import Element, article, body, div, fragment, h3, li, p, span, ul
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from markupsafe import Markup, escape

from streamui import (
    Connect,
    InvalidScopeError,
    JoinStream,
    StreamEndpoint,
    TokenSigner,
    Watch,
    init_scope,
    is_pattern,
    scope_key,
    scope_signals,
    use_endpoint,
    watch_attrs,
    watch_effect,
)
from streamui.components import (
    _SCOPE_CACHE_SIZE,
    _WATCH_CACHE_CHARACTERS,
    _WATCH_CACHE_SCOPES,
    _WATCH_CACHE_SIZE,
    _cached_stream_get,
    _cached_watched,
    _escape,
    _js_string,
    _scope_parts,
)
from tests.unit.conftest import scopes

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from htpy import Renderable

NOW = 1_700_000_000.25
SIGNER = TokenSigner("a-test-secret-that-is-long-enough", instance="golden01")
PER_TAB = StreamEndpoint("/live", SIGNER)
SHARED = StreamEndpoint("/live", SIGNER, client_url="/live.js")

TOKEN = re.compile(r'"_streamTokens":\{"t[0-9a-f]+":"([^"]+)"\}')

HOSTILE_URLS = [
    "'); alert(1); ('",
    '"); alert(1); ("',
    "</script><script>alert(1)</script>",
    "/x?a=1&b=<b>&c='c'",
    "@get('/evil')",
    "$_stream.other = 1",
    "line\nbreak\r\u2028\u2029",
    "/ünïcode/😀",
    "&quot;&#34;",
]


class Sub(str):
    """A str subclass as a scope: must render exactly as the plain string does."""

    __slots__ = ()


@pytest.fixture(autouse=True)
def _fixed_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Tokens carry the render's start time: fix it so the HTML is the same every run."""
    monkeypatch.setattr(time, "time", lambda: NOW)
    str(Connect(endpoint=PER_TAB))  # nothing left registered in this thread
    yield
    str(Connect(endpoint=StreamEndpoint("/live", SIGNER, max_scopes=10_000)))


def _cards(count: int, scopes: int) -> Element:
    return ul[
        (
            Watch(f"project:{index % scopes}:tasks", f"/tasks/{index}", tag="li", id=f"t-{index}")[
                article(class_="card")[h3[f"Task {index}"], p["due ", span["1 March"]]]
            ]
            for index in range(count)
        )
    ]


Case = tuple["StreamEndpoint | None", "Callable[[], Renderable]"]
"""How to render one pinned case: inside ``use_endpoint(endpoint)`` if there is one."""


def render_sync(case: Case) -> str:
    endpoint, build = case
    with use_endpoint(endpoint) if endpoint else contextlib.nullcontext():
        return str(build())


async def render_async(case: Case) -> str:
    endpoint, build = case
    with use_endpoint(endpoint) if endpoint else contextlib.nullcontext():
        return "".join([chunk async for chunk in build().aiter_chunks()])


def _several() -> Renderable:
    return Watch(
        ["a:1", "b:*", "a:1", "c:>", "a-b:c_d", "9lives", "WILD:x", "tenant:a-b:>"],
        "/x?a=1&b=<b>&c='c'",
        tag="section",
        id="s",
        class_="card big",
        hidden=True,
        title='say "hi" & <bye>',
        data_x=7,
    )["c"]


def _hostile() -> Renderable:
    return fragment[[Watch("h:1", url, id=f"h{index}") for index, url in enumerate(HOSTILE_URLS)]]


def _connected_page() -> Renderable:
    return body[
        Watch("invoice:42", "/invoices/42", id="invoice")["42 EUR"],
        div[Watch(["invoices:*", "invoice:42"], "/invoices", id="list")],
        Connect(),
    ]


CASES: dict[str, Case] = {
    "watch": (None, lambda: Watch("invoice:42", "/invoices/42", id="invoice-42")[span["42 EUR"]]),
    "watch-bare": (None, lambda: Watch("a:1", "/x")),
    "watch-several": (None, _several),
    "watch-hostile-urls": (None, _hostile),
    "watch-tuple": (None, lambda: Watch(("x:1", "y:2"), "/t", tag="li")),
    "watch-str-subclass": (
        None,
        lambda: fragment[Watch(Sub("sub:1"), "/s"), Watch([Sub("sub:2"), "sub:2", "sub:3"], "/s")],
    ),
    "watch-overrides-effect": (None, lambda: Watch("a:1", "/x", data_effect="mine", id="o")),
    "watch-false-attrs": (
        None,
        lambda: Watch("a:1", "/x", id=None, hidden=False, class_=["a", {"b": True, "c": False}]),
    ),
    "watch-called": (None, lambda: Watch("a:1", "/x", id="w")(class_="card")["kid"]),
    "watch-called-shorthand": (
        None,
        lambda: Watch("a:1", "/x", id="w")("#id.cls", {"data-y": "1"}, title="t")["kid"],
    ),
    "watch-called-mapping-override": (
        None,
        lambda: Watch("a:1", "/x")({"data-effect": "mine"}),
    ),
    "watch-dashed-effect-keyword": (None, lambda: Watch("a:1", "/x", **{"data-effect": "mine"})),
    "watch-near-names": (
        None,
        lambda: Watch("a:1", "/x", data_signals__ifmissing="s", data_effect_="e", effect="f"),
    ),
    "watch-called-twice": (
        None,
        lambda: Watch(["a:1", "b:*"], "/x", id="w")(class_="c")(title="t")[span["kid"]],
    ),
    "watch-children-then-call": (None, lambda: Watch("a:1", "/x")["kid"](id="late")),
    "watch-many-scopes": (None, lambda: Watch([f"s:{index}" for index in range(20)], "/many")),
    "watch-long-scopes": (
        None,
        lambda: fragment[
            Watch(["a" * 256, "b" * 256], "/two"),
            Watch(["a" * 256, "b" * 256, "c" * 256], "/three"),
        ],
    ),
    "watch-attrs-element": (
        None,
        lambda: ul(watch_attrs(["a:1", "b:*"], "/x"), id="list")[li["row"]],
    ),
    "connect-per-tab": (PER_TAB, _connected_page),
    "connect-shared": (SHARED, _connected_page),
    "connect-idle-per-tab": (PER_TAB, lambda: body[div["static"], Connect()]),
    "connect-idle-shared": (SHARED, lambda: body[div["static"], Connect()]),
    "connect-not-joinable": (PER_TAB, lambda: body[div["x"], Connect(joinable=False)]),
    "connect-path": (
        None,
        lambda: body[Watch("a:1", "/x"), Connect('/other"); @get("/evil', endpoint=PER_TAB)],
    ),
    "join-stream": (
        PER_TAB,
        lambda: fragment[
            Watch("row:3", "/rows/3"), Watch("row:4", "/rows/4"), JoinStream(tag="li")
        ],
    ),
    "list-page": (SHARED, lambda: body[_cards(20, 4), Connect()]),
}

EXPECTED: dict[str, str] = {
    "watch": (
        '<div data-signals__ifmissing="{&#34;_stream&#34;:{&#34;invoice_42&#34;:0'
        '},&#34;_streamData&#34;:{&#34;invoice_42&#34;:&#34;&#34;}}" data-effect='
        '"let seen = [$_stream.invoice_42].join(); if (el.streamuiSeen !== undefi'
        "ned &amp;&amp; el.streamuiSeen !== seen) @get((&#34;/invoices/42&#34;));"
        ' el.streamuiSeen = seen" id="invoice-42"><span>42 EUR</span></div>'
    ),
    "watch-bare": (
        '<div data-signals__ifmissing="{&#34;_stream&#34;:{&#34;a_1&#34;:0},&#34;'
        '_streamData&#34;:{&#34;a_1&#34;:&#34;&#34;}}" data-effect="let seen = [$'
        "_stream.a_1].join(); if (el.streamuiSeen !== undefined &amp;&amp; el.str"
        'eamuiSeen !== seen) @get((&#34;/x&#34;)); el.streamuiSeen = seen"></div>'
    ),
    "watch-several": (
        '<section data-signals__ifmissing="{&#34;_stream&#34;:{&#34;a_1&#34;:0,&#'
        "34;b_WILD&#34;:0,&#34;c_REST&#34;:0,&#34;_a_hb__c_ud&#34;:0,&#34;_9lives"
        "&#34;:0,&#34;_WILD__x&#34;:0,&#34;_tenant__a_hb___r&#34;:0},&#34;_stream"
        "Data&#34;:{&#34;a_1&#34;:&#34;&#34;,&#34;b_WILD&#34;:{},&#34;c_REST&#34;"
        ":{},&#34;_a_hb__c_ud&#34;:&#34;&#34;,&#34;_9lives&#34;:&#34;&#34;,&#34;_"
        'WILD__x&#34;:&#34;&#34;,&#34;_tenant__a_hb___r&#34;:{}}}" data-effect="l'
        "et seen = [$_stream.a_1, $_stream.b_WILD, $_stream.c_REST, $_stream._a_h"
        "b__c_ud, $_stream._9lives, $_stream._WILD__x, $_stream._tenant__a_hb___r"
        "].join(); if (el.streamuiSeen !== undefined &amp;&amp; el.streamuiSeen !"
        "== seen) @get((&#34;/x?a=1&amp;b=&lt;b&gt;&amp;c=&#39;c&#39;&#34;)); el."
        'streamuiSeen = seen" id="s" class="card big" hidden title="say &#34;hi&#'
        '34; &amp; &lt;bye&gt;" data-x="7">c</section>'
    ),
    "watch-hostile-urls": (
        '<div data-signals__ifmissing="{&#34;_stream&#34;:{&#34;h_1&#34;:0},&#34;'
        '_streamData&#34;:{&#34;h_1&#34;:&#34;&#34;}}" data-effect="let seen = [$'
        "_stream.h_1].join(); if (el.streamuiSeen !== undefined &amp;&amp; el.str"
        "eamuiSeen !== seen) @get((&#34;&#39;); alert(1); (&#39;&#34;)); el.strea"
        'muiSeen = seen" id="h0"></div><div data-signals__ifmissing="{&#34;_strea'
        "m&#34;:{&#34;h_1&#34;:0},&#34;_streamData&#34;:{&#34;h_1&#34;:&#34;&#34;"
        '}}" data-effect="let seen = [$_stream.h_1].join(); if (el.streamuiSeen !'
        "== undefined &amp;&amp; el.streamuiSeen !== seen) @get((&#34;\\&#34;); al"
        'ert(1); (\\&#34;&#34;)); el.streamuiSeen = seen" id="h1"></div><div data-'
        'signals__ifmissing="{&#34;_stream&#34;:{&#34;h_1&#34;:0},&#34;_streamDat'
        'a&#34;:{&#34;h_1&#34;:&#34;&#34;}}" data-effect="let seen = [$_stream.h_'
        "1].join(); if (el.streamuiSeen !== undefined &amp;&amp; el.streamuiSeen "
        "!== seen) @get((&#34;&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt"
        ';&#34;)); el.streamuiSeen = seen" id="h2"></div><div data-signals__ifmis'
        'sing="{&#34;_stream&#34;:{&#34;h_1&#34;:0},&#34;_streamData&#34;:{&#34;h'
        '_1&#34;:&#34;&#34;}}" data-effect="let seen = [$_stream.h_1].join(); if '
        "(el.streamuiSeen !== undefined &amp;&amp; el.streamuiSeen !== seen) @get"
        "((&#34;/x?a=1&amp;b=&lt;b&gt;&amp;c=&#39;c&#39;&#34;)); el.streamuiSeen "
        '= seen" id="h3"></div><div data-signals__ifmissing="{&#34;_stream&#34;:{'
        '&#34;h_1&#34;:0},&#34;_streamData&#34;:{&#34;h_1&#34;:&#34;&#34;}}" data'
        '-effect="let seen = [$_stream.h_1].join(); if (el.streamuiSeen !== undef'
        "ined &amp;&amp; el.streamuiSeen !== seen) @get((&#34;\\u0040get(&#39;/evi"
        'l&#39;)&#34;)); el.streamuiSeen = seen" id="h4"></div><div data-signals_'
        '_ifmissing="{&#34;_stream&#34;:{&#34;h_1&#34;:0},&#34;_streamData&#34;:{'
        '&#34;h_1&#34;:&#34;&#34;}}" data-effect="let seen = [$_stream.h_1].join('
        "); if (el.streamuiSeen !== undefined &amp;&amp; el.streamuiSeen !== seen"
        ') @get((&#34;\\u0024_stream.other = 1&#34;)); el.streamuiSeen = seen" id='
        '"h5"></div><div data-signals__ifmissing="{&#34;_stream&#34;:{&#34;h_1&#3'
        '4;:0},&#34;_streamData&#34;:{&#34;h_1&#34;:&#34;&#34;}}" data-effect="le'
        "t seen = [$_stream.h_1].join(); if (el.streamuiSeen !== undefined &amp;&"
        "amp; el.streamuiSeen !== seen) @get((&#34;line\\nbreak\\r\\u2028\\u2029&#34;"
        ')); el.streamuiSeen = seen" id="h6"></div><div data-signals__ifmissing="'
        "{&#34;_stream&#34;:{&#34;h_1&#34;:0},&#34;_streamData&#34;:{&#34;h_1&#34"
        ';:&#34;&#34;}}" data-effect="let seen = [$_stream.h_1].join(); if (el.st'
        "reamuiSeen !== undefined &amp;&amp; el.streamuiSeen !== seen) @get((&#34"
        ';/\\u00fcn\\u00efcode/\\ud83d\\ude00&#34;)); el.streamuiSeen = seen" id="h7"'
        '></div><div data-signals__ifmissing="{&#34;_stream&#34;:{&#34;h_1&#34;:0'
        '},&#34;_streamData&#34;:{&#34;h_1&#34;:&#34;&#34;}}" data-effect="let se'
        "en = [$_stream.h_1].join(); if (el.streamuiSeen !== undefined &amp;&amp;"
        " el.streamuiSeen !== seen) @get((&#34;&amp;quot;&amp;#34;&#34;)); el.str"
        'eamuiSeen = seen" id="h8"></div>'
    ),
    "watch-tuple": (
        '<li data-signals__ifmissing="{&#34;_stream&#34;:{&#34;x_1&#34;:0,&#34;y_'
        "2&#34;:0},&#34;_streamData&#34;:{&#34;x_1&#34;:&#34;&#34;,&#34;y_2&#34;:"
        '&#34;&#34;}}" data-effect="let seen = [$_stream.x_1, $_stream.y_2].join('
        "); if (el.streamuiSeen !== undefined &amp;&amp; el.streamuiSeen !== seen"
        ') @get((&#34;/t&#34;)); el.streamuiSeen = seen"></li>'
    ),
    "watch-str-subclass": (
        '<div data-signals__ifmissing="{&#34;_stream&#34;:{&#34;sub_1&#34;:0},&#3'
        '4;_streamData&#34;:{&#34;sub_1&#34;:&#34;&#34;}}" data-effect="let seen '
        "= [$_stream.sub_1].join(); if (el.streamuiSeen !== undefined &amp;&amp; "
        'el.streamuiSeen !== seen) @get((&#34;/s&#34;)); el.streamuiSeen = seen">'
        '</div><div data-signals__ifmissing="{&#34;_stream&#34;:{&#34;sub_2&#34;:'
        "0,&#34;sub_3&#34;:0},&#34;_streamData&#34;:{&#34;sub_2&#34;:&#34;&#34;,&"
        '#34;sub_3&#34;:&#34;&#34;}}" data-effect="let seen = [$_stream.sub_2, $_'
        "stream.sub_3].join(); if (el.streamuiSeen !== undefined &amp;&amp; el.st"
        'reamuiSeen !== seen) @get((&#34;/s&#34;)); el.streamuiSeen = seen"></div'
        ">"
    ),
    "watch-overrides-effect": (
        '<div data-signals__ifmissing="{&#34;_stream&#34;:{&#34;a_1&#34;:0},&#34;'
        '_streamData&#34;:{&#34;a_1&#34;:&#34;&#34;}}" data-effect="mine" id="o">'
        "</div>"
    ),
    "watch-false-attrs": (
        '<div data-signals__ifmissing="{&#34;_stream&#34;:{&#34;a_1&#34;:0},&#34;'
        '_streamData&#34;:{&#34;a_1&#34;:&#34;&#34;}}" data-effect="let seen = [$'
        "_stream.a_1].join(); if (el.streamuiSeen !== undefined &amp;&amp; el.str"
        'eamuiSeen !== seen) @get((&#34;/x&#34;)); el.streamuiSeen = seen" class='
        '"a b"></div>'
    ),
    "watch-called": (
        '<div data-signals__ifmissing="{&#34;_stream&#34;:{&#34;a_1&#34;:0},&#34;'
        '_streamData&#34;:{&#34;a_1&#34;:&#34;&#34;}}" data-effect="let seen = [$'
        "_stream.a_1].join(); if (el.streamuiSeen !== undefined &amp;&amp; el.str"
        'eamuiSeen !== seen) @get((&#34;/x&#34;)); el.streamuiSeen = seen" class='
        '"card">kid</div>'
    ),
    "watch-called-shorthand": (
        '<div id="id" class="cls" data-signals__ifmissing="{&#34;_stream&#34;:{&#'
        '34;a_1&#34;:0},&#34;_streamData&#34;:{&#34;a_1&#34;:&#34;&#34;}}" data-e'
        'ffect="let seen = [$_stream.a_1].join(); if (el.streamuiSeen !== undefin'
        "ed &amp;&amp; el.streamuiSeen !== seen) @get((&#34;/x&#34;)); el.streamu"
        'iSeen = seen" data-y="1" title="t">kid</div>'
    ),
    "watch-called-mapping-override": (
        '<div data-signals__ifmissing="{&#34;_stream&#34;:{&#34;a_1&#34;:0},&#34;'
        '_streamData&#34;:{&#34;a_1&#34;:&#34;&#34;}}" data-effect="mine"></div>'
    ),
    "watch-dashed-effect-keyword": (
        '<div data-signals__ifmissing="{&#34;_stream&#34;:{&#34;a_1&#34;:0},&#34;'
        '_streamData&#34;:{&#34;a_1&#34;:&#34;&#34;}}" data-effect="mine"></div>'
    ),
    "watch-near-names": (
        '<div data-signals__ifmissing="{&#34;_stream&#34;:{&#34;a_1&#34;:0},&#34;'
        '_streamData&#34;:{&#34;a_1&#34;:&#34;&#34;}}" data-effect="let seen = [$'
        "_stream.a_1].join(); if (el.streamuiSeen !== undefined &amp;&amp; el.str"
        'eamuiSeen !== seen) @get((&#34;/x&#34;)); el.streamuiSeen = seen" data-s'
        'ignals--ifmissing="s" data-effect-="e" effect="f"></div>'
    ),
    "watch-called-twice": (
        '<div data-signals__ifmissing="{&#34;_stream&#34;:{&#34;a_1&#34;:0,&#34;b'
        "_WILD&#34;:0},&#34;_streamData&#34;:{&#34;a_1&#34;:&#34;&#34;,&#34;b_WIL"
        'D&#34;:{}}}" data-effect="let seen = [$_stream.a_1, $_stream.b_WILD].joi'
        "n(); if (el.streamuiSeen !== undefined &amp;&amp; el.streamuiSeen !== se"
        'en) @get((&#34;/x&#34;)); el.streamuiSeen = seen" title="t"><span>kid</s'
        "pan></div>"
    ),
    "watch-children-then-call": (
        '<div data-signals__ifmissing="{&#34;_stream&#34;:{&#34;a_1&#34;:0},&#34;'
        '_streamData&#34;:{&#34;a_1&#34;:&#34;&#34;}}" data-effect="let seen = [$'
        "_stream.a_1].join(); if (el.streamuiSeen !== undefined &amp;&amp; el.str"
        'eamuiSeen !== seen) @get((&#34;/x&#34;)); el.streamuiSeen = seen" id="la'
        'te">kid</div>'
    ),
    "watch-many-scopes": (
        '<div data-signals__ifmissing="{&#34;_stream&#34;:{&#34;s_0&#34;:0,&#34;s'
        "_1&#34;:0,&#34;s_2&#34;:0,&#34;s_3&#34;:0,&#34;s_4&#34;:0,&#34;s_5&#34;:"
        "0,&#34;s_6&#34;:0,&#34;s_7&#34;:0,&#34;s_8&#34;:0,&#34;s_9&#34;:0,&#34;s"
        "_10&#34;:0,&#34;s_11&#34;:0,&#34;s_12&#34;:0,&#34;s_13&#34;:0,&#34;s_14&"
        "#34;:0,&#34;s_15&#34;:0,&#34;s_16&#34;:0,&#34;s_17&#34;:0,&#34;s_18&#34;"
        ":0,&#34;s_19&#34;:0},&#34;_streamData&#34;:{&#34;s_0&#34;:&#34;&#34;,&#3"
        "4;s_1&#34;:&#34;&#34;,&#34;s_2&#34;:&#34;&#34;,&#34;s_3&#34;:&#34;&#34;,"
        "&#34;s_4&#34;:&#34;&#34;,&#34;s_5&#34;:&#34;&#34;,&#34;s_6&#34;:&#34;&#3"
        "4;,&#34;s_7&#34;:&#34;&#34;,&#34;s_8&#34;:&#34;&#34;,&#34;s_9&#34;:&#34;"
        "&#34;,&#34;s_10&#34;:&#34;&#34;,&#34;s_11&#34;:&#34;&#34;,&#34;s_12&#34;"
        ":&#34;&#34;,&#34;s_13&#34;:&#34;&#34;,&#34;s_14&#34;:&#34;&#34;,&#34;s_1"
        "5&#34;:&#34;&#34;,&#34;s_16&#34;:&#34;&#34;,&#34;s_17&#34;:&#34;&#34;,&#"
        '34;s_18&#34;:&#34;&#34;,&#34;s_19&#34;:&#34;&#34;}}" data-effect="let se'
        "en = [$_stream.s_0, $_stream.s_1, $_stream.s_2, $_stream.s_3, $_stream.s"
        "_4, $_stream.s_5, $_stream.s_6, $_stream.s_7, $_stream.s_8, $_stream.s_9"
        ", $_stream.s_10, $_stream.s_11, $_stream.s_12, $_stream.s_13, $_stream.s"
        "_14, $_stream.s_15, $_stream.s_16, $_stream.s_17, $_stream.s_18, $_strea"
        "m.s_19].join(); if (el.streamuiSeen !== undefined &amp;&amp; el.streamui"
        'Seen !== seen) @get((&#34;/many&#34;)); el.streamuiSeen = seen"></div>'
    ),
    "watch-long-scopes": (
        '<div data-signals__ifmissing="{&#34;_stream&#34;:{&#34;aaaaaaaaaaaaaaaaa'
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aaaaaaaaaaaaaaaaaaaaaaa&#34;:0,&#34;bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
        "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
        "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
        "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
        "bbbb&#34;:0},&#34;_streamData&#34;:{&#34;aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aaaaaaaaa&#34;:&#34;&#34;,&#34;bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
        "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
        "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
        "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb&"
        '#34;:&#34;&#34;}}" data-effect="let seen = [$_stream.aaaaaaaaaaaaaaaaaaa'
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aaaaaaaaaaaaaaaaaaaaa, $_stream.bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
        "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
        "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
        "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
        "].join(); if (el.streamuiSeen !== undefined &amp;&amp; el.streamuiSeen !"
        '== seen) @get((&#34;/two&#34;)); el.streamuiSeen = seen"></div><div data'
        '-signals__ifmissing="{&#34;_stream&#34;:{&#34;aaaaaaaaaaaaaaaaaaaaaaaaaa'
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aaaaaaaaaaaaaa&#34;:0,&#34;bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
        "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
        "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
        "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb&#34;"
        ":0,&#34;cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
        "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
        "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
        "cccccccccccccccccccccccccccccccccccccccccccccccc&#34;:0},&#34;_streamDat"
        "a&#34;:{&#34;aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa&#34;:&#34;&#34;,&#"
        "34;bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
        "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
        "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
        "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb&#34;:&#34;&#34;,&#34;ccccccc"
        "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
        "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
        "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
        'ccccccccccccccccccccccccccccccccc&#34;:&#34;&#34;}}" data-effect="let se'
        "en = [$_stream.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa, $_stream.bbbbbb"
        "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
        "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
        "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
        "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb, $_stream.ccccccccccccccccccccccccccc"
        "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
        "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
        "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
        "ccccccccccccc].join(); if (el.streamuiSeen !== undefined &amp;&amp; el.s"
        'treamuiSeen !== seen) @get((&#34;/three&#34;)); el.streamuiSeen = seen">'
        "</div>"
    ),
    "watch-attrs-element": (
        '<ul data-signals__ifmissing="{&#34;_stream&#34;:{&#34;a_1&#34;:0,&#34;b_'
        "WILD&#34;:0},&#34;_streamData&#34;:{&#34;a_1&#34;:&#34;&#34;,&#34;b_WILD"
        '&#34;:{}}}" data-effect="let seen = [$_stream.a_1, $_stream.b_WILD].join'
        "(); if (el.streamuiSeen !== undefined &amp;&amp; el.streamuiSeen !== see"
        'n) @get((&#34;/x&#34;)); el.streamuiSeen = seen" id="list"><li>row</li><'
        "/ul>"
    ),
    "connect-per-tab": (
        '<body><div data-signals__ifmissing="{&#34;_stream&#34;:{&#34;invoice_42&'
        '#34;:0},&#34;_streamData&#34;:{&#34;invoice_42&#34;:&#34;&#34;}}" data-e'
        'ffect="let seen = [$_stream.invoice_42].join(); if (el.streamuiSeen !== '
        "undefined &amp;&amp; el.streamuiSeen !== seen) @get((&#34;/invoices/42&#"
        '34;)); el.streamuiSeen = seen" id="invoice">42 EUR</div><div><div data-s'
        'ignals__ifmissing="{&#34;_stream&#34;:{&#34;invoices_WILD&#34;:0,&#34;in'
        "voice_42&#34;:0},&#34;_streamData&#34;:{&#34;invoices_WILD&#34;:{},&#34;"
        'invoice_42&#34;:&#34;&#34;}}" data-effect="let seen = [$_stream.invoices'
        "_WILD, $_stream.invoice_42].join(); if (el.streamuiSeen !== undefined &a"
        "mp;&amp; el.streamuiSeen !== seen) @get((&#34;/invoices&#34;)); el.strea"
        'muiSeen = seen" id="list"></div></div><div id="streamui-connect" data-si'
        'gnals__ifmissing="{&#34;_stream&#34;:{&#34;invoice_42&#34;:0,&#34;invoic'
        "es_WILD&#34;:0},&#34;_streamData&#34;:{&#34;invoice_42&#34;:&#34;&#34;,&"
        "#34;invoices_WILD&#34;:{}},&#34;_streamTokens&#34;:{&#34;tb7d288b5c3d532"
        "cb&#34;:&#34;eyJzIjpbImludm9pY2U6NDIiLCJpbnZvaWNlczoqIl0sInQiOjE3MDAwMDA"
        "wMDAyNTAsImkiOiJnb2xkZW4wMSJ9.JEAWVUVhhNNgMupyA4McrUq6MIJHvOVqtUwfProbMC"
        'o&#34;},&#34;_streamError&#34;:&#34;&#34;}" data-effect="@get((&#34;/liv'
        "e?&#34; + Object.values($_streamTokens).map((token) =&gt; &#39;t=&#39; +"
        " token).join(&#39;&amp;&#39;)), {&#34;retry&#34;: &#34;always&#34;, &#34"
        ";retryMaxCount&#34;: 1000000000, &#34;filterSignals&#34;: {&#34;include&"
        '#34;: (new RegExp(&#34;^$&#34;))}})" hidden></div></body>'
    ),
    "connect-shared": (
        '<body><div data-signals__ifmissing="{&#34;_stream&#34;:{&#34;invoice_42&'
        '#34;:0},&#34;_streamData&#34;:{&#34;invoice_42&#34;:&#34;&#34;}}" data-e'
        'ffect="let seen = [$_stream.invoice_42].join(); if (el.streamuiSeen !== '
        "undefined &amp;&amp; el.streamuiSeen !== seen) @get((&#34;/invoices/42&#"
        '34;)); el.streamuiSeen = seen" id="invoice">42 EUR</div><div><div data-s'
        'ignals__ifmissing="{&#34;_stream&#34;:{&#34;invoices_WILD&#34;:0,&#34;in'
        "voice_42&#34;:0},&#34;_streamData&#34;:{&#34;invoices_WILD&#34;:{},&#34;"
        'invoice_42&#34;:&#34;&#34;}}" data-effect="let seen = [$_stream.invoices'
        "_WILD, $_stream.invoice_42].join(); if (el.streamuiSeen !== undefined &a"
        "mp;&amp; el.streamuiSeen !== seen) @get((&#34;/invoices&#34;)); el.strea"
        'muiSeen = seen" id="list"></div></div><div id="streamui-connect" data-si'
        'gnals__ifmissing="{&#34;_stream&#34;:{&#34;invoice_42&#34;:0,&#34;invoic'
        "es_WILD&#34;:0},&#34;_streamData&#34;:{&#34;invoice_42&#34;:&#34;&#34;,&"
        "#34;invoices_WILD&#34;:{}},&#34;_streamTokens&#34;:{&#34;tb7d288b5c3d532"
        "cb&#34;:&#34;eyJzIjpbImludm9pY2U6NDIiLCJpbnZvaWNlczoqIl0sInQiOjE3MDAwMDA"
        "wMDAyNTAsImkiOiJnb2xkZW4wMSJ9.JEAWVUVhhNNgMupyA4McrUq6MIJHvOVqtUwfProbMC"
        'o&#34;},&#34;_streamError&#34;:&#34;&#34;}" data-effect="el.dataset.stre'
        "amuiState = JSON.stringify([$_streamTokens, Object.keys($_stream || {})]"
        ')" data-streamui="{&#34;path&#34;:&#34;/live&#34;,&#34;mergePath&#34;:&#'
        "34;/live/merge&#34;,&#34;maxTokens&#34;:16,&#34;maxScopes&#34;:64,&#34;m"
        'ergeOver&#34;:4,&#34;share&#34;:true,&#34;reload&#34;:true}" data-stream'
        'ui-fallback="@get((&#34;/live?&#34; + Object.values($_streamTokens).map('
        "(token) =&gt; &#39;t=&#39; + token).join(&#39;&amp;&#39;)), {&#34;retry&"
        "#34;: &#34;always&#34;, &#34;retryMaxCount&#34;: 1000000000, &#34;filter"
        'Signals&#34;: {&#34;include&#34;: (new RegExp(&#34;^$&#34;))}})" hidden>'
        '<script type="module" src="/live.js"></script></div></body>'
    ),
    "connect-idle-per-tab": (
        '<body><div>static</div><div id="streamui-connect" data-signals__ifmissin'
        'g="{&#34;_stream&#34;:{},&#34;_streamData&#34;:{},&#34;_streamTokens&#34'
        ';:{},&#34;_streamError&#34;:&#34;&#34;}" data-effect="Object.keys($_stre'
        "amTokens).length &amp;&amp; @get((&#34;/live?&#34; + Object.values($_str"
        "eamTokens).map((token) =&gt; &#39;t=&#39; + token).join(&#39;&amp;&#39;)"
        "), {&#34;retry&#34;: &#34;always&#34;, &#34;retryMaxCount&#34;: 10000000"
        "00, &#34;filterSignals&#34;: {&#34;include&#34;: (new RegExp(&#34;^$&#34"
        ';))}})" hidden></div></body>'
    ),
    "connect-idle-shared": (
        '<body><div>static</div><div id="streamui-connect" data-signals__ifmissin'
        'g="{&#34;_stream&#34;:{},&#34;_streamData&#34;:{},&#34;_streamTokens&#34'
        ';:{},&#34;_streamError&#34;:&#34;&#34;}" data-effect="el.dataset.streamu'
        'iState = JSON.stringify([$_streamTokens, Object.keys($_stream || {})])" '
        'data-streamui="{&#34;path&#34;:&#34;/live&#34;,&#34;mergePath&#34;:&#34;'
        "/live/merge&#34;,&#34;maxTokens&#34;:16,&#34;maxScopes&#34;:64,&#34;merg"
        'eOver&#34;:4,&#34;share&#34;:true,&#34;reload&#34;:true}" data-streamui-'
        'fallback="Object.keys($_streamTokens).length &amp;&amp; @get((&#34;/live'
        "?&#34; + Object.values($_streamTokens).map((token) =&gt; &#39;t=&#39; + "
        "token).join(&#39;&amp;&#39;)), {&#34;retry&#34;: &#34;always&#34;, &#34;"
        "retryMaxCount&#34;: 1000000000, &#34;filterSignals&#34;: {&#34;include&#"
        '34;: (new RegExp(&#34;^$&#34;))}})" hidden><script type="module" src="/l'
        'ive.js"></script></div></body>'
    ),
    "connect-not-joinable": "<body><div>x</div></body>",
    "connect-path": (
        '<body><div data-signals__ifmissing="{&#34;_stream&#34;:{&#34;a_1&#34;:0}'
        ',&#34;_streamData&#34;:{&#34;a_1&#34;:&#34;&#34;}}" data-effect="let see'
        "n = [$_stream.a_1].join(); if (el.streamuiSeen !== undefined &amp;&amp; "
        'el.streamuiSeen !== seen) @get((&#34;/x&#34;)); el.streamuiSeen = seen">'
        '</div><div id="streamui-connect" data-signals__ifmissing="{&#34;_stream&'
        "#34;:{&#34;a_1&#34;:0},&#34;_streamData&#34;:{&#34;a_1&#34;:&#34;&#34;},"
        "&#34;_streamTokens&#34;:{&#34;t2b2c40a6706d9e5f&#34;:&#34;eyJzIjpbImE6MS"
        "JdLCJ0IjoxNzAwMDAwMDAwMjUwLCJpIjoiZ29sZGVuMDEifQ.0XrvsDmjp1O1P_rskbYYbz2"
        'tb6qfjRgvrO5QH5vj8Js&#34;},&#34;_streamError&#34;:&#34;&#34;}" data-effe'
        'ct="@get((&#34;/other\\&#34;); \\u0040get(\\&#34;/evil?&#34; + Object.value'
        "s($_streamTokens).map((token) =&gt; &#39;t=&#39; + token).join(&#39;&amp"
        ";&#39;)), {&#34;retry&#34;: &#34;always&#34;, &#34;retryMaxCount&#34;: 1"
        "000000000, &#34;filterSignals&#34;: {&#34;include&#34;: (new RegExp(&#34"
        ';^$&#34;))}})" hidden></div></body>'
    ),
    "join-stream": (
        '<div data-signals__ifmissing="{&#34;_stream&#34;:{&#34;row_3&#34;:0},&#3'
        '4;_streamData&#34;:{&#34;row_3&#34;:&#34;&#34;}}" data-effect="let seen '
        "= [$_stream.row_3].join(); if (el.streamuiSeen !== undefined &amp;&amp; "
        "el.streamuiSeen !== seen) @get((&#34;/rows/3&#34;)); el.streamuiSeen = s"
        'een"></div><div data-signals__ifmissing="{&#34;_stream&#34;:{&#34;row_4&'
        '#34;:0},&#34;_streamData&#34;:{&#34;row_4&#34;:&#34;&#34;}}" data-effect'
        '="let seen = [$_stream.row_4].join(); if (el.streamuiSeen !== undefined '
        "&amp;&amp; el.streamuiSeen !== seen) @get((&#34;/rows/4&#34;)); el.strea"
        'muiSeen = seen"></div><li data-signals__ifmissing="{&#34;_stream&#34;:{&'
        "#34;row_3&#34;:0,&#34;row_4&#34;:0},&#34;_streamData&#34;:{&#34;row_3&#3"
        "4;:&#34;&#34;,&#34;row_4&#34;:&#34;&#34;},&#34;_streamTokens&#34;:{&#34;"
        "t712435e266157c56&#34;:&#34;eyJzIjpbInJvdzozIiwicm93OjQiXSwidCI6MTcwMDAw"
        "MDAwMDI1MCwiaSI6ImdvbGRlbjAxIn0.XRzC3P8kzqB_huKlrCJ8CpugGSNGoVDO1QtvWbUo"
        'hk4&#34;}}" hidden></li>'
    ),
    "list-page": (
        '<body><ul><li data-signals__ifmissing="{&#34;_stream&#34;:{&#34;project_'
        "0_tasks&#34;:0},&#34;_streamData&#34;:{&#34;project_0_tasks&#34;:&#34;&#"
        '34;}}" data-effect="let seen = [$_stream.project_0_tasks].join(); if (el'
        ".streamuiSeen !== undefined &amp;&amp; el.streamuiSeen !== seen) @get((&"
        '#34;/tasks/0&#34;)); el.streamuiSeen = seen" id="t-0"><article class="ca'
        'rd"><h3>Task 0</h3><p>due <span>1 March</span></p></article></li><li dat'
        'a-signals__ifmissing="{&#34;_stream&#34;:{&#34;project_1_tasks&#34;:0},&'
        '#34;_streamData&#34;:{&#34;project_1_tasks&#34;:&#34;&#34;}}" data-effec'
        't="let seen = [$_stream.project_1_tasks].join(); if (el.streamuiSeen !=='
        " undefined &amp;&amp; el.streamuiSeen !== seen) @get((&#34;/tasks/1&#34;"
        ')); el.streamuiSeen = seen" id="t-1"><article class="card"><h3>Task 1</h'
        "3><p>due <span>1 March</span></p></article></li><li data-signals__ifmiss"
        'ing="{&#34;_stream&#34;:{&#34;project_2_tasks&#34;:0},&#34;_streamData&#'
        '34;:{&#34;project_2_tasks&#34;:&#34;&#34;}}" data-effect="let seen = [$_'
        "stream.project_2_tasks].join(); if (el.streamuiSeen !== undefined &amp;&"
        "amp; el.streamuiSeen !== seen) @get((&#34;/tasks/2&#34;)); el.streamuiSe"
        'en = seen" id="t-2"><article class="card"><h3>Task 2</h3><p>due <span>1 '
        'March</span></p></article></li><li data-signals__ifmissing="{&#34;_strea'
        "m&#34;:{&#34;project_3_tasks&#34;:0},&#34;_streamData&#34;:{&#34;project"
        '_3_tasks&#34;:&#34;&#34;}}" data-effect="let seen = [$_stream.project_3_'
        "tasks].join(); if (el.streamuiSeen !== undefined &amp;&amp; el.streamuiS"
        'een !== seen) @get((&#34;/tasks/3&#34;)); el.streamuiSeen = seen" id="t-'
        '3"><article class="card"><h3>Task 3</h3><p>due <span>1 March</span></p><'
        '/article></li><li data-signals__ifmissing="{&#34;_stream&#34;:{&#34;proj'
        "ect_0_tasks&#34;:0},&#34;_streamData&#34;:{&#34;project_0_tasks&#34;:&#3"
        '4;&#34;}}" data-effect="let seen = [$_stream.project_0_tasks].join(); if'
        " (el.streamuiSeen !== undefined &amp;&amp; el.streamuiSeen !== seen) @ge"
        't((&#34;/tasks/4&#34;)); el.streamuiSeen = seen" id="t-4"><article class'
        '="card"><h3>Task 4</h3><p>due <span>1 March</span></p></article></li><li'
        ' data-signals__ifmissing="{&#34;_stream&#34;:{&#34;project_1_tasks&#34;:'
        '0},&#34;_streamData&#34;:{&#34;project_1_tasks&#34;:&#34;&#34;}}" data-e'
        'ffect="let seen = [$_stream.project_1_tasks].join(); if (el.streamuiSeen'
        " !== undefined &amp;&amp; el.streamuiSeen !== seen) @get((&#34;/tasks/5&"
        '#34;)); el.streamuiSeen = seen" id="t-5"><article class="card"><h3>Task '
        "5</h3><p>due <span>1 March</span></p></article></li><li data-signals__if"
        'missing="{&#34;_stream&#34;:{&#34;project_2_tasks&#34;:0},&#34;_streamDa'
        'ta&#34;:{&#34;project_2_tasks&#34;:&#34;&#34;}}" data-effect="let seen ='
        " [$_stream.project_2_tasks].join(); if (el.streamuiSeen !== undefined &a"
        "mp;&amp; el.streamuiSeen !== seen) @get((&#34;/tasks/6&#34;)); el.stream"
        'uiSeen = seen" id="t-6"><article class="card"><h3>Task 6</h3><p>due <spa'
        'n>1 March</span></p></article></li><li data-signals__ifmissing="{&#34;_s'
        "tream&#34;:{&#34;project_3_tasks&#34;:0},&#34;_streamData&#34;:{&#34;pro"
        'ject_3_tasks&#34;:&#34;&#34;}}" data-effect="let seen = [$_stream.projec'
        "t_3_tasks].join(); if (el.streamuiSeen !== undefined &amp;&amp; el.strea"
        'muiSeen !== seen) @get((&#34;/tasks/7&#34;)); el.streamuiSeen = seen" id'
        '="t-7"><article class="card"><h3>Task 7</h3><p>due <span>1 March</span><'
        '/p></article></li><li data-signals__ifmissing="{&#34;_stream&#34;:{&#34;'
        "project_0_tasks&#34;:0},&#34;_streamData&#34;:{&#34;project_0_tasks&#34;"
        ':&#34;&#34;}}" data-effect="let seen = [$_stream.project_0_tasks].join()'
        "; if (el.streamuiSeen !== undefined &amp;&amp; el.streamuiSeen !== seen)"
        ' @get((&#34;/tasks/8&#34;)); el.streamuiSeen = seen" id="t-8"><article c'
        'lass="card"><h3>Task 8</h3><p>due <span>1 March</span></p></article></li'
        '><li data-signals__ifmissing="{&#34;_stream&#34;:{&#34;project_1_tasks&#'
        '34;:0},&#34;_streamData&#34;:{&#34;project_1_tasks&#34;:&#34;&#34;}}" da'
        'ta-effect="let seen = [$_stream.project_1_tasks].join(); if (el.streamui'
        "Seen !== undefined &amp;&amp; el.streamuiSeen !== seen) @get((&#34;/task"
        's/9&#34;)); el.streamuiSeen = seen" id="t-9"><article class="card"><h3>T'
        "ask 9</h3><p>due <span>1 March</span></p></article></li><li data-signals"
        '__ifmissing="{&#34;_stream&#34;:{&#34;project_2_tasks&#34;:0},&#34;_stre'
        'amData&#34;:{&#34;project_2_tasks&#34;:&#34;&#34;}}" data-effect="let se'
        "en = [$_stream.project_2_tasks].join(); if (el.streamuiSeen !== undefine"
        "d &amp;&amp; el.streamuiSeen !== seen) @get((&#34;/tasks/10&#34;)); el.s"
        'treamuiSeen = seen" id="t-10"><article class="card"><h3>Task 10</h3><p>d'
        'ue <span>1 March</span></p></article></li><li data-signals__ifmissing="{'
        "&#34;_stream&#34;:{&#34;project_3_tasks&#34;:0},&#34;_streamData&#34;:{&"
        '#34;project_3_tasks&#34;:&#34;&#34;}}" data-effect="let seen = [$_stream'
        ".project_3_tasks].join(); if (el.streamuiSeen !== undefined &amp;&amp; e"
        "l.streamuiSeen !== seen) @get((&#34;/tasks/11&#34;)); el.streamuiSeen = "
        'seen" id="t-11"><article class="card"><h3>Task 11</h3><p>due <span>1 Mar'
        'ch</span></p></article></li><li data-signals__ifmissing="{&#34;_stream&#'
        "34;:{&#34;project_0_tasks&#34;:0},&#34;_streamData&#34;:{&#34;project_0_"
        'tasks&#34;:&#34;&#34;}}" data-effect="let seen = [$_stream.project_0_tas'
        "ks].join(); if (el.streamuiSeen !== undefined &amp;&amp; el.streamuiSeen"
        ' !== seen) @get((&#34;/tasks/12&#34;)); el.streamuiSeen = seen" id="t-12'
        '"><article class="card"><h3>Task 12</h3><p>due <span>1 March</span></p><'
        '/article></li><li data-signals__ifmissing="{&#34;_stream&#34;:{&#34;proj'
        "ect_1_tasks&#34;:0},&#34;_streamData&#34;:{&#34;project_1_tasks&#34;:&#3"
        '4;&#34;}}" data-effect="let seen = [$_stream.project_1_tasks].join(); if'
        " (el.streamuiSeen !== undefined &amp;&amp; el.streamuiSeen !== seen) @ge"
        't((&#34;/tasks/13&#34;)); el.streamuiSeen = seen" id="t-13"><article cla'
        'ss="card"><h3>Task 13</h3><p>due <span>1 March</span></p></article></li>'
        '<li data-signals__ifmissing="{&#34;_stream&#34;:{&#34;project_2_tasks&#3'
        '4;:0},&#34;_streamData&#34;:{&#34;project_2_tasks&#34;:&#34;&#34;}}" dat'
        'a-effect="let seen = [$_stream.project_2_tasks].join(); if (el.streamuiS'
        "een !== undefined &amp;&amp; el.streamuiSeen !== seen) @get((&#34;/tasks"
        '/14&#34;)); el.streamuiSeen = seen" id="t-14"><article class="card"><h3>'
        "Task 14</h3><p>due <span>1 March</span></p></article></li><li data-signa"
        'ls__ifmissing="{&#34;_stream&#34;:{&#34;project_3_tasks&#34;:0},&#34;_st'
        'reamData&#34;:{&#34;project_3_tasks&#34;:&#34;&#34;}}" data-effect="let '
        "seen = [$_stream.project_3_tasks].join(); if (el.streamuiSeen !== undefi"
        "ned &amp;&amp; el.streamuiSeen !== seen) @get((&#34;/tasks/15&#34;)); el"
        '.streamuiSeen = seen" id="t-15"><article class="card"><h3>Task 15</h3><p'
        ">due <span>1 March</span></p></article></li><li data-signals__ifmissing="
        '"{&#34;_stream&#34;:{&#34;project_0_tasks&#34;:0},&#34;_streamData&#34;:'
        '{&#34;project_0_tasks&#34;:&#34;&#34;}}" data-effect="let seen = [$_stre'
        "am.project_0_tasks].join(); if (el.streamuiSeen !== undefined &amp;&amp;"
        " el.streamuiSeen !== seen) @get((&#34;/tasks/16&#34;)); el.streamuiSeen "
        '= seen" id="t-16"><article class="card"><h3>Task 16</h3><p>due <span>1 M'
        'arch</span></p></article></li><li data-signals__ifmissing="{&#34;_stream'
        "&#34;:{&#34;project_1_tasks&#34;:0},&#34;_streamData&#34;:{&#34;project_"
        '1_tasks&#34;:&#34;&#34;}}" data-effect="let seen = [$_stream.project_1_t'
        "asks].join(); if (el.streamuiSeen !== undefined &amp;&amp; el.streamuiSe"
        'en !== seen) @get((&#34;/tasks/17&#34;)); el.streamuiSeen = seen" id="t-'
        '17"><article class="card"><h3>Task 17</h3><p>due <span>1 March</span></p'
        '></article></li><li data-signals__ifmissing="{&#34;_stream&#34;:{&#34;pr'
        "oject_2_tasks&#34;:0},&#34;_streamData&#34;:{&#34;project_2_tasks&#34;:&"
        '#34;&#34;}}" data-effect="let seen = [$_stream.project_2_tasks].join(); '
        "if (el.streamuiSeen !== undefined &amp;&amp; el.streamuiSeen !== seen) @"
        'get((&#34;/tasks/18&#34;)); el.streamuiSeen = seen" id="t-18"><article c'
        'lass="card"><h3>Task 18</h3><p>due <span>1 March</span></p></article></l'
        'i><li data-signals__ifmissing="{&#34;_stream&#34;:{&#34;project_3_tasks&'
        '#34;:0},&#34;_streamData&#34;:{&#34;project_3_tasks&#34;:&#34;&#34;}}" d'
        'ata-effect="let seen = [$_stream.project_3_tasks].join(); if (el.streamu'
        "iSeen !== undefined &amp;&amp; el.streamuiSeen !== seen) @get((&#34;/tas"
        'ks/19&#34;)); el.streamuiSeen = seen" id="t-19"><article class="card"><h'
        "3>Task 19</h3><p>due <span>1 March</span></p></article></li></ul><div id"
        '="streamui-connect" data-signals__ifmissing="{&#34;_stream&#34;:{&#34;pr'
        "oject_0_tasks&#34;:0,&#34;project_1_tasks&#34;:0,&#34;project_2_tasks&#3"
        "4;:0,&#34;project_3_tasks&#34;:0},&#34;_streamData&#34;:{&#34;project_0_"
        "tasks&#34;:&#34;&#34;,&#34;project_1_tasks&#34;:&#34;&#34;,&#34;project_"
        "2_tasks&#34;:&#34;&#34;,&#34;project_3_tasks&#34;:&#34;&#34;},&#34;_stre"
        "amTokens&#34;:{&#34;t73f2514b2f6db7b2&#34;:&#34;eyJzIjpbInByb2plY3Q6MDp0"
        "YXNrcyIsInByb2plY3Q6MTp0YXNrcyIsInByb2plY3Q6Mjp0YXNrcyIsInByb2plY3Q6Mzp0"
        "YXNrcyJdLCJ0IjoxNzAwMDAwMDAwMjUwLCJpIjoiZ29sZGVuMDEifQ.Mg7fzXwDrs9GE_MWI"
        'Lpa6KRnb-Pg9B1TvW8liUNzJF4&#34;},&#34;_streamError&#34;:&#34;&#34;}" dat'
        'a-effect="el.dataset.streamuiState = JSON.stringify([$_streamTokens, Obj'
        'ect.keys($_stream || {})])" data-streamui="{&#34;path&#34;:&#34;/live&#3'
        "4;,&#34;mergePath&#34;:&#34;/live/merge&#34;,&#34;maxTokens&#34;:16,&#34"
        ";maxScopes&#34;:64,&#34;mergeOver&#34;:4,&#34;share&#34;:true,&#34;reloa"
        'd&#34;:true}" data-streamui-fallback="@get((&#34;/live?&#34; + Object.va'
        "lues($_streamTokens).map((token) =&gt; &#39;t=&#39; + token).join(&#39;&"
        "amp;&#39;)), {&#34;retry&#34;: &#34;always&#34;, &#34;retryMaxCount&#34;"
        ": 1000000000, &#34;filterSignals&#34;: {&#34;include&#34;: (new RegExp(&"
        '#34;^$&#34;))}})" hidden><script type="module" src="/live.js"></script><'
        "/div></body>"
    ),
}

# A page like the benchmark's (120 cards on 12 scopes), pinned by its digest.
LIST_PAGE_SHA256 = "0441c4ca3d42b5c4585aaf6141612dddf85255959d6a5ec35e6be366adcf5a35"
LIST_PAGE_LENGTH = 52298


@pytest.mark.parametrize("name", list(CASES))
async def test_the_html_is_byte_for_byte_what_it_was(name: str) -> None:
    # Twice each way: the second render runs on warm caches.
    for _ in range(2):
        assert render_sync(CASES[name]) == EXPECTED[name]
        assert await render_async(CASES[name]) == EXPECTED[name]


def test_a_large_page_is_byte_for_byte_what_it_was() -> None:
    for _ in range(2):
        with use_endpoint(SHARED):
            html = str(body[_cards(120, 12), Connect()])
        assert len(html) == LIST_PAGE_LENGTH
        assert hashlib.sha256(html.encode()).hexdigest() == LIST_PAGE_SHA256


def test_the_helpers_return_what_they_did() -> None:
    for _ in range(2):
        assert watch_attrs(["a:1", "b:*", "x-y:>"], "/x?a=1&b='2'") == EXPECTED_WATCH_ATTRS
        assert watch_effect("9lives:WILD", "@get('/evil')") == EXPECTED_WATCH_EFFECT
        assert scope_signals("a:1", "b:*", "a:1", "c:>") == {
            "_stream": {"a_1": 0, "b_WILD": 0, "c_REST": 0},
            "_streamData": {"a_1": "", "b_WILD": {}, "c_REST": {}},
        }


EXPECTED_WATCH_ATTRS: dict[str, str] = {
    "data-signals__ifmissing": (
        '{"_stream":{"a_1":0,"b_WILD":0,"_x_hy___r":0},"_streamData":{"a_1":"","b'
        '_WILD":{},"_x_hy___r":{}}}'
    ),
    "data-effect": (
        "let seen = [$_stream.a_1, $_stream.b_WILD, $_stream._x_hy___r].join(); i"
        'f (el.streamuiSeen !== undefined && el.streamuiSeen !== seen) @get(("/x?'
        "a=1&b='2'\")); el.streamuiSeen = seen"
    ),
}
EXPECTED_WATCH_EFFECT = (
    "let seen = [$_stream._9lives__WILD].join(); if (el.streamuiSeen !== unde"
    "fined && el.streamuiSeen !== seen) @get((\"\\u0040get('/evil')\")); el.stre"
    "amuiSeen = seen"
)


# -- errors: raised at every call, never remembered --------------------------------------------

BAD_CALLS: dict[str, Callable[[], object]] = {
    "bad character": lambda: Watch("invoice.42", "/x"),
    "bad in a list": lambda: Watch(["a:1", "b..c"], "/x"),
    "empty segment": lambda: Watch("a::1", "/x"),
    "too long": lambda: Watch("a" * 257, "/x"),
    "no scope": lambda: Watch([], "/x"),
    "not a str": lambda: Watch([1], "/x"),  # type: ignore[list-item]
    "unhashable": lambda: Watch([["a:1"]], "/x"),  # type: ignore[list-item]
    "bytes": lambda: Watch(b"ab", "/x"),  # type: ignore[arg-type]
    "none": lambda: Watch(None, "/x"),  # type: ignore[arg-type]
    "blank url": lambda: Watch("a:1", "  "),
    "no url": lambda: Watch("a:1", None),  # type: ignore[arg-type]
    "bad tag": lambda: Watch("a:1", "/x", tag="di v"),
    "scope before tag": lambda: Watch("bad.", "/x", tag="di v"),
    "scope before url": lambda: Watch("bad.", " "),
    "tag before url": lambda: Watch("a:1", " ", tag="x y"),
    "watch_attrs": lambda: watch_attrs("x.1", "/x"),
    "watch_attrs url": lambda: watch_attrs("a:1", ""),
    "watch_effect": lambda: watch_effect(["a:1", "b>"], "/x"),
    "watch_effect url": lambda: watch_effect("a:1", ""),
    "scope_signals": lambda: scope_signals("a::1"),
    "scope_signals empty": scope_signals,
    "scope_key": lambda: scope_key("a:>:b"),
    "init_scope": lambda: init_scope("a.b", endpoint=PER_TAB),
}

EXPECTED_ERRORS: dict[str, tuple[str, str]] = {
    "bad character": (
        "InvalidScopeError",
        (
            "invalid scope 'invoice.42': character '.' at position 7 is not allowed; "
            "segments use A-Z a-z 0-9 _ - and are separated by ':'"
        ),
    ),
    "bad in a list": (
        "InvalidScopeError",
        (
            "invalid scope 'b..c': character '.' at position 1 is not allowed; segmen"
            "ts use A-Z a-z 0-9 _ - and are separated by ':'"
        ),
    ),
    "empty segment": (
        "InvalidScopeError",
        (
            "invalid scope 'a::1': empty segment at position 2 (segments are separate"
            "d by a single ':')"
        ),
    ),
    "too long": (
        "InvalidScopeError",
        (
            "invalid scope 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'…: 257 character"
            "s, the limit is 256"
        ),
    ),
    "no scope": (
        "ValueError",
        "at least one scope is required",
    ),
    "not a str": (
        "InvalidScopeError",
        "a scope must be a str, got int: 1",
    ),
    "unhashable": (
        "InvalidScopeError",
        "a scope must be a str, got list: ['a:1']",
    ),
    "bytes": (
        "InvalidScopeError",
        "a scope must be a str, got int: 97",
    ),
    "none": (
        "TypeError",
        "'NoneType' object is not iterable",
    ),
    "blank url": (
        "ValueError",
        "watch_effect needs a non-empty url, got '  '",
    ),
    "no url": (
        "ValueError",
        "watch_effect needs a non-empty url, got None",
    ),
    "bad tag": (
        "ValueError",
        "invalid tag name 'di v'",
    ),
    "scope before tag": (
        "InvalidScopeError",
        (
            "invalid scope 'bad.': character '.' at position 3 is not allowed; segmen"
            "ts use A-Z a-z 0-9 _ - and are separated by ':'"
        ),
    ),
    "scope before url": (
        "InvalidScopeError",
        (
            "invalid scope 'bad.': character '.' at position 3 is not allowed; segmen"
            "ts use A-Z a-z 0-9 _ - and are separated by ':'"
        ),
    ),
    "tag before url": (
        "ValueError",
        "invalid tag name 'x y'",
    ),
    "watch_attrs": (
        "InvalidScopeError",
        (
            "invalid scope 'x.1': character '.' at position 1 is not allowed; segment"
            "s use A-Z a-z 0-9 _ - and are separated by ':'"
        ),
    ),
    "watch_attrs url": (
        "ValueError",
        "watch_effect needs a non-empty url, got ''",
    ),
    "watch_effect": (
        "InvalidScopeError",
        (
            "invalid scope 'b>': character '>' at position 1 is not allowed; '*' and "
            "'>' must be whole segments"
        ),
    ),
    "watch_effect url": (
        "ValueError",
        "watch_effect needs a non-empty url, got ''",
    ),
    "scope_signals": (
        "InvalidScopeError",
        (
            "invalid scope 'a::1': empty segment at position 2 (segments are separate"
            "d by a single ':')"
        ),
    ),
    "scope_signals empty": (
        "ValueError",
        "at least one scope is required",
    ),
    "scope_key": (
        "InvalidScopeError",
        (
            "invalid scope 'a:>:b': '>' at position 2 must be the last segment (it ma"
            "tches all remaining segments)"
        ),
    ),
    "init_scope": (
        "InvalidScopeError",
        (
            "invalid scope 'a.b': character '.' at position 1 is not allowed; segment"
            "s use A-Z a-z 0-9 _ - and are separated by ':'"
        ),
    ),
}


def _error_of(call: Callable[[], object]) -> tuple[str, str]:
    try:
        call()
    except Exception as error:
        return type(error).__name__, str(error)
    return "no error", ""


@pytest.mark.parametrize("name", list(BAD_CALLS))
def test_a_bad_call_raises_the_same_error_at_every_call(name: str) -> None:
    for _ in range(3):
        assert _error_of(BAD_CALLS[name]) == EXPECTED_ERRORS[name]
        # A success with the good part in between must not make the next call succeed.
        str(Watch("a:1", "/x"))
        watch_attrs(["a:1"], "/x")
    str(Connect(endpoint=PER_TAB))


def test_a_scope_that_failed_still_fails_after_its_neighbours_succeed() -> None:
    for _ in range(3):
        with pytest.raises(InvalidScopeError, match=r"character '\.' at position 1"):
            Watch(["a:1", "b.c"], "/x")
        assert 'data-effect="' in str(Watch(["a:1", "b:c"], "/x"))
        with pytest.raises(InvalidScopeError, match=r"character '\.' at position 1"):
            Watch("b.c", "/x")
        assert 'data-effect="' in str(Watch("b:c", "/x"))
    str(Connect(endpoint=PER_TAB))


# -- registration and bounds --------------------------------------------------------------------


def test_every_render_of_a_cached_watch_registers() -> None:
    with use_endpoint(PER_TAB):
        element = Watch("r:1", "/r")
        for _ in range(3):
            html = unescape(str(body[element, Watch(["r:2", "r:1"], "/r2"), Connect()]))
            (token,) = TOKEN.findall(html)
            assert SIGNER.verify(token).scopes == ("r:1", "r:2")


async def test_pages_rendered_concurrently_register_their_own_scopes() -> None:
    async def page(mine: str) -> str:
        with use_endpoint(PER_TAB):
            await asyncio.sleep(0)
            return "".join(
                [chunk async for chunk in body[Watch(mine, "/x"), Connect()].aiter_chunks()]
            )

    first, second = await asyncio.gather(page("p:1"), page("p:2"))
    assert "p_1" in first
    assert "p_2" not in first
    assert "p_2" in second
    assert "p_1" not in second


def test_failures_never_enter_the_caches() -> None:
    before = (_scope_parts.cache_info().currsize, _cached_watched.cache_info().currsize)
    for _ in range(3):
        for call in BAD_CALLS.values():
            _error_of(call)
    assert (_scope_parts.cache_info().currsize, _cached_watched.cache_info().currsize) == before


def test_the_caches_stay_bounded_after_many_distinct_scopes() -> None:
    caches = (_scope_parts, _cached_watched, _cached_stream_get)
    for index in range(3 * _SCOPE_CACHE_SIZE):
        with use_endpoint(StreamEndpoint(f"/stream/{index}", SIGNER)):
            str(
                body[
                    Watch(f"bounded:{index}", f"/b/{index}"),
                    Watch([f"bounded:{index}", "bounded:*"], f"/b/{index}"),
                    Connect(),
                ]
            )
    for cache in caches:
        info = cache.cache_info()
        assert info.maxsize is not None
        assert info.currsize <= info.maxsize
    assert _scope_parts.cache_info().maxsize == _SCOPE_CACHE_SIZE
    assert _cached_watched.cache_info().maxsize == _WATCH_CACHE_SIZE
    str(Connect(endpoint=PER_TAB))


def test_only_small_scope_lists_are_cached() -> None:
    _cached_watched.cache_clear()
    many = [f"many:{index}" for index in range(_WATCH_CACHE_SCOPES + 1)]
    long = ["l" * 200, "m" * 57]
    assert sum(map(len, long)) == _WATCH_CACHE_CHARACTERS + 1
    for values in (many, long, ["m" * 256, "n"]):
        html = str(Watch(values, "/x"))
        assert html.count("data-effect") == 1
        assert _cached_watched.cache_info().currsize == 0
    str(Watch(many[:-1], "/x"))
    str(Watch(["l" * 200, "m" * 56], "/x"))
    assert _cached_watched.cache_info().currsize == 2
    str(Connect(endpoint=PER_TAB))


def test_a_cache_entry_is_small_even_at_the_limits() -> None:
    # Scopes whose characters all escape in their key: the longest keys for their length.
    worst = [f"{'-' * 14}{index:02x}" for index in range(_WATCH_CACHE_SCOPES)]
    assert sum(map(len, worst)) == _WATCH_CACHE_CHARACTERS
    entry = _cached_watched(tuple(worst))
    size = sys.getsizeof(entry) + sum(
        sys.getsizeof(part)
        for part in (entry.scopes, *entry.scopes, entry.signals, entry.effect_head)
    )
    size += sys.getsizeof(entry.attributes_head)
    assert size < 6_000
    longest = "-" * 256
    assert sys.getsizeof(longest) + sys.getsizeof(_scope_parts(longest)[0]) < 1_000


# -- the shortcuts agree with what they replace ----------------------------------------------


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text())
def test_escaping_is_markupsafes(text: str) -> None:
    assert _escape(text) == str(escape(text))


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(min_size=1).filter(str.strip))
def test_the_url_literal_and_the_effect_are_datastars(url: str) -> None:
    literal = json.dumps(url).replace("@", "\\u0040").replace("$", "\\u0024")
    assert _js_string(url) == literal
    assert f" {action_generator.get(JSExpression(literal))}; " in watch_effect("a:1", url)


def _reference_watch(scopes: list[str], url: str, tag: str, attrs: dict[str, Any]) -> str:
    """A Watch element as the code before the caches built it, with htpy doing all escaping."""
    values = list(dict.fromkeys(scopes))
    signals = {
        "_stream": {scope_key(value): 0 for value in values},
        "_streamData": {scope_key(value): {} if is_pattern(value) else "" for value in values},
    }
    reads = ", ".join(f"$_stream.{scope_key(value)}" for value in values)
    literal = json.dumps(url).replace("@", "\\u0040").replace("$", "\\u0024")
    effect = (
        f"let seen = [{reads}].join(); "
        "if (el.streamuiSeen !== undefined && el.streamuiSeen !== seen) "
        f"{action_generator.get(JSExpression(literal))}; el.streamuiSeen = seen"
    )
    watch = {
        "data-signals__ifmissing": json.dumps(signals, separators=(",", ":")),
        "data-effect": effect,
    }
    return str(Element(tag)(watch, **attrs))


ATTRIBUTE_NAMES = ["id", "title", "hidden", "if", "ID", "x1", "class", "class_", "for_"]
ATTRIBUTE_NAMES += ["data_x", "aria_label", "_", "data_effect", "data-effect", "é"]
attribute_values = st.one_of(
    st.text(max_size=8),
    st.integers(),
    st.booleans(),
    st.none(),
    st.sampled_from([Markup("<b>&amp;</b>"), 1.5, ["a", {"b": True}]]),
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(scopes(), min_size=1, max_size=4),
    st.text(min_size=1).filter(str.strip),
    st.sampled_from(["div", "li", "section"]),
    st.dictionaries(st.sampled_from(ATTRIBUTE_NAMES), attribute_values, max_size=4),
)
def test_watch_renders_what_htpy_rendered_before(
    values: list[str], url: str, tag: str, attrs: dict[str, Any]
) -> None:
    try:
        expected = _reference_watch(values, url, tag, attrs)
    except TypeError as error:
        with pytest.raises(TypeError, match=re.escape(str(error))):
            Watch(values, url, tag=tag, **attrs)
        return
    for _ in range(2):  # the second time from the caches
        assert str(Watch(values, url, tag=tag, **attrs)) == expected
        if len(values) == 1:
            assert str(Watch(values[0], url, tag=tag, **attrs)) == expected
    str(Connect(endpoint=PER_TAB))
