"""The pytest plugin, run as an application's test suite runs it (a pytest subprocess)."""

from __future__ import annotations

import pytest

from tests.integration.test_readme import readme_code

CONFTEST = """
import pytest

from poll import app


@pytest.fixture
def streamui_app():
    return app
"""

TESTS = """
import pytest


@pytest.mark.asyncio
async def test_a_vote_reaches_the_tally(streamui_client, streamui_invalidations):
    page = await streamui_client.get("/")
    async with streamui_client.open_stream(page) as stream:
        await streamui_client.post("/vote")
        change = await stream.next_change()
    assert change.urls == ("/tally",)
    assert streamui_invalidations.scopes == ["poll:1"]


@pytest.mark.asyncio
async def test_each_test_records_its_own(streamui_client, streamui_invalidations):
    await streamui_client.post("/vote")
    await streamui_client.post("/vote")
    assert streamui_invalidations.scopes == ["poll:1", "poll:1"]
"""


@pytest.mark.parametrize("mode", ["strict", "auto"])
def test_the_fixtures_test_an_app_in_either_asyncio_mode(
    pytester: pytest.Pytester, mode: str
) -> None:
    pytester.makepyfile(poll=readme_code())  # the README's example, as the app's module
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_app=TESTS)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-o", f"asyncio_mode={mode}", "--rootdir", str(pytester.path)
    )
    result.assert_outcomes(passed=2)


def test_without_an_app_fixture_the_error_says_what_to_define(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_app="""
def test_uses_it(streamui_invalidations):
    pass
"""
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*named 'streamui_app'*define it in your conftest.py*"])
    assert result.ret != 0
