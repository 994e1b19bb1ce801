"""ONNX export of a ``.sqz`` file, checked against onnxruntime before it is written.

The weights are regenerated (digest verified), the plain module is exported with PyTorch's
``torch.export``-based exporter (``dynamo=True``) with a dynamic batch dimension, and the graph
is checked with ``onnx.checker`` (``full_check``) and run in onnxruntime (CPU) on seeded
inputs of several batch sizes. Only a model that passes every check is renamed into place:
a failed export leaves no ``.onnx`` (and no ``.onnx.data``) behind.

Weights are embedded in the one ``.onnx`` file; only a graph whose weights exceed protobuf's
2 GB limit gets a sibling ``NAME.onnx.data`` (or when asked with ``external_data=True``).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import re
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from squeeze.atomic import atomic_path
from squeeze.errors import SqueezeError
from squeeze.onnx.inputs import Deployed, InputSpec, input_spec

if TYPE_CHECKING:
    from squeeze.format import SqzFile

MIN_OPSET = 18  # the lowest opset the torch.export-based exporter targets
DEFAULT_OPSET = 18
PROTOBUF_LIMIT = 2**31 - 2**26  # weights above this (2 GB less room for the graph) go to .onnx.data
INPUT_NAME = "input"
TRACE_BATCH = 2  # batch size of the example input used to trace (a dynamic dim must not be 0 or 1)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_CALL_SITE = re.compile(r'File "([^"]+)", line (\d+), in (\S+)\n\s*(\S[^\n]*)')


class ExportError(SqueezeError):
    """A model that cannot be exported to ONNX, or an ONNX model that onnx/onnxruntime reject."""


class ExportMismatch(ExportError):
    """The ONNX model's outputs differ from PyTorch's beyond the tolerance; ``report`` has the numbers."""

    def __init__(self, message: str, report: "ExportReport"):
        super().__init__(message)
        self.report = report


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


@dataclass
class ExportReport:
    """What :func:`export_onnx` wrote and how closely onnxruntime reproduces PyTorch."""

    path: Path
    size_bytes: int  # of the .onnx file, plus its .onnx.data when there is one
    opset: int
    input_shape: tuple[int, ...]  # per example, without the batch
    batch_sizes: tuple[int, ...]
    atol: float
    rtol: float
    outputs: list[OutputCheck] = field(default_factory=list)
    external_data: Path | None = None
    seconds: float = 0.0
    input: str = ""  # what the graph takes (InputSpec.describe())
    tiny: bool = False
    full_size_bytes: int = 0  # tiny: the size of the full export it was checked against
    vs_full: list[OutputCheck] = field(default_factory=list)  # tiny: outputs against the full export's
    weights_sha256: str = ""  # tiny: the digest of the weights the graph regenerates (equal to the file's)
    base_data: Path | None = None  # tiny fine-tune: the shared base data file
    base_reused: bool = False

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outputs) and all(o.ok for o in self.vs_full)


def export_onnx(
    source: "str | os.PathLike | SqzFile | nn.Module",
    path: str | os.PathLike,
    *,
    input_shape: tuple[int, ...] | list[int] | None = None,
    opset: int = DEFAULT_OPSET,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    batch_sizes: tuple[int, ...] = (1, 7),
    seed: int = 0,
    arch: str | nn.Module | None = None,
    base=None,
    device: str | torch.device = "cpu",
    external_data: bool | None = None,
    tiny: bool = False,
    preprocess: bool = True,
    input_dtype: str | None = None,
) -> ExportReport:
    """Export a ``.sqz`` file (or a module) to ONNX and check it against onnxruntime.

    Args:
        source: a ``.sqz`` path or :class:`~squeeze.format.SqzFile` (weights regenerated and
            digest-verified), a :class:`~squeeze.Subspace` (materialized), or a plain module.
        path: the ``.onnx`` file to write (atomically; nothing is left there on failure).
        input_shape: one example's shape without the batch, e.g. ``(1, 28, 28)``; defaults to
            the ``input_shape`` the file records.
        opset: the ONNX opset (18 or later).
        atol, rtol: the check passes when every output element has
            ``|onnx - torch| <= atol + rtol * |torch|``.
        batch_sizes: batch sizes of the seeded standard-normal inputs compared.
        seed: seed of those inputs (numpy ``default_rng``; inputs only, never weights).
        arch: architecture to use instead of the file's own reference.
        base: the base checkpoint of a fine-tune.
        device: where to regenerate the weights (export and checks run on the CPU).
        external_data: write the weights to ``PATH.data`` (default: only above 2 GB).
        tiny: write the self-regenerating graph (:mod:`squeeze.onnx`): theta_d as stored plus
            the regeneration as ONNX ops, checked bit for bit against the file's digest and
            against the full export's outputs (needs a ``.sqz`` source; a fine-tune's base goes
            in the shared ``squeeze-base-<digest>.data`` beside ``path``).
        preprocess: put the file's recorded preprocessing (e.g. the 1/255 pixel scale) in the
            graph, so that it takes raw inputs.
        input_dtype: ``float32`` or ``int64`` (token ids); default int64 when the file's data
            record names a tokenizer.

    Returns:
        An :class:`ExportReport` with the per-output errors and the file size.

    Raises:
        ExportError: no input shape, an architecture the exporter cannot handle, or an ONNX
            model that onnx.checker or onnxruntime rejects.
        ExportMismatch: outputs beyond the tolerance (its ``report`` holds the numbers).
        FormatError, ArchError, DigestMismatch: the ``.sqz`` file does not load.
    """
    start = time.time()
    path = Path(path)
    _check_settings(opset, atol, rtol, batch_sizes)
    if tiny and isinstance(source, nn.Module):
        raise ExportError("a tiny ONNX graph regenerates a .sqz file's weights; pass the .sqz file, not a module")
    model, shape, meta, sub, f = _model_of(source, input_shape, arch, base, device, tiny)
    spec = input_spec(shape, model, f.data if f is not None else None, preprocess, input_dtype)
    what = meta.get("squeeze.arch") or type(model).__name__
    example = torch.from_numpy(spec.seeded((TRACE_BATCH,), seed)[0])
    n_outputs = len(_flatten(_run_torch(Deployed(model, spec), example, what, shape)))
    names = ["output"] if n_outputs == 1 else [f"output_{i}" for i in range(n_outputs)]
    report = ExportReport(path=path, size_bytes=0, opset=opset, input_shape=shape, batch_sizes=tuple(batch_sizes), atol=atol, rtol=rtol, input=spec.describe(), tiny=tiny)
    if tiny:
        _export_tiny(report, sub, model, f, spec, example, names, opset, what, meta, seed)
        report.seconds = time.time() - start
        return report
    _export_full(report, Deployed(model, spec), spec, example, names, opset, what, meta, seed, external_data)
    report.seconds = time.time() - start
    return report


def _export_full(report: ExportReport, model: nn.Module, spec: InputSpec, example: torch.Tensor, names: list[str], opset: int, what: str, meta: dict, seed: int, external_data: bool | None) -> None:
    """Export ``model`` (inputs as users hold them) with its weights as initializers, check it
    against PyTorch and write it to ``report.path``."""
    path, atol, rtol, batch_sizes = report.path, report.atol, report.rtol, report.batch_sizes
    onnx_model = _export(model, example, names, opset, what)
    onnx_model.metadata_props.update(meta)
    onnx_model.metadata_props["squeeze.input_shape"] = json.dumps(list(spec.shape))
    onnx_model.metadata_props["squeeze.input"] = spec.describe()
    report.opset = onnx_model.opset_imports.get("", opset)
    weight_bytes = sum(v.const_value.nbytes for v in onnx_model.graph.initializers.values() if v.const_value is not None)
    external = weight_bytes > PROTOBUF_LIMIT if external_data is None else external_data

    def check(onnx_path: Path, data_path: Path | None = None) -> None:
        _check_onnx(onnx_path)
        report.outputs = compare_onnx(model, onnx_path, spec.shape, batch_sizes=batch_sizes, atol=atol, rtol=rtol, seed=seed, names=names, spec=spec)
        report.size_bytes = onnx_path.stat().st_size + (data_path.stat().st_size if data_path else 0)
        _raise_if_mismatch(report, "PyTorch's")

    import onnx_ir as ir

    if not external:
        with atomic_path(path) as tmp:
            _save(lambda: ir.save(onnx_model, tmp), path)
            check(tmp)
    else:
        report.external_data = path.with_name(path.name + ".data")
        _write_with_external_data(onnx_model, path, report.external_data, check)


def _raise_if_mismatch(report: ExportReport, against: str) -> None:
    if report.ok:
        return
    bad = [o for o in (*report.outputs, *report.vs_full) if not o.ok]
    worst = "; ".join(f"{o.name}: max abs error {o.max_abs:.3g}, max rel error {o.max_rel:.3g}, {o.mismatched} of {o.total} values beyond" for o in bad)
    raise ExportMismatch(f"onnxruntime's outputs differ from {against} beyond atol={report.atol:g}, rtol={report.rtol:g} ({worst}); nothing was written to {report.path}", report)


def _export_tiny(report: ExportReport, sub, model: nn.Module, f, spec: InputSpec, example: torch.Tensor, names: list[str], opset: int, what: str, meta: dict, seed: int) -> None:
    """Build the tiny graph, check it (digest, both session settings, onnx.checker, outputs
    against PyTorch and against the full export) and write it to ``report.path``."""
    from squeeze.onnx import projections, tiny

    projections.check_size(sub.projection)
    deployed = Deployed(model, spec)
    metadata = {"squeeze.weights_sha256": f.weights_sha256, "squeeze.pre": spec.short()}
    graph, graph_names, base_vector = tiny.build(sub, model, f, spec, example, names, opset, what, metadata)
    with tempfile.TemporaryDirectory(prefix=".squeeze-full-", dir=report.path.parent if report.path.parent.is_dir() else None) as folder:
        full = Path(folder) / "full.onnx"
        full_report = ExportReport(path=full, size_bytes=0, opset=opset, input_shape=spec.shape, batch_sizes=report.batch_sizes, atol=report.atol, rtol=report.rtol)
        _export_full(full_report, deployed, spec, example, names, opset, what, meta, seed, None)
        report.full_size_bytes = full_report.size_bytes

        def check_outputs(staged: Path) -> None:
            report.outputs = compare_onnx(deployed, staged, spec.shape, batch_sizes=report.batch_sizes, atol=report.atol, rtol=report.rtol, seed=seed, names=names, spec=spec)
            report.vs_full = compare_sessions(staged, full, spec, batch_sizes=report.batch_sizes, atol=report.atol, rtol=report.rtol, seed=seed, names=names)
            report.size_bytes = staged.stat().st_size
            _raise_if_mismatch(report, "PyTorch's or the full export's")

        result = tiny.write_checked(graph, graph_names, base_vector, sub, f, report.path, spec, check_outputs)
    report.weights_sha256 = result.digest
    report.base_data, report.base_reused = result.base_data, result.base_reused


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
    session = _session(Path(onnx_path))
    input_name = session.get_inputs()[0].name
    out_names = names or [o.name for o in session.get_outputs()]
    stats: dict[int, list] = {}
    spec = spec or InputSpec(tuple(input_shape))
    for x in spec.seeded(tuple(batch_sizes), seed):
        want = [t.detach().cpu().float().numpy() for t in _flatten(_run_torch(model, torch.from_numpy(x), type(model).__name__, input_shape))]
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
    session, reference = _session(Path(onnx_path)), _session(Path(reference_path))
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
        raise ExportError(f"onnxruntime could not run the exported model on a batch of {len(x)}: {_first_line(e)}") from e


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


def _model_of(source, input_shape, arch, base, device, tiny: bool = False):
    """(plain CPU module in eval mode, the input shape, ONNX metadata, the Subspace or None, the
    SqzFile or None); the shape is checked before any weights are regenerated."""
    from squeeze import format as fmt
    from squeeze.subspace import Subspace

    if isinstance(source, nn.Module):
        shape = _input_shape(input_shape, None)
        if isinstance(source, Subspace):
            return source.materialize().to("cpu").eval(), shape, {"squeeze.weights_sha256": source.digest()}, source, None
        return source.to("cpu").eval(), shape, {}, None, None
    f = source if isinstance(source, fmt.SqzFile) else fmt.read(source)
    shape = _input_shape(input_shape, (f.data or {}).get("input_shape"))
    meta = {"squeeze.weights_sha256": f.weights_sha256}
    ref = arch if isinstance(arch, str) else (f.arch or {}).get("ref") if arch is None else None
    if ref:
        meta["squeeze.arch"] = ref
    if f.data:
        meta["squeeze.data"] = json.dumps(f.data, sort_keys=True)
    if tiny and f.base is not None and base is None:
        raise ExportError(f"this file is a fine-tune of a base model (digest {f.base[:16]}...); pass --base with that checkpoint (or --base arch), whose weights go in the shared base data file")
    sub = fmt.load_subspace(f, arch, base=base, device=device)
    if tiny:
        sub = sub.to("cpu")
        from squeeze.onnx.projections import check_size

        check_size(sub.projection)
    return sub.materialize().to("cpu").eval(), shape, meta, sub, f


def _input_shape(given, recorded) -> tuple[int, ...]:
    shape = given if given is not None else recorded
    if shape is None:
        raise ExportError("the input shape is unknown: the file does not record one; pass --input-shape (one example's shape without the batch, e.g. 1,28,28)")
    try:
        shape = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise ExportError(f"the input shape {shape!r} must be a list of positive integers, e.g. 1,28,28") from None
    if not shape or any(s < 1 for s in shape):
        raise ExportError(f"the input shape {list(shape)} must be a non-empty list of positive integers, e.g. 1,28,28")
    return shape


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1,28,28"`` -> ``(1, 28, 28)`` (also accepts ``1x28x28`` and spaces)."""
    parts = [p for p in re.split(r"[,x\s]+", text.strip().strip("()[]")) if p]
    try:
        return _input_shape([int(p) for p in parts], None)
    except ValueError:
        raise ExportError(f"--input-shape {text!r} must be positive integers separated by commas, e.g. 1,28,28") from None


