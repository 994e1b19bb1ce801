"""Random projections P (D x d), one file per kind, behind a small registry."""

from squeeze.projection import dense, sorf, sparse  # noqa: F401  (registers the kinds)
from squeeze.projection.base import Projection, kinds, make_projection, projection_from_spec

__all__ = ["Projection", "kinds", "make_projection", "projection_from_spec"]
