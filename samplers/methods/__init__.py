"""The unified loss family (one module per family); each module registers its methods on import."""

from samplers.methods import (  # noqa: F401
    adjoint_matching,
    bridge_regression,
    cmcd,
    nets,
    path_kl,
    reward_score_matching,
)
