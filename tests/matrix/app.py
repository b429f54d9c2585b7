"""``tests.matrix.app:app``: the matrix app as the variant named by the environment.

Servers import this module in their own processes; ``STREAMUI_MATRIX_VARIANT`` names one
of `tests.matrix.variants.VARIANTS` (default ``plain``).
"""

import os

from litestar import Litestar

from tests.matrix.variants import VARIANT_ENV, VARIANTS, build_app
from tests.support import log_streamui_warnings

__all__ = ["app"]


def _from_environment() -> Litestar:
    name = os.environ.get(VARIANT_ENV, "plain")
    if name not in VARIANTS:
        raise SystemExit(f"{VARIANT_ENV}={name!r}: expected one of {sorted(VARIANTS)}")
    log_streamui_warnings()
    return build_app(VARIANTS[name])


app = _from_environment()
