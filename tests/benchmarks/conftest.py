"""Fixtures of the harness tests."""

from __future__ import annotations

import pytest

from tests.benchmarks import toy_method


@pytest.fixture(scope="module")
def toy_methods():
    """Register the toy methods for one module (the method registry is process-global)."""
    toy_method.register()
    yield
    toy_method.unregister()
