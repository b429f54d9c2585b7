"""Which tokens make the stream endpoint say "several processes" (one app, this process).

Tokens name the process that rendered them. The endpoint of an app whose broker is
in-process logs an ERROR (once) for a token of another process issued since its broker
started, a sibling's page; never for a tab of the process it replaced, reconnecting
after a restart with a token issued before the start, nor for a token without a name.
Under a random per-process secret, a sibling's token is a 403 that names the shared
secret.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import time
from typing import TYPE_CHECKING

from streamui import InProcessTransport, TokenSigner
from tests.integration.conftest import SECRET, RecordingHandler

if TYPE_CHECKING:
    from collections.abc import Iterator

    import httpx

    from tests.integration.conftest import Live, Start

SIBLING = "5151b11e"
PREVIOUS = "0ld0ld00"
IN_PROCESS_ERROR = "several processes serve this app, but its broker is in-process"
RANDOM_SECRET_ERROR = "several processes serve this app, but each draws a random stream secret"
SIGNATURE_MISMATCH = (
    "stream token signature does not match (tampered, or signed with another secret)"
)


@contextlib.contextmanager
def errors_logged() -> Iterator[list[logging.LogRecord]]:
    """The records at ERROR of ``streamui.litestar`` within the block."""
    handler = RecordingHandler()
    logger = logging.getLogger("streamui.litestar")
    logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)


def stream_url(live: Live, token: str) -> str:
    return f"{live.plugin.config.path}?t={token}"


async def stream_opens(live: Live, token: str) -> None:
    async with live.stream(stream_url(live, token)) as stream:
        assert stream.opening_id > 0


def detail(response: httpx.Response) -> str:
    value: str = response.json()["detail"]
    return value


async def test_a_sibling_page_logs_one_error_and_is_served(start: Start) -> None:
    live = await start()
    live.expect_errors("streamui.litestar")
    sibling = TokenSigner(SECRET, instance=SIBLING)
    with errors_logged() as errors:
        for index in range(3):
            await stream_opens(live, sibling.sign([f"invoice:{index}"]))
    assert len(errors) == 1, [record.getMessage() for record in errors]
    message = errors[0].getMessage()
    assert message.startswith(IN_PROCESS_ERROR), message
    assert f"instance {live.plugin.endpoint.signer.instance}) serves the stream" in message
    assert f"rendered by another (instance {SIBLING})" in message, message
    assert "set STREAMUI_NATS_URL (or StreamConfig(nats_url=...))" in message, message
    assert "one STREAMUI_SECRET (or StreamConfig(secret=...)) shared" in message, message


async def test_a_tab_of_the_previous_process_reconnects_without_an_error(start: Start) -> None:
    live = await start()
    previous = TokenSigner(SECRET, instance=PREVIOUS)
    with errors_logged() as errors:
        await stream_opens(live, previous.sign(["invoice:1"], issued_at=time.time() - 60))
        # Rendered a moment before this broker started, as the last page of a restart.
        started_at: float = live.broker._started_at
        await stream_opens(live, previous.sign(["invoice:2"], issued_at=started_at - 0.01))
    assert errors == []


async def test_pages_of_this_process_and_tokens_without_an_instance_log_nothing(
    start: Start,
) -> None:
    live = await start()
    signer = live.plugin.endpoint.signer
    payload = json.dumps({"s": ["invoice:1"], "t": int(time.time() * 1000)}).encode()
    unnamed = f"{b64(payload)}.{b64(signer._mac(payload))}"  # signed before tokens had "i"
    with errors_logged() as errors:
        await stream_opens(live, unnamed)
        await stream_opens(live, signer.sign(["invoice:2"]))
        async with live.stream(await live.stream_url("invoice:3")):  # a page of this app
            pass
    assert errors == []


async def test_a_sibling_page_over_a_shared_transport_logs_nothing(start: Start) -> None:
    class SharedLooking(InProcessTransport):
        """Stands for NATS: other processes' publishes reach this process too."""

        sees_all_publishes = False

    live = await start(transport=SharedLooking())
    with errors_logged() as errors:
        await stream_opens(live, TokenSigner(SECRET, instance=SIBLING).sign(["invoice:1"]))
    assert errors == []


async def test_a_sibling_page_under_random_secrets_is_403_naming_the_shared_secret(
    start: Start,
) -> None:
    live = await start(secret=None)
    live.expect_errors("streamui.litestar")
    sibling = TokenSigner(instance=SIBLING)  # its own random secret, as another process's
    with errors_logged() as errors:
        for index in range(3):
            response = await live.refused(stream_url(live, sibling.sign([f"invoice:{index}"])))
            assert response.status_code == 403
            assert detail(response) == (
                f"{SIGNATURE_MISMATCH}: the page was rendered by another process of this app, "
                "and each process draws a random secret when none is set; several processes "
                "need one shared secret: set STREAMUI_SECRET (or StreamConfig(secret=...)) to "
                "the same value in each"
            )
    assert len(errors) == 1, [record.getMessage() for record in errors]
    message = errors[0].getMessage()
    assert message.startswith(RANDOM_SECRET_ERROR), message
    assert f"rendered by another (instance {SIBLING})" in message, message
    assert "one STREAMUI_SECRET (or StreamConfig(secret=...)) shared" in message, message


async def test_other_refusals_under_random_secrets_are_plain_403s(start: Start) -> None:
    live = await start(secret=None)
    previous = TokenSigner(instance=PREVIOUS).sign(["invoice:1"], issued_at=time.time() - 60)
    unnamed_payload = b64(json.dumps({"s": ["invoice:1"], "t": 1}).encode())
    with errors_logged() as errors:
        for token in (previous, f"{unnamed_payload}.{'A' * 43}", "garbage"):
            response = await live.refused(stream_url(live, token))
            assert response.status_code == 403
            assert "shared secret" not in detail(response), detail(response)
    # With a secret set, a token of another secret is another mistake: a plain 403.
    fixed = await start()
    with errors_logged() as errors_with_a_secret:
        token = TokenSigner("another-secret-long-enough", instance=SIBLING).sign(["invoice:1"])
        response = await fixed.refused(stream_url(fixed, token))
        assert response.status_code == 403
        assert detail(response) == SIGNATURE_MISMATCH
    assert errors == []
    assert errors_with_a_secret == []


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
