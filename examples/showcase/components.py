"""The showcase's pages and components: plain functions returning htpy elements.

Every live component is a `Watch` whose root has a stable ``id`` and whose URL answers
with the same component, so Datastar morphs the fresh HTML in by id. The scopes:

========================  ===================================  ==========================
scope                     invalidated by                       watched by
========================  ===================================  ==========================
``counter:shared``        +1 / reset                           counter, activity
``invoices:all``          adding an invoice, paying one        invoice count, newest
                                                               invoices, activity
``invoice:<id>``          paying invoice <id>                  invoice detail, each older
                                                               row loaded by "load more"
``clock``                 the background task, every tick      clock
========================  ===================================  ==========================

Buttons and the form are Datastar actions (``@post``); the handlers answer 204 and the
new HTML reaches every tab, the clicking one included, through its stream.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Final

from datastar_py import attribute_generator as data
from datastar_py.attributes import action_generator as action
from htpy import (
    Element,
    a,
    body,
    button,
    code,
    dd,
    div,
    dl,
    dt,
    footer,
    form,
    h1,
    h2,
    head,
    header,
    html,
    input,
    label,
    li,
    link,
    main,
    meta,
    p,
    section,
    span,
    strong,
    style,
    time,
    title,
    ul,
)
from markupsafe import Markup

from examples.showcase.store import MAX_AMOUNT_CENTS, MAX_CUSTOMER_LENGTH, money
from streamui import Connect, JoinStream, Watch, datastar_script, scope

if TYPE_CHECKING:
    from datetime import datetime

    from htpy import Node

    from examples.showcase.store import Invoice, ShowcaseStore

COUNTER: Final = "counter:shared"
INVOICES: Final = "invoices:all"
CLOCK: Final = "clock"
PAGE_SIZE: Final = 4
"""Invoices per page of the invoice list (the newest, then each "load more")."""


def invoice_scope(invoice_id: int) -> str:
    return scope("invoice", invoice_id)


# -- the dashboard's cards -----------------------------------------------------------------


def counter_card(store: ShowcaseStore) -> Element:
    return Watch(COUNTER, "/fragments/counter", tag="section", id="counter", class_="card")[
        card_title("Shared counter", COUNTER),
        p(".big-number")[str(store.counter)],
        div(".actions")[
            button(".button.primary", data.on("click", action.post("/counter/increment")))["+1"],
            button(".button", data.on("click", action.post("/counter/reset")))["Reset"],
        ],
        p(".hint")["Click here, watch every other tab follow."],
    ]


def invoice_count_card(store: ShowcaseStore) -> Element:
    totals = store.totals()
    return Watch(
        INVOICES, "/fragments/invoice-count", tag="section", id="invoice-count", class_="card"
    )[
        card_title("Invoices", INVOICES),
        p(".big-number")[str(totals.count)],
        p[f"{totals.unpaid} unpaid · ", strong[money(totals.outstanding_cents)], " outstanding"],
        p(".hint")["Same scope as the invoice list: one invalidation, two components reload."],
    ]


def clock_card(store: ShowcaseStore) -> Element:
    return Watch(CLOCK, "/fragments/clock", tag="section", id="clock", class_="card")[
        card_title("Server clock", CLOCK),
        p(".big-number")[clock_time(store.last_tick or store.started_at)],
        p[f"Tick #{store.ticks}" if store.ticks else "Started; waiting for the first tick…"],
        p(".hint")["A background task on the server invalidates this scope periodically."],
    ]


def activity_card(store: ShowcaseStore) -> Element:
    totals = store.totals()
    return Watch(
        [COUNTER, INVOICES], "/fragments/activity", tag="section", id="activity", class_="card"
    )[
        card_title("Activity", COUNTER, INVOICES),
        p[
            "Counter at ",
            strong[str(store.counter)],
            " · ",
            strong[money(totals.billed_cents)],
            f" billed in {totals.count} invoices",
        ],
        ul(".log")[(li[clock_time(entry.at), " ", entry.text] for entry in store.activity)],
        p(".hint")["Watches two scopes: it reloads when either changes."],
    ]


def invoices_card(store: ShowcaseStore) -> Element:
    """The invoice list: the newest page reloads as a whole, older pages load on demand.

    The newest invoices (ids from *anchor* up, including every invoice added while the
    page is open) watch ``invoices:all``. Older rows come from "load more" fragments;
    each of those rows watches its own ``invoice:<id>`` and the fragment joins the
    tab's stream with `JoinStream`.
    """
    newest = store.newest(PAGE_SIZE)
    anchor = newest[-1].id if newest else 1
    return section("#invoices.card.wide")[
        card_title("Invoice list", INVOICES, "invoice:<id>"),
        div(".rows")[
            newest_invoices(store, anchor),
            older_invoices(store, anchor),
        ],
    ]


def newest_invoices(store: ShowcaseStore, anchor: int) -> Element:
    """Every invoice from *anchor* up, reloaded as a whole on ``invoices:all``.

    Its rows do not watch ``invoice:<id>`` themselves: this component reloads on every
    new invoice, and a `JoinStream` in it would add a token to the tab on every reload
    (streamui does not merge tokens, and a stream takes at most 16). Paying invalidates
    ``invoices:all`` too, so these rows are fresh all the same.
    """
    rows = store.since(anchor)
    return Watch(INVOICES, f"/fragments/invoices?since={anchor}", id="newest-invoices")[
        (invoice_row(invoice) for invoice in rows) if rows else p(".hint")["No invoices yet."]
    ]


def older_invoices(store: ShowcaseStore, before: int) -> Element:
    """The place of the invoices older than *before*: a "load more" button for now."""
    load = action.get(f"/fragments/invoices/older?before={before}")
    return div(id=f"invoices-before-{before}", class_="more")[
        button(".button", data.on("click", load))["Load older invoices"]
        if store.has_older(before)
        else p(".hint")["That is all of them."],
    ]


def older_invoices_page(store: ShowcaseStore, before: int) -> Element:
    """What "load more" returns: the next rows in place of the button, and a new button.

    Each row watches its own scope; `JoinStream` (after the rows) adds those scopes to
    the tab's stream.
    """
    rows = store.older(before, PAGE_SIZE)
    if not rows:
        return older_invoices(store, before)
    return div(id=f"invoices-before-{before}", class_="more")[
        (live_invoice_row(invoice) for invoice in rows),
        JoinStream(),
        older_invoices(store, rows[-1].id),
    ]


def invoice_row(invoice: Invoice) -> Element:
    return div(id=f"invoice-row-{invoice.id}", class_="row")[_row_cells(invoice)]


def live_invoice_row(invoice: Invoice) -> Element:
    """An invoice row that reloads by itself when ``invoice:<id>`` is invalidated."""
    return Watch(
        invoice_scope(invoice.id),
        f"/fragments/invoices/{invoice.id}/row",
        id=f"invoice-row-{invoice.id}",
        class_="row",
    )[_row_cells(invoice)]


def _row_cells(invoice: Invoice) -> Node:
    return [
        a(".number", href=f"/invoices/{invoice.id}")[f"#{invoice.id}"],
        a(".customer", href=f"/invoices/{invoice.id}")[invoice.customer],
        span(".amount")[money(invoice.amount_cents)],
        status_badge(invoice),
        span(".row-action")[None if invoice.paid else pay_button(invoice, small=True)],
    ]


def invoice_form() -> Element:
    """Adds an invoice. The browser checks the fields first; the server checks again."""
    # `_invoiceError` starts with "_" so Datastar never sends it to the server.
    on_fetch = (
        "evt.detail.el === el && (evt.detail.type === 'error'"
        " ? $_invoiceError = 'The server refused this invoice (HTTP '"
        " + evt.detail.argsRaw.status + '): check the customer and the amount.'"
        " : evt.detail.type === 'finished' && !$_invoiceError && el.reset())"
    )
    submit = "$_invoiceError = ''; " + action.post("/invoices", content_type="form")
    return form(
        "#invoice-form.card",
        {
            **data.signals({"_invoiceError": ""}),
            **data.on("submit", submit),
            **data.on("datastar-fetch", on_fetch),
        },
    )[
        card_title("New invoice"),
        label[
            "Customer",
            input(
                name="customer",
                required=True,
                maxlength=str(MAX_CUSTOMER_LENGTH),
                pattern=r".*\S.*",
                autocomplete="off",
                placeholder="Acme Corporation",
            ),
        ],
        label[
            "Amount",
            input(
                name="amount",
                type="number",
                required=True,
                min="0.01",
                max=str(MAX_AMOUNT_CENTS // 100),
                step="0.01",
                inputmode="decimal",
                placeholder="120.00",
            ),
        ],
        p(".error", data.show("$_invoiceError"), data.text("$_invoiceError")),
        button(".button.primary", type="submit")["Add invoice"],
        p(".hint")[
            "Invalidates ", code[INVOICES], ": the list, the count and the activity reload."
        ],
    ]


# -- the invoice detail page ---------------------------------------------------------------


def invoice_detail(invoice: Invoice) -> Element:
    return Watch(
        invoice_scope(invoice.id),
        f"/fragments/invoices/{invoice.id}",
        tag="section",
        id="invoice-detail",
        class_="card",
    )[
        card_title("Details", invoice_scope(invoice.id)),
        dl[
            dt["Customer"],
            dd[invoice.customer],
            dt["Amount"],
            dd[money(invoice.amount_cents)],
            dt["Issued"],
            dd[date_time(invoice.issued_at)],
            dt["Status"],
            dd[
                status_badge(invoice),
                " ",
                date_time(invoice.paid_at) if invoice.paid_at else None,
            ],
        ],
        div(".actions")[None if invoice.paid else pay_button(invoice)],
        p(".hint")[
            "Open this page in a second tab (or the dashboard next to it) and mark the "
            "invoice paid: both update."
        ],
    ]


# -- small parts ---------------------------------------------------------------------------


def card_title(text: str, *scopes: str) -> Element:
    """A card's heading, with the scopes its component watches."""
    watched: list[Node] = []
    for value in scopes:
        watched += [" + " if watched else "watches ", code[value]]
    return header(".card-title")[h2[text], p(".scopes")[watched] if watched else None]


