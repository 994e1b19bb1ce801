"""squeeze: neural networks as a seed, a projection spec and a short vector theta_d."""

from squeeze.subspace import Subspace, SubspaceConfig

__version__ = "0.1.0"

__all__ = ["Subspace", "SubspaceConfig", "__version__"]