def _check_settings(opset: int, atol: float, rtol: float, batch_sizes) -> None:
    import onnx

    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise ExportError(f"opset {opset} is not supported: the exporter writes opset {MIN_OPSET} to {newest}; pass --opset in that range")
    if not (atol >= 0 and rtol >= 0 and math.isfinite(atol) and math.isfinite(rtol)):
        raise ExportError(f"tolerances must be finite and non-negative, got atol={atol}, rtol={rtol}")
    if not batch_sizes or any(int(b) < 1 for b in batch_sizes):
        raise ExportError(f"batch sizes to check must be positive integers, got {list(batch_sizes)}")


def _run_torch(model: nn.Module, x: torch.Tensor, what: str, shape) -> object:
    try:
        with torch.no_grad():
            return model(x)
    except Exception as e:
        raise ExportError(f"{what} does not accept inputs of shape (batch, {', '.join(map(str, shape))}) ({_first_line(e)}); pass the right --input-shape") from e


def _flatten(out) -> list[torch.Tensor]:
    """The tensors of a model output in the exporter's order (tuples, lists, dict values)."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _flatten(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in _flatten(o)]
    raise ExportError(f"the model returns a {type(out).__name__}; ONNX export needs tensors (or tuples, lists or dicts of tensors)")


@contextlib.contextmanager
def _quiet():
    """Silence the exporter's progress prints, warnings and logs (its errors carry the reason)."""
    loggers = [logging.getLogger(n) for n in ("torch", "onnxscript", "onnx_ir")]
    loggers += [lg for n, lg in list(logging.root.manager.loggerDict.items()) if isinstance(lg, logging.Logger) and n.startswith(("torch.", "onnxscript.", "onnx_ir."))]
    levels = [lg.level for lg in loggers]
    sink = io.StringIO()
    try:
        for lg in loggers:
            lg.setLevel(logging.CRITICAL + 1)
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


