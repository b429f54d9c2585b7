"""The showcase application: `create_app()` builds it, ``python -m examples.showcase`` runs it.

Routes (scopes and components: see `examples.showcase.components`):

- pages: ``GET /`` (the dashboard) and ``GET /invoices/{id}`` (one invoice; 404 if none);
- fragments, one per live component, each answering with the component's HTML:
  ``/fragments/counter``, ``/fragments/invoice-count``, ``/fragments/clock``,
  ``/fragments/activity``, ``/fragments/invoices?since=<id>`` (the newest invoices),
  ``/fragments/invoices/older?before=<id>`` ("load more"),
  ``/fragments/invoices/{id}`` and ``/fragments/invoices/{id}/row``;
- actions (Datastar ``@post``): ``/counter/increment``, ``/counter/reset``,
  ``/invoices`` (form: customer, amount) and ``/invoices/{id}/pay``. Each changes the
  store, invalidates the scopes it affected and answers 204: the new HTML reaches every
  tab, the one that clicked included, through the tab's stream. Bad form input is a 400
  with the reason; an unknown invoice a 404.

``GET /metrics`` answers the broker's metrics in Prometheus' text format
(`streamui.metrics`): open streams, invalidations, frames written, the lag, ...

A background task ticks the server clock every *tick_interval* seconds and invalidates
``clock``. The state is in memory, one `Store` per app, unless *database* names a SQLite
file (`SqliteStore`) that several workers share; their invalidations then travel over
NATS (*nats_url*, or ``STREAMUI_NATS_URL``). ``python3 dev.py demo-cluster`` runs that
(see `examples.showcase.cluster`).
"""

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from htpy import Element
from litestar import Litestar, MediaType, Request, get, post
from litestar.config.app import AppConfig
from litestar.di import NamedDependency, Provide
from litestar.exceptions import ClientException, NotFoundException
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath, FromQuery
from litestar.plugins import InitPlugin
from litestar.response import File, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from examples.showcase import components
from examples.showcase.components import CLOCK, COUNTER, INVOICES, invoice_scope
from examples.showcase.sqlite_store import SqliteStore
from examples.showcase.store import (
    InvalidInvoiceError,
    Invoice,
    ShowcaseStore,
    Store,
    parse_invoice,
)
from streamui import Broker
from streamui.litestar import StreamConfig, StreamPlugin
from streamui.metrics import register_prometheus

__all__ = ["DATASTAR_ENV", "DATASTAR_LOCAL_PATH", "create_app"]

logger = logging.getLogger("examples.showcase")

DATASTAR_ENV = "STREAMUI_DATASTAR_JS"
"""Names a local copy of Datastar to serve instead of loading it from the CDN."""
DATASTAR_LOCAL_PATH = "/static/datastar.js"


@dataclass(frozen=True, slots=True)
class Site:
    """Per-app rendering settings, provided to the handlers as ``site``."""

    datastar_src: str | None


def _html(node: Element, status_code: int = 200) -> Response[str]:
    return Response(str(node), media_type=MediaType.HTML, status_code=status_code)


def _invoice(store: ShowcaseStore, invoice_id: int) -> Invoice:
    invoice = store.get(invoice_id)
    if invoice is None:
        raise NotFoundException(f"there is no invoice #{invoice_id}")
    return invoice


# -- pages -----------------------------------------------------------------------------------


@get("/")
async def dashboard(
    store: NamedDependency[ShowcaseStore], site: NamedDependency[Site]
) -> Response[str]:
    return _html(components.dashboard_page(store, datastar_src=site.datastar_src))


@get("/invoices/{invoice_id:int}")
async def invoice_page(
    invoice_id: FromPath[int], store: NamedDependency[ShowcaseStore], site: NamedDependency[Site]
) -> Response[str]:
    invoice = store.get(invoice_id)
    if invoice is None:
        page = components.not_found_page(
            f"There is no invoice #{invoice_id}.", datastar_src=site.datastar_src
        )
        return _html(page, status_code=404)
    return _html(components.invoice_page(invoice, datastar_src=site.datastar_src))


# -- fragments: each answers with the component that watches the scope -------------------------


@get("/fragments/counter")
async def counter_fragment(store: NamedDependency[ShowcaseStore]) -> Response[str]:
    return _html(components.counter_card(store))


