"""Fixtures of the worker tests: `start` serves one test app in this process, as in the
integration tests (the tests of a token from a sibling or a previous process use it)."""

from tests.integration.conftest import start

__all__ = ["start"]
