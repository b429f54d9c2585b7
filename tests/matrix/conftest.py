"""The matrix's shared results: every test adds its row, the session writes the table."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.matrix.results import Results
from tests.matrix.servers import ROOT

if TYPE_CHECKING:
    from collections.abc import Iterator

RESULTS = ROOT / "build" / "matrix-results.md"


@pytest.fixture(scope="session")
def matrix_results() -> Iterator[Results]:
    """The results of this session's matrix tests, written to build/matrix-results.md."""
    results = Results()
    yield results
    results.write(RESULTS)
