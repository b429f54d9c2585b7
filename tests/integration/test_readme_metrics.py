"""The README's Metrics example runs as written: Litestar's /metrics carries streamui's."""

from __future__ import annotations

import re
import sys
import types
from typing import Any

import httpx
from prometheus_client import REGISTRY

from tests.integration.test_readme import README
from tests.support import SSEReader, serve


def metrics_example() -> dict[str, Any]:
    text = README.read_text()
    section = text[text.index("## Metrics") : text.index("## Performance")]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert code, "the README's Metrics section has no python block"
    # A real module: Litestar resolves handler annotations through sys.modules.
    module = types.ModuleType("readme_metrics_example")
    sys.modules[module.__name__] = module
    exec(compile(code.group(1), str(README), "exec"), module.__dict__)
    return module.__dict__


def sample(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not in:\n{text}"
    return float(match.group(1))


async def test_litestars_metrics_endpoint_serves_streamuis_metrics_too() -> None:
    example = metrics_example()
    try:
        async with serve(example["app"]) as base, httpx.AsyncClient(base_url=base) as client:
            first = (await client.get("/metrics")).text
            assert sample(first, "streamui_open_streams") == 0
            broker = example["streams"].broker
            # A stream of the app's own, as Connect() opens it.
            signer = example["streams"].endpoint.signer
            token = signer.sign(("poll:1",))
            path = example["streams"].config.path
            async with client.stream("GET", path, params={"t": token}) as response:
                assert response.status_code == 200
                reader = SSEReader(response)
                await reader.next()  # the opening frame: the stream is open
                await broker.invalidate("poll:1")
                await reader.next_event()
                during = (await client.get("/metrics")).text
            assert sample(during, "streamui_open_streams") == 1
            assert sample(during, "streamui_frames_written_total") == 1
            assert sample(during, "streamui_lag_seconds_count") == 1
            # Litestar's own request metrics, on the same page.
            assert "litestar_requests_total" in during
    finally:
        REGISTRY.unregister(example["collector"])
