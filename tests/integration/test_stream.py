"""What a tab's stream delivers, over HTTP against a real uvicorn server.

Every test renders a page, opens the stream at the URL that Connect() rendered, calls
the plugin's broker and reads the exact ``datastar-patch-signals`` events. Absence is
never proved by waiting: the stream also watches a probe scope, and after the
invalidations that must not reach it the test invalidates the probe; the next event
must carry the probe's key and nothing else (an earlier wrong delivery would show up
in that event or before it).
"""

from __future__ import annotations

import asyncio
import html
import json
import re
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest

from streamui import TokenSigner, scope_key
from tests.integration.conftest import SECRET, url_from
from tests.support import WAIT, stream_path, stream_tokens

if TYPE_CHECKING:
    from litestar import Request

    from tests.integration.conftest import Live, Start

PROBE = "probe:1"


def token_scopes(document: str) -> list[tuple[str, ...]]:
    """The scopes signed into each stream token of a rendered document."""
    signer = TokenSigner(SECRET)
    return [signer.verify(token).scopes for token in stream_tokens(document)]


def connect_signals(page: str) -> dict[str, Any]:
    """The initial ``_stream`` signals that Connect() rendered."""
    match = re.search(r'id="streamui-connect" data-signals__ifmissing="([^"]+)"', page)
    assert match, "no Connect() element in the page"
    value: dict[str, Any] = json.loads(html.unescape(match.group(1)))["_stream"]
    return value


# -- the response itself ------------------------------------------------------------------


async def test_stream_opens_with_datastar_headers_and_an_id_only_frame(live: Live) -> None:
    page = await live.page("invoice:42")
    assert stream_path(page) == "/streamui/stream"

    async with live.stream(url_from(page)) as stream:  # checks the id-only opening frame
        headers = stream.response.headers
        assert headers["content-type"].split(";")[0] == "text/event-stream"
        assert headers["cache-control"] == "no-cache"
        assert headers["x-accel-buffering"] == "no"
        assert "content-length" not in headers
        # Revisions are seeded from the wall clock (ms), so they exceed what another or
        # an earlier process handed out. The opening id is the point the stream owes
        # nothing before: the render, or the last revision before it.
        assert live.broker.started_at is not None
        assert int(live.broker.started_at * 1000) <= stream.opening_id < int(time.time() * 1000)

        await live.broker.invalidate("invoice:42")
        push = await stream.next_push()
        assert push.signals == {"_stream": {"invoice_42": push.revision}}
        assert push.revision > stream.opening_id


async def test_stream_path_follows_the_config(start: Start) -> None:
    live = await start(path="/live/updates")
    page = await live.page("invoice:42")
    assert stream_path(page) == "/live/updates"

    async with live.stream(url_from(page)) as stream:
        await live.broker.invalidate("invoice:42")
        push = await stream.next_push()
        assert push.signals == {"_stream": {"invoice_42": push.revision}}


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_streamed_page_connects(live: Live, mode: str) -> None:
    response = await live.client.get(
        "/page/streamed", params=[("scope", "invoice:42"), ("scope", "rows:*"), ("mode", mode)]
    )
    assert response.status_code == 200
    page = response.text
    assert page.count('id="watch-') == 2
    assert token_scopes(page) == [("invoice:42", "rows:*")], "Connect() rendered no token"

    async with live.stream(url_from(page)) as stream:
        await live.broker.invalidate("rows:3")
        push = await stream.next_push()
        assert push.signals == {"_stream": {"rows_WILD": push.revision}}


# -- matching -------------------------------------------------------------------------------


async def test_exact_scope_gets_every_invalidation_with_a_growing_revision(live: Live) -> None:
    page = await live.page("invoice:42")
    assert connect_signals(page) == {"invoice_42": 0}

    async with live.stream(url_from(page)) as stream:
        revisions = []
        for _ in range(3):
            await live.broker.invalidate("invoice:42")
            push = await stream.next_push()  # checks id == revision > the previous one
            assert push.signals == {"_stream": {"invoice_42": push.revision}}
            revisions.append(push.revision)
        assert revisions == sorted(set(revisions))


