"""The ``streamui`` pytest plugin: fixtures for testing an app that uses streamui.

pytest loads it by itself wherever streamui is installed (an entry point). Give it your
app with a fixture named ``streamui_app``, in a ``conftest.py``::

    @pytest.fixture
    def streamui_app():
        return create_app()

then use, in async tests:

- ``streamui_client``: a started `streamui.testing.LiveClient` for that app (its
  lifespan runs in the test's event loop; its streams are closed after the test);
- ``streamui_invalidations``: the `streamui.testing.Invalidations` made through the
  app's broker during the test.

The async fixture is a pytest-asyncio fixture when pytest-asyncio is installed (in its
"auto" and "strict" modes alike), else a plain one for anyio's plugin.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from streamui.testing import Invalidations, LiveClient

if TYPE_CHECKING:
    _async_fixture = pytest.fixture
else:
    try:
        import pytest_asyncio

        _async_fixture = pytest_asyncio.fixture
    except ImportError:  # the project runs async tests with anyio's plugin
        _async_fixture = pytest.fixture


@pytest.fixture
def streamui_app() -> Any:
    """The app under test: override it (a fixture of the same name) in your conftest.py."""
    raise pytest.UsageError(
        "streamui's fixtures test the app that a fixture named 'streamui_app' returns: "
        "define it in your conftest.py (@pytest.fixture def streamui_app(): return app)"
    )


@_async_fixture
async def streamui_client(streamui_app: Any) -> AsyncIterator[LiveClient]:
    """A `streamui.testing.LiveClient` serving ``streamui_app`` in the test's loop."""
    from streamui.testing import LiveClient

    async with LiveClient(streamui_app) as client:
        yield client


@pytest.fixture
def streamui_invalidations(streamui_app: Any) -> Iterator[Invalidations]:
    """The invalidations made through ``streamui_app``'s broker during the test."""
    from streamui.testing import broker_of, recorded_invalidations

    with recorded_invalidations(broker_of(streamui_app)) as seen:
        yield seen
