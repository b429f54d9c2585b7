"""A server that gets SIGTERM or SIGINT ends its open streams at once and exits.

uvicorn finishes open connections before it runs the lifespan shutdown, and an SSE
stream never finishes by itself; the plugin (Litestar) or `StreamUI` (FastAPI) ends the
streams when the signal arrives. The server runs as a child process here, so the signal
is real.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import httpx
import pytest

from tests.support import WAIT, SSEReader, stream_path, stream_tokens

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.parametrize(
    ("example", "signum"),
    [
        ("examples.showcase", signal.SIGTERM),
        ("examples.showcase", signal.SIGINT),
        ("examples.fastapi_app", signal.SIGTERM),
    ],
)
async def test_exit_signal_ends_open_streams_and_the_server_exits(
    example: str, signum: int
) -> None:
    port = free_port()
    # uvicorn's default graceful-shutdown timeout is "forever": without streamui's
    # signal handling this process would never exit while a stream is open.
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        example,
        cwd=ROOT,
        env={**os.environ, "PORT": str(port), "PYTHONUNBUFFERED": "1"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    try:
        async with asyncio.timeout(WAIT * 3):
            while b"Uvicorn running on" not in await process.stdout.readline():
                assert process.returncode is None, f"{example} exited before it started"
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=WAIT, trust_env=False) as client:
            page = (await client.get("/")).text
            params = {"t": stream_tokens(page)}
            async with client.stream("GET", stream_path(page), params=params) as response:
                assert response.status_code == 200
                reader = SSEReader(response)
                assert (await reader.next()).id is not None
                process.send_signal(signum)
                # The body completes (a clean end the browser answers by reconnecting)
                # instead of hanging until the server gives up on it.
                frames = []
                with pytest.raises(EOFError):  # noqa: PT012 - read frames until the end
                    while True:
                        frames.append(await reader.next())
        # The last frame tells the browser when to come back (spread over a few s).
        assert frames, "the body ended without a last frame"
        assert frames[-1].retry is not None, frames
        assert 1000 <= frames[-1].retry <= 5000, frames
        async with asyncio.timeout(WAIT):
            output = (await process.stdout.read()).decode()
            returncode = await process.wait()
        # uvicorn re-raises the signal it caught once it has shut down: ending "by
        # SIGTERM" after a complete shutdown is the expected exit for SIGTERM.
        assert returncode in (0, -signum), output
        assert "Application shutdown complete" in output, output
        assert "Traceback" not in output, output
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
