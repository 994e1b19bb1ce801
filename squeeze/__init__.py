"""squeeze: neural networks as a seed, a projection spec and a short vector theta_d.

Public API: ``Subspace`` and ``SubspaceConfig`` to train in a random subspace, ``save`` /
``load`` / ``read`` for ``.sqz`` files, and the error types every user-facing failure raises.
"""

__version__ = "0.1.0"

from squeeze.errors import ArchError, DataError, DigestMismatch, FormatError, SqueezeError  # noqa: E402

# The rest imports torch: loaded on first use, so `squeeze --help` and `--version` start fast.
_LAZY = {
    "Subspace": "squeeze.subspace",
    "SubspaceConfig": "squeeze.subspace",
    "save": "squeeze.format",
    "load": "squeeze.format",
    "read": "squeeze.format",
    "export_onnx": "squeeze.export",
    "ExportReport": "squeeze.export",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'squeeze' has no attribute {name!r}")


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
