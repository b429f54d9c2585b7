"""Refused streams on Starlette and FastAPI: the Litestar plugin's statuses and reasons,
in a JSON body of the same shape, never a 500, and nothing left subscribed."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest
from starlette.requests import Request

from streamui import ConfigurationError
from streamui.starlette import REFUSED_TOKENS_HEADER, StreamConfig, StreamUI
from tests.integration.test_stream_errors import SIGNATURE_MISMATCH
from tests.support import stream_tokens

if TYPE_CHECKING:
    import httpx

    from tests.starlette.app import Framework
    from tests.starlette.conftest import Live, Start

PATH = "/streamui/stream"


def detail(response: httpx.Response) -> str:
    """The reason, from a body shaped like Litestar's (streamui's module reads it)."""
    assert response.headers["content-type"] == "application/json", response.headers
    body: dict[str, Any] = response.json()
    assert body["status_code"] == response.status_code, body
    value: str = body["detail"]
    return value


def nothing_held(live: Live) -> None:
    assert live.broker.watcher_count == 0
    assert live.broker.pattern_count == 0
    assert live.transport.subscription_count == live.broker.subscription_count


async def test_no_token_is_400_with_a_reason(live: Live) -> None:
    response = await live.refused(PATH)
    assert response.status_code == 400
    assert detail(response) == "missing stream token: the URL needs ?t=<token> from Connect()"
    nothing_held(live)


async def test_too_many_tokens_is_400(start: Start, framework: Framework) -> None:
    live = await start(framework, max_tokens=2)
    [token] = stream_tokens(await live.page("a:1"))
    response = await live.refused(f"{PATH}?t={token}&t={token}&t={token}")
    assert response.status_code == 400
    assert detail(response) == "too many stream tokens: 3, the limit is 2"


async def test_a_bad_since_is_400(live: Live) -> None:
    response = await live.refused(await live.stream_url("a:1") + "&since=yesterday")
    assert response.status_code == 400
    assert detail(response).startswith("since must be an event id"), detail(response)
    nothing_held(live)


async def test_bad_tokens_are_403_and_the_header_says_which(live: Live) -> None:
    [good] = stream_tokens(await live.page("invoice:42"))
    response = await live.refused(f"{PATH}?t={good}&t=garbage&t={good}&t=x.y")
    assert response.status_code == 403
    assert detail(response) == SIGNATURE_MISMATCH
    assert response.headers[REFUSED_TOKENS_HEADER] == "1,3"
    nothing_held(live)


async def test_an_expired_token_is_403_and_a_fresh_one_works(
    start: Start, framework: Framework
) -> None:
    live = await start(framework, token_max_age=60)
    old = live.ui.endpoint.signer.sign(["invoice:42"], issued_at=time.time() - 3600)
    response = await live.refused(f"{PATH}?t={old}")
    assert response.status_code == 403
    assert detail(response) == "stream token expired (older than 60 s); reload the page"
    async with live.stream(await live.stream_url("invoice:42")) as stream:
        await live.broker.invalidate("invoice:42")
        assert (await stream.next_push()).keys == {"invoice_42"}


@pytest.mark.parametrize(
    "path",
    ["/streamui/%73tream", "//streamui/stream", "/streamui/stream/x"],
    ids=["encoded", "doubled-slash", "below"],
)
async def test_other_spellings_of_the_path_are_404(live: Live, path: str) -> None:
    query = (await live.stream_url("a:1")).partition("?")[2]
    response = await live.refused(f"{path}?{query}")
    assert response.status_code == 404, response.text
    nothing_held(live)


async def test_a_trailing_slash_is_redirected_to_the_exact_path(live: Live) -> None:
    # Starlette's redirect_slashes: the client comes back on the exact path (through
    # the same proxy rules), never streamed at another spelling.
    url = await live.stream_url("a:1")
    response = await live.refused(url.replace(PATH, PATH + "/"))
    assert response.status_code == 307
    assert response.headers["location"].endswith(url)


async def test_head_and_post_are_405(live: Live) -> None:
    url = await live.stream_url("a:1")
    assert (await live.client.head(url)).status_code == 405
    assert (await live.client.post(url)).status_code == 405
    nothing_held(live)


async def test_authorize_gets_a_starlette_request_and_may_refuse(
    start: Start, framework: Framework
) -> None:
    seen: list[tuple[Request, tuple[str, ...]]] = []

    async def authorize(request: Request, scopes: tuple[str, ...]) -> bool:
        seen.append((request, scopes))
        return request.headers.get("x-user") == "alice"

    live = await start(framework, authorize=authorize)
    url = await live.stream_url("invoice:42", "invoice:*")
    response = await live.refused(url, headers={"x-user": "mallory"})
    assert response.status_code == 403
    assert detail(response) == "not authorized to watch these scopes"
    assert REFUSED_TOKENS_HEADER not in response.headers  # no token is at fault
    nothing_held(live)

    async with live.stream(url, headers={"x-user": "alice"}) as stream:
        await live.broker.invalidate("invoice:42")
        assert (await stream.next_push()).keys == {"invoice_42", "invoice_WILD"}
    [(request, scopes), _] = seen
    assert isinstance(request, Request)
    assert request.url.path == PATH
    assert scopes == ("invoice:42", "invoice:*")


async def test_renewal_runs_a_sync_authorize_again(start: Start, framework: Framework) -> None:
    calls: list[str] = []

    def authorize(request: Request, scopes: tuple[str, ...]) -> bool:
        calls.append(request.query_params["t"][:8])
        return len(calls) < 2  # the renewal is refused: the stream ends

    live = await start(framework, authorize=authorize, token_lifetime=0.2)
    async with live.stream(await live.stream_url("invoice:42")) as stream:
        frames = await stream.read_to_end()
    assert len(calls) == 2, calls
    assert all(frame.event is None for frame in frames), frames  # no renewed tokens


def test_compress_is_refused_with_a_reason() -> None:
    with pytest.raises(ConfigurationError, match=r"compress=True\) is for Litestar"):
        StreamUI(StreamConfig(secret="0123456789abcdef", compress=True))
