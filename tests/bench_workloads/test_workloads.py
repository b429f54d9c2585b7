"""The workload benchmark at tiny sizes: every scenario runs against real server
processes and its checks hold (no timing thresholds: only what must be true).

Each scenario raises `BenchError` on a wrong delivery, an event on a stream that
watches nothing invalidated, a stream that does not end on the last revision, or a
step that hangs; these tests also check the figures it returns. The checker itself is
tested without a server, on hand-made events.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from bench.client import BenchError
from bench.workload_client import Stream, signals_of
from bench.workloads import (
    BurstStreams,
    PerUserStreams,
    Settings,
    measure_burst,
    measure_open,
    measure_per_user,
    measure_render,
    measure_unwatched,
    run_workloads,
)

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.quick(log_dir=tmp_path)


def _event(signals: str, revision: int = 1) -> bytes:
    return (
        f"event: datastar-patch-signals\nid: {revision}-abcd1234\n"
        f'data: signals {{"_stream":{signals}}}'
    ).encode()


# -- the scenarios, tiny -----------------------------------------------------------------


async def test_per_user_delivers_each_invalidation_to_its_stream(settings: Settings) -> None:
    result = await measure_per_user(settings)

    assert [point.streams for point in result.points] == list(settings.per_user_streams)
    for point in result.points:
        assert point.invalidations > 0
        assert point.deliveries == point.invalidations  # each checked at its stream
        assert point.scopes == point.streams * settings.per_user_scopes
        assert point.cpu_us_per_invalidation > 0
        assert point.median_us_per_invalidation > 0
    assert result.ratio > 0


async def test_unwatched_invalidations_reach_no_stream(settings: Settings) -> None:
    result = await measure_unwatched(settings)

    with_streams, alone = result.runs
    assert with_streams.streams == settings.unwatched_streams
    assert alone.streams == 0
    for run in result.runs:
        assert run.events == 0
        assert run.invalidations > 0
        assert run.cpu_us_per_invalidation > 0
        assert run.rate > 0


async def test_burst_ends_every_stream_on_the_last_revision(settings: Settings) -> None:
    result = await measure_burst(settings)

    no_yield, yielding = result.runs
    for run in result.runs:
        assert len(run.frames) == settings.burst_streams
        assert min(run.frames) >= 1
        assert 0 < run.invalidations <= settings.burst_count
        assert run.cpu_seconds > 0
    # Never yielding, every invalidation lands before any stream writes: one frame each.
    assert set(no_yield.frames) == {1}
    assert no_yield.invalidations == settings.burst_count
    # A stream never gets more frames than there were invalidations.
    assert max(yielding.frames) <= yielding.invalidations


async def test_open_figures_for_raw_and_streamui(settings: Settings) -> None:
    result = await measure_open(settings)

    assert [run.server for run in result.runs] == ["raw", "streamui"]
    for run in result.runs:
        assert run.opens == settings.open_count
        assert run.per_second > 0
        assert run.cpu_us_per_open > 0


async def test_render_measures_both_pages(settings: Settings) -> None:
    result = await measure_render(settings)

    assert result.watched_us > 0
    assert result.plain_us > 0
    assert result.watched_bytes > result.plain_bytes > 0


async def test_run_workloads_reports_a_table_per_scenario(settings: Settings) -> None:
    report = await run_workloads(["render"], settings)

    assert report.startswith("## Workloads")
    assert "### Rendering" in report
    assert "| watched |" in report
    assert "| plain |" in report
    with pytest.raises(ValueError, match="unknown scenario"):
        await run_workloads(["nope"], settings)


# -- the checks, without a server ----------------------------------------------------------


def test_signals_of_reads_the_stream_signals() -> None:
    assert signals_of(_event('{"user_1_2":17}')) == {"user_1_2": 17}
    with pytest.raises(BenchError, match="without a 'data: signals' line"):
        signals_of(b"event: datastar-patch-signals\nid: 1")


async def test_per_user_checker_rejects_what_is_wrong() -> None:
    client = PerUserStreams("127.0.0.1", 1)
    first, second = Stream(client, 0, b""), Stream(client, 1, b"")
    client.expected = {0: "user_0_1"}
    client.arm(1)

    with pytest.raises(BenchError, match="none of its scopes was invalidated"):
        client.received(second, [_event('{"user_1_0":5}')])
    with pytest.raises(BenchError, match="expected only 'user_0_1'"):
        client.received(first, [_event('{"user_0_2":5}')])

    client.expected = {0: "user_0_1"}
    client.received(first, [_event('{"user_0_1":5}', 5)])
    assert client.deliveries == 1
    assert client.pending == 0
    client.expected = {0: "user_0_1"}
    with pytest.raises(BenchError, match="not increasing"):
        client.received(first, [_event('{"user_0_1":5}', 5)])
    with pytest.raises(BenchError, match="none of its scopes"):  # a second event
        client.received(first, [_event('{"user_0_1":6}', 6)])


async def test_burst_checker_ticks_on_the_last_revision_only() -> None:
    client = BurstStreams("127.0.0.1", 1)
    stream = Stream(client, 0, b"")
    client.streams.append(stream)
    client.received(stream, [_event('{"dashboard_1":3}', 3)])
    client.aim(9)
    assert client.pending == 1
    client.received(stream, [_event('{"dashboard_1":5}'), _event('{"dashboard_1":9}')])
    assert client.pending == 0
    with pytest.raises(BenchError, match="past the last published"):
        client.received(stream, [_event('{"dashboard_1":10}')])
    with pytest.raises(BenchError, match="expected only"):
        client.received(stream, [_event('{"other":11}')])
