"""The showcase's data: a shared counter, invoices, an activity log and a clock.

`ShowcaseStore` is what the app and its components need from a store. `Store` keeps
everything in memory, one per application, so every app (and every test) starts from
the same demo data; it is used from the event loop only (request handlers and the
clock task), takes no locks and is not thread-safe. Several processes share one
`examples.showcase.sqlite_store.SqliteStore` instead (``python3 dev.py demo-cluster``).
Nothing here knows about streams: the handlers invalidate scopes after they change
the store.
"""

from __future__ import annotations

import abc
import itertools
from collections import deque
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

MAX_CUSTOMER_LENGTH: Final = 80
MAX_AMOUNT_CENTS: Final = 100_000_000
"""One million in the app's currency."""
_MAX_AMOUNT_LENGTH: Final = 20

_DEMO_INVOICES: Final = (
    ("Acme Corporation", 120_000),
    ("Globex", 45_050),
    ("Initech", 9_999),
    ("Umbrella Health", 250_000),
    ("Hooli", 31_400),
    ("Stark Industries", 1_200_000),
    ("Wayne Enterprises", 78_025),
    ("Soylent", 15_000),
    ("Tyrell Corporation", 64_200),
    ("Cyberdyne Systems", 5_500),
)


class InvalidInvoiceError(ValueError):
    """The add-invoice form was filled in wrongly; the message says how, for the user."""


@dataclass(frozen=True, slots=True)
class Invoice:
    id: int
    customer: str
    amount_cents: int
    issued_at: datetime
    paid_at: datetime | None = None

    @property
    def paid(self) -> bool:
        return self.paid_at is not None


@dataclass(frozen=True, slots=True)
class Totals:
    count: int
    unpaid: int
    billed_cents: int
    outstanding_cents: int


@dataclass(frozen=True, slots=True)
class LogEntry:
    at: datetime
    text: str


ACTIVITY_LENGTH: Final = 8
"""How many entries the activity log keeps."""


class ShowcaseStore(abc.ABC):
    """What the app and its components read and change: `Store` keeps it in memory,
    `examples.showcase.sqlite_store.SqliteStore` in a file several processes share.

    A base class rather than a Protocol: Litestar checks a dependency with isinstance.
    Each method is one consistent step (for `SqliteStore`, one transaction); two reads
    in a row may see another process's change in between.
    """

    @property
    @abc.abstractmethod
    def counter(self) -> int: ...

    @property
    @abc.abstractmethod
    def ticks(self) -> int: ...

    @property
    @abc.abstractmethod
    def last_tick(self) -> datetime | None: ...

    @property
    @abc.abstractmethod
    def started_at(self) -> datetime: ...

    @property
    @abc.abstractmethod
    def activity(self) -> Sequence[LogEntry]:
        """The newest entries first, at most `ACTIVITY_LENGTH`."""

    @abc.abstractmethod
    def increment(self) -> int:
        """Add one to the counter; return the new value."""

    @abc.abstractmethod
    def reset_counter(self) -> None: ...

    @abc.abstractmethod
    def get(self, invoice_id: int) -> Invoice | None: ...

    @abc.abstractmethod
    def add_invoice(self, customer: str, amount_cents: int) -> Invoice: ...

    @abc.abstractmethod
    def mark_paid(self, invoice_id: int) -> bool:
        """Mark an invoice paid; False if it already was. KeyError if there is none."""

    @abc.abstractmethod
    def newest(self, limit: int) -> list[Invoice]:
        """The *limit* most recent invoices, newest first."""

    @abc.abstractmethod
    def since(self, first_id: int) -> list[Invoice]:
        """Every invoice with an id of at least *first_id*, newest first."""

    @abc.abstractmethod
    def older(self, before_id: int, limit: int) -> list[Invoice]:
        """Up to *limit* invoices with an id below *before_id*, newest first."""

    @abc.abstractmethod
    def has_older(self, before_id: int) -> bool: ...

    @abc.abstractmethod
    def totals(self) -> Totals: ...

    @abc.abstractmethod
    def tick(self, *, unless_ticked_within: float = 0.0) -> bool:
        """Advance the clock, unless it ticked less than *unless_ticked_within* seconds
        ago (workers sharing a store share its clock); return whether it ticked."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release what the store holds (the app calls it on shutdown)."""


def demo_invoices(started_at: datetime) -> list[tuple[str, int, datetime, datetime | None]]:
    """The demo invoices as (customer, cents, issued, paid), to be numbered from 1."""
    rows = []
    for number, (customer, cents) in enumerate(_DEMO_INVOICES, start=1):
        issued = started_at - timedelta(days=len(_DEMO_INVOICES) + 1 - number)
        paid = issued + timedelta(hours=5) if number % 3 == 0 else None
        rows.append((customer, cents, issued, paid))
    return rows


