"""Limits fail loudly at render time: more scopes than ``max_scopes`` raise
`TooManyScopesError` from Connect, JoinStream and init_scope, instead of a stream the
server refuses (a tab that silently never updates).

Rendering tests run through both of htpy's paths (``str(page)`` and ``aiter_chunks``).
"""

from __future__ import annotations

import json
import re
from html import unescape
from typing import TYPE_CHECKING

import pytest
from htpy import body, div, fragment, ul

from streamui import (
    CONNECT_ID,
    TOKENS_NAMESPACE,
    Connect,
    JoinStream,
    StreamEndpoint,
    StreamUIError,
    TokenSigner,
    TooManyScopesError,
    Watch,
    init_scope,
    use_endpoint,
)
from tests.unit.conftest import parse_events

if TYPE_CHECKING:
    from collections.abc import Iterator

    from htpy import Renderable

SIGNER = TokenSigner("a-test-secret-that-is-long-enough")
DEFAULT = StreamEndpoint("/live", SIGNER)
SMALL = StreamEndpoint("/live", SIGNER, max_scopes=3)
TOKEN = re.compile(r'"_streamTokens":\{"t[0-9a-f]+":"([^"]+)"\}')


async def render(node: Renderable, mode: str) -> str:
    if mode == "sync":
        return str(node)
    return "".join([chunk async for chunk in node.aiter_chunks()])


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


@pytest.fixture(autouse=True)
def _nothing_left_registered() -> Iterator[None]:
    """Sync tests share the main thread: drop what a failed render left registered."""
    yield
    str(Connect(endpoint=StreamEndpoint("/live", SIGNER, max_scopes=10_000)))


def rows(count: int, start: int = 10_000) -> list[Renderable]:
    """One Watch per invoice row, each with its own scope: the pattern that hits the limit."""
    return [
        Watch(f"invoice:{n}", f"/invoices/{n}", tag="li", id=f"invoice-{n}")[f"#{n}"]
        for n in range(start, start + count)
    ]


def page_scopes(html: str) -> tuple[str, ...]:
    tokens = TOKEN.findall(unescape(html))
    assert len(tokens) == 1, tokens
    return SIGNER.verify(tokens[0]).scopes


async def test_a_page_over_the_default_limit_fails_to_render(mode: str) -> None:
    with use_endpoint(DEFAULT), pytest.raises(TooManyScopesError) as raised:
        await render(body[ul[rows(65)], Connect()], mode)
    message = str(raised.value)
    # The count, the limit, the setting to change and the pattern for long lists.
    assert message.startswith(
        "this page watches 65 scopes ('invoice:10000', 'invoice:10001', 'invoice:10002', ...), "
        "over the limit of 64 per stream: the stream would be refused and the page would "
        "never update."
    )
    assert "watch one pattern such as 'invoice:*'" in message
    assert "StreamConfig(max_scopes=...)" in message


async def test_a_page_at_the_limit_renders(mode: str) -> None:
    with use_endpoint(DEFAULT):
        html = await render(body[ul[rows(64)], Connect()], mode)
    assert len(page_scopes(html)) == 64
    assert f'id="{CONNECT_ID}"' in html


async def test_the_limit_counts_distinct_scopes_and_follows_the_endpoint(mode: str) -> None:
    with use_endpoint(SMALL):
        # Three scopes, one of them watched twice: at the limit.
        html = await render(body[rows(3), Watch("invoice:10000", "/again"), Connect()], mode)
        assert page_scopes(html) == ("invoice:10000", "invoice:10001", "invoice:10002")
        with pytest.raises(TooManyScopesError, match=r"watches 4 scopes .* limit of 3 per"):
            await render(body[rows(4), Connect()], mode)
    # An explicit endpoint is the one that counts.
    with pytest.raises(TooManyScopesError, match="limit of 3"):
        await render(body[rows(4), Connect(endpoint=SMALL)], mode)


async def test_the_pattern_suggested_is_the_one_most_rows_share(mode: str) -> None:
    many = [Watch(f"tenant:7:invoice:{n}", f"/i/{n}") for n in range(4)]
    with use_endpoint(SMALL), pytest.raises(TooManyScopesError, match="'tenant:7:invoice:\\*'"):
        await render(body[Watch("clock", "/clock"), many, Connect()], mode)


async def test_an_idle_connect_is_never_over_the_limit(mode: str) -> None:
    with use_endpoint(StreamEndpoint("/live", SIGNER, max_scopes=1)):
        html = await render(body[div["static"], Connect()], mode)
    assert f'id="{CONNECT_ID}"' in html


async def test_a_fragment_over_the_limit_fails_to_render(mode: str) -> None:
    with use_endpoint(SMALL):
        fine = await render(fragment[rows(3), JoinStream(tag="li")], mode)
        assert page_scopes(fine) == ("invoice:10000", "invoice:10001", "invoice:10002")
        # The page the fragment joins is not known here: only its own scopes count.
        with pytest.raises(TooManyScopesError, match=r"^this fragment watches 4 scopes"):
            await render(fragment[rows(4), JoinStream(tag="li")], mode)


def test_init_scope_over_the_limit_raises() -> None:
    values = [f"row:{n}" for n in range(4)]
    with pytest.raises(TooManyScopesError, match=r"^init_scope\(\) watches 4 scopes"):
        init_scope(*values, endpoint=SMALL)
    (event,) = parse_events(init_scope(*values[:3], endpoint=SMALL))
    assert len(event.signals[TOKENS_NAMESPACE]) == 1
    assert json.dumps(event.signals).count("row_") == 6  # _stream and _streamData keys


def test_too_many_scopes_is_a_usage_error() -> None:
    assert issubclass(TooManyScopesError, StreamUIError)
    assert issubclass(TooManyScopesError, ValueError)
