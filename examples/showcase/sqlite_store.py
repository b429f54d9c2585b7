"""`SqliteStore`: the showcase's data in one SQLite file, shared by several processes.

Same interface as the in-memory `examples.showcase.store.Store` (`ShowcaseStore`), so
``python3 dev.py demo-cluster`` runs two workers on one file: a counter clicked on one
worker shows the same value on the other.

Guarantees:

- Every method that changes something is one ``BEGIN IMMEDIATE`` transaction: it takes
  the file's write lock before it reads, so two processes incrementing the counter at
  once never lose an update, and an activity entry is written with its change or not
  at all. A writer waits up to *timeout* seconds for the lock, then raises
  ``sqlite3.OperationalError`` ("database is locked").
- The schema and the demo data are created once per file, by whichever process opens
  it first (inside the same kind of transaction); later openers reuse them.
- The file is in WAL mode: readers never wait for a writer.

Not guaranteed: two reads in a row (say ``counter`` then ``totals()``) may see another
process's change in between; a page is one consistent render of each value, not a
snapshot. The calls are plain, blocking sqlite3 calls from the event loop: fine for a
demo on a local disk (each is well under a millisecond), not for a production app, which
would use a server database and an async driver. A store is used from one thread at a
time (its event loop); it is not thread-safe.
"""

from __future__ import annotations

import contextlib
import sqlite3
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from examples.showcase.store import (
    ACTIVITY_LENGTH,
    Invoice,
    LogEntry,
    ShowcaseStore,
    Totals,
    demo_invoices,
    money,
)

if TYPE_CHECKING:
    import os
    from collections.abc import Iterator
    from types import TracebackType
    from typing import Self

__all__ = ["DATABASE_ENV", "SqliteStore"]

