"""The pytest plugin, run as an application's test suite runs it (a pytest subprocess)."""

from __future__ import annotations

import pytest

from tests.integration.test_readme import readme_code


def readme_plugin_example() -> tuple[str, str]:
    """The README's pytest example: its conftest.py and its test module, for the poll
    app (the README's first example) in a module named ``poll``."""
    code = readme_code("Testing your app", 1)
    conftest, tests = code.split("# test_poll.py\n")
    assert "from myapp import app" in conftest
    return conftest.replace("from myapp import app", "from poll import app"), tests


TESTS = """
import pytest


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
    conftest, readme_tests = readme_plugin_example()
    pytester.makepyfile(poll=readme_code())  # the README's example, as the app's module
    pytester.makeconftest(conftest)
    # (Strict mode: the README's test, as written, runs with pytest-asyncio's auto mode
    # or anyio's; strict mode wants the marker.)
    marker = "import pytest\n\n\n@pytest.mark.asyncio\n" if mode == "strict" else ""
    pytester.makepyfile(test_poll=marker + readme_tests, test_more=TESTS)
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
