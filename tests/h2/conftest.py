"""Fixtures for the HTTP/2 tests: the app under a real hypercorn speaking HTTP/2 over TLS
(or plain HTTP/1.1, for contrast), and Chromium opening many tabs of it.

- `certificate`: a throwaway CA and a certificate for ``127.0.0.1``/``localhost`` made
  with ``trustme`` in a temporary directory; no key is committed.
- `serve(tls=..., share_across_tabs=...)`: starts ``hypercorn 'tests.h2.app:build_app()'`` (see
  `tests.h2.app`) on a free port as a child process in a process group of its own, waits
  until it answers, and kills the whole group after the test; any ERROR or traceback in
  its output then fails the test. With ``tls=True`` hypercorn is given ``--certfile`` and
  ``--keyfile`` and offers ``h2`` by ALPN; without, it speaks HTTP/1.1 (browsers never
  use cleartext HTTP/2).
- `browser`: the system Chromium with the browser tests' arguments (`tests.e2e.conftest`)
  and ``--ignore-certificate-errors``; without Chromium the tests skip on a developer
  machine and fail in CI (``CI=true``).
- `tabs`: opens pages in ONE browser context (one browser profile: one connection pool),
  each with a CDP session that reports every response's protocol and connection; after
  the test, any console error or uncaught page error fails it.
"""

from __future__ import annotations

import asyncio
import ssl
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

import httpx
import pytest
import trustme
from playwright.async_api import expect

from tests.e2e import conftest as e2e
from tests.e2e.conftest import SEE, VIEWPORT, Console, _is_stream
from tests.h2.app import COUNTS_PATH, DATASTAR_ENV, SHARE_ENV
from tests.matrix.servers import free_port, kill_group, problems_in, spawn, until_answers

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from playwright.async_api import Browser, BrowserContext, CDPSession, Page, Request, Response

BIN: Final = Path(sys.executable).parent
APP: Final = "tests.h2.app:build_app()"
STREAM_PATH: Final = "/streamui/stream"
WAIT: Final = SEE / 1000
"""Seconds to wait for anything the tests wait on (generous: a noisy machine)."""

expect.set_options(timeout=SEE)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "shared_tabs: tests of share_across_tabs=True (one stream per browser); they need "
        "the shared-mode JavaScript",
    )


# -- the certificate ---------------------------------------------------------------------


@dataclass(frozen=True)
class Certificate:
    """PEM files of a throwaway CA and of the server's certificate, signed by it."""

    ca: Path
    cert: Path
    key: Path

    def client_context(self) -> ssl.SSLContext:
        """An SSL context for the test's own client, trusting the CA."""
        return ssl.create_default_context(cafile=str(self.ca))


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    directory = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    files = Certificate(directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    ca.cert_pem.write_to_path(str(files.ca))
    issued.cert_chain_pems[0].write_to_path(str(files.cert))
    for extra in issued.cert_chain_pems[1:]:
        extra.write_to_path(str(files.cert), append=True)
    issued.private_key_pem.write_to_path(str(files.key))
    return files


# -- the server --------------------------------------------------------------------------


@dataclass
class Counts:
    """What ``GET /debug/counts`` says: the streams the server holds now, and every
    request it has received (``path``, ``query``, ``http_version``, ``client_port``,
    ``user_agent``)."""

    watchers: int
    requests: list[dict[str, Any]]

    @property
    def from_browser(self) -> list[dict[str, Any]]:
        """The requests Chromium made (not the test's own invalidations)."""
        return [request for request in self.requests if "Chrome" in request["user_agent"]]

    def to(self, path: str) -> list[dict[str, Any]]:
        return [request for request in self.from_browser if request["path"] == path]


@dataclass
class AppServer:
    """``hypercorn 'tests.h2.app:build_app()'`` on 127.0.0.1:<port>, as a child process."""

    port: int
    log: Path
    certificate: Certificate | None
    share_across_tabs: bool
    process: asyncio.subprocess.Process | None = None
    client: httpx.AsyncClient = field(init=False)

    def __post_init__(self) -> None:
        verify: ssl.SSLContext | bool = (
            self.certificate.client_context() if self.certificate else True
        )
        self.client = httpx.AsyncClient(
            base_url=self.base_url, verify=verify, timeout=WAIT, trust_env=False
        )

    @property
    def base_url(self) -> str:
        scheme = "https" if self.certificate else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def argv(self) -> list[str]:
        tls = (
            [f"--certfile={self.certificate.cert}", f"--keyfile={self.certificate.key}"]
            if self.certificate
            else []
        )
        return [str(BIN / "hypercorn"), APP, f"--bind=127.0.0.1:{self.port}", *tls]

    async def start(self, datastar: Path) -> None:
        env = {DATASTAR_ENV: str(datastar), SHARE_ENV: "1" if self.share_across_tabs else "0"}
        self.process = await spawn(self.argv(), self.log, env)
        await until_answers(
            self.process, "hypercorn", self.client, COUNTS_PATH, lambda: self.output
        )

    async def counts(self) -> Counts:
        response = await self.client.get(COUNTS_PATH)
        response.raise_for_status()
        body = response.json()
        return Counts(watchers=body["watchers"], requests=body["requests"])

    async def until(self, what: str, check: Callable[[Counts], bool]) -> Counts:
        """Poll the counts until *check* holds (at most WAIT seconds); return them."""
        deadline = time.monotonic() + WAIT
        while True:
            counts = await self.counts()
            if check(counts):
                return counts
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the server did not reach {what!r} within {WAIT} s: "
                    f"{counts.watchers} streams held"
                )
            await asyncio.sleep(0.05)  # polling another process's state

    async def until_streams(self, count: int) -> Counts:
        return await self.until(f"{count} streams held", lambda counts: counts.watchers == count)

    async def invalidate(self, scope: str) -> None:
        response = await self.client.post("/invalidate", params={"scope": scope})
        assert response.status_code == 204, (response.status_code, response.text)

    async def kill(self) -> None:
        """Kill the whole process group, if anything of it is left; reap the main process."""
        await self.client.aclose()
        await kill_group(self.process)


