"""Smoke tests of ``python -m bench``: every server, under uvicorn and granian, with a few
streams and rounds; the reports and the plot. Nothing here asserts on timing.

Granian and nats-server come with the ``dev`` extra: without them these tests skip on a
developer machine and fail in CI (``CI`` set), where a missing one is a broken setup.
"""

from __future__ import annotations

import importlib.util
import os
from typing import TYPE_CHECKING

import pytest
import uvloop
from bench.__main__ import main
from bench.process import ASGI_SERVERS
from bench.report import cpu_ratio, markdown_report, run_ratios, scaling_report
from bench.run import SERVER_NAMES, Result, Settings, measure_all

from streamui.errors import ConfigurationError
from streamui.nats_server import find_nats_server

if TYPE_CHECKING:
    from pathlib import Path

STREAMS = 20
ROUNDS = 2
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _require_tools() -> None:
    """Skip without granian or nats-server, except in CI, where that fails the test."""
    missing = []
    if importlib.util.find_spec("granian") is None:
        missing.append("granian")
    try:
        find_nats_server()
    except ConfigurationError:
        missing.append("nats-server")
    if not missing:
        return
    message = f"the benchmark's smoke tests need {' and '.join(missing)} (the dev extra)"
    if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _result(
    name: str, asgi: str, cpu_seconds: float, *, streams: int = 10, p99: float = 0.01
) -> Result:
    return Result(
        name=name,
        streams=streams,
        rounds=2,
        cpu_seconds=cpu_seconds,
        rss_growth_kb=100,
        latencies=(p99 / 2,) * 19 + (p99,),
        asgi=asgi,
    )


def test_every_server_delivers_every_event_under_both_asgi_servers(tmp_path: Path) -> None:
    _require_tools()
    settings = Settings(
        streams=STREAMS, rounds=ROUNDS, round_timeout=30, open_timeout=30, log_dir=tmp_path
    )

    results = uvloop.run(measure_all(SERVER_NAMES, settings, on=ASGI_SERVERS))

    assert [(r.asgi, r.name) for r in results] == [
        (asgi, name) for asgi in ASGI_SERVERS for name in SERVER_NAMES
    ]
    for result in results:
        # One latency per stream and timed round: every stream got every round's event.
        assert len(result.latencies) == STREAMS * ROUNDS, (result.asgi, result.name)
        assert result.cpu_seconds > 0, (result.asgi, result.name)
    for asgi in ASGI_SERVERS:
        floor = next(r for r in results if r.asgi == asgi and r.name == "raw")
        for result in (r for r in results if r.asgi == asgi):
            expected = result.cpu_us_per_delivery / floor.cpu_us_per_delivery
            assert cpu_ratio(result, results) == pytest.approx(expected)
    report = markdown_report(results, pinned=False)
    for asgi in ASGI_SERVERS:
        table = report.split(f"#### {asgi} ")[1].split("####")[0]
        rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
        assert [row.split(" | ")[0].removeprefix("| ") for row in rows[1:]] == list(SERVER_NAMES)
        assert rows[1].split(" | ")[2] == "1.00x"  # raw against itself
    assert "app process's only" in report  # streamui-nats: what its CPU counts


def test_main_writes_both_reports_and_the_plot(tmp_path: Path) -> None:
    _require_tools()
    outputs = {
        "--output": tmp_path / "results.md",
        "--scaling-output": tmp_path / "scaling.md",
        "--plot": tmp_path / "scaling.png",
        "--log-dir": tmp_path / "logs",
    }
    arguments = [
        "--streams", "20", "--rounds", "5", "--servers", "raw,streamui", "--no-pin",
        "--scale", "10,20", "--scale-deliveries", "50",
    ]  # fmt: skip
    for flag, path in outputs.items():
        arguments += [flag, str(path)]

    assert main(arguments) == 0

    results = outputs["--output"].read_text()
    assert "#### uvicorn" in results
    assert "#### granian" in results
    scaling = outputs["--scaling-output"].read_text()
    for asgi in ASGI_SERVERS:
        for name in ("raw", "streamui"):
            for streams in (10, 20):
                assert f"| {asgi} | {name} | {streams} | 5 |" in scaling
    assert outputs["--plot"].read_bytes().startswith(PNG_MAGIC)


def test_report_shows_the_spread_of_repeated_runs() -> None:
    runs = [
        [_result("raw", "uvicorn", 1.0, p99=0.010), _result("streamui", "uvicorn", 1.2)],
        [_result("raw", "uvicorn", 2.0, p99=0.020), _result("streamui", "uvicorn", 3.0)],
    ]
    raw = Result.combine([run[0] for run in runs])
    streamui = Result.combine([run[1] for run in runs])
    results = [raw, streamui]

    assert raw.runs == 2
    assert len(raw.run_results) == 2
    assert run_ratios(streamui, results) == pytest.approx([1.2, 1.5])
    assert cpu_ratio(streamui, results) == pytest.approx(4.2 / 3.0)
    report = markdown_report(results, pinned=True)
    assert "2 interleaved runs pooled" in report
    assert "| 1.20x\N{EN DASH}1.50x |" in report
    assert "| 10.0\N{EN DASH}20.0 |" in report  # raw's p99 per run, ms


def test_ratios_use_the_raw_row_of_the_same_asgi_server_and_stream_count() -> None:
    results = [
        _result("raw", "uvicorn", 1.0),
        _result("streamui", "uvicorn", 2.0),
        _result("raw", "granian", 4.0),
        _result("streamui", "granian", 2.0),
        _result("raw", "granian", 1.0, streams=20),
        _result("streamui", "granian", 3.0, streams=20),
    ]
    assert [cpu_ratio(result, results) for result in results] == pytest.approx(
        [1.0, 2.0, 1.0, 0.5, 1.0, 3.0]
    )
    assert cpu_ratio(_result("channels", "hypercorn", 1.0), results) is None
    report = scaling_report(results, pinned=False)
    assert "| granian | streamui | 20 | 2 | 75000.0 | 3.00x |" in report


def test_plot_writes_a_png(tmp_path: Path) -> None:
    from bench.plot import plot_scaling

    results = [
        _result(name, asgi, cpu * streams / 1000, streams=streams, p99=streams / 1e5)
        for name, cpu in (("raw", 1.0), ("streamui", 1.5), ("channels", 2.5))
        for asgi in ASGI_SERVERS
        for streams in (1000, 2000, 5000, 10000)
    ]
    path = tmp_path / "figures" / "scaling.png"

    plot_scaling(results, path)

    assert path.read_bytes().startswith(PNG_MAGIC)
    assert path.stat().st_size > 10_000
