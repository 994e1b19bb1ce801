"""The output checks every ONNX export runs: onnxruntime against PyTorch, or one graph against another.

Both run the same seeded inputs (:meth:`squeeze.onnx.inputs.InputSpec.seeded`) at several batch
sizes on onnxruntime's CPU provider and report, per output, the worst absolute and relative
difference and how many values fall outside ``atol + rtol * |reference|`` (as ``torch.testing``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from squeeze.onnx.exporter import ExportError, first_line, open_session
from squeeze.onnx.inputs import InputSpec


@dataclass
class OutputCheck:
    """One output of the model, compared between onnxruntime and PyTorch over all checked batches.

    ``max_rel`` is ``|onnx - torch| / |torch|`` (as in ``torch.testing``); an element passes when
    ``|onnx - torch| <= atol + rtol * |torch|``.
    """

    name: str
    shape: tuple[int, ...]  # per example, without the batch
    max_abs: float
    max_rel: float
    mismatched: int  # elements beyond the tolerance
    total: int

    @property
    def ok(self) -> bool:
        return self.mismatched == 0


def compare_onnx(
    model: nn.Module,
    onnx_path: str | os.PathLike,
    input_shape: tuple[int, ...],
    *,
    batch_sizes: tuple[int, ...] = (1, 7),
    atol: float = 1e-4,
    rtol: float = 1e-3,
    seed: int = 0,
    names: list[str] | None = None,
    spec: InputSpec | None = None,
) -> list[OutputCheck]:
    """Run ``model`` (PyTorch, CPU) and ``onnx_path`` (onnxruntime, CPUExecutionProvider) on the
    same seeded inputs and measure the differences per output.

    Args:
        spec: the graph's input (dtype, preprocessing); default float32 of ``input_shape``.

    Returns:
        One :class:`OutputCheck` per output, worst case over ``batch_sizes``.
    """
    session = open_session(Path(onnx_path))
    input_name = session.get_inputs()[0].name
    out_names = names or [o.name for o in session.get_outputs()]
    stats: dict[int, list] = {}
    spec = spec or InputSpec(tuple(input_shape))
    for x in spec.seeded(tuple(batch_sizes), seed):
        want = [t.detach().cpu().float().numpy() for t in flatten(run_torch(model, torch.from_numpy(x), type(model).__name__, input_shape))]
        got = _run_session(session, input_name, x)
        if len(got) != len(want):
            raise ExportError(f"the ONNX model has {len(got)} outputs but the PyTorch model returns {len(want)} tensors")
        _accumulate(stats, got, want, out_names, atol, rtol, len(x))
    return [OutputCheck(out_names[i], s[4], s[0], s[1], s[2], s[3]) for i, s in sorted(stats.items())]


def compare_sessions(
    onnx_path: str | os.PathLike,
    reference_path: str | os.PathLike,
    spec: InputSpec,
    *,
    batch_sizes: tuple[int, ...] = (1, 7),
    atol: float = 1e-4,
    rtol: float = 1e-3,
    seed: int = 0,
    names: list[str] | None = None,
) -> list[OutputCheck]:
    """Run two ONNX models in onnxruntime (CPU, default options) on the same seeded inputs and
    measure the differences per output (``reference_path`` is the reference).

    Returns:
        One :class:`OutputCheck` per output, worst case over ``batch_sizes``.
    """
    session, reference = open_session(Path(onnx_path)), open_session(Path(reference_path))
    input_name, ref_input = session.get_inputs()[0].name, reference.get_inputs()[0].name
    out_names = names or [o.name for o in session.get_outputs()]
    stats: dict[int, list] = {}
    for x in spec.seeded(tuple(batch_sizes), seed):
        got, want = _run_session(session, input_name, x), _run_session(reference, ref_input, x)
        if len(got) != len(want):
            raise ExportError(f"the two ONNX models have {len(got)} and {len(want)} outputs")
        _accumulate(stats, got, want, out_names, atol, rtol, len(x))
    return [OutputCheck(out_names[i], s[4], s[0], s[1], s[2], s[3]) for i, s in sorted(stats.items())]


def _run_session(session, input_name: str, x: np.ndarray) -> list[np.ndarray]:
    try:
        return session.run(None, {input_name: x})
    except Exception as e:
        raise ExportError(f"onnxruntime could not run the exported model on a batch of {len(x)}: {first_line(e)}") from e


def _accumulate(stats: dict, got: list[np.ndarray], want: list[np.ndarray], out_names: list[str], atol: float, rtol: float, batch: int) -> None:
    """Fold one batch's differences into ``stats`` (per output: max abs, max rel, beyond, total, shape)."""
    for i, (g, w) in enumerate(zip(got, want)):
        if g.shape != w.shape:
            raise ExportError(f"ONNX output {out_names[i]} has shape {list(g.shape)} on a batch of {batch}, the reference's has {list(w.shape)}")
        diff = np.abs(g.astype(np.float64) - w.astype(np.float64))
        ref = np.abs(w.astype(np.float64))
        both_nan = np.isnan(g) & np.isnan(w)
        diff = np.where(both_nan, 0.0, diff)
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(diff == 0, 0.0, diff / ref)
        bad = int(np.count_nonzero(~(diff <= atol + rtol * ref)))
        s = stats.setdefault(i, [0.0, 0.0, 0, 0, tuple(w.shape[1:])])
        s[0] = max(s[0], float(np.nan_to_num(diff, nan=np.inf).max(initial=0.0)))
        s[1] = max(s[1], float(np.nan_to_num(rel, nan=np.inf).max(initial=0.0)))
        s[2] += bad
        s[3] += diff.size


def run_torch(model: nn.Module, x: torch.Tensor, what: str, shape) -> object:
    try:
        with torch.no_grad():
            return model(x)
    except Exception as e:
        raise ExportError(f"{what} does not accept inputs of shape (batch, {', '.join(map(str, shape))}) ({first_line(e)}); pass the right input_shape=") from e


def flatten(out) -> list[torch.Tensor]:
    """The tensors of a model output in the exporter's order (tuples, lists, dict values)."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in flatten(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in flatten(o)]
    raise ExportError(f"the model returns a {type(out).__name__}; ONNX export needs tensors (or tuples, lists or dicts of tensors)")


__all__ = ["OutputCheck", "compare_onnx", "compare_sessions", "flatten", "run_torch"]
