"""The Datastar runtime for the browser tests, without a CDN.

`datastar_js()` returns a local copy of the Datastar build that streamui is tested with
(`streamui.DATASTAR_VERSION`). The browser tests cannot reach a CDN, so the file comes
from a Python package that ships it: the ``starhtml`` wheel bundles Datastar as a
self-contained ES module. The wheel is downloaded with pip, never installed, and the one
file is cached outside the repository (``$XDG_CACHE_HOME/streamui`` or
``~/.cache/streamui``), so later runs work offline. No copy of Datastar is committed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Final

from streamui import DATASTAR_VERSION

__all__ = ["DatastarUnavailableError", "cache_path", "datastar_js"]

SOURCE_PACKAGE: Final = "starhtml==0.7.0"
"""A wheel that ships Datastar v1.0.1 (its own ``datastar.js`` is a wrapper importing it)."""
SOURCE_MEMBER: Final = "starhtml/static/js/datastar-core.js"
SOURCE_PYTHON: Final = "3.12"
"""The wheel declares ``Requires-Python >=3.12``; pip downloads it for that version."""
DOWNLOAD_TIMEOUT: Final = 300.0


class DatastarUnavailableError(RuntimeError):
    """Datastar could not be obtained, or the file is not the expected version."""


def cache_path() -> Path:
    """Where the copy is kept between runs."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if Path(base).is_absolute() else Path.home() / ".cache"
    return root / "streamui" / f"datastar-{DATASTAR_VERSION}" / "datastar.js"


def datastar_js(cache: Path | None = None) -> Path:
    """A local Datastar (`DATASTAR_VERSION`), downloaded into *cache* on first use."""
    target = cache or cache_path()
    if target.is_file() and _banner() in _first_line(target.read_bytes()):
        return target
    source = _download()
    _check(source, f"{SOURCE_MEMBER} of {SOURCE_PACKAGE}")
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename, so a concurrent run never reads half a file.
    with tempfile.NamedTemporaryFile(dir=target.parent, prefix=".datastar-", delete=False) as tmp:
        tmp.write(source)
    Path(tmp.name).replace(target)
    _check(target.read_bytes(), str(target))
    return target


def _banner() -> str:
    return f"Datastar v{DATASTAR_VERSION}"


def _first_line(source: bytes) -> str:
    return source.split(b"\n", 1)[0].decode("utf-8", "replace")


def _check(source: bytes, where: str) -> None:
    first = _first_line(source)
    if _banner() not in first:
        raise DatastarUnavailableError(
            f"{where} is not {_banner()}: its first line is {first[:120]!r}. "
            f"If streamui moved to another Datastar version, update SOURCE_PACKAGE in {__file__} "
            "to a package release that ships it."
        )


def _download() -> bytes:
    """Download the wheel with pip (no install, no dependencies) and read the one file."""
    with tempfile.TemporaryDirectory(prefix="streamui-datastar-") as directory:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            SOURCE_PYTHON,
            "--disable-pip-version-check",
            "--no-input",
            "--quiet",
            "--dest",
            directory,
            SOURCE_PACKAGE,
        ]
        try:
            result = subprocess.run(
                command, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired:
            raise DatastarUnavailableError(
                f"downloading {SOURCE_PACKAGE} for its Datastar took over {DOWNLOAD_TIMEOUT:.0f}s"
            ) from None
        if result.returncode != 0:
            raise DatastarUnavailableError(
                f"could not download {SOURCE_PACKAGE} for its Datastar "
                f"(pip exited with {result.returncode}):\n{result.stderr.strip()[-2000:]}"
            )
        wheels = sorted(Path(directory).glob("*.whl"))
        if len(wheels) != 1:
            raise DatastarUnavailableError(
                f"pip download of {SOURCE_PACKAGE} left {[w.name for w in wheels]}, not one wheel"
            )
        with zipfile.ZipFile(wheels[0]) as wheel:
            try:
                return wheel.read(SOURCE_MEMBER)
            except KeyError:
                raise DatastarUnavailableError(f"{wheels[0].name} has no {SOURCE_MEMBER}") from None