@contextlib.contextmanager
def _plain_attention():
    """Export nn.MultiheadAttention/TransformerEncoder through their plain-op path: their fused
    inference fast path (``torch.backends.mha``) has no ONNX translation."""
    previous = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(previous)


def _export(model: nn.Module, example: torch.Tensor, output_names: list[str], opset: int, what: str):
    """The exporter's ONNX model (an ``onnx_ir.Model``) with a dynamic batch dimension."""
    batch = torch.export.Dim("batch")
    try:
        with _quiet(), _plain_attention():
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=output_names,
                dynamic_shapes=({0: batch},),
                external_data=False,
                verbose=False,
                report=False,
            )
    except Exception as e:
        raise ExportError(_exporter_reason(e, what)) from e
    return program.model


def _exporter_reason(e: BaseException, what: str) -> str:
    """One sentence from an exporter failure: the stage, the root cause and the user's line."""
    root = e
    while root.__cause__ is not None:
        root = root.__cause__
    stage = {
        "TorchExportError": "torch.export could not capture its forward",
        "ConversionError": "an operation in its graph has no ONNX translation",
    }.get(type(e).__name__, "the ONNX exporter failed")
    cause = f"{type(root).__name__}: {_first_line(root)}"
    site = _CALL_SITE.search(_ANSI.sub("", str(root))) or _CALL_SITE.search(_ANSI.sub("", str(e)))
    where = f" at {site[1]}:{site[2]} in {site[3]} (`{site[4].strip()}`)" if site else ""
    hint = ""
    if "data-dependent" in cause or "data dependent" in cause:
        hint = " The forward takes a Python decision on tensor values; express it with tensor ops (torch.where, torch.cond)."
    return f"cannot export {what} to ONNX: {stage} ({cause}){where}.{hint} Run with --debug for the exporter's full report"


