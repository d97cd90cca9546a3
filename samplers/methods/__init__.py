"""The unified loss family (one module per family); each module registers its methods on import."""

from samplers.methods import adjoint_matching, bridge_regression, cmcd, nets, path_kl  # noqa: F401
