"""Refused streams: every bad request gets a 4xx (or a 503) with a reason, never a 500,
and never leaves a subscription behind."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest

from streamui import InProcessTransport, TokenSigner
from streamui.tokens import _b64encode
from tests.integration.conftest import url_from
from tests.support import stream_tokens

if TYPE_CHECKING:
    import httpx
    from litestar import Request

    from streamui.transports import MessageHandler, Subscription
    from tests.integration.conftest import Live, Start

PATH = "/streamui/stream"
SIGNATURE_MISMATCH = (
    "stream token signature does not match (tampered, or signed with another secret)"
)


def nothing_held(live: Live) -> None:
    """A refused request never subscribed: nothing is held, so nothing is released later."""
    assert live.broker.watcher_count == 0
    assert live.broker.pattern_count == 0
    # None but the broker's own one to every scope (upstream="all").
    assert live.transport.subscription_count == live.broker.subscription_count


def detail(response: httpx.Response) -> str:
    """The reason in a Litestar error response."""
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body: dict[str, Any] = response.json()
    assert body["status_code"] == response.status_code, body
    value: str = body["detail"]
    return value


def page_token(page: str) -> str:
    [token] = stream_tokens(page)
    return token


def with_tokens(*tokens: str) -> str:
    return PATH + "?" + "&".join(f"t={token}" for token in tokens)


# -- tokens -------------------------------------------------------------------------------


async def test_no_token_is_400_with_a_reason(live: Live) -> None:
    response = await live.refused(PATH)
    assert response.status_code == 400
    assert detail(response) == "missing stream token: the URL needs ?t=<token> from Connect()"
    nothing_held(live)


async def test_empty_token_is_400_like_a_missing_one(live: Live) -> None:
    response = await live.refused(PATH + "?t=")
    nothing_held(live)
    assert response.status_code == 400, detail(response)


@pytest.mark.parametrize("part", [0, 1], ids=["payload", "mac"])
@pytest.mark.parametrize("where", ["first", "middle"])
async def test_tampered_token_is_403(live: Live, part: int, where: str) -> None:
    parts = page_token(await live.page("tenant:1:invoice:42")).split(".")
    text = parts[part]
    index = 0 if where == "first" else len(text) // 2
    parts[part] = text[:index] + ("B" if text[index] == "A" else "A") + text[index + 1 :]

    response = await live.refused(with_tokens(".".join(parts)))
    assert response.status_code == 403
    assert detail(response) == SIGNATURE_MISMATCH
    nothing_held(live)


def non_canonical_spellings(token: str) -> dict[str, str]:
    """Other spellings of *token* that decode to the same bytes."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    payload, mac = token.split(".")
    # A 32-byte MAC is 43 characters; the last one carries 2 unused bits.
    last = alphabet[alphabet.index(mac[-1]) ^ 1]
    return {
        "mac-unused-bits": f"{payload}.{mac[:-1]}{last}",
        "ignored-characters": f"{payload[:8]}!!!!{payload[8:]}.{mac}",
    }


@pytest.mark.parametrize("spelling", ["mac-unused-bits", "ignored-characters"])
async def test_every_changed_token_is_403(live: Live, spelling: str) -> None:
    token = page_token(await live.page("tenant:1:invoice:42"))
    changed = non_canonical_spellings(token)[spelling]
    assert changed != token

    response = await live.refused(with_tokens(changed))
    assert response.status_code == 403


async def test_token_signed_with_another_secret_is_403(live: Live) -> None:
    foreign = TokenSigner("another-secret-that-is-long-enough").sign(["tenant:1:invoice:42"])
    response = await live.refused(with_tokens(foreign))
    assert response.status_code == 403
    assert detail(response) == SIGNATURE_MISMATCH
    nothing_held(live)


@pytest.mark.parametrize(
    "garbage",
    [
        "garbage",
        ".",
        "..",
        "a.b",
        "eyJzIjpbImEiXSwidCI6MX0",  # a payload without a MAC
        "%00%01",
        "%C3%A9t%C3%A9.%C3%A9",
        "%2B%2F%3D.%3D%3D",
        "x" * 40_000,
    ],
    ids=["word", "dot", "dots", "a.b", "no-mac", "control", "non-ascii", "std-b64", "long"],
)
async def test_garbage_token_is_403(live: Live, garbage: str) -> None:
    response = await live.refused(with_tokens(garbage))
    assert response.status_code == 403
    assert detail(response)
    nothing_held(live)


async def test_one_bad_token_among_good_ones_is_403(live: Live) -> None:
    good = page_token(await live.page("invoice:42"))
    response = await live.refused(with_tokens(good, "garbage", good))
    assert response.status_code == 403
    nothing_held(live)


