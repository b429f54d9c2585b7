"""The stream on Starlette and FastAPI, under a real server: a page's token opens it, a
handler's invalidation reaches it, a fragment joins it, and tokens merge."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from streamui import SIGNAL_NAMESPACE, scope_key
from tests.integration.conftest import url_from
from tests.integration.test_stream_errors import SIGNATURE_MISMATCH
from tests.support import stream_tokens

if TYPE_CHECKING:
    from tests.starlette.app import Framework
    from tests.starlette.conftest import Live, Server, Start


@pytest.mark.parametrize("server", ["uvicorn", "hypercorn"])
async def test_a_post_that_invalidates_reaches_the_stream_of_the_page(
    start: Start, framework: Framework, server: Server
) -> None:
    live = await start(framework, server=server)
    page = await live.page("invoice:42", "invoice:*")
    async with live.stream(url_from(page)) as stream:
        response = await live.client.post("/invalidate", params={"scope": "invoice:42"})
        assert response.status_code == 204
        push = await stream.next_push()
        # The Watch of invoice:42 re-fetches; so does the pattern's, which matches it.
        assert push.keys == {scope_key("invoice:42"), scope_key("invoice:*")}
        assert push.signals[SIGNAL_NAMESPACE][scope_key("invoice:42")] == push.revision

        await live.client.post("/invalidate", params={"scope": "customer:1"})
        await live.client.post("/invalidate", params={"scope": "invoice:7"})
        push = await stream.next_push()
        assert push.keys == {scope_key("invoice:*")}  # nothing for customer:1


async def test_a_fragment_rendered_in_a_worker_thread_joins_the_stream(live: Live) -> None:
    # The fragment route is sync: Starlette runs it in a thread, which renders for its
    # request all the same (the middleware's use_endpoint is in the copied context).
    page = await live.page("invoice:1")
    fragment = await live.fragment("invoice:2")
    [joined] = stream_tokens(fragment)
    assert joined not in stream_tokens(page)
    async with live.stream(url_from(page, fragment)) as stream:
        await live.broker.invalidate("invoice:2")
        assert (await stream.next_push()).keys == {scope_key("invoice:2")}


async def test_merge_answers_one_token_for_the_scopes_of_several(live: Live) -> None:
    documents = [await live.page("a:1"), await live.fragment("b:2"), await live.fragment("c:3")]
    tokens = [token for document in documents for token in stream_tokens(document)]
    response = await live.client.get("/streamui/stream/merge", params={"t": tokens})
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    merged = response.json()["token"]
    assert live.ui.endpoint.signer.verify(merged).scopes == ("a:1", "b:2", "c:3")
    async with live.stream(f"/streamui/stream?t={merged}") as stream:
        await live.broker.invalidate_many(["c:3", "a:1"])
        assert (await stream.next_push()).keys == {"a_1", "c_3"}


async def test_merge_refuses_what_the_stream_refuses(live: Live) -> None:
    response = await live.client.get("/streamui/stream/merge", params={"t": ["garbage"]})
    assert response.status_code == 403
    assert response.headers["streamui-refused-tokens"] == "0"
    assert response.json() == {"status_code": 403, "detail": SIGNATURE_MISMATCH}


async def test_the_browser_module_is_served_with_its_cache_header(live: Live) -> None:
    page = await live.page("invoice:1")
    url = live.ui.endpoint.client_url
    assert url is not None
    assert url in page  # Connect() loads it
    response = await live.client.get(url)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert response.headers["content-type"] == "text/javascript; charset=utf-8"
    assert b"BroadcastChannel" in response.content


async def test_a_page_without_watches_renders_and_needs_no_stream(live: Live) -> None:
    response = await live.client.get("/component/3")
    assert response.status_code == 200
    assert "_streamTokens" not in response.text