def _first_line(e: BaseException) -> str:
    text = _ANSI.sub("", str(e)).strip() or type(e).__name__
    first = text.split("\n\n")[0].replace("\n", " ").strip()
    return first if len(first) <= 300 else first[:297] + "..."


def _save(write, path: Path) -> None:
    try:
        write()
    except Exception as e:
        raise ExportError(f"could not write the ONNX model for {path}: {_first_line(e)}") from e


def _check_onnx(onnx_path: Path) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(onnx_path), full_check=True)
    except Exception as e:
        raise ExportError(f"the exported model fails onnx.checker: {_first_line(e)}") from e


def _session(onnx_path: Path):
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    except Exception as e:
        raise ExportError(f"onnxruntime cannot load the exported model: {_first_line(e)} (a lower --opset may help)") from e


def _write_with_external_data(onnx_model, path: Path, data_path: Path, check) -> None:
    """Write ``path`` + ``data_path`` through a temporary folder beside them: check there, then
    rename the data first and the graph last, so a failure leaves neither."""
    import onnx_ir as ir

    path.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        staged, staged_data = folder / path.name, folder / data_path.name
        _save(lambda: ir.save(onnx_model, staged, external_data=data_path.name), path)
        check(staged, staged_data)
        for p in (staged_data, staged):
            with open(p, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(staged_data, data_path)
        try:
            os.replace(staged, path)
        except BaseException:
            data_path.unlink(missing_ok=True)
            raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)


__all__ = ["ExportError", "ExportMismatch", "ExportReport", "OutputCheck", "compare_onnx", "compare_sessions", "export_onnx", "parse_shape"]
