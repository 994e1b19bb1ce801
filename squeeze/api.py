"""The library verbs: each takes its inputs and a config, and returns a result that can save
and report (``train`` is in :mod:`squeeze.training`). The CLI's commands parse their options, call one of these, and print.

    result = squeeze.compress("teacher.safetensors", "digits", squeeze.CompressConfig(size=1500), arch="squeeze.zoo:MLP")
    result.save("model.sqz")
    squeeze.verify("model.sqz").ok

Errors name the parameters of these functions (``arch=``, ``data=``, ``input_shape=``), never a
command-line flag: the CLI maps them to its flags.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from torch import nn

from squeeze.errors import ArchError, DataError, SqueezeError

Log = Callable[[str], None]
NEEDS_BASE = "the base checkpoint beside the file (the ratio counts the file alone)"  # a report's "needs" for a fine-tune


def _quiet(_: str) -> None:
    pass


def model_for_data(arch: str | None, data, *, arch_kwargs: dict | str | None = None, input_shape=None, log: Log = _quiet):
    """Load ``data``, build the architecture ``arch`` for it, and check one batch fits.

    Args:
        arch: an architecture reference (``squeeze.zoo:MLP``, ``path/to/file.py:Net``).
        data: a data source (``digits``, ``mnist5k``, a .npz/.pt/.csv path) or a loaded ``Dataset``.
        arch_kwargs: keyword arguments for the architecture (a dict, or JSON text).
        input_shape: the shape of one example (e.g. ``(1, 8, 8)``) for data stored flat (CSV).
        log: called with each warning about the data (``warning: ...``).

    Returns:
        (model, arch record ``{"ref", "kwargs"}`` for the file, data set)

    Raises:
        SqueezeError: all missing inputs at once; ArchError, DataError.
    """
    from squeeze import arch as arch_mod
    from squeeze.data import Dataset, check_fits, load_data, reshape_inputs

    missing = [what for what, given in (("arch= (the architecture, e.g. 'squeeze.zoo:MLP' or 'path/to/model.py:Net')", arch), ("data= (e.g. 'mnist5k', or a .npz/.pt/.csv file with x, y[, x_test, y_test])", data)) if not given]
    if missing:
        raise SqueezeError(f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required")
    ds = data if isinstance(data, Dataset) else load_data(str(data))
    if input_shape is not None:
        ds = reshape_inputs(ds, tuple(int(n) for n in input_shape))
    for warning in ds.warnings:
        log(f"warning: {warning}")
    given = arch_kwargs if isinstance(arch_kwargs, dict) else arch_mod.parse_kwargs(arch_kwargs)
    kwargs = arch_mod.complete_kwargs(arch, given, ds.input_shape, ds.num_classes)
    try:
        model = arch_mod.build(arch, kwargs)
    except ArchError as e:
        from_data = sorted(set(kwargs) - set(given))
        if not from_data:
            raise
        raise DataError(
            f"{arch} cannot be built for the data {ds.name} (input shape {list(ds.input_shape)}, {ds.num_classes} classes, passed to it as {', '.join(from_data)}): {e}"
            " Check that data= is the data this model is for, or choose an arch= that takes it"
        ) from None
    check_fits(model, ds)
    return model, {"ref": arch, "kwargs": kwargs}, ds


# ---------------------------------------------------------------- compress


@dataclass
class Compressed:
    """What :func:`compress` returns: the kept candidate (``result.sub``), the search's record,
    and what the file needs to describe itself."""

    result: object  # squeeze.compress.CompressResult
    arch: dict
    data: object  # squeeze.data.Dataset
    teacher_path: str | None = None
    lean: bool = False
    file: object | None = None  # the SqzFile once saved
    path: str | None = None

    @property
    def ok(self) -> bool:
        """A file was kept (False when no candidate fits the budget: see ``result.smallest_bytes``)."""
        return self.result.kept is not None

    def save(self, path: str | os.PathLike, *, lean: bool | None = None):
        """Write the kept file to ``path`` (the same call that measured each candidate's bytes).

        Returns:
            The file as it reads back (``SqzFile``).
        """
        if not self.ok:
            raise SqueezeError(f"no file to save: {self.why_not()}")
        lean = self.lean if lean is None else lean
        self.file = _write(self.result.sub, path, self.arch, self.data, self.result.kept.encoding, self.result.encoded, self.result.metrics(lean), lean)
        self.path = str(path)
        self.result.kept.bytes = self.file.size_bytes  # the file as written (the search measured it with placeholder metrics, never smaller)
        return self.file

    def why_not(self) -> str:
        r = self.result
        if r.kept is not None:
            return ""
        if r.size is not None:
            smallest = f"; the smallest file this model makes is about {r.smallest_bytes:,} bytes (d = 1)" if r.smallest_bytes else ""
            return f"no file fits in {r.size:,} bytes{smallest}"
        return "no candidate finished"

    def report(self, seconds: float | None = None) -> dict:
        """The measured facts, JSON-ready (the CLI's ``--json``); sizes of the file once saved.
        Times are reported here, never stored in the file."""
        result, k, f = self.result, self.result.kept, self.file
        report = {
            "model": self.teacher_path,
            "output": self.path,
            "teacher_file_bytes": Path(self.teacher_path).stat().st_size if self.teacher_path else None,
            "dense_bytes": f.dense_bytes() if f else None,
            "sqz_bytes": f.size_bytes if f else None,
            "ratio": f.ratio if f else None,
            "ratio_definition": "float32 bytes of the weights / file bytes",
            "teacher_val_accuracy": round(result.teacher_val_accuracy, 6),
            "teacher_accuracy": round(result.teacher_accuracy, 6),
            "val_accuracy": round(k.val_accuracy, 6),
            "accuracy": round(result.accuracy, 6),
            "accuracy_ratio": round(result.accuracy / max(result.teacher_accuracy, 1e-12), 4),
            "agreement": round(result.agreement, 6),
            "d": k.d,
            "D": result.D,
            "encoding": k.encoding,
            "target": result.target,
            "threshold": None if result.size else round(result.threshold, 6),
            "size": result.size,
            "reached": result.reached,
            "interrupted": result.interrupted,
            "val_examples": result.val_examples,
            "val_share": None if k.val_share is None else [round(x, 4) for x in k.val_share],
            "confirm_examples": result.confirm_examples,
            "confirm_share": None if result.confirm_share is None else round(result.confirm_share, 4),
            "confirm_interval": None if result.confirm_interval is None else [round(x, 4) for x in result.confirm_interval],
            "confidence": result.confidence,
            "confirmed": None if result.confirm_interval is None else result.confirm_interval[0] >= result.target,
            "refitted": result.refitted,
            "fits": result.fits,
            "out_of_time": result.out_of_time,
            "search": result.search_record(),
            "seconds": round(result.seconds if seconds is None else seconds, 1),
            "trials": [c.as_dict() for c in result.candidates],
        }
        if f is not None and f.base:
            report["needs"] = NEEDS_BASE
        return report


def _dtype(enc: str) -> str:
    return "float32" if enc == "f32" else "float16"


def _write(sub, path, arch: dict, data, encoding: str, encoded: dict | None, metrics: dict, lean: bool):
    from squeeze import format as fmt

    return fmt.save(sub, path, arch=arch, metrics=metrics, data=None if lean else data.describe(), dtype=_dtype(encoding), encoded=encoded, lean=lean)


def compress(
    teacher,
    data,
    config=None,
    *,
    arch: str | None = None,
    arch_kwargs: dict | str | None = None,
    input_shape=None,
    base=None,
    trust_pickle: bool = False,
    lean: bool = False,
    on_trial: Callable | None = None,
    progress: bool = False,
    log: Log = _quiet,
) -> Compressed:
    """Compress a trained dense model into the smallest ``.sqz`` file keeping ``config.target``
    of its accuracy, or the best one within ``config.size`` bytes (see :class:`CompressConfig`).

    Args:
        teacher: the trained model: a checkpoint path (.safetensors/.pt state_dict, or a whole
            pickled module with ``trust_pickle``), a state_dict, or an ``nn.Module``.
        data: a data source name or path, or a ``Dataset``.
        config: a :class:`squeeze.compress.CompressConfig` (default: its defaults).
        arch: the architecture reference (needed unless ``teacher`` is a pickled module whose
            class can be imported); recorded in the file.
        arch_kwargs, input_shape: see :func:`model_for_data`.
        base: a pretrained base (fine-tune delta): a checkpoint path, ``"arch"``, a state_dict.
        lean: the file leaves out the informational records.
        on_trial: called with each candidate as it is measured.
        progress: show training progress bars.
        log: called with one-line notes (warnings about the data, what is searched).

    Returns:
        A :class:`Compressed`; ``.save(path)`` writes the file.
    """
    from squeeze import arch as arch_mod, coding_registry
    from squeeze.base import load_base
    from squeeze.checkpoint import match_state_dict, pickled_arch
    from squeeze.compress import CompressConfig, compress as search, file_metrics, load_teacher

    config = config or CompressConfig()
    teacher_path = None
    if isinstance(teacher, (str, os.PathLike)):
        teacher_path = Path(teacher)
        if not teacher_path.is_file():
            raise SqueezeError(f"checkpoint {teacher_path} does not exist")
        arch = arch or pickled_arch(teacher_path, trust_pickle)
    elif isinstance(teacher, nn.Module) and arch is None:
        arch = f"{type(teacher).__module__}:{type(teacher).__qualname__}"
    student, arch_rec, ds = model_for_data(arch, data, arch_kwargs=arch_kwargs, input_shape=input_shape, log=log)
    if teacher_path is not None:
        dense = load_teacher(teacher_path, student, trust_pickle=trust_pickle)
    elif isinstance(teacher, nn.Module):
        dense = teacher.eval()
    else:
        match_state_dict(student, teacher, "the teacher state_dict")
        dense = student.eval()
    base_sd = load_base(base, trust_pickle=trust_pickle, model=student) if base is not None else None
    goal = f"the best file within {config.size:,} bytes" if config.size else f"the smallest file keeping {config.target:g} of the teacher's accuracy"
    axes = ", ".join(x for x in (f"d = {config.dim:,}" if config.dim else "", f"{config.levels} levels" if config.levels else "") if x) or "d and encoding searched"
    log(f"compressing {teacher_path.name if teacher_path else 'the teacher'} ({arch_rec['ref']} on {ds.name}) by distillation: {goal} ({axes})")

    def measure(sub, encoded, enc):
        """The bytes of the file as :meth:`Compressed.save` writes it (placeholder metrics of
        the longest printed form: the kept file is never larger)."""
        from squeeze import format as fmt

        size = fmt.size_of(sub, arch=arch_rec, metrics=file_metrics(config.size, config.target, lean=lean), data=None if lean else ds.describe(), dtype=_dtype(enc), encoded=encoded, lean=lean)
        return size, coding_registry.stored_bytes(encoded) if encoded else sub.theta_d.numel() * (2 if enc == "f16" else 4)

    result = search(dense, lambda: arch_mod.build(arch_rec["ref"], arch_rec["kwargs"]), ds, config, measure=measure, on_trial=on_trial, progress=progress, base=base_sd)
    return Compressed(result=result, arch=arch_rec, data=ds, teacher_path=None if teacher_path is None else str(teacher_path), lean=lean)


# ---------------------------------------------------------------- quantize

# What a quantized file keeps of the float file's metrics: facts about the teacher, the data
# and the search that chose d. Everything measured on the float model is measured again or dropped.
KEPT_METRICS = ("data", "metric", "method", "dense_test_accuracy", "dense_val_accuracy", "search", "baseline", "epochs")


@dataclass
class Quantized:
    """What :func:`quantize` returns: the quantized subspace model, its coded theta_d, and the
    accuracies measured before and after (None without data)."""

    sub: object
    source: object  # the SqzFile quantized
    arch: dict | None
    result: object  # squeeze.quantize.QuantizeResult
    encoded: dict
    metrics: dict
    data_name: str | None = None
    before: float | None = None
    after: float | None = None
    file: object | None = None
    path: str | None = None

    def save(self, path: str | os.PathLike, *, lean: bool = False):
        """Write the quantized file; returns it as it reads back (``SqzFile``)."""
        from squeeze import format as fmt

        self.file = fmt.save(self.sub, path, arch=self.arch, metrics=None if lean else self.metrics, data=None if lean else self.source.data, encoded=self.encoded, lean=lean)
        self.path = str(path)
        return self.file

    def report(self) -> dict:
        out = self.file
        return {
            "output": self.path,
            "bytes_before": self.source.size_bytes,
            "bytes_after": out.size_bytes if out else None,
            "ratio": out.ratio if out else None,
            "levels": self.metrics["levels"],
            "method": self.result.method,
            "data": self.data_name,
            "test_accuracy_before": None if self.before is None else round(self.before, 6),
            "test_accuracy_after": None if self.after is None else round(self.after, 6),
            "val_accuracy": {k: round(v, 6) for k, v in self.result.val_accuracy.items()},
            "weights_sha256": out.weights_sha256 if out else None,
        }


def quantize(source, config, *, data=None, arch: str | None = None, base=None, on_step: Callable[[int], None] | None = None) -> Quantized:
    """Quantize a file's theta_d to ``config.levels`` values (k-means, then quantization-aware
    fine-tuning on ``data``) for range coding; accuracies are measured again on ``data``.

    Args:
        source: a .sqz path or a ``SqzFile``.
        config: a :class:`squeeze.quantize.QuantizeConfig` (``steps`` are skipped without data).
        data: a data source or ``Dataset`` (None: k-means only, accuracy not measured).
        arch: the architecture (default: the file's own).
        base: the base of a fine-tune.
        on_step: called after each fine-tuning step.

    Returns:
        A :class:`Quantized`; ``.save(path)`` writes the file.
    """
    import dataclasses

    from squeeze import coding_registry, format as fmt
    from squeeze import loading
    from squeeze.data import Dataset, check_fits, load_data
    from squeeze.fit import accuracy
    from squeeze.quantize import quantize_subspace

    f = source if isinstance(source, fmt.SqzFile) else fmt.read(source)
    sub = loading.load_subspace(f, arch, base=base, device=config.device)
    ds = None
    if data is not None:
        ds = data if isinstance(data, Dataset) else load_data(str(data))
        check_fits(sub, ds)
    else:
        config = dataclasses.replace(config, steps=0)
    before = accuracy(sub, ds.x_test, ds.y_test, config.device) if ds is not None else None
    result = quantize_subspace(sub, config, ds, on_step=on_step)
    encoded = coding_registry.encode_quantized(result.codebook, result.codes)
    metrics = {k: v for k, v in f.metrics.items() if k in KEPT_METRICS}
    metrics.update(levels=config.levels, theta=encoded["enc"])
    after = None
    if ds is not None:
        after = accuracy(sub, ds.x_test, ds.y_test, config.device)
        metrics.update(data=ds.name, metric="accuracy", test_accuracy=round(after, 6), float_test_accuracy=round(before, 6), val_accuracy=round(result.val_accuracy[result.method], 6))
        if metrics.get("dense_test_accuracy"):
            metrics["ratio_to_dense"] = round(after / max(metrics["dense_test_accuracy"], 1e-12), 4)
    arch_rec = f.arch if arch is None else {"ref": arch, "kwargs": f.arch.get("kwargs", {}) if f.arch and f.arch.get("ref") == arch else {}}
    return Quantized(sub=sub, source=f, arch=arch_rec, result=result, encoded=encoded, metrics=metrics, data_name=None if ds is None else ds.name, before=before, after=after)


__all__ = ["Compressed", "compress", "model_for_data", "Quantized", "quantize", "KEPT_METRICS", "NEEDS_BASE"]