async def test_expired_token_is_403_and_a_fresh_one_works(start: Start) -> None:
    live = await start(token_max_age=60)
    old = live.plugin.endpoint.signer.sign(["invoice:42"], issued_at=time.time() - 3600)
    response = await live.refused(with_tokens(old))
    assert response.status_code == 403
    assert detail(response) == "stream token expired (older than 60 s); reload the page"
    nothing_held(live)

    async with live.stream(await live.stream_url("invoice:42")) as stream:
        await live.broker.invalidate("invoice:42")
        push = await stream.next_push()
        assert push.signals == {"_stream": {"invoice_42": push.revision}}


def forge(live: Live, payload: bytes) -> str:
    """A token with a valid MAC over an arbitrary payload: what a service holding the
    secret (another version, another language) might send."""
    signer = live.plugin.endpoint.signer
    return f"{_b64encode(payload)}.{_b64encode(signer._mac(payload))}"


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"\xff\xfe",
        b"[]",
        b'"scopes"',
        b'{"t":1}',
        b'{"s":["a"]}',
        b'{"s":null,"t":1}',
        b'{"s":[1],"t":1}',
        b'{"s":["a b"],"t":1}',
        b'{"s":["a.b"],"t":1}',
        b'{"s":["a"],"t":"soon"}',
        b'{"s":["a"],"t":NaN}',
    ],
)
async def test_signed_but_malformed_payload_is_403(live: Live, payload: bytes) -> None:
    response = await live.refused(with_tokens(forge(live, payload)))
    assert response.status_code == 403
    assert detail(response).startswith("malformed stream token payload: "), detail(response)
    nothing_held(live)


@pytest.mark.parametrize(
    "payload",
    [b'{"s":["a"],"t":1e400}', b"[" * 5000 + b"]" * 5000],
    ids=["infinite-time", "deep-nesting"],
)
async def test_signed_payload_that_breaks_the_parser_is_403(live: Live, payload: bytes) -> None:
    live.expect_status(500)
    live.expect_errors("litestar")
    response = await live.refused(with_tokens(forge(live, payload)))
    nothing_held(live)
    assert response.status_code == 403


# -- limits ---------------------------------------------------------------------------------


async def test_more_scopes_than_max_scopes_is_400(start: Start) -> None:
    live = await start(max_scopes=3)
    signer = live.plugin.endpoint.signer

    response = await live.refused(with_tokens(signer.sign(["a", "b", "c", "d:*"])))
    assert response.status_code == 400
    assert detail(response) == "too many scopes: 4, the limit is 3"
    nothing_held(live)

    # The limit is on the union of every token's scopes.
    response = await live.refused(with_tokens(signer.sign(["a", "b"]), signer.sign(["c", "d"])))
    assert response.status_code == 400
    assert detail(response) == "too many scopes: 4, the limit is 3"
    nothing_held(live)

    # At the limit, counting each scope once, the stream opens.
    url = with_tokens(signer.sign(["a", "b"]), signer.sign(["b", "c"]))
    async with live.stream(url) as stream:
        assert live.broker.pattern_count == 3
        await live.broker.invalidate("c")
        push = await stream.next_push()
        assert push.signals == {"_stream": {"c": push.revision}}


async def test_more_tokens_than_max_tokens_is_400(start: Start) -> None:
    live = await start(max_tokens=2)
    signer = live.plugin.endpoint.signer
    tokens = [signer.sign([f"part:{index}"]) for index in range(3)]

    response = await live.refused(with_tokens(*tokens))
    assert response.status_code == 400
    assert detail(response) == "too many stream tokens: 3, the limit is 2"
    nothing_held(live)

    async with live.stream(with_tokens(*tokens[:2])) as stream:
        await live.broker.invalidate("part:1")
        push = await stream.next_push()
        assert push.signals == {"_stream": {"part_1": push.revision}}


# -- the authorization hook -----------------------------------------------------------------


@pytest.mark.parametrize("allowed", [True, False], ids=["allowed", "refused"])
@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_authorize_hook(start: Start, kind: str, allowed: bool) -> None:
    calls: list[tuple[str, tuple[str, ...]]] = []

    def decide(request: Request[Any, Any, Any], scopes: tuple[str, ...]) -> bool:
        calls.append((request.url.path, scopes))
        return allowed

    async def decide_async(request: Request[Any, Any, Any], scopes: tuple[str, ...]) -> bool:
        return decide(request, scopes)

    live = await start(authorize=decide if kind == "sync" else decide_async)
    page = await live.page("invoice:42")
    fragment = await live.fragment("rows:*")
    url = url_from(page, fragment)

    if not allowed:
        response = await live.refused(url)
        assert response.status_code == 403
        assert detail(response) == "not authorized to watch these scopes"
        nothing_held(live)
    else:
        async with live.stream(url) as stream:
            await live.broker.invalidate("rows:1")
            push = await stream.next_push()
            assert push.signals == {"_stream": {"rows_WILD": push.revision}}
    # Called once per connect, with the union of the tokens' scopes.
    assert calls == [(PATH, ("invoice:42", "rows:*"))]