@pytest.mark.parametrize(
    ("watched", "key", "matching", "not_matching"),
    [
        pytest.param(
            "invoice:42",
            "invoice_42",
            ["invoice:42"],
            ["invoice:4", "invoice:420", "invoice:42:lines", "invoice", "invoices:42"],
            id="exact",
        ),
        pytest.param(
            "invoices:*",
            "invoices_WILD",
            ["invoices:7", "invoices:draft-2"],
            ["invoices", "invoices:7:lines", "invoice:7", "other:7"],
            id="star",
        ),
        pytest.param(
            "workspace:1:>",
            "workspace_1_REST",
            ["workspace:1:doc", "workspace:1:doc:9:comment"],
            ["workspace:1", "workspace:2:doc", "workspace", "workspace:10:doc"],
            id="rest",
        ),
        pytest.param(
            "tenant:*:invoice:>",
            "tenant_WILD_invoice_REST",
            ["tenant:3:invoice:9", "tenant:a:invoice:9:line:1"],
            ["tenant:3:invoice", "tenant:3:order:9", "tenant:invoice:9"],
            id="star-and-rest",
        ),
        pytest.param(">", "REST", ["anything", "any:thing:at:all"], [], id="everything"),
        pytest.param(
            "user-1:x_y",
            "_user_h1__x_uy",
            ["user-1:x_y"],
            ["user-1:x", "user:1:x_y", "user-1:x_y:z", "user_1:x_y"],
            id="escaped-key",
        ),
    ],
)
async def test_scope_matching(
    live: Live, watched: str, key: str, matching: list[str], not_matching: list[str]
) -> None:
    assert scope_key(watched) == key
    page = await live.page(watched, PROBE)
    probe_key = scope_key(PROBE)

    async with live.stream(url_from(page)) as stream:
        for concrete in matching:
            await live.broker.invalidate(concrete)
            push = await stream.next_push()
            assert push.signals == {"_stream": {key: push.revision}}, concrete

        for concrete in not_matching:
            await live.broker.invalidate(concrete)
        await live.broker.invalidate(PROBE)
        push = await stream.next_push()
        if watched == ">":  # the probe matches ">" too
            assert push.keys == {key, probe_key}
        else:
            assert push.signals == {"_stream": {probe_key: push.revision}}, not_matching


async def test_two_watchers_of_one_scope_share_one_key(live: Live) -> None:
    page = await live.page("counter:shared", "counter:shared")
    assert page.count('id="watch-') == 2
    assert page.count("$_stream.counter_shared") == 2
    assert connect_signals(page) == {"counter_shared": 0}
    assert token_scopes(page) == [("counter:shared",)]

    async with live.stream(url_from(page)) as stream:
        await live.broker.invalidate("counter:shared")
        push = await stream.next_push()
        assert push.signals == {"_stream": {"counter_shared": push.revision}}


async def test_two_tabs_both_receive_the_same_push(live: Live) -> None:
    first_url = await live.stream_url("counter:shared")
    second_url = await live.stream_url("counter:shared", PROBE)

    async with live.stream(first_url) as first, live.stream(second_url) as second:
        assert live.broker.watcher_count == 2
        assert live.broker.pattern_count == 2  # counter:shared is shared
        await live.broker.invalidate("counter:shared")
        first_push = await first.next_push()
        second_push = await second.next_push()
        assert first_push.signals == {"_stream": {"counter_shared": first_push.revision}}
        # One delivery, one revision, one frame shared by both streams.
        assert second_push == first_push


