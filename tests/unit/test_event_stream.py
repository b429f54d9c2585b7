"""`EventStream` as a plain ASGI app, called directly: how its request ends.

An open stream's task only waits for the disconnect; the stream ends that wait by
cancelling the task and taking the cancellation back. These tests pin the edges of
that: a stream the server ends returns normally and leaves its task uncancelled, a
cancellation from the server itself still propagates, and either way every
subscription is released. A stream the client left still ends its body with a last
message (for the middleware on the way), and what the server does with that message
is no error. (What the stream writes is tested against real servers in
``tests/integration`` and ``tests/matrix``.)
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import pytest

from streamui import Broker
from streamui.stream import EventStream

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

WAIT = 10.0


@pytest.fixture
async def broker() -> AsyncIterator[Broker]:
    async with Broker() as broker:
        yield broker


class Client:
    """The server's side of one request: records what the app sends; the request
    disconnects when `leave` is called. *refuse_after_leaving*, if given, is what
    ``send`` raises once the client left (as a server may)."""

    def __init__(self, refuse_after_leaving: Exception | None = None) -> None:
        self.messages: list[dict[str, Any]] = []
        self.opened = asyncio.Event()
        self._left = asyncio.Event()
        self._refusal = refuse_after_leaving

    async def receive(self) -> dict[str, Any]:
        await self._left.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        if self._left.is_set() and self._refusal is not None:
            raise self._refusal
        if message.get("more_body"):
            self.opened.set()

    def leave(self) -> None:
        self._left.set()

    @property
    def completed(self) -> bool:
        last = self.messages[-1] if self.messages else {}
        return last.get("type") == "http.response.body" and not last.get("more_body", False)


async def serve(stream: EventStream, client: Client | LeavesOn) -> None:
    await stream({"type": "http", "path": "/"}, client.receive, client.send)  # type: ignore[arg-type]


async def test_a_stream_the_server_ends_returns_and_leaves_its_task_uncancelled(
    broker: Broker,
) -> None:
    client = Client()
    stream = EventStream(broker, ["a:1"], max_lifetime=0.2)

    async def request() -> int:
        await serve(stream, client)
        await asyncio.sleep(0)  # a task left cancelled would raise here
        task = asyncio.current_task()
        assert task is not None
        return task.cancelling()

    cancelling = await asyncio.wait_for(asyncio.create_task(request()), WAIT)
    assert cancelling == 0
    assert client.completed
    assert broker.watcher_count == 0


async def test_a_cancelled_request_propagates_and_releases_the_stream(broker: Broker) -> None:
    client = Client()
    task = asyncio.create_task(serve(EventStream(broker, ["a:1"]), client))
    await asyncio.wait_for(client.opened.wait(), WAIT)
    assert broker.watcher_count == 1

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, WAIT)
    assert broker.watcher_count == 0


async def test_a_request_cancelled_as_the_stream_ends_is_still_cancelled(broker: Broker) -> None:
    client = Client()
    task = asyncio.create_task(serve(EventStream(broker, ["a:1"]), client))
    await asyncio.wait_for(client.opened.wait(), WAIT)

    await broker.close()  # the stream ends (its writer cancels the wait) ...
    task.cancel()  # ... and the server cancels the request in the same turn
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, WAIT)
    assert broker.watcher_count == 0


async def test_a_client_that_leaves_ends_the_request(broker: Broker) -> None:
    client = Client()
    task = asyncio.create_task(serve(EventStream(broker, ["a:1"]), client))
    await asyncio.wait_for(client.opened.wait(), WAIT)

    client.leave()
    await asyncio.wait_for(task, WAIT)
    assert broker.watcher_count == 0


async def test_an_event_stream_serves_one_request(broker: Broker) -> None:
    stream = EventStream(broker, ["a:1"])
    client = Client()
    task = asyncio.create_task(serve(stream, client))
    await asyncio.wait_for(client.opened.wait(), WAIT)

    with pytest.raises(RuntimeError, match="serves one request"):
        await serve(stream, Client())
    client.leave()
    await asyncio.wait_for(task, WAIT)


async def test_a_client_that_leaves_has_its_body_completed(broker: Broker) -> None:
    # Nobody reads it; the middleware on the way needs it (Litestar's compression
    # closes its compressor only on the last body message).
    client = Client()
    task = asyncio.create_task(serve(EventStream(broker, ["a:1"]), client))
    await asyncio.wait_for(client.opened.wait(), WAIT)

    client.leave()
    await asyncio.wait_for(task, WAIT)
    assert client.completed, client.messages[-1]
    assert sum(not message.get("more_body", False) for message in client.messages[1:]) == 1


@pytest.mark.parametrize(
    "refusal",
    [OSError("client disconnected"), RuntimeError("Unexpected message type")],
    ids=["OSError", "RuntimeError"],
)
async def test_a_server_that_refuses_the_last_message_after_the_client_left_is_no_error(
    broker: Broker, refusal: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="streamui")
    client = Client(refuse_after_leaving=refusal)
    task = asyncio.create_task(serve(EventStream(broker, ["a:1"]), client))
    await asyncio.wait_for(client.opened.wait(), WAIT)

    client.leave()
    await asyncio.wait_for(task, WAIT)  # returns: the refusal does not reach the server
    assert client.completed  # (it was sent)
    assert broker.watcher_count == 0
    assert [r.levelno for r in caplog.records if r.name.startswith("streamui")] == [
        logging.DEBUG
    ], caplog.text
    assert repr(refusal) in caplog.text


class LeavesOn:
    """A server whose client is gone by the time the app sends its *nth* message: that
    write raises ``OSError`` (ECONNRESET), as uvicorn's and granian's do."""

    def __init__(self, nth: int) -> None:
        self.messages: list[dict[str, Any]] = []
        self._nth = nth

    async def receive(self) -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        if len(self.messages) >= self._nth:
            raise ConnectionResetError("client disconnected")


async def test_a_client_gone_before_the_opening_frame_has_the_body_completed(
    broker: Broker,
) -> None:
    server = LeavesOn(2)  # the response starts; the opening frame fails
    stream = EventStream(broker, ["a:1"])
    await asyncio.wait_for(serve(stream, server), WAIT)
    assert [m["type"] for m in server.messages] == ["http.response.start"] + [
        "http.response.body"
    ] * 2
    assert server.messages[-1]["more_body"] is False
    assert broker.watcher_count == 0


async def test_a_client_gone_before_the_response_started_is_sent_no_body(broker: Broker) -> None:
    server = LeavesOn(1)
    stream = EventStream(broker, ["a:1"])
    await asyncio.wait_for(serve(stream, server), WAIT)
    assert [m["type"] for m in server.messages] == ["http.response.start"]
    assert broker.watcher_count == 0
