"""The showcase's data: a shared counter, invoices, an activity log and a clock.

Everything lives in memory in one `Store` per application, so every app (and every
test) starts from the same demo data. A store is used from the event loop only
(request handlers and the clock task); it takes no locks and is not thread-safe.
Nothing here knows about streams: the handlers invalidate scopes after they change
the store.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Iterator

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


class Store:
    """In-memory state of one showcase app, seeded with demo invoices."""

    def __init__(self, *, demo_data: bool = True) -> None:
        self.counter = 0
        self.ticks = 0
        self.last_tick: datetime | None = None
        self.started_at = _now()
        self._invoices: dict[int, Invoice] = {}
        self._ids = itertools.count(1)
        self.activity: deque[LogEntry] = deque(maxlen=8)
        if demo_data:
            for days_ago, (customer, cents) in zip(
                range(len(_DEMO_INVOICES), 0, -1), _DEMO_INVOICES, strict=True
            ):
                invoice = self._create(customer, cents)
                issued = self.started_at - timedelta(days=days_ago)
                paid = issued + timedelta(hours=5) if invoice.id % 3 == 0 else None
                self._invoices[invoice.id] = replace(invoice, issued_at=issued, paid_at=paid)
            self._log(f"{len(_DEMO_INVOICES)} demo invoices loaded")

    # -- counter -----------------------------------------------------------------------

    def increment(self) -> int:
        self.counter += 1
        self._log(f"Counter went up to {self.counter}")
        return self.counter

    def reset_counter(self) -> None:
        self.counter = 0
        self._log("Counter reset to 0")

    # -- invoices ----------------------------------------------------------------------

    def get(self, invoice_id: int) -> Invoice | None:
        return self._invoices.get(invoice_id)

    def add_invoice(self, customer: str, amount_cents: int) -> Invoice:
        invoice = self._create(customer, amount_cents)
        self._log(f"Invoice #{invoice.id} for {customer}, {money(amount_cents)}")
        return invoice

    def mark_paid(self, invoice_id: int) -> bool:
        """Mark an invoice paid; False if it already was. KeyError if there is none."""
        invoice = self._invoices[invoice_id]
        if invoice.paid:
            return False
        self._invoices[invoice_id] = replace(invoice, paid_at=_now())
        self._log(f"Invoice #{invoice_id} paid by {invoice.customer}")
        return True

    def newest(self, limit: int) -> list[Invoice]:
        """The *limit* most recent invoices, newest first."""
        return list(itertools.islice(self._newest_first(), limit))

    def since(self, first_id: int) -> list[Invoice]:
        """Every invoice with an id of at least *first_id*, newest first."""
        return list(itertools.takewhile(lambda i: i.id >= first_id, self._newest_first()))

    def older(self, before_id: int, limit: int) -> list[Invoice]:
        """Up to *limit* invoices with an id below *before_id*, newest first."""
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

    def tick(self) -> None:
        self.ticks += 1
        self.last_tick = _now()

    # -- internals ---------------------------------------------------------------------

    def _create(self, customer: str, amount_cents: int) -> Invoice:
        invoice = Invoice(next(self._ids), customer, amount_cents, _now())
        self._invoices[invoice.id] = invoice
        return invoice

    def _newest_first(self) -> Iterator[Invoice]:
        # Ids only grow and invoices are never deleted, so insertion order is id order.
        return reversed(self._invoices.values())

    def _log(self, text: str) -> None:
        self.activity.appendleft(LogEntry(_now(), text))


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