async def test_coalesced_pushes_carry_every_invalidated_key(live: Live) -> None:
    scopes = ["a", "b", "c:*", "d:>"]
    keys = {scope_key(value) for value in scopes}
    probe_key = scope_key(PROBE)
    page = await live.page(*scopes, PROBE)

    async with live.stream(url_from(page)) as stream:
        await live.broker.invalidate_many(["a", "b", "c:1", "d:1:2"])
        await live.broker.invalidate(PROBE)
        pushes = await stream.pushes_through(probe_key)
        assert set().union(*(push.keys for push in pushes)) == keys | {probe_key}

        # A burst from concurrent publishers while the stream is being written.
        async def publish(concrete: str, times: int) -> None:
            for _ in range(times):
                await live.broker.invalidate(concrete)
                await asyncio.sleep(0)  # let the writer and the other publishers run

        async with asyncio.timeout(WAIT):
            await asyncio.gather(
                publish("a", 50), publish("b", 50), publish("c:9", 50), publish("d:x:y", 50)
            )
        await live.broker.invalidate(PROBE)
        pushes = await stream.pushes_through(probe_key)
        assert set().union(*(push.keys for push in pushes)) == keys | {probe_key}
        assert len(pushes) <= 201  # coalesced or not, never more pushes than changes

        # Nothing was left pending: the next push is exactly the next invalidation.
        await live.broker.invalidate("b")
        push = await stream.next_push()
        assert push.signals == {"_stream": {"b": push.revision}}


@pytest.mark.parametrize(
    "data",
    [
        {"total": 12.5, "paid": True, "lines": [1, 2, 3]},
        "two\n\nparagraphs </script> and 'quotes' \"here\" \u2028 é",
        0,
        [],
    ],
    ids=["object", "tricky-string", "zero", "empty-list"],
)
async def test_data_arrives_under_stream_data(live: Live, data: object) -> None:
    page = await live.page("invoice:42", "invoices:*")

    async with live.stream(url_from(page)) as stream:
        await live.broker.invalidate("invoice:42", data=data)
        push = await stream.next_push()
        assert push.signals == {
            "_stream": {"invoice_42": push.revision},
            "_streamData": {"invoice_42": data},
        }

        await live.broker.invalidate("invoices:7", data=data)
        push = await stream.next_push()
        # A wildcard watcher is told which scope the data is for.
        assert push.signals == {
            "_stream": {"invoices_WILD": push.revision},
            "_streamData": {"invoices_WILD": {"scope": "invoices:7", "data": data}},
        }

        # A plain invalidation afterwards carries no stale payload.
        await live.broker.invalidate("invoice:42")
        push = await stream.next_push()
        assert push.signals == {"_stream": {"invoice_42": push.revision}}


async def test_overlapping_patterns_of_one_stream_all_get_the_change(live: Live) -> None:
    page = await live.page("invoice:42", "invoice:*", "invoice:>", PROBE)
    keys = {"invoice_42", "invoice_WILD", "invoice_REST"}
    probe_key = scope_key(PROBE)

    async with live.stream(url_from(page)) as stream:
        await live.broker.invalidate("invoice:42", data={"total": 7})
        await live.broker.invalidate(PROBE)
        pushes = await stream.pushes_through(probe_key)
        assert set().union(*(push.keys for push in pushes)) == keys | {probe_key}
        data: dict[str, Any] = {}
        for push in pushes:
            data.update(push.data)
        assert data == {
            "invoice_42": {"total": 7},
            "invoice_WILD": {"scope": "invoice:42", "data": {"total": 7}},
            "invoice_REST": {"scope": "invoice:42", "data": {"total": 7}},
        }

        await live.broker.invalidate("invoice:7:lines")
        await live.broker.invalidate(PROBE)
        pushes = await stream.pushes_through(probe_key)
        assert set().union(*(push.keys for push in pushes)) == {"invoice_REST", probe_key}


# -- more than one token ----------------------------------------------------------------


