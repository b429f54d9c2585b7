"""Short-lived tokens that open tabs never notice.

Tokens expire ``token_lifetime`` after they are signed (an hour by default), so a stream
URL copied from an access log soon grants nothing. An open stream hands its tab renewed
tokens (same scopes and render time, a new expiry) halfway through, in a
``datastar-patch-signals`` event under the tokens' names, after running ``authorize``
again; if ``authorize`` now says no, the stream ends (and the reconnect is refused).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import pytest

from streamui import TOKENS_NAMESPACE, ConfigurationError
from streamui.litestar import StreamConfig
from tests.integration.conftest import SECRET, url_from
from tests.support import WAIT

if TYPE_CHECKING:
    import httpx

    from tests.integration.conftest import Start

LIFETIME = 1.0
"""Seconds (renewed every half second)."""


def detail(response: httpx.Response) -> str:
    body: dict[str, Any] = response.json()
    return str(body["detail"])


async def test_an_open_stream_renews_its_tokens_before_they_expire(start: Start) -> None:
    calls: list[tuple[str, ...]] = []

    def authorize(request: object, scopes: tuple[str, ...]) -> bool:
        calls.append(scopes)
        return True

    live = await start(token_lifetime=LIFETIME, authorize=authorize)
    page = await live.page("invoice:42", "rows:*")
    url = url_from(page)
    assert len(parse_qs(urlsplit(url).query)["t"]) == 1
    async with live.stream(url) as stream:
        renewals = []
        deadline = time.monotonic() + 3 * LIFETIME
        while time.monotonic() < deadline:  # three lifetimes, streaming all along
            event = await stream.reader.next_event(WAIT)
            renewals.append(event)
        await live.broker.invalidate("rows:1")
        push = await stream.next_push()
        assert push.keys == {"rows_WILD"}
    # About one renewal per half lifetime, each a patch of the tab's token by its name,
    # none carrying an id (the tab's Last-Event-ID stays the last invalidation's).
    assert len(renewals) >= 4, renewals
    tokens = [event.signals[TOKENS_NAMESPACE] for event in renewals]
    names = {key for token in tokens for key in token}
    assert len(names) == 1, tokens
    assert all(event.id is None for event in renewals)
    # authorize ran on the connect and on every renewal.
    assert len(calls) == 1 + len(renewals)
    assert set(calls) == {("invoice:42", "rows:*")}

    # The first token expired long ago; the last renewal still opens the stream, and
    # keeps the page's render time: it catches up on rows:1, invalidated since.
    response = await live.refused(url)
    assert response.status_code == 403
    assert detail(response).startswith("stream token expired")
    (latest,) = tokens[-1].values()
    async with live.stream(f"{live.plugin.config.path}?t={latest}") as stream:
        push = await stream.next_push()
        assert push.keys == {"rows_WILD"}
        await live.broker.invalidate("invoice:42")
        push = await stream.next_push()
        assert push.keys == {"invoice_42"}


async def test_a_renewal_that_authorize_refuses_ends_the_stream(start: Start) -> None:
    allowed = {"yes": True}

    def authorize(request: object, scopes: tuple[str, ...]) -> bool:
        return allowed["yes"]

    live = await start(token_lifetime=LIFETIME, authorize=authorize)
    url = await live.stream_url("invoice:42")
    async with live.stream(url) as stream:
        allowed["yes"] = False
        async with asyncio.timeout(WAIT):
            frames = await stream.read_to_end()  # ends cleanly: the browser reconnects
    assert all(TOKENS_NAMESPACE not in (frame.signals or {}) for frame in frames if frame.data)
    response = await live.refused(url)
    assert (response.status_code, detail(response)) == (403, "not authorized to watch these scopes")


@pytest.mark.parametrize("bad", [0, -1.0, float("nan")])
def test_the_token_lifetime_is_an_hour_by_default_and_must_be_positive(bad: float) -> None:
    assert StreamConfig(secret=SECRET).token_lifetime == 3600.0
    assert StreamConfig(secret=SECRET, token_lifetime=None).token_lifetime is None
    with pytest.raises(ConfigurationError, match="token_lifetime must be positive seconds"):
        StreamConfig(secret=SECRET, token_lifetime=bad)
