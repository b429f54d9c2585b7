"""The compatibility matrix: every server x app variant, real processes, real signals.

Each test starts one server (a child process, as a user starts it) serving the matrix
app (`tests.matrix.variants`) as one variant, and runs the checks in order on it, with a
browser-like client (``Accept-Encoding: gzip, deflate, br``, Datastar's headers):

a. the stream opens with an id-only frame announcing ``retry: 1000``, heartbeats arrive,
   and an invalidation arrives, while the stream is open, as a datastar-patch-signals
   event whose id is the revision it sets;
b. the page is compressed and the stream is not; with ``StreamConfig(compress=True)``
   the stream is compressed too, and every frame above was decoded as it arrived;
c. closing the stream releases every watcher and subscription on the server, and its
   request ends with a last body message (``more_body`` false) through the middleware
   (the compression middleware closes its compressor only then);
d. SIGTERM to the server's main process with a stream open: the body completes cleanly
   (no reset), its last frame says ``retry:`` 1000..5000 ms, the server exits within
   2 s although its graceful timeout is 20 s (so streamui ended the stream), and its
   output has no ERROR line and no traceback;
e. the same server restarted on the same port: a reconnect with ``Last-Event-ID`` is
   pushed every watched scope in its first event;
f. as (d) with SIGINT, on the restarted server, with the resumed stream open.

Every check runs even when an earlier one failed; the test then fails with all the
failures. Outcomes and exit times go to ``build/matrix-results.md``, server output to
``build/matrix-logs/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import re
import signal
import time
from typing import TYPE_CHECKING, Final

import httpx
import pytest

from tests.matrix.results import Checks, Results, Row
from tests.matrix.servers import (
    ROOT,
    SERVERS,
    ServerProcess,
    free_port,
    problems_in,
    running,
    warnings_in,
)
from tests.matrix.sse import WAIT, Frame, StreamReader
from tests.matrix.variants import CREDENTIAL, CREDENTIAL_HEADER, ORIGIN, VARIANTS, Variant
from tests.support import revision_of

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

LOGS: Final = ROOT / "build" / "matrix-logs"
SCOPES: Final = ("matrix:a", "matrix:*")
"""The scopes the page watches; invalidating ``matrix:a`` matches both."""
KEYS: Final = {"matrix_a", "matrix_WILD"}
INVALIDATED: Final = "matrix:a"
SHUTDOWN_LIMIT: Final = 2.0
"""Seconds a signalled server may take to exit (its graceful timeout is 20 s)."""
STREAM_HEADERS: Final = {
    # What Datastar's @get sends.
    "accept": "text/event-stream, text/html, application/json",
    "datastar-request": "true",
}


def browser(base_url: str) -> httpx.AsyncClient:
    """A client that sends what a browser sends: encodings, an origin, a credential."""
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=WAIT,
        trust_env=False,
        headers={
            "accept-encoding": "gzip, deflate, br",
            "origin": ORIGIN,
            "user-agent": "Mozilla/5.0 (streamui matrix)",
            CREDENTIAL_HEADER: CREDENTIAL,
        },
    )


_TOKENS = re.compile(r'"_streamTokens":\{"\w+":"([^"]+)"\}')
_PATH = re.compile(r'@get\(\("([^"?]+)\?"')


def stream_url(page: str) -> str:
    """The URL that Connect() in *page* opens."""
    text = html.unescape(page)
    tokens = _TOKENS.findall(text)
    path = _PATH.search(text)
    assert tokens, "no stream token in the page"
    assert path, "no Connect() element with a stream URL in the page"
    return path.group(1) + "?" + "&".join(f"t={token}" for token in tokens)


@contextlib.asynccontextmanager
async def open_stream(
    client: httpx.AsyncClient, url: str, *, last_event_id: str | None = None
) -> AsyncIterator[tuple[httpx.Response, StreamReader]]:
    """Open the stream, check its status and its opening id-only frame."""
    headers = dict(STREAM_HEADERS)
    if last_event_id is not None:
        headers["last-event-id"] = last_event_id
    async with client.stream("GET", url, headers=headers) as response:
        if response.status_code != 200:
            await response.aread()
        assert response.status_code == 200, (response.status_code, response.text)
        assert response.headers["content-type"].startswith("text/event-stream"), response.headers
        reader = StreamReader(response)
        opening = await reader.next()
        assert opening.id_only, f"the first frame is not id-only: {opening}"
        assert opening.id is not None, opening
        assert revision_of(opening.id) >= 0, opening
        assert opening.retry == 1000, f"the opening frame does not say retry: 1000: {opening}"
        yield response, reader


async def counts(client: httpx.AsyncClient) -> dict[str, int]:
    response = await client.get("/debug/counts")
    assert response.status_code == 200, response.text
    value: dict[str, int] = response.json()
    return value


def check_push(event: Frame, keys: set[str], after: int) -> int:
    """Check that *event* sets exactly *keys* to its id, a revision above *after*."""
    assert event.event == "datastar-patch-signals", event
    assert event.id is not None, f"an event without an id: {event}"
    assert revision_of(event.id) >= 0, event
    revision = revision_of(event.id)
    assert revision > after, f"revision {revision} not above {after}: {event}"
    assert event.revisions == dict.fromkeys(keys, revision), (
        f"expected {sorted(keys)} set to the id {revision}: {event}"
    )
    return revision


async def invalidate(client: httpx.AsyncClient, scope: str) -> None:
    response = await client.post("/invalidate", params={"scope": scope})
    assert response.status_code == 204, (response.status_code, response.text)


async def wait_released(client: httpx.AsyncClient) -> None:
    """Poll the server until no watcher or subscription is left (bounded by WAIT)."""
    state: dict[str, int] = {}
    try:
        async with asyncio.timeout(WAIT):
            while True:
                state = await counts(client)
                if state["watchers"] == 0 and state["subscriptions"] == 0:
                    return
                await asyncio.sleep(0.05)  # polling server state, not asserting a time
    except TimeoutError:
        raise AssertionError(f"still held {WAIT} s after the disconnect: {state}") from None


async def check_completed(client: httpx.AsyncClient) -> None:
    """Every stream request has returned (polled: a request returns just after it
    released its watcher), each with a last body message through the middleware."""
    state: dict[str, int] = {}
    try:
        async with asyncio.timeout(WAIT):
            while True:
                state = await counts(client)
                if state["streams_open"] == 0:
                    break
                await asyncio.sleep(0.05)  # polling server state, not asserting a time
    except TimeoutError:
        raise AssertionError(f"a stream request still running {WAIT} s later: {state}") from None
    assert state["streams_incomplete"] == 0, (
        f"a stream the client left ended without a last body message: {state}"
    )


async def signal_with_open_stream(
    server: ServerProcess, reader: StreamReader, signum: signal.Signals, row: Row
) -> None:
    """Send *signum* to the server's main process while *reader*'s stream is open; check
    the clean end of the stream, the exit time and the server's output."""
    sent = server.send_signal(signum)
    try:
        frames = await reader.to_end()  # a reset raises StreamCut
    except TimeoutError:
        frames = None
    returncode, seconds = await server.wait_exit(sent)
    row.exits[signum.name] = f"{seconds:.2f} s ({returncode})"
    assert frames is not None, (
        f"the stream was still open {WAIT} s after {signum.name}; the server exited "
        f"{seconds:.2f} s after it:\n{server.output}"
    )
    assert frames, "the stream ended without a last frame"
    last = frames[-1]
    assert last.retry is not None, f"the last frame has no retry: {last} (frames: {frames})"
    assert 1000 <= last.retry <= 5000, f"retry {last.retry} ms outside 1000..5000"
    assert seconds < SHUTDOWN_LIMIT, (
        f"{server.name} took {seconds:.2f} s to exit after {signum.name}:\n{server.output}"
    )
    # uvicorn re-raises the signal it caught once it has shut down cleanly.
    assert returncode in (0, -signum), f"exit code {returncode}:\n{server.output}"
    await server.wait_group_gone()
    row.notes.extend(f"note: {server.name} logged {line}" for line in warnings_in(server.output))
    problems = problems_in(server.output)
    assert not problems, "\n".join(["the server logged:", *problems, "", server.output])