async def test_fragment_token_joins_the_stream(live: Live) -> None:
    page = await live.page("invoice:42")
    fragment = await live.fragment("rows:*", "row:7")
    assert token_scopes(page) == [("invoice:42",)]
    assert token_scopes(fragment) == [("rows:*", "row:7")]
    assert "streamui-connect" not in fragment

    async with live.stream(url_from(page, fragment)) as stream:
        assert live.broker.pattern_count == 3
        await live.broker.invalidate("rows:3")
        push = await stream.next_push()
        assert push.signals == {"_stream": {"rows_WILD": push.revision}}

        await live.broker.invalidate("row:7")
        push = await stream.next_push()
        assert push.signals == {"_stream": {"row_7": push.revision}}

        await live.broker.invalidate("invoice:42")
        push = await stream.next_push()
        assert push.signals == {"_stream": {"invoice_42": push.revision}}


async def test_overlapping_tokens_watch_each_scope_once(live: Live) -> None:
    page = await live.page("invoice:42", "rows:*")
    fragment = await live.fragment("rows:*")

    async with live.stream(url_from(page, fragment)) as stream:
        assert live.broker.pattern_count == 2
        await live.broker.invalidate("rows:1")
        push = await stream.next_push()
        assert push.signals == {"_stream": {"rows_WILD": push.revision}}


# -- who may invalidate ---------------------------------------------------------------------


async def test_invalidate_threadsafe_from_another_thread(live: Live) -> None:
    page = await live.page("jobs:*")
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            future = live.broker.invalidate_threadsafe("jobs:17", data={"done": True})
            future.result(timeout=WAIT)
        except BaseException as error:
            errors.append(error)

    async with live.stream(url_from(page)) as stream:
        thread = threading.Thread(target=worker, name="invalidator")
        thread.start()
        push = await stream.next_push()
        await asyncio.to_thread(thread.join, WAIT)
        assert not thread.is_alive()
        assert errors == []
        assert push.signals == {
            "_stream": {"jobs_WILD": push.revision},
            "_streamData": {"jobs_WILD": {"scope": "jobs:17", "data": {"done": True}}},
        }


async def test_invalidate_from_a_request_handler(live: Live) -> None:
    page = await live.page("invoice:42")

    async with live.stream(url_from(page)) as stream:
        response = await live.client.post("/invalidate", params={"scope": "invoice:42"})
        assert response.status_code == 204, response.text
        push = await stream.next_push()
        assert push.signals == {"_stream": {"invoice_42": push.revision}}


# -- keeping the stream alive, and catching up ----------------------------------------------


async def test_heartbeat_comments_on_an_idle_stream(start: Start) -> None:
    live = await start(heartbeat=0.2)
    page = await live.page("invoice:42")

    async with live.stream(url_from(page)) as stream:
        for _ in range(2):
            frame = await stream.reader.next()
            assert frame.event is None, frame
            assert frame.comments == ["keep-alive"], frame
            assert frame.data == [], frame

        await live.broker.invalidate("invoice:42")
        push = await stream.next_push()  # skips heartbeats that may come first
        assert push.signals == {"_stream": {"invoice_42": push.revision}}


async def test_reconnect_with_last_event_id_pushes_exactly_what_changed(live: Live) -> None:
    scopes = ("invoice:42", "rows:*", "workspace:1:>")
    url = await live.stream_url(*scopes)

    async with live.stream(url) as stream:
        await live.broker.invalidate("rows:1")
        await stream.next_push()
        last_event_id = stream.reader.last_id
    await live.wait_released()
    assert last_event_id is not None

    # Nothing changed while away: nothing is pushed (the probe comes first).
    async with live.stream(url, headers={"Last-Event-ID": last_event_id}) as stream:
        await live.broker.invalidate("workspace:1:probe")
        push = await stream.next_push()
        assert push.signals == {"_stream": {"workspace_1_REST": push.revision}}
        last_event_id = stream.reader.last_id
    await live.wait_released()
    assert last_event_id is not None

    # rows:2 changed while away: exactly its watcher is pushed, once.
    await live.broker.invalidate("rows:2")
    await live.broker.invalidate("unwatched:1")
    async with live.stream(url, headers={"Last-Event-ID": last_event_id}) as stream:
        push = await stream.next_push()
        assert push.signals == {"_stream": {"rows_WILD": push.revision}}
        await live.broker.invalidate("invoice:42")
        push = await stream.next_push()
        assert push.signals == {"_stream": {"invoice_42": push.revision}}
    assert live.broker.catch_ups["everything"] == 0


