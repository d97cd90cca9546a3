"""Shared pytest fixtures for the whole test suite (keep this file small)."""

from __future__ import annotations

import os

import jax
import pytest

# The tests' programs are tiny and compile-bound: XLA's CPU backend without its expensive LLVM passes
# compiles them in about half the time. XLA reads the flags when JAX starts its backend, at the first
# computation, which comes after this conftest is imported; `make perf` and the benchmarks keep the
# default optimisation level.
_FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_FAST_COMPILE}".strip()


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
