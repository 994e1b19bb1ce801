"""squeeze: neural networks as a seed, a projection spec and a short vector theta_d.

Public API, the library verbs (each takes a config and returns a result that saves and reports):
``compress`` (a trained dense model -> the smallest file keeping its accuracy, or the best
within a byte budget; :class:`CompressConfig`), ``train`` (train in a random subspace;
:class:`TrainConfig`), ``quantize`` (a file's theta_d to L levels; :class:`QuantizeConfig`), ``verify`` (a :class:`VerifyReport`, never an exception for a bad
file), ``load`` / ``save`` / ``read`` for ``.sqz`` files, ``export_onnx``; ``Subspace`` and
``SubspaceConfig`` to train with your own loop; and the error types every user-facing failure
raises.
"""

__version__ = "0.1.0"

import sys as _sys  # noqa: E402
import types as _types  # noqa: E402

from squeeze.errors import ArchError, DataError, DigestMismatch, FormatError, SqueezeError  # noqa: E402

# The rest imports torch: loaded on first use, so `squeeze --help` and `--version` start fast.
_LAZY = {
    "Subspace": "squeeze.subspace",
    "SubspaceConfig": "squeeze.subspace",
    "save": "squeeze.format",
    "load": "squeeze.loading",
    "read": "squeeze.format",
    "export_onnx": "squeeze.export",
    "ExportReport": "squeeze.export",
    "compress": "squeeze.api",
    "Compressed": "squeeze.api",
    "CompressConfig": "squeeze.compress",
    "train": "squeeze.training",
    "Trained": "squeeze.training",
    "TrainConfig": "squeeze.training",
    "quantize": "squeeze.api",
    "Quantized": "squeeze.api",
    "QuantizeConfig": "squeeze.quantize",
    "verify": "squeeze.verify",
    "VerifyReport": "squeeze.verify",
}

# Verbs that share their name with a module (squeeze/compress.py, quantize.py, verify.py): importing
# that module must not replace the verb on the package (``from squeeze.compress import X`` still
# works: it reads the module from sys.modules).
_VERBS = {"compress", "quantize", "verify"}


class _Package(_types.ModuleType):
    def __setattr__(self, name, value):
        if name in _VERBS and isinstance(value, _types.ModuleType):
            return
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'squeeze' has no attribute {name!r}")


__all__ = [
    "compress",
    "Compressed",
    "CompressConfig",
    "train",
    "Trained",
    "TrainConfig",
    "quantize",
    "Quantized",
    "QuantizeConfig",
    "verify",
    "VerifyReport",
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