@pytest.mark.parametrize("last_event_id", ["tomorrow", "12.5", "1" * 17])
async def test_a_last_event_id_no_broker_gave_pushes_every_scope_once(
    live: Live, last_event_id: str
) -> None:
    scopes = ("invoice:42", "rows:*", "workspace:1:>")
    keys = {scope_key(value) for value in scopes}
    url = await live.stream_url(*scopes)
    async with live.stream(url, headers={"Last-Event-ID": last_event_id}) as stream:
        push = await stream.next_push()
        assert push.signals == {"_stream": dict.fromkeys(keys, push.revision)}
        # Once: the next push is the next invalidation, nothing else.
        await live.broker.invalidate("rows:2")
        push = await stream.next_push()
        assert push.signals == {"_stream": {"rows_WILD": push.revision}}
    assert live.broker.catch_ups["resume"] == 1


async def test_first_connect_catches_up_on_changes_since_the_render(live: Live) -> None:
    page = await live.page("invoice:42", "rows:*", "other:1")

    # Changed between the render and the connect: these must be pushed at once.
    await live.broker.invalidate("invoice:42")
    await live.broker.invalidate("rows:5")
    # Not watched by the page: irrelevant.
    await live.broker.invalidate("unrelated:1")

    async with live.stream(url_from(page)) as stream:
        push = await stream.next_push()
        assert push.signals == {
            "_stream": {"invoice_42": push.revision, "rows_WILD": push.revision}
        }

        # other:1 was not invalidated, so it was not pushed: the next push is this one.
        await live.broker.invalidate("other:1")
        push = await stream.next_push()
        assert push.signals == {"_stream": {"other_1": push.revision}}


async def test_first_connect_with_several_tokens_catches_up(live: Live) -> None:
    page = await live.page("invoice:42", "other:1")
    fragment = await live.fragment("rows:*")

    await live.broker.invalidate("invoice:42")
    await live.broker.invalidate("rows:9")

    async with live.stream(url_from(page, fragment)) as stream:
        push = await stream.next_push()
        assert push.signals == {
            "_stream": {"invoice_42": push.revision, "rows_WILD": push.revision}
        }

        await live.broker.invalidate("other:1")
        push = await stream.next_push()
        assert push.signals == {"_stream": {"other_1": push.revision}}


async def test_first_connect_without_changes_pushes_nothing(live: Live) -> None:
    page = await live.page("invoice:42", "other:1")

    async with live.stream(url_from(page)) as stream:
        await live.broker.invalidate("other:1")
        push = await stream.next_push()
        assert push.signals == {"_stream": {"other_1": push.revision}}
        assert push.revision > stream.opening_id


async def test_max_lifetime_ends_the_stream_cleanly(start: Start) -> None:
    calls: list[tuple[str, ...]] = []

    def authorize(request: Request[Any, Any, Any], scopes: tuple[str, ...]) -> bool:
        calls.append(scopes)
        return True

    live = await start(max_lifetime=0.5, authorize=authorize)
    url = await live.stream_url("invoice:42")

    async with live.stream(url) as stream:
        # The body completes (a clean end, not a cut connection).
        frames = await stream.read_to_end()
        assert all(frame.event is None for frame in frames), frames
    await live.wait_released()
    assert calls == [("invoice:42",)]

    # The browser reconnects; the hook runs again and the stream opens.
    async with live.stream(url, headers={"Last-Event-ID": str(stream.opening_id)}):
        assert calls == [("invoice:42",), ("invoice:42",)]