@get("/fragments/invoice-count")
async def invoice_count_fragment(store: NamedDependency[ShowcaseStore]) -> Response[str]:
    return _html(components.invoice_count_card(store))


@get("/fragments/clock")
async def clock_fragment(store: NamedDependency[ShowcaseStore]) -> Response[str]:
    return _html(components.clock_card(store))


@get("/fragments/activity")
async def activity_fragment(store: NamedDependency[ShowcaseStore]) -> Response[str]:
    return _html(components.activity_card(store))


@get("/fragments/invoices")
async def newest_invoices_fragment(
    store: NamedDependency[ShowcaseStore], since: FromQuery[int]
) -> Response[str]:
    return _html(components.newest_invoices(store, since))


@get("/fragments/invoices/older")
async def older_invoices_fragment(
    store: NamedDependency[ShowcaseStore], before: FromQuery[int]
) -> Response[str]:
    return _html(components.older_invoices_page(store, before))


@get("/fragments/invoices/{invoice_id:int}")
async def invoice_fragment(
    invoice_id: FromPath[int], store: NamedDependency[ShowcaseStore]
) -> Response[str]:
    return _html(components.invoice_detail(_invoice(store, invoice_id)))


@get("/fragments/invoices/{invoice_id:int}/row")
async def invoice_row_fragment(
    invoice_id: FromPath[int], store: NamedDependency[ShowcaseStore]
) -> Response[str]:
    return _html(components.live_invoice_row(_invoice(store, invoice_id)))


# -- actions: change the store, invalidate, answer 204 -----------------------------------------


@post("/counter/increment", status_code=204)
async def increment(store: NamedDependency[ShowcaseStore], broker: NamedDependency[Broker]) -> None:
    store.increment()
    await broker.invalidate(COUNTER)


@post("/counter/reset", status_code=204)
async def reset_counter(
    store: NamedDependency[ShowcaseStore], broker: NamedDependency[Broker]
) -> None:
    store.reset_counter()
    await broker.invalidate(COUNTER)


@post("/invoices", status_code=204)
async def add_invoice(
    request: Request[Any, Any, Any],
    store: NamedDependency[ShowcaseStore],
    broker: NamedDependency[Broker],
) -> None:
    form = await request.form()
    customer_field, amount_field = form.get("customer"), form.get("amount")
    try:
        customer, cents = parse_invoice(
            customer_field if isinstance(customer_field, str) else "",
            amount_field if isinstance(amount_field, str) else "",
        )
    except InvalidInvoiceError as error:
        raise ClientException(str(error)) from None
    store.add_invoice(customer, cents)
    await broker.invalidate(INVOICES)


@post("/invoices/{invoice_id:int}/pay", status_code=204)
async def pay_invoice(
    invoice_id: FromPath[int],
    store: NamedDependency[ShowcaseStore],
    broker: NamedDependency[Broker],
) -> None:
    _invoice(store, invoice_id)
    if store.mark_paid(invoice_id):
        # The invoice itself (its detail page, its row) and everything that sums them up.
        await broker.invalidate_many([invoice_scope(invoice_id), INVOICES])


ROUTES = [
    dashboard,
    invoice_page,
    counter_fragment,
    invoice_count_fragment,
    clock_fragment,
    activity_fragment,
    newest_invoices_fragment,
    older_invoices_fragment,
    invoice_fragment,
    invoice_row_fragment,
    increment,
    reset_counter,
    add_invoice,
    pay_invoice,
]


# -- the background task -----------------------------------------------------------------------


async def run_clock(store: ShowcaseStore, broker: Broker, interval: float) -> None:
    """Tick the server clock every *interval* seconds and invalidate ``clock``.

    Workers sharing a store share its clock, and each runs this loop: a worker skips
    its tick when another ticked less than half an interval ago, so the clock still
    ticks about once per interval (by whichever worker comes first) and keeps ticking
    while any worker runs. Whoever ticks invalidates, and NATS tells every tab.
    """
    while True:
        await asyncio.sleep(interval)
        if not store.tick(unless_ticked_within=interval / 2):
            continue
        try:
            await broker.invalidate(CLOCK)
        except Exception:
            # Keep ticking: the next tick is another chance (e.g. NATS reconnected).
            logger.exception("the clock could not invalidate %r", CLOCK)


