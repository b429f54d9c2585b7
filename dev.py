#!/usr/bin/env python3
"""Developer commands that work on a machine with nothing but Python >= 3.11.

    python3 dev.py demo      run the showcase on the in-process broker (http://127.0.0.1:8000)
    python3 dev.py demo-cluster
                             run it on two workers (:8000 and :8001) that share a managed
                             nats-server and a SQLite file; open one window on each
    python3 dev.py test      lint, type-check (Python, and the package's JavaScript with
                             tsc, installed with npm) and run the whole test suite
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
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / "python"
STAMP = VENV / ".streamui-installed"


def run(*command: str | Path) -> None:
    print("+", " ".join(str(part) for part in command), flush=True)
    result = subprocess.run([str(part) for part in command], cwd=ROOT, check=False)
    if result.returncode != 0:
        sys.exit(result.returncode)


def ensure_venv() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py runs on whatever python3 is
        sys.exit(f"streamui needs Python >= 3.11; this is {sys.version.split()[0]}")
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted and PYTHON.exists():
        return
    if not PYTHON.exists():
        print(f"+ creating {VENV.relative_to(ROOT)}", flush=True)
        venv.create(VENV, with_pip=True)
    run(PYTHON, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    run(PYTHON, "-m", "pip", "install", "--quiet", "-e", ".[dev]")
    STAMP.write_text(wanted)


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


def bench() -> None:
    ensure_venv()
    run(PYTHON, "-m", "bench", *sys.argv[2:])


COMMANDS = {"demo": demo, "demo-cluster": demo_cluster, "test": test, "bench": bench}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(__doc__)
    COMMANDS[sys.argv[1]]()