def status_badge(invoice: Invoice) -> Element:
    return span(".badge.paid")["Paid"] if invoice.paid else span(".badge.unpaid")["Unpaid"]


def pay_button(invoice: Invoice, *, small: bool = False) -> Element:
    return button(
        ".button.small" if small else ".button.primary",
        data.on("click", action.post(f"/invoices/{invoice.id}/pay")),
    )["Mark paid"]


def clock_time(moment: datetime) -> Element:
    local = moment.astimezone()
    return time(datetime=local.isoformat(timespec="seconds"))[local.strftime("%H:%M:%S")]


def date_time(moment: datetime) -> Element:
    local = moment.astimezone()
    return time(datetime=local.isoformat(timespec="seconds"))[local.strftime("%d %b %Y, %H:%M")]


# -- pages ---------------------------------------------------------------------------------


def dashboard_page(store: ShowcaseStore, *, datastar_src: str | None) -> Element:
    return page(
        "Dashboard",
        datastar_src,
        p(".lead")[
            "Open this page in two tabs side by side and click around: every card "
            "updates in every tab, through one Server-Sent-Events stream per tab."
        ],
        div(".grid")[
            counter_card(store),
            invoice_count_card(store),
            clock_card(store),
            invoices_card(store),
            invoice_form(),
            activity_card(store),
        ],
    )


