"""Shared pytest fixtures for the whole test suite (keep this file small)."""

from __future__ import annotations

import os

import jax
import pytest

# The tests' programs are tiny and compile-bound: XLA's CPU backend without its expensive LLVM passes
# compiles them in about half the time, and its classic elemental emitters instead of the MLIR
# fusion emitters halve that again (the method contract's programs: 24 s -> 12 s of CPU for four
# methods, same results). Compiling each program as one LLVM module instead of splitting it for
# parallel codegen saves another third of the compile CPU (test_cmcd + test_adjoint_matching:
# 45 -> 32 CPU-s): the split only pays on idle cores, and the two xdist workers keep both busy. Only
# float rounding differs from XLA's defaults. XLA reads the flags when JAX starts its backend, at the
# first computation, which comes after this conftest is imported; subprocesses started by tests
# inherit them; `make perf` and the benchmarks keep XLA's defaults.
_FAST_COMPILE = (
    "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
    " --xla_cpu_use_fusion_emitters=false --xla_cpu_parallel_codegen_split_count=1"
)
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_FAST_COMPILE}".strip()

# Strict dtype promotion for the whole suite: mixing dtypes without an explicit cast raises, so the
# library's casts are checked everywhere (calls into libraries that promote internally go through
# `samplers.promotion.standard_promotion`). Subprocesses started by tests get it from the environment.
jax.config.update("jax_numpy_dtype_promotion", "strict")
os.environ["JAX_NUMPY_DTYPE_PROMOTION"] = "strict"


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
