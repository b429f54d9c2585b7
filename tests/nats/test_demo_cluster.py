"""``python3 dev.py demo-cluster``: the showcase on two workers, and the store they share.

The launcher (`examples.showcase.cluster`) runs as a child process, exactly as the
command runs it, on free ports: a click on worker A reaches a tab whose stream worker
B serves, B shows the new value (the data is shared), and SIGTERM leaves nothing
running. The SQLite store is checked against the in-memory one, and for updates lost
between processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import sys
from typing import TYPE_CHECKING

import httpx
import pytest
from examples.showcase.sqlite_store import SqliteStore
from examples.showcase.store import ShowcaseStore, Store

from streamui.nats_server import free_port
from tests.nats.multiprocess import ROOT, START_WAIT, open_stream, push_event, started
from tests.support import WAIT, SSEReader, revision_of

if TYPE_CHECKING:
    from pathlib import Path

    from examples.showcase.store import Invoice

pytestmark = pytest.mark.timeout(120)

ANNOUNCED = re.compile(r"Open one window on each")
WORKER = re.compile(r"^\s+(http://127\.0\.0\.1:(\d+))\s+\(worker pid (\d+)\)$")
NATS = re.compile(r"NATS server nats://127\.0\.0\.1:(\d+) \(nats-server pid (\d+)\)")
DASHBOARD_KEYS = {"counter_shared", "invoices_all", "clock"}


def two_free_ports() -> int:
    """A port that is free, and the next one too (the launcher uses PORT and PORT+1)."""
    for _ in range(100):
        first = free_port()
        with socket.socket() as one, socket.socket() as two:
            try:
                one.bind(("127.0.0.1", first))
                two.bind(("127.0.0.1", first + 1))
            except OSError:
                continue
        return first
    raise AssertionError("found no two consecutive free ports")


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def next_push(reader: SSEReader) -> tuple[int, set[str]]:
    """The next event, which must be exactly a push; its revision and keys."""
    event = await reader.next_event()
    assert event.id is not None, event
    assert revision_of(event.id) >= 0, event
    keys = set(event.signals["_stream"])
    assert event == push_event(event.id, *keys), event
    return revision_of(event.id), keys


def counter_value(fragment: str) -> int:
    match = re.search(r'<p class="big-number">(\d+)</p>', fragment)
    assert match, fragment
    return int(match.group(1))


async def test_demo_cluster_shares_clicks_and_data_between_workers_and_stops_cleanly() -> None:
    port = two_free_ports()
    pids: list[int] = []
    async with started(
        "demo-cluster launcher",
        sys.executable,
        "-m",
        "examples.showcase.cluster",
        env={"HOST": "127.0.0.1", "PORT": str(port)},
    ) as launcher:
        try:
            await launcher.wait_for_line(ANNOUNCED, START_WAIT)
            workers = [match for line in launcher.lines if (match := WORKER.match(line))]
            [nats] = [match for line in launcher.lines if (match := NATS.search(line))]
            assert [int(worker.group(2)) for worker in workers] == [port, port + 1]
            a, b = (worker.group(1) for worker in workers)
            pids = [int(nats.group(2)), *(int(worker.group(3)) for worker in workers)]
            nats_port = int(nats.group(1))

            async with httpx.AsyncClient(timeout=WAIT, trust_env=False) as client:
                page = (await client.get(a)).text
                assert counter_value((await client.get(f"{b}/fragments/counter")).text) == 0
                # The page came from A; its stream is served by B (the secret is shared).
                async with open_stream(client, b, page) as stream:
                    caught_up, keys = await next_push(stream)
                    assert keys == DASHBOARD_KEYS
                    response = await client.post(f"{a}/counter/increment")
                    assert response.status_code == 204, response.text
                    # The clock ticks meanwhile (every 5 s): its pushes may come first.
                    revisions = [caught_up]
                    keys = set()
                    while "counter_shared" not in keys:
                        revision, keys = await next_push(stream)
                        assert revision > revisions[-1], revisions
                        assert keys <= {"counter_shared", "clock"}, keys
                        revisions.append(revision)
                for worker in (b, a):
                    counter = (await client.get(f"{worker}/fragments/counter")).text
                    assert counter_value(counter) == 1, worker
                activity = (await client.get(f"{b}/fragments/activity")).text
                assert "Counter went up to 1" in activity

            status = await launcher.terminate()
            output = launcher.output
            assert status == 0, output
            assert "stopping the workers and the NATS server" in output
            assert output.count("Application shutdown complete") == 2, output
            assert "Traceback" not in output, output
            # SIGTERM stops the workers before the NATS server: nothing to warn about.
            assert "WARNING" not in output, output
            assert [pid for pid in pids if running(pid)] == [], output
            assert [p for p in (port, port + 1, nats_port) if listening(p)] == [], output
        finally:
            # Whatever failed: the launcher ends (SIGTERM, then SIGKILL) when the block
            # exits; whatever it started must not outlive it.
            await launcher.end()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


# -- the SQLite store -------------------------------------------------------------------


def without_times(invoices: list[Invoice]) -> list[tuple[int, str, int, bool]]:
    return [(i.id, i.customer, i.amount_cents, i.paid) for i in invoices]


def exercise(store: ShowcaseStore) -> list[object]:
    """The same script on any store; what it observed, timestamps left out."""
    seen: list[object] = [store.counter, store.ticks, store.last_tick is None, store.totals()]
    seen += [store.increment(), store.increment(), store.counter]
    store.reset_counter()
    seen.append(store.counter)
    seen.append(without_times([store.add_invoice("Initrode", 12_345)]))
    seen += [store.mark_paid(11), store.mark_paid(11), store.mark_paid(2)]
    with pytest.raises(KeyError):
        store.mark_paid(999)
    seen += [without_times(store.newest(4)), without_times(store.since(9))]
    seen += [without_times(store.older(9, 4)), without_times(store.older(2, 4))]
    seen += [store.has_older(1), store.has_older(2), store.get(999), store.totals()]
    seen += [store.tick(), store.tick(unless_ticked_within=3600), store.ticks]
    seen += [store.last_tick is not None, [entry.text for entry in store.activity]]
    return seen


def test_the_sqlite_store_behaves_like_the_in_memory_store(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "showcase.db") as stored:
        assert exercise(stored) == exercise(Store())
        first = stored.get(1)
        assert first is not None
        assert first.issued_at < stored.started_at


def test_stores_on_one_file_share_the_data_the_demo_invoices_and_the_clock(
    tmp_path: Path,
) -> None:
    path = tmp_path / "showcase.db"
    with SqliteStore(path) as one, SqliteStore(path) as two:
        assert two.totals().count == 10  # seeded once, by the first
        assert one.started_at == two.started_at
        one.increment()
        assert two.increment() == 2
        assert one.counter == 2
        assert one.tick(unless_ticked_within=3600)
        assert not two.tick(unless_ticked_within=3600)  # it ticked less than that ago
        assert (one.ticks, two.ticks) == (1, 1)


INCREMENTS = 300
_INCREMENT_SCRIPT = f"""
import json, sys
from examples.showcase.sqlite_store import SqliteStore
with SqliteStore(sys.argv[1]) as store:
    print("ready", flush=True)
    sys.stdin.readline()  # start together
    print(json.dumps([store.increment() for _ in range({INCREMENTS})]))
"""


async def test_two_processes_incrementing_at_once_lose_no_update(tmp_path: Path) -> None:
    path = tmp_path / "showcase.db"
    SqliteStore(path).close()
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _INCREMENT_SCRIPT,
            str(path),
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(2)
    ]
    try:
        async with asyncio.timeout(START_WAIT):
            for process in processes:
                assert process.stdout is not None
                assert await process.stdout.readline() == b"ready\n"
            for process in processes:
                assert process.stdin is not None
                process.stdin.write(b"go\n")
                await process.stdin.drain()
            outputs = [await process.communicate() for process in processes]
        errors = [stderr.decode() for _, stderr in outputs]
        assert [process.returncode for process in processes] == [0, 0], errors
        seen = [json.loads(stdout) for stdout, _ in outputs]
        # Every increment saw a value no other increment saw: none was lost.
        assert sorted(seen[0] + seen[1]) == list(range(1, 2 * INCREMENTS + 1))
        with SqliteStore(path) as store:
            assert store.counter == 2 * INCREMENTS
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()
