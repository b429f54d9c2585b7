"""Memory stays bounded by bytes: a long-lived broker under large payloads, in a real process.

A child process runs a broker with open watchers read like stream writers read them,
makes thousands of invalidations carrying ~60 KB of data over distinct scopes, closes
every watcher and reports its resident set size (``VmRSS``) before and after. What the
broker keeps afterwards (its frame cache, its log of recent invalidations) must stay
within its byte budgets; before those budgets the frame cache alone kept hundreds of MB.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from streamui import Broker

if TYPE_CHECKING:
    from streamui import Watcher

STREAMS = 50
INVALIDATIONS = 4_000
PAYLOAD_CHARS = 60_000
"""Characters in each payload's string: ~60 KB of JSON, under the 64 KiB default limit."""
GROWTH_LIMIT = 50 * 1024 * 1024
"""Bytes of RSS growth allowed: the byte budgets (a few MiB) plus allocator slack."""

ROOT = Path(__file__).resolve().parents[2]


def resident_bytes() -> int:
    """This process's resident set size, from ``/proc/self/status``."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS line in /proc/self/status")


def malloc_trim() -> bool:
    """Ask glibc to return freed memory to the system; False where there is no glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    trim = getattr(ctypes.CDLL(name), "malloc_trim", None)
    if trim is None:
        return False
    trim(0)
    return True


async def _write(watcher: Watcher) -> int:
    """What a stream's writer does: wait, take the frame, write it (here: count it)."""
    frames = 0
    while not watcher.closed:
        await watcher.wait()
        frames += bool(watcher.take())
    return frames


async def _churn() -> dict[str, int]:
    async with Broker() as broker:
        contexts = [broker.watch(["item:*", f"stream:{number}"]) for number in range(STREAMS)]
        watchers = [await context.__aenter__() for context in contexts]
        writers = [asyncio.create_task(_write(watcher)) for watcher in watchers]
        await asyncio.sleep(0)
        gc.collect()
        start = resident_bytes()
        blob = "x" * PAYLOAD_CHARS
        for number in range(INVALIDATIONS):
            await broker.invalidate(f"item:{number}", data={"n": number, "blob": blob})
            await asyncio.sleep(0)  # let every writer take its frame
        for context in contexts:
            await context.__aexit__(None, None, None)
        frames = sum(await asyncio.gather(*writers))
        del contexts, watchers, writers
        gc.collect()
        end = resident_bytes()
        # Only to tell, if the assertion fails, memory still referenced (stays) from
        # memory glibc merely keeps for reuse (goes).
        trimmed = resident_bytes() if malloc_trim() else end
        return {"start": start, "end": end, "trimmed": trimmed, "frames": frames}


def child() -> None:
    """The child process: print the measurements as one line of JSON."""
    print(json.dumps(asyncio.run(_churn())))


def measure() -> dict[str, int]:
    code = "from tests.integration.test_memory import child; child()"
    completed = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    figures: dict[str, int] = json.loads(completed.stdout.splitlines()[-1])
    return figures


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux's /proc")
def test_rss_stays_bounded_after_thousands_of_large_payloads() -> None:
    # Asserted without malloc_trim: what a real server process keeps.
    figures = measure()
    # Every stream took (nearly) every invalidation: the frames went through the cache.
    assert figures["frames"] > STREAMS * INVALIDATIONS * 0.9, figures
    growth = figures["end"] - figures["start"]
    assert growth < GROWTH_LIMIT, f"RSS grew by {growth / 2**20:.1f} MiB: {figures}"
