"""The wheel and the sdist, built as a release would build them, hold what users get.

The distributions are built once per session with ``python -m build --no-isolation``
(``build`` and ``hatchling`` come with the ``dev`` extra) from this checkout, then
read: the wheel holds the package, its type marker and its JavaScript and nothing else
(no tests, no caches, no third-party JavaScript); the metadata names the version from
``streamui.__version__``, the MIT license and its file; the sdist holds the sources to
build it again; and the wheel, installed on its own, serves the module it ships.
"""

from __future__ import annotations

import email.parser
import importlib.metadata
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import pytest

import streamui

if TYPE_CHECKING:
    from email.message import Message

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "streamui"
BUILD_TIMEOUT = 300.0


class Built:
    def __init__(self, wheel: Path, sdist: Path) -> None:
        self.wheel = wheel
        self.sdist = sdist

    def wheel_names(self) -> list[str]:
        with zipfile.ZipFile(self.wheel) as archive:
            return archive.namelist()

    def wheel_file(self, name: str) -> bytes:
        with zipfile.ZipFile(self.wheel) as archive:
            return archive.read(name)

    def sdist_names(self) -> list[str]:
        """The sdist's members, without its top folder (``streamui-<version>/``)."""
        with tarfile.open(self.sdist) as archive:
            return [
                str(PurePosixPath(*PurePosixPath(name).parts[1:]))
                for name in archive.getnames()
                if len(PurePosixPath(name).parts) > 1
            ]

    def metadata(self) -> Message:
        (name,) = [n for n in self.wheel_names() if n.endswith(".dist-info/METADATA")]
        return email.parser.BytesParser().parsebytes(self.wheel_file(name))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, f"python -m build failed:\n{result.stdout}\n{result.stderr}"
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return Built(wheel, sdist)


def package_files() -> set[str]:
    """What the package is made of in the source tree (paths under ``src/``)."""
    files = {
        str(path.relative_to(PACKAGE.parent).as_posix())
        for path in PACKAGE.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert "streamui/py.typed" in files
    assert "streamui/static/streamui.js" in files
    return files


def test_the_wheel_holds_the_package_and_nothing_else(built: Built) -> None:
    names = built.wheel_names()
    version = streamui.__version__
    dist_info = {
        n.removeprefix(f"streamui-{version}.dist-info/")
        for n in names
        if n.startswith(f"streamui-{version}.dist-info/")
    }
    assert set(names) - {f"streamui-{version}.dist-info/{n}" for n in dist_info} == (
        package_files()
    )
    assert dist_info == {"METADATA", "WHEEL", "RECORD", "entry_points.txt", "licenses/LICENSE"}
    # The JavaScript is streamui's own module, as in the tree; Datastar is never shipped.
    assert (
        built.wheel_file("streamui/static/streamui.js")
        == (PACKAGE / "static" / "streamui.js").read_bytes()
    )
    assert [n for n in names if n.endswith(".js")] == ["streamui/static/streamui.js"]
    # pytest finds the plugin (streamui.testing's fixtures) wherever the wheel is installed.
    entry_points = built.wheel_file(f"streamui-{version}.dist-info/entry_points.txt").decode()
    assert "[pytest11]\nstreamui = streamui.pytest_plugin" in entry_points


def test_the_metadata_names_the_version_license_and_requirements(built: Built) -> None:
    metadata = built.metadata()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert metadata["Name"] == "streamui"
    assert metadata["Version"] == streamui.__version__
    assert metadata["License-Expression"] == "MIT"
    assert metadata["License-File"] == "LICENSE"
    assert metadata["Requires-Python"] == project["requires-python"]
    requirements = metadata.get_all("Requires-Dist") or []
    for dependency in project["dependencies"]:
        name = dependency.split(">")[0].split("<")[0].split("=")[0]
        assert any(line.startswith(name) and "extra ==" not in line for line in requirements), (
            dependency,
            requirements,
        )
    assert set(metadata.get_all("Provides-Extra") or []) == set(project["optional-dependencies"])
    license_text = built.wheel_file(f"streamui-{streamui.__version__}.dist-info/licenses/LICENSE")
    assert license_text == (ROOT / "LICENSE").read_bytes()
    assert license_text.startswith(b"MIT License")


def test_the_sdist_holds_the_sources_to_build_it_again(built: Built) -> None:
    names = set(built.sdist_names())
    assert {"LICENSE", "README.md", "CHANGELOG.md", "pyproject.toml", "PKG-INFO"} <= names
    assert {f"src/{name}" for name in package_files()} <= names
    unwanted = [
        name
        for name in names
        if name.split("/")[0] in {"tests", "bench", "examples", "build", "dist", "docs", ".venv"}
        or "__pycache__" in name
        or name.endswith((".pyc", ".pyo"))
        or "node_modules" in name
    ]
    assert unwanted == []


def test_the_installed_wheel_serves_the_module_it_ships(built: Built, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--target", str(target), str(built.wheel)],
        check=True,
        timeout=BUILD_TIMEOUT,
    )  # fmt: skip
    # The package is imported from the installed wheel (its dependencies from this
    # environment): its JavaScript is found as package data, not in the source tree.
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]); import streamui, streamui.client; "
        "assert streamui.__file__.startswith(sys.argv[1]), streamui.__file__; "
        "sys.stdout.buffer.write(streamui.client.source())"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(target)],
        capture_output=True,
        check=True,
        timeout=BUILD_TIMEOUT,
        cwd=tmp_path,
    )
    assert result.stdout == (PACKAGE / "static" / "streamui.js").read_bytes()
    assert (target / "streamui" / "py.typed").is_file()


def test_the_version_lives_in_one_place() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project
    assert project["dynamic"] == ["version"]
    # The installed (editable) distribution reads it from streamui/__init__.py too.
    assert importlib.metadata.version("streamui") == streamui.__version__
