"""The tiny self-regenerating ONNX model: build it, check it, write it (or nothing).

The graph holds theta_d as stored, the layerwise scales, the stored buffers and, for a
fine-tune, one reference to the shared base data file; the weights are computed by the
regeneration subgraph (:mod:`squeeze.onnx.theta`), which onnxruntime folds once when the
session starts. Before anything is written, a checking copy with theta as an extra output
runs in onnxruntime (default options, then with every graph optimization disabled) and its
weights' SHA-256 must equal the file's ``weights_sha256``; the final model must pass
``onnx.checker`` (full check) and give the full export's outputs on the seeded inputs.

Fine-tunes: the base tensors (float32, sorted by name, the order of the base digest) go in
``squeeze-base-<base digest>.data`` beside the model. Every tiny fine-tune of that base in the
folder shares it; an existing file is reused only when its contents have the base digest.
"""

from __future__ import annotations

import copy
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import external_data_helper, helper
from torch import nn

from squeeze.atomic import ordinary_mode
from squeeze.base import base_digest
from squeeze.onnx import stored
from squeeze.onnx.graph import Builder
from squeeze.onnx.inputs import InputSpec
from squeeze.onnx.splice import export_bound, splice
from squeeze.onnx.theta import Stored, base_order, theta
from squeeze.subspace import Subspace


THETA_KEY = "squeeze.theta"  # metadata: the name of the flat weights (D,) inside the graph


def regenerated_weights(path: str | os.PathLike, optimize: bool = True) -> np.ndarray:
    """The flat float32 weights (D,) a tiny model regenerates, read from onnxruntime (CPU) by
    running a copy of it with theta as an extra output.

    Args:
        path: a tiny ``.onnx`` file (its base data file beside it, for a fine-tune).
        optimize: default session options (True) or every graph optimization disabled.
    """
    import onnxruntime as ort

    path = Path(path)
    model = onnx.load(str(path), load_external_data=False)
    name = {p.key: p.value for p in model.metadata_props}[THETA_KEY]
    model.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, [None]))
    staged = _temp_beside(path, ".tmp.onnx")
    try:
        onnx.save(model, staged)
        options = ort.SessionOptions()
        if not optimize:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        session = ort.InferenceSession(str(staged), options, providers=["CPUExecutionProvider"])
    finally:
        staged.unlink(missing_ok=True)
    inp = session.get_inputs()[0]
    shape = [s if isinstance(s, int) else 1 for s in inp.shape]
    x = np.zeros(shape, np.int64 if "int64" in inp.type else np.float32)
    return session.run([name], {inp.name: x})[0]


@dataclass
class TinyCheck:
    """What the checks of a tiny model found."""

    digest: str  # SHA-256 of the weights the graph regenerates (default session options)
    digest_unoptimized: str  # the same with every graph optimization disabled
    base_data: Path | None = None  # the shared base data file (fine-tunes)
    base_reused: bool = False


def base_file_name(digest: str) -> str:
    """The shared base data file of a base digest."""
    return f"squeeze-base-{digest}.data"


@dataclass(frozen=True)
class Names:
    """Names in the tiny graph: the flat weights, and the base vector of a fine-tune."""

    theta: str
    base: str | None = None


def build(sub: Subspace, model: nn.Module, f, spec: InputSpec, example: torch.Tensor, output_names: list[str], opset: int, what: str, metadata: dict[str, str]) -> tuple[onnx.ModelProto, Names, np.ndarray | None]:
    """The tiny model (base vector still inline), the names in it, and the base vector.

    Args:
        sub: the file's subspace (digest verified).
        model: its plain module (eval, CPU).
        f: the :class:`~squeeze.format.SqzFile`.
        spec: the graph's input.
        example: a traced input batch.
        output_names: the graph's output names.
        opset: the ONNX opset.
        what: the model's name for messages.
        metadata: model-level metadata.
    """
    names = [s.name for s in sub.manifest] + list(f.extras)
    proto = export_bound(model, spec, example, names, output_names, opset, what)
    g = Builder(opset)
    base = None
    order = base_order(sub)
    if order:  # theta_0 of a base entry is the base tensor as float32
        tensors = sub.base_tensors()
        base = np.concatenate([tensors[sub.manifest[i].name].detach().to("cpu", torch.float32).reshape(-1).numpy() for i in order]).astype("<f4")
    names_in = Stored(
        theta_d=stored.theta_d(g, f.theta_d.cpu().numpy(), f.encoding["enc"]),
        scales=stored.scales(g, None if f.scales is None else f.scales.cpu().numpy()),
        base=g.tensor("base", base) if base is not None else None,
    )
    flat = theta(g, sub, names_in)
    shapes = {s.name: s.shape for s in sub.manifest}
    buffers = {k: v.detach().cpu().numpy() for k, v in f.extras.items()}
    tiny, rename = splice(proto, g, flat, shapes, buffers, metadata)
    names = Names(rename.get(flat, flat), rename.get(names_in.base) if base is not None else None)
    tiny.metadata_props.add(key=THETA_KEY, value=names.theta)
    return tiny, names, base


