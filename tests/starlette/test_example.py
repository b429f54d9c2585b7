"""The FastAPI example and the README's FastAPI snippet run as written, and a server
that gets SIGTERM ends its open streams and exits."""

from __future__ import annotations

import re
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import httpx

from tests.support import SSEReader, revision_of, serve, stream_path, stream_tokens

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


async def vote_and_see_the_push(app: Any) -> None:
    """Render the poll, open its stream, vote, and read the push and the new tally."""
    async with serve(app) as base, httpx.AsyncClient(base_url=base, trust_env=False) as client:
        page = (await client.get("/")).text
        assert "0 votes" in page
        params = {"t": stream_tokens(page)}
        async with client.stream("GET", stream_path(page), params=params) as response:
            assert response.status_code == 200
            reader = SSEReader(response)
            opening = await reader.next()
            assert (await client.post("/vote")).status_code == 204
            event = await reader.next_event()
            assert revision_of(event.id) == event.signals["_stream"]["poll_1"]
            assert revision_of(event.id) > revision_of(opening.id)
        fragment = (await client.get("/tally")).text
        assert 'id="tally"' in fragment
        assert "1 votes" in fragment


async def test_the_fastapi_example_streams_a_vote() -> None:
    from examples.fastapi_app import create_app

    await vote_and_see_the_push(create_app())


async def test_the_readme_fastapi_example_streams_a_vote() -> None:
    text = README.read_text()
    section = text[text.index("## FastAPI and Starlette") :]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert code, "the README's FastAPI section has no python block"
    # A real module: FastAPI resolves handler annotations through sys.modules.
    module = types.ModuleType("readme_fastapi_example")
    sys.modules[module.__name__] = module
    exec(compile(code.group(1), str(README), "exec"), module.__dict__)
    await vote_and_see_the_push(module.__dict__["app"])


def test_streamui_starlette_imports_no_litestar() -> None:
    code = "import sys, streamui.starlette; print(sorted({m.split('.')[0] for m in sys.modules}))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert "'litestar'" not in result.stdout
    assert "'starlette'" in result.stdout
