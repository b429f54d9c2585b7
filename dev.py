#!/usr/bin/env python3
"""Developer commands that work on a machine with nothing but Python >= 3.11.

    python3 dev.py demo      run the showcase on the in-process broker (http://127.0.0.1:8000)
    python3 dev.py demo-cluster
                             run it on two workers (:8000 and :8001) that share a managed
                             nats-server and a SQLite file; open one window on each
    python3 dev.py test [PYTEST ARGS]
                             lint, type-check (Python, and the package's JavaScript with
                             tsc, installed with npm) and run the whole test suite (or
                             what PYTEST ARGS select); in CI (or with STREAMUI_ALL_PYTHONS=1)
                             again on every other Python version pyproject.toml declares
                             that the machine has
    python3 dev.py bench     run the benchmarks (bench/)

Each command creates or refreshes the virtual environment in .venv (re-installing when
pyproject.toml changes), so a fresh clone needs no other step.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / "python"
STAMP = VENV / ".streamui-installed"
ALL_PYTHONS_ENV = "STREAMUI_ALL_PYTHONS"
"""Set (as CI is), `test` also runs the suite on every other Python version that
pyproject.toml declares and this machine has, each in its own .venv-3.X."""


def run(*command: str | Path) -> None:
    print("+", " ".join(str(part) for part in command), flush=True)
    result = subprocess.run([str(part) for part in command], cwd=ROOT, check=False)
    if result.returncode != 0:
        sys.exit(result.returncode)


def ensure_venv(where: Path = VENV, interpreter: Path | None = None) -> Path:
    """The environment at *where* (made with *interpreter*, default this Python),
    installed with the dev extra; returns its bin folder."""
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py runs on whatever python3 is
        sys.exit(f"streamui needs Python >= 3.11; this is {sys.version.split()[0]}")
    bin_dir = where / ("Scripts" if os.name == "nt" else "bin")
    python = bin_dir / "python"
    stamp = where / STAMP.name
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == wanted and python.exists():
        return bin_dir
    if not python.exists():
        print(f"+ creating {where.relative_to(ROOT)}", flush=True)
        if interpreter is None:
            venv.create(where, with_pip=True)
        else:
            run(interpreter, "-m", "venv", where)
    run(python, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    run(python, "-m", "pip", "install", "--quiet", "-e", ".[dev]")
    stamp.write_text(wanted)
    return bin_dir


def declared_pythons() -> list[str]:
    """The Python versions pyproject.toml declares in its classifiers, oldest first."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    prefix = "Programming Language :: Python :: "
    versions = {
        c.removeprefix(prefix)
        for c in project["classifiers"]
        if c.startswith(prefix) and c.removeprefix(prefix).count(".") == 1
    }
    return sorted(versions, key=lambda v: tuple(int(part) for part in v.split(".")))


def find_python(version: str) -> Path | None:
    """A working interpreter of *version* ("3.12") on this machine: ``python3.12`` on
    the PATH, else one installed with pyenv; None if there is none."""
    candidates = [Path(found)] if (found := shutil.which(f"python{version}")) else []
    pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    candidates += sorted(pyenv.glob(f"versions/{version}.*/bin/python{version}"), reverse=True)
    for candidate in candidates:
        try:
            result = subprocess.run(
                [str(candidate), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue  # (a pyenv shim for a version that is not enabled fails too)
        if result.returncode == 0 and result.stdout.strip() == version:
            return candidate
    return None


TYPESCRIPT = "typescript@5.9.3"
"""Checks the JavaScript the package ships (tsconfig.json); installed with npm into .venv."""
TSC = VENV / "node" / "node_modules" / ".bin" / "tsc"


def ensure_typescript() -> Path | None:
    """The TypeScript compiler, installed on first use; None without Node.js (outside CI)."""
    stamp = VENV / "node" / ".installed"
    if TSC.exists() and stamp.exists() and stamp.read_text() == TYPESCRIPT:
        return TSC
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
            sys.exit("checking the package's JavaScript needs Node.js and npm (CI=true)")
        print("! Node.js/npm not found: skipping the JavaScript type check", flush=True)
        return None
    # No package.json or lock file in the repository: the one tool, pinned here.
    run(
        npm,
        "install",
        "--prefix",
        VENV / "node",
        "--no-save",
        "--no-package-lock",
        "--no-audit",
        "--no-fund",
        "--loglevel=error",
        TYPESCRIPT,
    )
    stamp.write_text(TYPESCRIPT)
    return TSC


def demo() -> None:
    ensure_venv()
    run(PYTHON, "-m", "examples.showcase")


def demo_cluster() -> None:
    ensure_venv()
    command = [str(PYTHON), "-m", "examples.showcase.cluster"]
    print("+", " ".join(command), flush=True)
    # A session of its own: the terminal's Ctrl-C would also reach the nats-server the
    # launcher starts, which would quit before the workers. Forward it as SIGTERM
    # instead; the launcher stops the workers, then the NATS server.
    launcher = subprocess.Popen(command, cwd=ROOT, start_new_session=True)

    def stop(signum: int, frame: object) -> None:
        launcher.terminate()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    sys.exit(launcher.wait())


def test() -> None:
    ensure_venv()
    run(BIN / "ruff", "check", "src", "tests", "examples", "bench")
    run(BIN / "mypy", "--strict", "src", "tests", "examples", "bench")
    tsc = ensure_typescript()
    if tsc is not None:
        run(tsc, "--project", "tsconfig.json")
    # pytest exits 5 when it collected no test: that must fail, like any other error.
    run(BIN / "pytest", *sys.argv[2:])
    this = f"{sys.version_info[0]}.{sys.version_info[1]}"
    others = [version for version in declared_pythons() if version != this]
    if not (os.environ.get("CI") or os.environ.get(ALL_PYTHONS_ENV)):
        if others:
            print(
                f"(tested on Python {this}; CI also runs the suite on {', '.join(others)} "
                f"where the machine has them: {ALL_PYTHONS_ENV}=1 does it here)",
                flush=True,
            )
        return
    ran, missing = [this], []
    for version in others:
        interpreter = find_python(version)
        if interpreter is None:
            missing.append(version)
            continue
        bin_dir = ensure_venv(ROOT / f".venv-{version}", interpreter)
        run(bin_dir / "pytest", *sys.argv[2:])
        ran.append(version)
    absent = f"; not on this machine: {', '.join(missing)}" if missing else ""
    print(f"+ the test suite passed on Python {', '.join(ran)}{absent}", flush=True)


def bench() -> None:
    ensure_venv()
    run(PYTHON, "-m", "bench", *sys.argv[2:])


COMMANDS = {"demo": demo, "demo-cluster": demo_cluster, "test": test, "bench": bench}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(__doc__)
    COMMANDS[sys.argv[1]]()