class Serve(Protocol):
    async def __call__(self, *, tls: bool, share_across_tabs: bool) -> AppServer: ...


@pytest.fixture
async def serve(
    certificate: Certificate, datastar_file: Path, tmp_path: Path
) -> AsyncIterator[Serve]:
    """Start the app under hypercorn; every server is killed after the test, and any
    ERROR or traceback in its output fails the test."""
    started: list[AppServer] = []

    async def start(*, tls: bool, share_across_tabs: bool) -> AppServer:
        log = tmp_path / f"hypercorn-{len(started)}.log"
        server = AppServer(free_port(), log, certificate if tls else None, share_across_tabs)
        started.append(server)
        await server.start(datastar_file)
        return server

    try:
        yield start
    finally:
        for server in started:
            await server.kill()
    problems = [line for server in started for line in problems_in(server.output)]
    assert not problems, "\n".join(problems)


# -- the browser -------------------------------------------------------------------------


# The system Chromium, as in the e2e tests; contexts ignore the test certificate's issuer
# (ignore_https_errors).
browser = e2e.browser
chromium_executable = e2e.chromium_executable
datastar_file = e2e.datastar_file


@dataclass(frozen=True)
class Seen:
    """One response as Chromium's network stack reports it (CDP ``Network``)."""

    url: str
    protocol: str
    connection_id: int


@dataclass
class Tab:
    """One page of the shared context, with the responses its CDP session reported."""

    number: int
    page: Page
    cdp: CDPSession
    responses: list[Seen] = field(default_factory=list)
    requested: list[Request] = field(default_factory=list)
    _request_seen: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        # From the start: Playwright subscribes to request events asynchronously, so a
        # listener added just before an action could miss what the action requests.
        def record(request: Request) -> None:
            self.requested.append(request)
            self._request_seen.set()

        self.page.on("request", record)

    async def until_requested(self, part: str) -> Request:
        """Wait until the page has issued a request whose URL contains *part* (the
        browser's side: the request may still be waiting for a connection)."""
        while True:
            for request in self.requested:
                if part in request.url:
                    return request
            self._request_seen.clear()
            await self._request_seen.wait()

    async def open(self, url: str) -> Response:
        """Load *url* and wait until its stream has answered; return that response."""
        async with self.page.expect_response(_is_stream) as opened:
            await self.page.goto(url)
        response = await opened.value
        assert response.status == 200, (response.status, await response.text())
        return response

    async def navigation_protocol(self) -> str:
        protocol: str = await self.page.evaluate(
            "performance.getEntriesByType('navigation')[0].nextHopProtocol"
        )
        return protocol

    async def visibility(self) -> str:
        state: str = await self.page.evaluate("document.visibilityState")
        return state

    def stream_responses(self) -> list[Seen]:
        return [seen for seen in self.responses if STREAM_PATH + "?" in seen.url]


@dataclass
class Tabs:
    """Pages opened in one browser context: one profile, so one connection pool."""

    context: BrowserContext
    console: Console
    opened: list[Tab] = field(default_factory=list)

    async def new(self) -> Tab:
        page = await self.context.new_page()
        cdp = await self.context.new_cdp_session(page)
        tab = Tab(len(self.opened) + 1, page, cdp)

        def on_response(params: dict[str, Any]) -> None:
            response = params["response"]
            tab.responses.append(
                Seen(response["url"], response.get("protocol", ""), response["connectionId"])
            )

        cdp.on("Network.responseReceived", on_response)
        await cdp.send("Network.enable")
        self.opened.append(tab)
        return tab


@pytest.fixture
async def tabs(browser: Browser, serve: Serve) -> AsyncIterator[Tabs]:
    """A browser context to open tabs in; checks their consoles after the test.

    Depends on `serve` so that the browser closes before the servers are killed.
    """
    context = await browser.new_context(viewport=VIEWPORT, ignore_https_errors=True)
    context.set_default_timeout(SEE)
    console = Console()
    console.watch("tabs", context)
    try:
        yield Tabs(context, console)
    finally:
        await context.close()
    assert not console.errors, "\n".join(line[:300] for line in console.errors)
