"""Shared pytest fixtures for the whole test suite (keep this file small)."""

from __future__ import annotations

import jax
import pytest


@pytest.fixture
def x64():
    """Run one test with 64-bit JAX types (scoped: the global default stays float32)."""
    with jax.enable_x64(True):
        yield


@pytest.fixture
def strict_promotion():
    """Run one test with strict dtype promotion and rank promotion raising."""
    with jax.numpy_dtype_promotion("strict"), jax.numpy_rank_promotion("raise"):
        yield