class Store(ShowcaseStore):
    """In-memory state of one showcase app, seeded with demo invoices."""

    def __init__(self, *, demo_data: bool = True) -> None:
        self._counter = 0
        self._ticks = 0
        self._last_tick: datetime | None = None
        self._started_at = _now()
        self._invoices: dict[int, Invoice] = {}
        self._ids = itertools.count(1)
        self._activity: deque[LogEntry] = deque(maxlen=ACTIVITY_LENGTH)
        if demo_data:
            for customer, cents, issued, paid in demo_invoices(self._started_at):
                invoice = self._create(customer, cents)
                self._invoices[invoice.id] = replace(invoice, issued_at=issued, paid_at=paid)
            self._log(f"{len(_DEMO_INVOICES)} demo invoices loaded")

    @property
    def counter(self) -> int:
        return self._counter

    @property
    def ticks(self) -> int:
        return self._ticks

    @property
    def last_tick(self) -> datetime | None:
        return self._last_tick

    @property
    def started_at(self) -> datetime:
        return self._started_at

    @property
    def activity(self) -> deque[LogEntry]:
        return self._activity

    # -- counter -----------------------------------------------------------------------

    def increment(self) -> int:
        self._counter += 1
        self._log(f"Counter went up to {self._counter}")
        return self._counter

    def reset_counter(self) -> None:
        self._counter = 0
        self._log("Counter reset to 0")

    # -- invoices ----------------------------------------------------------------------

    def get(self, invoice_id: int) -> Invoice | None:
        return self._invoices.get(invoice_id)

    def add_invoice(self, customer: str, amount_cents: int) -> Invoice:
        invoice = self._create(customer, amount_cents)
        self._log(f"Invoice #{invoice.id} for {customer}, {money(amount_cents)}")
        return invoice

    def mark_paid(self, invoice_id: int) -> bool:
        invoice = self._invoices[invoice_id]
        if invoice.paid:
            return False
        self._invoices[invoice_id] = replace(invoice, paid_at=_now())
        self._log(f"Invoice #{invoice_id} paid by {invoice.customer}")
        return True

    def newest(self, limit: int) -> list[Invoice]:
        return list(itertools.islice(self._newest_first(), limit))

    def since(self, first_id: int) -> list[Invoice]:
        return list(itertools.takewhile(lambda i: i.id >= first_id, self._newest_first()))

    def older(self, before_id: int, limit: int) -> list[Invoice]:
        rows = (invoice for invoice in self._newest_first() if invoice.id < before_id)
        return list(itertools.islice(rows, limit))

    def has_older(self, before_id: int) -> bool:
        return any(invoice_id < before_id for invoice_id in self._invoices)

    def totals(self) -> Totals:
        invoices = self._invoices.values()
        unpaid = [invoice for invoice in invoices if not invoice.paid]
        return Totals(
            count=len(invoices),
            unpaid=len(unpaid),
            billed_cents=sum(invoice.amount_cents for invoice in invoices),
            outstanding_cents=sum(invoice.amount_cents for invoice in unpaid),
        )

    # -- clock -------------------------------------------------------------------------

    def tick(self, *, unless_ticked_within: float = 0.0) -> bool:
        now = _now()
        last = self._last_tick
        if last is not None and now - last < timedelta(seconds=unless_ticked_within):
            return False
        self._ticks += 1
        self._last_tick = now
        return True

    def close(self) -> None:
        pass  # nothing to release: the data goes with the object

    # -- internals ---------------------------------------------------------------------

    def _create(self, customer: str, amount_cents: int) -> Invoice:
        invoice = Invoice(next(self._ids), customer, amount_cents, _now())
        self._invoices[invoice.id] = invoice
        return invoice

    def _newest_first(self) -> Iterator[Invoice]:
        # Ids only grow and invoices are never deleted, so insertion order is id order.
        return reversed(self._invoices.values())

    def _log(self, text: str) -> None:
        self._activity.appendleft(LogEntry(_now(), text))


def parse_invoice(customer: str, amount: str) -> tuple[str, int]:
    """Validate the add-invoice form: the customer's name and the amount in cents.

    Raises `InvalidInvoiceError` with a message meant for the person filling the form.
    """
    name = " ".join(customer.split())
    if not name:
        raise InvalidInvoiceError("customer is required")
    if len(name) > MAX_CUSTOMER_LENGTH:
        raise InvalidInvoiceError(
            f"customer is {len(name)} characters long; at most {MAX_CUSTOMER_LENGTH} are allowed"
        )
    if not name.isprintable():
        raise InvalidInvoiceError("customer contains a control character")
    text = amount.strip()
    if not text:
        raise InvalidInvoiceError("amount is required")
    shown = repr(text) if len(text) <= _MAX_AMOUNT_LENGTH else repr(text[:_MAX_AMOUNT_LENGTH] + "…")
    try:
        # A long input is no amount anyone means; refusing it also keeps Decimal's
        # exponent arithmetic small.
        value = Decimal(text) if len(text) <= _MAX_AMOUNT_LENGTH else Decimal("NaN")
    except InvalidOperation:
        value = Decimal("NaN")
    if not value.is_finite():
        raise InvalidInvoiceError(f"amount must be a number like 12.50, got {shown}")
    if value > MAX_AMOUNT_CENTS / 100:
        raise InvalidInvoiceError(f"amount must be at most {money(MAX_AMOUNT_CENTS)}, got {shown}")
    cents = value * 100  # may underflow to 0 for tiny values: checked below
    if cents <= 0:
        raise InvalidInvoiceError(f"amount must be positive, got {shown}")
    if cents != cents.to_integral_value():
        raise InvalidInvoiceError(f"amount has more than two decimals: {shown}")
    return name, int(cents)


def money(cents: int) -> str:
    """``123456 -> '$1,234.56'``."""
    units, rest = divmod(cents, 100)
    return f"${units:,}.{rest:02d}"


def _now() -> datetime:
    return datetime.now(UTC)
