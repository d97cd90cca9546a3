"""The learned loss family, one module per family. Each module exports its registry entries as
`SPECS`; `samplers` registers every one of them (no module registers itself on import)."""

from samplers.methods import (
    adjoint_matching,
    asbs,
    bridge_regression,
    cmcd,
    nets,
    path_kl,
    reward_score_matching,
)

__all__ = ["SPECS"]

SPECS = (
    *adjoint_matching.SPECS,
    *bridge_regression.SPECS,
    *asbs.SPECS,
    *path_kl.SPECS,
    *cmcd.SPECS,
    *nets.SPECS,
    *reward_score_matching.SPECS,
)
