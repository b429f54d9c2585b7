"""`tests.e2e.datastar`: the local Datastar is the expected version, or a clear failure."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Final

import pytest

from streamui import DATASTAR_VERSION
from tests.e2e import datastar
from tests.e2e.datastar import DatastarUnavailableError, datastar_js

ROOT: Final = Path(__file__).resolve().parents[2]


def test_the_file_the_browser_tests_load_is_the_tested_datastar(datastar_file: Path) -> None:
    first_line = datastar_file.read_text(encoding="utf-8").partition("\n")[0]
    assert f"Datastar v{DATASTAR_VERSION}" in first_line


def test_no_copy_of_datastar_is_committed() -> None:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--", "*.js", "*.mjs"],
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.split(b"\0")
    files = [ROOT / name.decode() for name in listed if name]
    # Datastar's bundles open with their banner ("// Datastar v1.0.1"); streamui's own
    # module only talks about Datastar.
    committed = [
        path
        for path in files
        if path.is_file() and re.search(rb"Datastar v\d", path.read_bytes()[:200])
    ]
    assert committed == [], "Datastar comes from tests/e2e/datastar.py; do not commit a copy"


def test_a_good_cached_copy_is_used_without_downloading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cached = tmp_path / "datastar.js"
    cached.write_text(f"// Datastar v{DATASTAR_VERSION}\nexport {{}}\n")

    def no_download() -> bytes:
        raise AssertionError("downloaded although the cache was good")

    monkeypatch.setattr(datastar, "_download", no_download)
    assert datastar_js(cached) == cached


def test_a_wrong_file_is_replaced_or_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cached = tmp_path / "cache" / "datastar.js"
    cached.parent.mkdir()
    cached.write_text("// Datastar v0.21.4\n")
    good = f"// Datastar v{DATASTAR_VERSION} (patched)\nexport {{}}\n".encode()
    monkeypatch.setattr(datastar, "_download", lambda: good)
    assert datastar_js(cached).read_bytes() == good

    cached.write_text("// Datastar v0.21.4\n")
    monkeypatch.setattr(datastar, "_download", lambda: b"// StarHTML wrapper\nimport x\n")
    with pytest.raises(
        DatastarUnavailableError,
        match=rf"datastar-core\.js of starhtml==0\.7\.0 is not Datastar v{DATASTAR_VERSION}: "
        r"its first line is '// StarHTML wrapper'",
    ):
        datastar_js(cached)
    assert cached.read_text() == "// Datastar v0.21.4\n"  # left as it was
