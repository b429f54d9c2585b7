"""``uvicorn --workers 2`` with the default in-process broker: each worker has its own
broker (and, without STREAMUI_SECRET, its own random secret). A page rendered by one
worker and streamed by the other must not fail silently:

- with a shared secret the stream is served, and that worker logs one ERROR saying that
  invalidations stay in the process that made them, and what to do;
- without one the stream is refused (403) with a reason naming the shared secret, and
  the worker logs one ERROR.
"""

from __future__ import annotations

import pytest

from streamui.litestar import NATS_URL_ENV, SECRET_ENV
from tests.nats.multiprocess import SECRET
from tests.support import SSEReader, stream_path, stream_tokens
from tests.workers.support import get_on, new_connections, poll_output, workers

pytestmark = pytest.mark.timeout(120)

IN_PROCESS_ERROR = "several processes serve this app, but its broker is in-process"
RANDOM_SECRET_ERROR = "several processes serve this app, but each draws a random stream secret"
STREAMS = 3


def logged_by(pid: int) -> str:
    return f"this process (pid {pid}, instance "


async def test_a_page_streamed_by_another_worker_is_served_and_logs_one_error() -> None:
    env = {NATS_URL_ENV: "", SECRET_ENV: SECRET}
    async with workers(env=env) as running, new_connections() as client:
        a, b = running.pids
        for attempt in range(STREAMS):
            # A renders a page; B serves its stream, as a load balancer may arrange.
            params = {"scope": f"w:{attempt}"}
            async with get_on(client, running.base_url, {a}, params=params) as response:
                page = (await response.aread()).decode()
            url = running.base_url + stream_path(page)
            async with get_on(client, url, {b}, params={"t": stream_tokens(page)}) as response:
                assert response.status_code == 200, (response.status_code, await response.aread())
                opening = await SSEReader(response).next()
                assert opening.id is not None, opening
                assert opening.event is None, opening
            await poll_output(running, f"{IN_PROCESS_ERROR}: {logged_by(b)}")

        await running.child.terminate()  # flushes the workers' log queues
        errors = running.lines_with(IN_PROCESS_ERROR)
        assert len(errors) == 1, running.child.output
        (line,) = errors
        assert line.startswith("ERROR"), line
        assert logged_by(b) in line, line
        assert "and invalidations made in one process never reach the tabs streamed" in line
        assert f"set {NATS_URL_ENV} (or StreamConfig(nats_url=...))" in line, line
        assert f"one {SECRET_ENV} (or StreamConfig(secret=...)) shared" in line, line
        assert 'see the README, "Deploying"' in line, line
        assert "Traceback" not in running.child.output, running.child.output


async def test_without_a_shared_secret_another_worker_refuses_the_page_saying_why() -> None:
    async with (
        workers(env={NATS_URL_ENV: "", SECRET_ENV: ""}) as running,
        new_connections() as client,
    ):
        a, b = running.pids
        async with get_on(client, running.base_url, {a}, params={"scope": "w:1"}) as response:
            page = (await response.aread()).decode()
        url = running.base_url + stream_path(page)
        for _ in range(STREAMS):
            async with get_on(client, url, {b}, params={"t": stream_tokens(page)}) as r:
                await r.aread()
                assert r.status_code == 403, (r.status_code, r.text)
                detail = r.json()["detail"]
            assert detail.startswith("stream token signature does not match"), detail
            assert "the page was rendered by another process of this app" in detail, detail
            assert f"several processes need one shared secret: set {SECRET_ENV}" in detail, detail

        await poll_output(running, RANDOM_SECRET_ERROR)
        await running.child.terminate()
        errors = running.lines_with(RANDOM_SECRET_ERROR)
        assert len(errors) == 1, running.child.output
        assert errors[0].startswith("ERROR"), errors
        assert logged_by(b) in errors[0], errors
        assert f"one {SECRET_ENV} (or StreamConfig(secret=...)) shared" in errors[0], errors
        assert IN_PROCESS_ERROR not in running.child.output, running.child.output