DATABASE_ENV = "STREAMUI_SHOWCASE_DB"
"""Names the SQLite file that ``python -m examples.showcase`` keeps its data in."""

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS showcase (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        started_at REAL NOT NULL,
        counter INTEGER NOT NULL DEFAULT 0,
        ticks INTEGER NOT NULL DEFAULT 0,
        last_tick REAL
    )""",
    """CREATE TABLE IF NOT EXISTS invoices (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        customer TEXT NOT NULL,
        amount_cents INTEGER NOT NULL,
        issued_at REAL NOT NULL,
        paid_at REAL
    )""",
    """CREATE TABLE IF NOT EXISTS activity (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        text TEXT NOT NULL
    )""",
)
_INVOICE_COLUMNS = "id, customer, amount_cents, issued_at, paid_at"


class SqliteStore(ShowcaseStore):
    """The showcase's state in the SQLite file *path*, seeded with demo invoices."""

    def __init__(
        self, path: str | os.PathLike[str], *, demo_data: bool = True, timeout: float = 10.0
    ) -> None:
        # Autocommit (isolation_level=None): the transactions below are explicit.
        self._db = sqlite3.connect(
            path, timeout=timeout, isolation_level=None, check_same_thread=False
        )
        try:
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")  # durable enough for a demo
            with self._transaction() as db:
                for statement in _SCHEMA:
                    db.execute(statement)
                if db.execute("SELECT 1 FROM showcase").fetchone() is None:
                    self._seed(db, demo_data)
        except BaseException:
            self._db.close()
            raise

    def _seed(self, db: sqlite3.Connection, demo_data: bool) -> None:
        started_at = _now()
        db.execute("INSERT INTO showcase (id, started_at) VALUES (1, ?)", (started_at.timestamp(),))
        if demo_data:
            rows = demo_invoices(started_at)
            db.executemany(
                "INSERT INTO invoices (customer, amount_cents, issued_at, paid_at) "
                "VALUES (?, ?, ?, ?)",
                [
                    (customer, cents, issued.timestamp(), paid.timestamp() if paid else None)
                    for customer, cents, issued, paid in rows
                ],
            )
            self._log(db, f"{len(rows)} demo invoices loaded")

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        # IMMEDIATE takes the write lock now, before the first read: a read-modify-write
        # (the counter, a tick) cannot interleave with another process's.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- reads -------------------------------------------------------------------------

    def _state(self, column: str) -> object:
        row = self._db.execute(f"SELECT {column} FROM showcase").fetchone()
        return row[0]

    @property
    def counter(self) -> int:
        value = self._state("counter")
        assert isinstance(value, int)
        return value

    @property
    def ticks(self) -> int:
        value = self._state("ticks")
        assert isinstance(value, int)
        return value

    @property
    def last_tick(self) -> datetime | None:
        value = self._state("last_tick")
        return None if value is None else _datetime(value)

    @property
    def started_at(self) -> datetime:
        return _datetime(self._state("started_at"))

    @property
    def activity(self) -> list[LogEntry]:
        rows = self._db.execute(
            "SELECT at, text FROM activity ORDER BY id DESC LIMIT ?", (ACTIVITY_LENGTH,)
        )
        return [LogEntry(_datetime(at), text) for at, text in rows]

    def get(self, invoice_id: int) -> Invoice | None:
        row = self._db.execute(
            f"SELECT {_INVOICE_COLUMNS} FROM invoices WHERE id = ?",
            (invoice_id,),
        ).fetchone()
        return None if row is None else _invoice(row)

    def newest(self, limit: int) -> list[Invoice]:
        return self._invoices("ORDER BY id DESC LIMIT ?", limit)

    def since(self, first_id: int) -> list[Invoice]:
        return self._invoices("WHERE id >= ? ORDER BY id DESC", first_id)

    def older(self, before_id: int, limit: int) -> list[Invoice]:
        return self._invoices("WHERE id < ? ORDER BY id DESC LIMIT ?", before_id, limit)

    def has_older(self, before_id: int) -> bool:
        row = self._db.execute("SELECT 1 FROM invoices WHERE id < ? LIMIT 1", (before_id,))
        return row.fetchone() is not None

    def totals(self) -> Totals:
        count, unpaid, billed, outstanding = self._db.execute(
            "SELECT count(*), count(*) FILTER (WHERE paid_at IS NULL), "
            "coalesce(sum(amount_cents), 0), "
            "coalesce(sum(amount_cents) FILTER (WHERE paid_at IS NULL), 0) FROM invoices"
        ).fetchone()
        return Totals(
            count=count, unpaid=unpaid, billed_cents=billed, outstanding_cents=outstanding
        )

    def _invoices(self, clauses: str, *parameters: int) -> list[Invoice]:
        query = f"SELECT {_INVOICE_COLUMNS} FROM invoices {clauses}"
        return [_invoice(row) for row in self._db.execute(query, parameters)]

    # -- changes, one transaction each ---------------------------------------------------

    def increment(self) -> int:
        with self._transaction() as db:
            db.execute("UPDATE showcase SET counter = counter + 1")
            (counter,) = db.execute("SELECT counter FROM showcase").fetchone()
            self._log(db, f"Counter went up to {counter}")
        assert isinstance(counter, int)
        return counter

    def reset_counter(self) -> None:
        with self._transaction() as db:
            db.execute("UPDATE showcase SET counter = 0")
            self._log(db, "Counter reset to 0")

    def add_invoice(self, customer: str, amount_cents: int) -> Invoice:
        issued_at = _now()
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO invoices (customer, amount_cents, issued_at) VALUES (?, ?, ?)",
                (customer, amount_cents, issued_at.timestamp()),
            )
            assert cursor.lastrowid is not None
            invoice = Invoice(cursor.lastrowid, customer, amount_cents, issued_at)
            self._log(db, f"Invoice #{invoice.id} for {customer}, {money(amount_cents)}")
        return invoice

    def mark_paid(self, invoice_id: int) -> bool:
        with self._transaction() as db:
            row = db.execute(
                "SELECT customer, paid_at FROM invoices WHERE id = ?", (invoice_id,)
            ).fetchone()
            if row is None:
                raise KeyError(invoice_id)
            customer, paid_at = row
            if paid_at is not None:
                return False
            db.execute(
                "UPDATE invoices SET paid_at = ? WHERE id = ?", (_now().timestamp(), invoice_id)
            )
            self._log(db, f"Invoice #{invoice_id} paid by {customer}")
        return True

    def tick(self, *, unless_ticked_within: float = 0.0) -> bool:
        now = _now().timestamp()
        with self._transaction() as db:
            (last_tick,) = db.execute("SELECT last_tick FROM showcase").fetchone()
            if last_tick is not None and now - last_tick < unless_ticked_within:
                return False
            db.execute("UPDATE showcase SET ticks = ticks + 1, last_tick = ?", (now,))
        return True

    def _log(self, db: sqlite3.Connection, text: str) -> None:
        cursor = db.execute(
            "INSERT INTO activity (at, text) VALUES (?, ?)", (_now().timestamp(), text)
        )
        assert cursor.lastrowid is not None
        # Keep the log bounded, as the in-memory store's deque does.
        db.execute("DELETE FROM activity WHERE id <= ?", (cursor.lastrowid - ACTIVITY_LENGTH,))


def _invoice(row: tuple[int, str, int, float, float | None]) -> Invoice:
    invoice_id, customer, cents, issued_at, paid_at = row
    paid = None if paid_at is None else _datetime(paid_at)
    return Invoice(invoice_id, customer, cents, _datetime(issued_at), paid)


def _datetime(timestamp: object) -> datetime:
    assert isinstance(timestamp, float)
    return datetime.fromtimestamp(timestamp, UTC)


def _now() -> datetime:
    return datetime.now(UTC)
