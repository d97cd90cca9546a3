"""Numerical checks of the unified paper's claims (arXiv 2605.00229), as library functions.

Each module measures one claim on analytic targets and returns plain data; `benchmarks/` turns it into
tables, figures and records (samplers never imports benchmarks).

- `grad_variance`: the minibatch-gradient variance of the bridge-pair regression losses (AS, TSM, CSM,
  NSM, and AM when available) near the end points of the time interval.
- `lean_adjoint`: norm bounds on the lean adjoint ODE (written alongside Adjoint Matching).
"""
