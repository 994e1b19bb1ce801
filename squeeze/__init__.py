"""squeeze: neural networks as a seed, a projection spec and a short vector theta_d.

Public API: ``Subspace`` and ``SubspaceConfig`` to train in a random subspace, ``save`` /
``load`` / ``read`` for ``.sqz`` files, and the error types every user-facing failure raises.
"""

__version__ = "0.1.0"

from squeeze.errors import ArchError, DataError, DigestMismatch, FormatError, SqueezeError  # noqa: E402
from squeeze.subspace import Subspace, SubspaceConfig  # noqa: E402
from squeeze.format import load, read, save  # noqa: E402
from squeeze.export import ExportReport, export_onnx  # noqa: E402

__all__ = [
    "Subspace",
    "SubspaceConfig",
    "save",
    "load",
    "read",
    "export_onnx",
    "ExportReport",
    "SqueezeError",
    "FormatError",
    "DigestMismatch",
    "ArchError",
    "DataError",
    "__version__",
]
