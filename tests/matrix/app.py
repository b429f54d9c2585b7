"""``tests.matrix.app:app``: the matrix app as the variant named by the environment.

Servers import this module in their own processes; ``STREAMUI_MATRIX_VARIANT`` names one
of `tests.matrix.variants.VARIANTS` (default ``plain``).
"""

import logging
import os

from litestar import Litestar

from tests.matrix.variants import VARIANT_ENV, VARIANTS, build_app

__all__ = ["app"]


def _log_streamui() -> None:
    """Print streamui's records (WARNING and up) with their level, so that the test
    reading the server's output sees them; servers configure only their own loggers."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("streamui")
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)


def _from_environment() -> Litestar:
    name = os.environ.get(VARIANT_ENV, "plain")
    if name not in VARIANTS:
        raise SystemExit(f"{VARIANT_ENV}={name!r}: expected one of {sorted(VARIANTS)}")
    _log_streamui()
    return build_app(VARIANTS[name])


app = _from_environment()