class BackgroundTask(InitPlugin):
    """Runs *work* for the lifetime of the app, inside the broker's lifetime.

    Listed after `StreamPlugin`, its lifespan is entered after the broker has started
    and left (the task cancelled and awaited) before the broker closes. A lifespan passed
    to ``Litestar(lifespan=...)`` would wrap the broker's instead: the task would run
    before the broker starts and after it closes.
    """

    __slots__ = ("name", "work")

    def __init__(self, work: Callable[[], Coroutine[Any, Any, None]], *, name: str) -> None:
        self.work = work
        self.name = name

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        app_config.lifespan.append(self._lifespan)
        return app_config

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Litestar) -> AsyncIterator[None]:
        task = asyncio.create_task(self.work(), name=self.name)
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


# -- the app -----------------------------------------------------------------------------------


def create_app(
    *,
    broker: Broker | None = None,
    secret: str | None = None,
    datastar_src: str | None = None,
    tick_interval: float = 5.0,
    database: str | os.PathLike[str] | None = None,
    nats_url: str | Sequence[str] | None = None,
) -> Litestar:
    """Build the showcase.

    *broker*: serve this broker (default: a new one, on NATS if *nats_url* is given or
    ``STREAMUI_NATS_URL`` is set, else in-process). *secret*: the stream token secret
    (default: ``STREAMUI_SECRET``, else random per process, fine for one process).
    *datastar_src*: where the page loads Datastar from (default: ``/static/datastar.js``
    if the ``STREAMUI_DATASTAR_JS`` environment variable names a local copy to serve
    there, else the official CDN). *tick_interval*: seconds between clock ticks.
    *database*: a SQLite file to keep the data in, shared with every other worker that
    names it (default: fresh in-memory state for this app).
    """
    if not tick_interval > 0:
        raise ValueError(f"tick_interval must be positive seconds, got {tick_interval!r}")
    handlers: list[HTTPRouteHandler] = list(ROUTES)
    local_datastar = _local_datastar()
    if local_datastar is not None:
        handlers.append(local_datastar)
        datastar_src = datastar_src or DATASTAR_LOCAL_PATH
    site = Site(datastar_src)
    config = StreamConfig(broker=broker)  # the secret and NATS URL default to the environment
    if secret is not None:
        config.secret = secret
    if nats_url is not None:
        config.nats_url = nats_url
    streams = StreamPlugin(config)
    handlers.append(_metrics(streams.broker))
    # Last, so nothing above can fail with the database open.
    store: ShowcaseStore = Store() if database is None else SqliteStore(database)

    def clock() -> Coroutine[Any, Any, None]:
        return run_clock(store, streams.broker, tick_interval)

    return Litestar(
        route_handlers=handlers,
        dependencies={
            "store": Provide(lambda: store, sync_to_thread=False),
            "site": Provide(lambda: site, sync_to_thread=False),
        },
        plugins=[streams, BackgroundTask(clock, name="showcase-clock")],
        on_shutdown=[store.close],
        signature_namespace={"ShowcaseStore": ShowcaseStore, "Site": Site},
    )


def _metrics(broker: Broker) -> HTTPRouteHandler:
    """``GET /metrics``: *broker*'s metrics, in Prometheus' text format.

    From a registry of this app's own, because the tests run several showcases in one
    process and one registry takes one broker's metrics; an app with one broker per
    process registers it with the default registry and serves that with Litestar's
    ``PrometheusController`` (see the README's "Metrics").
    """
    registry = CollectorRegistry(auto_describe=True)
    register_prometheus(broker, registry)

    @get("/metrics", include_in_schema=False, sync_to_thread=False)
    def metrics() -> Response[bytes]:
        # (As a header: a media type would get a second charset from Litestar.)
        return Response(generate_latest(registry), headers={"content-type": CONTENT_TYPE_LATEST})

    return metrics


def _local_datastar() -> HTTPRouteHandler | None:
    """A handler serving the file named by ``STREAMUI_DATASTAR_JS``, or None if unset."""
    value = os.environ.get(DATASTAR_ENV)
    if not value:
        return None
    path = Path(value)
    if not path.is_file():
        raise FileNotFoundError(
            f"{DATASTAR_ENV}={value!r} is not a file; point it at a copy of datastar.js, "
            "or unset it to load Datastar from the CDN"
        )

    @get(DATASTAR_LOCAL_PATH, include_in_schema=False)
    async def datastar_js() -> File:
        return File(path, media_type="text/javascript", content_disposition_type="inline")

    return datastar_js
