"""The README's usage example runs as written: render, stream, vote, see the push."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path
from typing import Any

import httpx

from tests.support import SSEReader, revision_of, serve, stream_path, stream_tokens

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_code(section: str = "Usage", index: int = 0) -> str:
    """The *index*-th python block of a README section (default: the poll app)."""
    text = README.read_text()
    start = text.index(f"## {section}\n")
    end = text.find("\n## ", start + 1)
    blocks = re.findall(r"```python\n(.*?)```", text[start:end], re.DOTALL)
    assert len(blocks) > index, f"the README's {section} section has no python block {index}"
    return str(blocks[index])


def readme_example() -> dict[str, Any]:
    # A real module: Litestar resolves handler annotations through sys.modules.
    module = types.ModuleType("readme_example")
    sys.modules[module.__name__] = module
    exec(compile(readme_code(), str(README), "exec"), module.__dict__)
    return module.__dict__


async def test_readme_usage_example_streams_a_vote() -> None:
    example = readme_example()
    async with serve(example["app"]) as base, httpx.AsyncClient(base_url=base) as client:
        page = (await client.get("/")).text
        assert "0 votes" in page
        tokens = stream_tokens(page)
        assert len(tokens) == 1
        async with client.stream("GET", stream_path(page), params={"t": tokens}) as response:
            assert response.status_code == 200
            reader = SSEReader(response)
            opening = await reader.next()
            assert opening.id is not None
            assert opening.event is None
            assert (await client.post("/vote")).status_code == 204
            event = await reader.next_event()
            assert event.event == "datastar-patch-signals"
            assert revision_of(event.id) == event.signals["_stream"]["poll_1"]
            assert revision_of(event.id) > revision_of(opening.id)
        fragment = (await client.get("/tally")).text
        assert 'id="tally"' in fragment
        assert "1 votes" in fragment