def invoice_page(invoice: Invoice, *, datastar_src: str | None) -> Element:
    return page(
        f"Invoice #{invoice.id}",
        datastar_src,
        p[a(href="/")["← Back to the dashboard"]],
        div(".grid.narrow")[invoice_detail(invoice)],
    )


def not_found_page(what: str, *, datastar_src: str | None) -> Element:
    return page(
        "Not found",
        datastar_src,
        section(".card")[h2["Not found"], p[what], p[a(href="/")["← Back to the dashboard"]]],
    )


def page(heading: str, datastar_src: str | None, *content: Node) -> Element:
    return html(lang="en")[
        head[
            meta(charset="utf-8"),
            meta(name="viewport", content="width=device-width, initial-scale=1"),
            title[f"{heading} · streamui showcase"],
            link(rel="icon", href="data:,"),  # no favicon request
            style[stylesheet()],
            datastar_script(datastar_src),
        ],
        body[
            header(".site")[
                a(".brand", href="/")["streamui ", span["showcase"]],
                h1[heading],
            ],
            main[content],
            footer(".site")[
                "Server-rendered with htpy, kept live by streamui: ",
                code["Watch(scope, url)"],
                " on each card, ",
                code["Connect()"],
                " at the end of the page, ",
                code["await broker.invalidate(scope)"],
                " after each change.",
            ],
            # After everything that watches a scope: opens the tab's stream for all of them.
            Connect(),
        ],
    ]


@cache
def stylesheet() -> Markup:
    # Markup: the CSS goes into <style> as is (child combinators must stay ">").
    return Markup(Path(__file__).with_name("showcase.css").read_text(encoding="utf-8"))