async def test_authorize_hook_sees_the_request(start: Start) -> None:
    def same_tenant(request: Request[Any, Any, Any], scopes: tuple[str, ...]) -> bool:
        tenant = request.headers.get("x-tenant", "")
        return all(value.startswith(f"tenant:{tenant}:") for value in scopes)

    live = await start(authorize=same_tenant)
    url = await live.stream_url("tenant:1:invoice:42", "tenant:1:rows:*")

    response = await live.refused(url, headers={"x-tenant": "2"})
    assert response.status_code == 403
    nothing_held(live)

    async with live.stream(url, headers={"x-tenant": "1"}) as stream:
        await live.broker.invalidate("tenant:1:invoice:42")
        push = await stream.next_push()
        assert push.signals == {"_stream": {"tenant_1_invoice_42": push.revision}}


# -- the transport fails ------------------------------------------------------------------


class FailingTransport(InProcessTransport):
    """The in-process transport, except that subscribing to *failing* subjects raises
    while `down` is true (like a NATS connection that is not there). Shared by several
    processes as far as the broker knows, so it can subscribe per watched pattern."""

    sees_all_publishes = False

    def __init__(self, failing: set[str]) -> None:
        super().__init__()
        self.failing = failing
        self.down = True

    async def subscribe(self, pattern: str, handler: MessageHandler) -> Subscription:
        if self.down and pattern in self.failing:
            raise ConnectionError(f"upstream is down, cannot subscribe to {pattern!r}")
        return await super().subscribe(pattern, handler)


async def test_transport_failure_is_503_and_releases_what_was_subscribed(start: Start) -> None:
    transport = FailingTransport({"streamui.scope.rows.>"})
    live = await start(transport=transport, upstream="watched")
    live.expect_status(503)
    live.expect_errors("streamui.stream")
    url = await live.stream_url("invoice:42", "rows:>")

    async with live.client.stream("GET", url) as response:
        body = (await response.aread()).decode()
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("text/plain")
    assert response.headers["retry-after"] == "2"
    assert body == (
        "stream unavailable: ConnectionError: "
        "upstream is down, cannot subscribe to 'streamui.scope.rows.>'"
    )
    # invoice:42 was subscribed before rows:> failed; it was released.
    nothing_held(live)

    # Another tab holding invoice:42 keeps it when a second stream fails.
    async with live.stream(await live.stream_url("invoice:42")) as holder:
        async with live.client.stream("GET", url) as response:
            await response.aread()
        assert response.status_code == 503
        assert live.broker.pattern_count == 1
        assert live.transport.subscription_count == 1
        await live.broker.invalidate("invoice:42")
        push = await holder.next_push()
        assert push.signals == {"_stream": {"invoice_42": push.revision}}
    # Both refusals are counted for the metrics (streamui_refused_streams_total).
    assert live.broker.refused == {"unavailable": 2}

    # Once the upstream is back, the browser's retry succeeds, and catches up on what
    # changed since the page was rendered: invoice:42, and rows:>, which was not
    # subscribed here at the render, so what happened to it is not known.
    transport.down = False
    async with live.stream(url) as stream:
        push = await stream.next_push()
        assert push.signals == {
            "_stream": {"invoice_42": push.revision, "rows_REST": push.revision}
        }
        await live.broker.invalidate("rows:1:2")
        push = await stream.next_push()
        assert push.signals == {"_stream": {"rows_REST": push.revision}}


# -- paths ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spelling",
    ["/" + PATH, PATH + "/", PATH + "%2F", PATH + "%2f", "/streamui%2Fstream", "/streamui//stream"],
)
async def test_only_the_exact_path_serves_the_stream(live: Live, spelling: str) -> None:
    # A proxy rule that matches the exact path (auth, rate limits, buffering) must not be
    # sidestepped by another spelling of it that the router would also accept.
    query = "?t=" + page_token(await live.page("invoice:1"))
    request = live.client.build_request("GET", PATH)
    # Sent byte for byte: no client-side normalisation of the path.
    request.url = request.url.copy_with(raw_path=(spelling + query).encode())
    response = await live.client.send(request)
    assert response.status_code == 404, (spelling, response.status_code, response.text)
    nothing_held(live)
    async with live.stream(PATH + query) as stream:  # the exact path still serves it
        assert stream.opening_id > 0