def check_encodings(variant: Variant, page: httpx.Response, stream: httpx.Response) -> None:
    page_encoding = page.headers.get("content-encoding")
    stream_encoding = stream.headers.get("content-encoding")
    assert page_encoding == variant.compression, (
        f"the page's content-encoding is {page_encoding!r}, expected {variant.compression!r}"
    )
    expected = variant.compression if variant.compress_stream else None
    assert stream_encoding == expected, (
        f"the stream's content-encoding is {stream_encoding!r}, expected {expected!r}"
    )


async def check_secured(client: httpx.AsyncClient, url: str, stream: httpx.Response) -> None:
    """The stream passed the CORS and authentication middleware of the secured variant:
    it has CORS headers, and without the credential it is refused."""
    assert stream.headers.get("access-control-allow-origin") == ORIGIN, stream.headers
    headers = {**STREAM_HEADERS, CREDENTIAL_HEADER: ""}
    async with asyncio.timeout(WAIT), client.stream("GET", url, headers=headers) as refused:
        assert refused.status_code == 401, (
            f"a stream without the credential got {refused.status_code}, expected 401"
        )


MATRIX: Final = [(server, variant) for server in SERVERS for variant in VARIANTS]


@pytest.mark.timeout(150)
@pytest.mark.parametrize(
    ("server_name", "variant_name"), MATRIX, ids=[f"{s}-{v}" for s, v in MATRIX]
)
async def test_server_and_variant(
    server_name: str, variant_name: str, matrix_results: Results
) -> None:
    variant = VARIANTS[variant_name]
    row = matrix_results.row(server_name, variant_name)
    checks = Checks(row)
    started = time.monotonic()
    LOGS.mkdir(parents=True, exist_ok=True)
    logs = [LOGS / f"{server_name}-{variant_name}-{run}.log" for run in (1, 2)]
    for log in logs:
        log.unlink(missing_ok=True)
    port = free_port()
    try:
        await run_checks(server_name, variant, port, logs, checks)
    finally:
        row.seconds = time.monotonic() - started
    checks.raise_failures()


