"""What the matrix found, per server and variant, written to ``build/matrix-results.md``.

Each check is recorded as it runs (`Checks.check`), so one failing check does not hide
the others: the test runs every check, then fails with all the failures at once.
"""

from __future__ import annotations

import contextlib
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["CHECKS", "Checks", "Results", "Row"]

CHECKS: Final = {
    "a": "events",
    "b": "encoding",
    "c": "release",
    "d": "SIGTERM",
    "e": "resume",
    "f": "SIGINT",
}
"""The checks of every server x variant, in the order they run."""

NOT_RUN: Final = "not run"


@dataclass
class Row:
    """The outcome of every check for one server x variant."""

    server: str
    variant: str
    checks: dict[str, str] = field(default_factory=lambda: dict.fromkeys(CHECKS, NOT_RUN))
    exits: dict[str, str] = field(default_factory=dict)
    """Per signal: seconds from the signal to the server's exit, and its exit code."""
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return all(outcome == "pass" for outcome in self.checks.values())


class Checks:
    """Records the outcome of each check of one `Row`."""

    def __init__(self, row: Row) -> None:
        self.row = row
        self.failures: list[str] = []

    @contextlib.contextmanager
    def check(self, name: str) -> Iterator[None]:
        """Run the block as check *name*: an exception fails the check (and is kept for
        the end of the test) instead of stopping the test."""
        try:
            yield
        except Exception as error:
            message = f"{type(error).__name__}: {error}".strip()
            if isinstance(error, TimeoutError):
                message += f" timed out at {_where(error)}"
            self.row.checks[name] = "FAIL"
            failure = f"({name}) {CHECKS[name]}: {message}"
            self.failures.append(failure)
            self.row.notes.append(failure)
        else:
            self.row.checks[name] = "pass"

    def raise_failures(self) -> None:
        if self.failures:
            raise AssertionError(
                f"{self.row.server}-{self.row.variant}: "
                + "\n\n".join(self.failures)
                + "\n\n(server logs in build/matrix-logs/)"
            )


def _where(error: BaseException) -> str:
    """The innermost line of the matrix's own code in *error*'s traceback."""
    frames = [
        frame
        for frame in traceback.extract_tb(error.__traceback__)
        if "/tests/matrix/" in frame.filename
    ]
    if not frames:
        return "?"
    frame = frames[-1]
    return f"{Path(frame.filename).name}:{frame.lineno} ({frame.line})"


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def row(self, server: str, variant: str) -> Row:
        row = Row(server, variant)
        self.rows.append(row)
        return row

    def notes(self) -> Iterator[tuple[Row, str]]:
        for row in self.rows:
            for note in row.notes:
                yield row, note

    def markdown(self) -> str:
        head = ["server", "variant", *(f"{key} {name}" for key, name in CHECKS.items())]
        head += ["SIGTERM exit", "SIGINT exit", "time"]
        lines = [
            "# streamui compatibility matrix",
            "",
            "Checks: (a) opening id-only frame with `retry: 1000`, heartbeats, and an",
            "invalidation arriving as a datastar-patch-signals event whose id is the",
            "revision, while the stream is open; (b) the page is compressed and the stream",
            "is not (or is, with `StreamConfig(compress=True)`), decoded incrementally;",
            "(c) a disconnect releases every watcher and subscription, and the request",
            "still ends its body (a last message through the middleware); (d) SIGTERM to the",
            "main process with a stream open: the body completes cleanly with",
            "`retry:` 1000..5000 ms, the server exits in < 2 s (graceful timeout 20 s),",
            "no ERROR or Traceback in its output; (e) the restarted server on the same port",
            "pushes every watched scope to a reconnect with `Last-Event-ID`; (f) as (d),",
            "with SIGINT, on the restarted server.",
            "",
            "Exit columns: seconds from the signal to the main process's exit (exit code).",
            "",
            "| " + " | ".join(head) + " |",
            "|" + "---|" * len(head),
        ]
        for row in self.rows:
            cells = [row.server, row.variant, *row.checks.values()]
            cells += [row.exits.get("SIGTERM", "-"), row.exits.get("SIGINT", "-")]
            cells.append(f"{row.seconds:.1f} s")
            lines.append("| " + " | ".join(cells) + " |")
        passed = sum(row.passed for row in self.rows)
        lines += ["", f"{passed} of {len(self.rows)} combinations passed every check."]
        notes = list(self.notes())
        if notes:
            lines += ["", "## Failures and notes", ""]
            for row, note in notes:
                text = note.replace("\n", "\n    ")
                lines.append(f"- **{row.server}-{row.variant}**: {text}")
        return "\n".join(lines) + "\n"

    def write(self, path: Path) -> None:
        if not self.rows:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.markdown())