def check_base_file(path: Path, sub: Subspace, base: np.ndarray, digest: str) -> bool:
    """True when ``path`` exists and holds the base with ``digest``; False when it is absent.

    Raises:
        ExportError: it exists with other contents.
    """
    from squeeze.onnx.exporter import ExportError

    if not path.exists():
        return False
    raw = np.fromfile(path, dtype="<f4") if path.stat().st_size == base.nbytes else None
    got = None
    if raw is not None:
        tensors, at = {}, 0
        for i in base_order(sub):
            s = sub.manifest[i]
            tensors[s.name] = torch.from_numpy(raw[at : at + s.numel].reshape(s.shape))
            at += s.numel
        got = base_digest(tensors, list(tensors))
    if got != digest:
        found = f"digest {got[:16]}..." if got else f"{path.stat().st_size:,} bytes instead of {base.nbytes:,}"
        raise ExportError(f"{path} exists but is not this model's base (it has {found}, the model needs {digest[:16]}...); remove it or export to another folder")
    return True


def _externalize(model: onnx.ModelProto, base_name: str, location: str, nbytes: int) -> None:
    for t in model.graph.initializer:
        if t.name == base_name:
            external_data_helper.set_external_data(t, location, offset=0, length=nbytes)
            t.data_location = onnx.TensorProto.EXTERNAL
            t.ClearField("raw_data")
            return
    raise AssertionError("the base vector is not in the graph")


def _digest(session, inputs: dict, index: int) -> str:
    theta_out = session.run(None, inputs)[index]
    return hashlib.sha256(np.ascontiguousarray(theta_out, dtype="<f4").tobytes()).hexdigest()


def write_checked(tiny: onnx.ModelProto, names: Names, base: np.ndarray | None, sub: Subspace, f, path: Path, spec: InputSpec, check_outputs) -> TinyCheck:
    """Check the tiny model and write it (and a new base data file) atomically.

    Args:
        tiny: from :func:`build`.
        names: the names in it (from :func:`build`).
        base: the base vector of a fine-tune, or None.
        sub: the subspace (for the base layout).
        f: the SqzFile (its weights_sha256 and base digest).
        path: the .onnx file to write.
        spec: the graph's input (a seeded batch runs the checking copy).
        check_outputs: called with the staged final model's path; raises when its outputs
            differ from the full export's.

    Raises:
        ExportError: a digest mismatch, a failed check, or a base data file with other contents.
    """
    import onnxruntime as ort

    from squeeze.onnx.exporter import ExportError, check_onnx, open_session, save

    path.parent.mkdir(parents=True, exist_ok=True)
    base_path = path.parent / base_file_name(f.base) if base is not None else None
    reused = base_path is not None and check_base_file(base_path, sub, base, f.base)
    # Staged beside the output (a fine-tune's graph names its base data file by a path
    # relative to itself); hidden temporary names, removed whatever happens.
    staged, checking = _temp_beside(path, ".tmp.onnx"), _temp_beside(path, ".check.tmp.onnx")
    created_base = False
    try:
        if base is not None:
            if not reused:
                _write_new(base_path, base)
                created_base = True
            _externalize(tiny, names.base, base_path.name, base.nbytes)
        save(lambda: onnx.save(tiny, staged), path)
        check = copy.deepcopy(tiny)
        check.graph.output.append(helper.make_tensor_value_info(names.theta, onnx.TensorProto.FLOAT, [sub.D]))
        save(lambda: onnx.save(check, checking), path)
        feed = {check.graph.input[0].name: spec.seeded((1,), 0)[0]}
        digests = []
        for level in (None, ort.GraphOptimizationLevel.ORT_DISABLE_ALL):
            options = ort.SessionOptions()
            if level is not None:
                options.graph_optimization_level = level
            try:
                session = ort.InferenceSession(str(checking), options, providers=["CPUExecutionProvider"])
            except Exception as e:
                raise ExportError(f"onnxruntime cannot load the tiny model: {str(e).splitlines()[0][:300]}") from e
            digests.append(_digest(session, feed, len(check.graph.output) - 1))
            del session
        for d, how in zip(digests, ("default session options", "graph optimizations disabled")):
            if d != f.weights_sha256:
                raise ExportError(f"the tiny graph regenerates weights with SHA-256 {d[:16]}... under {how}, but the file says {f.weights_sha256[:16]}...; nothing was written (please report this bug)")
        check_onnx(staged)
        open_session(staged)
        check_outputs(staged)
        os.replace(staged, path)
    except BaseException:
        if created_base:
            base_path.unlink(missing_ok=True)
        raise
    finally:
        staged.unlink(missing_ok=True)
        checking.unlink(missing_ok=True)
    return TinyCheck(digests[0], digests[1], base_path, reused)


def _temp_beside(path: Path, suffix: str) -> Path:
    """A new empty hidden file beside ``path`` (for staging; the caller removes it)."""
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    ordinary_mode(name)  # the file is renamed into place as the user's output
    return Path(name)


def _write_new(path: Path, values: np.ndarray) -> None:
    """Write ``values`` to ``path`` through a temporary file and a rename."""
    tmp = _temp_beside(path, ".tmp")
    try:
        values.tofile(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


__all__ = ["Names", "THETA_KEY", "TinyCheck", "regenerated_weights", "base_file_name", "build", "check_base_file", "write_checked"]