async def run_checks(
    server_name: str, variant: Variant, port: int, logs: list[Path], checks: Checks
) -> None:
    row = checks.row
    last_id: str | None = None
    async with running(server_name, variant.name, port, logs[0]) as first:
        async with browser(first.base_url) as client:
            page = await client.get("/page", params=[("scope", value) for value in SCOPES])
            assert page.status_code == 200, page.text
            url = stream_url(page.text)
            state = await counts(client)
            if server_name == "hypercorn":  # the setup is what it claims to be
                assert state["pid"] != first.pid, "hypercorn served from its main process"
            elif server_name.startswith(("uvicorn", "hypercorn")):
                assert state["pid"] == first.pid, "served from another process"

            with checks.check("a"):
                async with open_stream(client, url) as (response, reader):
                    with checks.check("b"):
                        check_encodings(variant, page, response)
                    if variant.secured:
                        await check_secured(client, url, response)
                    frames = await reader.until("keep-alive")
                    assert all(frame.event is None for frame in frames), frames
                    state = await counts(client)
                    assert (state["watchers"], state["subscriptions"]) == (1, 2), state
                    revision = revision_of(reader.last_id)
                    for _ in range(2):  # each one arrives on its own, while the stream is open
                        await invalidate(client, INVALIDATED)
                        revision = check_push(await reader.next_event(), KEYS, after=revision)
                    await reader.until("keep-alive")  # still streaming after the events

            with checks.check("c"):
                await wait_released(client)
                await check_completed(client)

            with checks.check("d"):
                # A new tab: a first connect with the first page's token would be pushed
                # the scope invalidated in (a) since that page was rendered.
                page = await client.get("/page", params=[("scope", value) for value in SCOPES])
                url = stream_url(page.text)
                async with open_stream(client, url) as (response, reader):
                    opening = revision_of(reader.last_id)
                    await invalidate(client, INVALIDATED)
                    check_push(await reader.next_event(), KEYS, after=opening)
                    last_id = reader.last_id
                    await signal_with_open_stream(first, reader, signal.SIGTERM, row)
        await first.kill()  # whatever (d) found, the port must be free for (e)

    async with contextlib.AsyncExitStack() as stack:
        resumed: StreamReader | None = None
        with checks.check("e"):
            assert last_id is not None, "no event id seen before the restart"
            second = await stack.enter_async_context(
                running(server_name, variant.name, port, logs[1])
            )
            client = await stack.enter_async_context(browser(second.base_url))
            _, reader = await stack.enter_async_context(
                open_stream(client, url, last_event_id=last_id)
            )
            resumed = reader
            check_push(await reader.next_event(), KEYS, after=revision_of(last_id))
        if resumed is not None:
            with checks.check("f"):
                await signal_with_open_stream(second, resumed, signal.SIGINT, row)
