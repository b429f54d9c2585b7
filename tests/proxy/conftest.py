"""The test app behind a real nginx, started as a child process for each test.

`proxied(read_timeout=..., **settings)` serves ``make_app(StreamConfig(**settings))``
under uvicorn (as the integration tests do), starts nginx in front of it with
``nginx.conf.template`` and returns a `Live` whose client talks to nginx only. nginx
runs in the foreground (``daemon off; master_process off;``) with its pid file, logs
and temporary files in the test's temporary directory, and is terminated when the
test ends, whatever happened.

nginx comes from the system (Debian: ``apt-get install nginx``). Without it the tests
skip on a developer machine and fail in CI (``CI=true``), like the browser tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import socket
import string
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

import httpx
import pytest

from tests.integration.conftest import running
from tests.support import WAIT

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from tests.integration.conftest import Live

TEMPLATE: Final = Path(__file__).with_name("nginx.conf.template")


class _Template(string.Template):
    delimiter = "@"  # nginx uses $ for its own variables


def find_nginx() -> str:
    """The system nginx's path; else skip (developer machine) or fail (CI)."""
    path = shutil.which("nginx")
    if path is None and Path("/usr/sbin/nginx").is_file():  # sbin is not on every PATH
        path = "/usr/sbin/nginx"
    if path is not None:
        return path
    reason = "proxy tests need nginx (Debian: apt-get install nginx)"
    if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
        pytest.fail(f"{reason}; CI=true, so this is a failure, not a skip", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def render_config(
    root: Path, *, port: int, upstream_port: int, read_timeout: str, location_extra: str = ""
) -> str:
    """``nginx.conf.template`` filled in; *location_extra* adds directives to the
    location block (only the control tests do that)."""
    text = _Template(TEMPLATE.read_text()).substitute(
        root=root, port=port, upstream_port=upstream_port, read_timeout=read_timeout
    )
    if location_extra:
        anchor = f"proxy_read_timeout {read_timeout};"
        assert anchor in text, text
        text = text.replace(anchor, f"{anchor}\n            {location_extra}")
    return text


def write_config(
    root: Path, *, port: int, upstream_port: int, read_timeout: str, location_extra: str = ""
) -> Path:
    """Create *root* and write ``nginx.conf`` in it; return its path."""
    root.mkdir(parents=True, exist_ok=True)
    config = root / "nginx.conf"
    config.write_text(
        render_config(
            root,
            port=port,
            upstream_port=upstream_port,
            read_timeout=read_timeout,
            location_extra=location_extra,
        )
    )
    return config


@contextlib.asynccontextmanager
async def run_nginx(
    nginx: str, root: Path, *, upstream_port: int, read_timeout: str, location_extra: str = ""
) -> AsyncIterator[str]:
    """Run nginx in front of ``127.0.0.1:<upstream_port>``; yield its base URL."""
    port = free_port()
    config = write_config(
        root,
        port=port,
        upstream_port=upstream_port,
        read_timeout=read_timeout,
        location_extra=location_extra,
    )
    error_log = root / "error.log"
    with (root / "output.log").open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            nginx, "-p", str(root), "-c", str(config), "-e", str(error_log),
            stdin=asyncio.subprocess.DEVNULL, stdout=output, stderr=output,
        )  # fmt: skip
    try:
        await _wait_listening(process, port, root)
        yield f"http://127.0.0.1:{port}"
    finally:
        if process.returncode is None:
            process.terminate()  # SIGTERM: nginx's fast shutdown, open streams are cut
            try:
                await asyncio.wait_for(process.wait(), WAIT)
            except TimeoutError:
                process.kill()
                await process.wait()


async def _wait_listening(process: asyncio.subprocess.Process, port: int, root: Path) -> None:
    try:
        async with asyncio.timeout(WAIT):
            while True:
                if process.returncode is not None:
                    raise AssertionError(
                        f"nginx exited with code {process.returncode}{_logs(root)}"
                    )
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    await asyncio.sleep(0.02)
                    continue
                writer.close()
                await writer.wait_closed()
                return
    except TimeoutError:
        raise AssertionError(f"nginx did not listen on port {port}{_logs(root)}") from None


def _logs(root: Path) -> str:
    parts = []
    for name in ("output.log", "error.log"):
        with contextlib.suppress(OSError):
            if text := (root / name).read_text(errors="replace").strip():
                parts.append(f"\n--- {name}\n{text[-3000:]}")
    return "".join(parts)


class Proxied(Protocol):
    async def __call__(
        self, *, read_timeout: str = ..., location_extra: str = ..., **settings: Any
    ) -> Live: ...


@pytest.fixture
async def proxied(tmp_path: Path) -> AsyncIterator[Proxied]:
    """Start the test app behind nginx; the returned `Live` talks to nginx only."""
    nginx = find_nginx()
    async with contextlib.AsyncExitStack() as stack:
        count = 0

        async def start(
            *, read_timeout: str = "2s", location_extra: str = "", **settings: Any
        ) -> Live:
            nonlocal count
            count += 1
            live = await stack.enter_async_context(running(**settings))
            upstream_port = httpx.URL(live.base_url).port
            assert upstream_port is not None
            base_url = await stack.enter_async_context(
                run_nginx(
                    nginx,
                    tmp_path / f"nginx-{count}",
                    upstream_port=upstream_port,
                    read_timeout=read_timeout,
                    location_extra=location_extra,
                )
            )

            async def record(response: httpx.Response) -> None:
                live.statuses.append(response.status_code)  # a 502 or 504 fails the test

            client = await stack.enter_async_context(
                httpx.AsyncClient(
                    base_url=base_url,
                    timeout=WAIT,
                    trust_env=False,
                    event_hooks={"response": [record]},
                )
            )
            return dataclasses.replace(live, base_url=base_url, client=client)

        yield start
