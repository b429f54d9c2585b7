"""A tab whose fragments joined many times gets its stream tokens merged into one.

Every JoinStream adds a token to the tab's stream URL; without merging, a tab that
loaded enough fragments would exceed the endpoint's token limit and stop updating.
"""

from __future__ import annotations

import hashlib

from streamui.components import MERGE_TOKENS_OVER, TOKENS_NAMESPACE
from streamui.tokens import TokenSigner
from tests.integration.conftest import SECRET, Live, url_from
from tests.integration.test_stream import token_scopes
from tests.support import revision_of


def token_name(scopes: tuple[str, ...]) -> str:
    return "t" + hashlib.sha256("\n".join(sorted(set(scopes))).encode()).hexdigest()[:16]


async def test_a_stream_with_many_tokens_tells_the_tab_to_merge_them(live: Live) -> None:
    page = await live.page("invoice:1")
    fragments = [await live.fragment(f"row:{n}") for n in range(MERGE_TOKENS_OVER)]
    documents = [page, *fragments]
    names = [token_name(scopes) for document in documents for scopes in token_scopes(document)]
    assert len(names) == MERGE_TOKENS_OVER + 1

    async with live.stream(url_from(*documents)) as stream:
        merge = await stream.reader.next_event()
        # The merge comes first, carries the stream's id, and changes only the tokens.
        assert revision_of(merge.id) == stream.opening_id
        tokens = merge.signals[TOKENS_NAMESPACE]
        assert set(merge.signals) == {TOKENS_NAMESPACE}
        merged = [value for value in tokens.values() if value is not None]
        assert len(merged) == 1
        assert {name for name, value in tokens.items() if value is None} == set(names)
        union = ("invoice:1", *(f"row:{n}" for n in range(MERGE_TOKENS_OVER)))
        assert TokenSigner(SECRET).verify(merged[0]).scopes == union
        # The stream itself works while the tab reconnects.
        await live.broker.invalidate("row:2")
        assert (await stream.next_push()).signals == {"_stream": {"row_2": stream.last_revision}}

    # The merged token alone opens a stream watching the union, with nothing to merge
    # (row:2, invalidated after the merged token was signed, is caught up first).
    async with live.stream(f"{url_from(page).split('?')[0]}?t={merged[0]}") as merged_stream:
        await live.broker.invalidate("row:3")
        pushes = await merged_stream.pushes_through("row_3")
        assert set().union(*(push.keys for push in pushes)) == {"row_2", "row_3"}


async def test_a_few_tokens_are_left_alone(live: Live) -> None:
    page = await live.page("invoice:1")
    fragment = await live.fragment("row:1")
    async with live.stream(url_from(page, fragment)) as stream:
        await live.broker.invalidate("row:1")
        # The first event is the push: no merge (and so no extra reconnect) for two.
        assert (await stream.next_push()).signals == {"_stream": {"row_1": stream.last_revision}}
