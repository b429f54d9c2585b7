"""A client that stops reading: writes wait on flow control, changes coalesce, nothing
is lost, and the server holds at most one pending frame for it."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from tests.integration.conftest import Start, url_from
from tests.support import WAIT

if TYPE_CHECKING:
    from collections.abc import Callable

PAYLOAD = "x" * 200_000
"""Large enough that a few unread events fill the socket buffers and pause writes."""


async def test_a_reader_that_stalls_gets_coalesced_frames_in_order(start: Start) -> None:
    live = await start(max_data_bytes=2 * len(PAYLOAD))  # over the 64 KiB default
    url = url_from(await live.page("blob:1"))
    address = urlsplit(live.base_url)
    assert address.hostname is not None
    assert address.port is not None
    loop = asyncio.get_running_loop()
    # A plain socket: nothing is read from it unless the test asks (asyncio's streams
    # would read ahead into their own buffer).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # stall sooner
    sock.setblocking(False)
    received = bytearray()

    async def read_until(predicate: Callable[[bytes], bool]) -> None:
        async with asyncio.timeout(WAIT * 3):
            while not predicate(bytes(received)):
                chunk = await loop.sock_recv(sock, 1 << 20)
                assert chunk, "the server closed the stream"
                received.extend(chunk)

    try:
        await loop.sock_connect(sock, (address.hostname, address.port))
        await loop.sock_sendall(sock, f"GET {url} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
        await read_until(lambda data: b"\r\n\r\n" in data)
        assert received.startswith(b"HTTP/1.1 200"), bytes(received[:200])

        # The client reads nothing while 60 large invalidations are made.
        for number in range(1, 61):
            await live.broker.invalidate("blob:1", data={"n": number, "blob": PAYLOAD})
            await asyncio.sleep(0)  # let the writes run between invalidations
        (watcher,) = live.broker._watchers
        # Whatever the client's speed, the server keeps at most the latest change.
        assert len(watcher._pending or ()) <= 1
        assert len(watcher._data or ()) <= 1

        # Now it reads: events arrive in order, fewer than were made, ending with the last.
        last = b'"n":60,'
        await read_until(lambda data: last in data and data.rstrip().endswith(b"}}"))
        numbers = [
            json.loads(line.removeprefix(b"data: signals "))["_streamData"]["blob_1"]["n"]
            for line in bytes(received).split(b"\n")
            if line.startswith(b"data: signals ")
        ]
        assert numbers == sorted(numbers)
        assert numbers[-1] == 60
        assert len(numbers) < 60, "a stalled reader should get coalesced frames"
    finally:
        sock.close()
