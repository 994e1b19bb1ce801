"""The library verbs: each takes its inputs and a config, and returns a result that can save
and report. The CLI's commands parse their options, call one of these, and print.

    result = squeeze.compress("teacher.safetensors", "digits", squeeze.CompressConfig(size=1500), arch="squeeze.zoo:MLP")
    result.save("model.sqz")
    squeeze.verify("model.sqz").ok

Errors name the parameters of these functions (``arch=``, ``data=``, ``input_shape=``), never a
command-line flag: the CLI maps them to its flags.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch
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

    return fmt.save(sub, path, arch=arch, metrics=metrics, data=None if lean else data.describe(), dtype=_dtype(encoding), encoded=encoded)


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
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            f = _write(sub, Path(tmp) / "c.sqz", arch_rec, ds, enc, encoded, file_metrics(config.size, config.target, lean=lean), lean)
        return f.size_bytes, coding_registry.stored_bytes(encoded) if encoded else f.theta_d.numel() * (2 if enc == "f16" else 4)

    result = search(dense, lambda: arch_mod.build(arch_rec["ref"], arch_rec["kwargs"]), ds, config, measure=measure, on_trial=on_trial, progress=progress, base=base_sd)
    return Compressed(result=result, arch=arch_rec, data=ds, teacher_path=None if teacher_path is None else str(teacher_path), lean=lean)


# ---------------------------------------------------------------- train


@dataclass(frozen=True)
class TrainConfig:
    """How :func:`train` trains a model in a random subspace (Li et al., 2018).

    Either ``dim`` (d, the number of trained values) or ``size`` (a byte budget: d and the
    encoding are chosen to fit it, see :mod:`squeeze.budget`). A fine-tune against a base needs
    neither: it defaults to the fine-tune recipe, :data:`squeeze.defaults.FINETUNE` (a 4 KB file).
    Fields left None take the recipe's value (fine-tunes) or the plain one (training from scratch).

    Args:
        dim: d, the number of trained values.
        size: the byte budget of the file (the file as saved, ``lean`` or not).
        projection, seed: the projection kind and the seed of theta_0 and P.
        epochs, patience, lr, batch_size: the training loop (``patience`` None: exactly ``epochs``).
        device: ``cpu`` or ``cuda``.
        dtype: storage of theta_d (``float16`` or ``float32``); ignored with ``levels`` or ``size``.
        layerwise: one learned scale per tensor (SAID); the scales count in ``dim``.
        include: fnmatch patterns of the tensors in the subspace (the others stay at theta_0).
        levels: quantize theta_d to this many levels at the end (k-means + QAT), range coded;
            with ``size``: the only encoding tried (default: each of :data:`squeeze.defaults.LEVELS`).
        baseline: also train the dense model with the same rule and record its accuracy.
        baseline_lr, baseline_epochs: the dense baseline's learning rate and epoch cap (None: ``epochs``).
    """

    dim: int | None = None
    size: int | None = None
    projection: str = "sorf"
    seed: int = 0
    epochs: int | None = None
    patience: int | None = None
    lr: float = 0.1
    batch_size: int | None = None
    device: str = "cpu"
    dtype: str = "float16"
    layerwise: bool | None = None
    include: tuple[str, ...] = ()
    levels: int | None = None
    baseline: bool = False
    baseline_lr: float = 1e-3
    baseline_epochs: int | None = None

    def __post_init__(self):
        if self.dim is not None and (not isinstance(self.dim, int) or self.dim < 1):
            raise ValueError(f"dim must be a positive integer, got {self.dim!r}")
        if self.size is not None and (not isinstance(self.size, int) or self.size < 1):
            raise ValueError(f"size must be a positive number of bytes, got {self.size!r}")
        if self.dim is not None and self.size is not None:
            raise ValueError("give dim= (d) or size= (a byte budget that chooses d), not both")
        if self.dtype not in ("float16", "float32"):
            raise ValueError(f"dtype must be float16 or float32, got {self.dtype!r}")
        if self.levels is not None and not 2 <= self.levels <= 1 << 15:
            raise ValueError(f"levels must be in [2, 32768] or None, got {self.levels!r}")

    def resolved(self, fine_tune: bool) -> "TrainConfig":
        """This config with every None field filled: the fine-tune recipe with a base, else the plain defaults.

        Raises:
            SqueezeError: training from scratch with neither dim nor size.
        """
        from dataclasses import replace

        from squeeze.defaults import FINETUNE

        plain = {"epochs": 10, "batch_size": 128, "layerwise": False}
        recipe = FINETUNE if fine_tune else plain
        fill = {k: recipe[k] for k in plain if getattr(self, k) is None}
        if fine_tune and self.dim is None and self.size is None:
            fill["size"] = FINETUNE["size"]
        elif not fine_tune and self.dim is None and self.size is None:
            raise SqueezeError("dim= (d, the number of trained values) or size= (a byte budget) is required; a fine-tune against base= defaults to a 4 KB file")
        if fine_tune and not self.include and self.dim is None:
            fill["include"] = tuple(FINETUNE["include"])
        return replace(self, **fill)


@dataclass
class Trained:
    """What :func:`train` returns: the trained subspace model as the file stores it, and what
    was measured (``metrics``, recorded in the file unless saved ``lean``)."""

    sub: object  # squeeze.Subspace
    arch: dict
    data: object  # squeeze.data.Dataset
    config: TrainConfig
    fit: object  # squeeze.fit.TrainResult
    metrics: dict
    encoded: dict | None = None
    file: object | None = None
    path: str | None = None
    lean: bool = False  # what the budget counted: save() leaves the records out by default then
    encodings: dict | None = None  # with a size: levels -> {"bytes", "val_accuracy", "fits"}

    @property
    def interrupted(self) -> bool:
        return bool(self.fit.interrupted)

    def save(self, path: str | os.PathLike, *, lean: bool | None = None):
        """Write the file (``lean`` None: as :func:`train` was told); returns it as it reads back (``SqzFile``)."""
        from squeeze import format as fmt

        lean = self.lean if lean is None else lean
        self.file = fmt.save(self.sub, path, arch=self.arch, metrics=None if lean else self.metrics, data=None if lean else self.data.describe(), dtype=self.config.dtype, encoded=self.encoded)
        self.path = str(path)
        return self.file

    def report(self) -> dict:
        """The measured facts, JSON-ready (file facts once saved)."""
        f, r = self.file, self.fit
        out = {
            "output": self.path, "bytes": f.size_bytes if f else None, "ratio": f.ratio if f else None,
            "d": self.sub.d, "D": self.sub.D, "epochs": r.epochs_run, "best_epoch": r.best_epoch, "val_loss": round(r.val_loss, 6),
            "seconds": round(r.seconds, 1), "interrupted": self.interrupted,
            **{k: v for k, v in self.metrics.items() if k not in ("interrupted", "epochs")},
        }
        if self.config.size:
            out.update(size=self.config.size, encodings={str(k): v for k, v in (self.encodings or {}).items()})
        if f is not None and f.base:
            out["needs"] = NEEDS_BASE
        return out


def _start_from_base(dense: nn.Module, sub, base_sd) -> str:
    """Give the dense baseline the subspace's starting point: the base's tensors (full
    fine-tuning), or its own init when there is no base."""
    if base_sd is None:
        return "dense from scratch"
    own = dict(dense.named_parameters())
    with torch.no_grad():
        for s in sub.manifest:
            if s.init[0] == "b":
                own[s.name].copy_(base_sd[s.name])
    return "full fine-tuning from the base"


def describe_base(sub, base_name: str, base_sd: dict, arch: str) -> str:
    """One line on what a fine-tune takes from its base (and what from the seed).

    Raises:
        SqueezeError: the base shares no tensor with the architecture.
    """
    from_base = [s.name for s in sub.manifest if s.init[0] == "b"]
    if not from_base:
        raise SqueezeError(f"the base {base_name} shares no tensor (same name and shape) with {arch}; pass the base of this architecture (base=)")
    seeded = [s.name for s in sub.manifest if s.init[0] != "b"]
    note = f"; from the seed: {', '.join(seeded[:6])}{' ...' if len(seeded) > 6 else ''}" if seeded else ""
    reshaped = [s.name for s in sub.manifest if s.init[0] != "b" and s.name in base_sd]
    if reshaped:
        note += f" (the base has these with another shape: {', '.join(reshaped[:6])})"
    return f"fine-tuning against base {base_name} (digest {sub.base_digest[:16]}...): {len(from_base)} of {len(sub.manifest)} tensors from the base{note}"


def _train_metrics(ds, test: float, val: float, epochs: int, size: int | None, *, levels: int | None = None, theta: str | None = None, float_accuracy: float | None = None) -> dict:
    """The metrics a trained file records (the same keys for the sizing placeholder and the real file)."""
    out = {"data": ds.name, "metric": "accuracy", "test_accuracy": test, "val_accuracy": val, "epochs": epochs}
    if size:
        out["size"] = size
    if levels is not None:
        out.update(levels=levels, theta=theta, float_test_accuracy=float_accuracy)
    return out


def _file_bytes(arch_rec: dict, ds, metrics: dict, lean: bool):
    """Bytes of the file :meth:`Trained.save` writes for a subspace and an encoding (``metrics``:
    a placeholder of the longest printed form, so the kept file is never larger)."""

    def file_bytes(sub, encoded: dict) -> int:
        import tempfile

        from squeeze import format as fmt

        with tempfile.TemporaryDirectory() as tmp:
            return fmt.save(sub, Path(tmp) / "t.sqz", arch=arch_rec, metrics=None if lean else metrics, data=None if lean else ds.describe(), encoded=encoded).size_bytes

    return file_bytes


def train(
    arch: str | None,
    data,
    config: TrainConfig,
    *,
    arch_kwargs: dict | str | None = None,
    input_shape=None,
    base=None,
    trust_pickle: bool = False,
    dist=None,
    progress: bool = True,
    lean: bool = False,
    log: Log = _quiet,
) -> Trained:
    """Train the architecture ``arch`` on ``data`` directly in a random ``config.dim``-dimensional
    subspace (optionally against a pretrained ``base``), then store theta_d as the file will.
    With ``config.size`` (the default for fine-tunes), d is the largest whose file fits the budget
    and the encoding is the best on validation among those that fit (:mod:`squeeze.budget`).

    Args:
        arch: an architecture reference (``squeeze.zoo:MLP``, ``path/to/file.py:Net``).
        data: a data source name or path, or a ``Dataset``.
        config: a :class:`TrainConfig`.
        arch_kwargs, input_shape: see :func:`model_for_data`.
        base: a pretrained base: a checkpoint path, ``"arch"``, ``"module:factory"`` or a state_dict.
        dist: data-parallel replicas (:func:`squeeze.distributed.init`); None: one process.
        lean: the file will leave out the informational records (``config.size`` counts the file as saved).
        log: called with one-line notes.

    Returns:
        A :class:`Trained`; ``.save(path)`` writes the file. After Ctrl-C it holds the best
        finished epoch (``interrupted``); ``fit.best_epoch == 0`` when none finished.
    """
    from squeeze import arch as arch_mod, budget, coding_registry, format as fmt
    from squeeze.base import load_base
    from squeeze.defaults import LEVELS
    from squeeze.fit import TrainConfig as LoopConfig, accuracy, train as fit
    from squeeze.quantize import QuantizeConfig, quantize_subspace
    from squeeze.subspace import Subspace, SubspaceConfig

    cfg = config.resolved(fine_tune=base is not None)
    torch.manual_seed(cfg.seed)  # torch's own draws (a dense baseline's init, measured init scales) repeat too
    model, arch_rec, ds = model_for_data(arch, data, arch_kwargs=arch_kwargs, input_shape=input_shape, log=log)
    base_sd = load_base(base, trust_pickle=trust_pickle, model=model) if base is not None else None

    def sub_at(dim: int):
        return Subspace(copy.deepcopy(model) if cfg.size else model, SubspaceConfig(dim=dim, projection=cfg.projection, seed=cfg.seed, layerwise=cfg.layerwise, include=tuple(cfg.include)), base=base_sd)

    levels = (cfg.levels,) if cfg.levels else LEVELS
    if cfg.size:
        placeholder = _train_metrics(ds, 0.123456, 0.123456, 999, cfg.size, levels=max(levels), theta="rc", float_accuracy=0.123456)
        if cfg.baseline:
            placeholder.update(baseline="full fine-tuning from the base", dense_test_accuracy=0.123456, dense_epochs=999, ratio_to_dense=0.1234)
        file_bytes = _file_bytes(arch_rec, ds, placeholder, lean)
        sub = budget.subspace_for_size(sub_at, cfg.size, max(levels), file_bytes)
    else:
        sub = sub_at(cfg.dim)
    if base_sd is not None:
        log(describe_base(sub, str(base) if not isinstance(base, dict) else "state_dict", base_sd, arch))
    fits = f" (the largest d whose file fits {cfg.size:,} bytes)" if cfg.size else ""
    log(f"training {arch} on {ds.name} in a {sub.d}-dimensional {cfg.projection} subspace of D={sub.D:,}{fits}")
    device = dist.device if dist is not None else cfg.device
    result = fit(sub, ds, LoopConfig(epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, device=device, patience=cfg.patience), description="subspace", dist=dist, progress=progress)
    done = Trained(sub=sub, arch=arch_rec, data=ds, config=cfg, fit=result, metrics={}, lean=lean)
    if result.best_epoch == 0:
        return done
    encoded, float_accuracy, q_val = None, None, None
    if cfg.size:
        float_accuracy = round(accuracy(sub, ds.x_test, ds.y_test, device, dist), 6)
        kept = budget.encode_within(sub, ds, cfg.size, levels, file_bytes, device)
        encoded, q_val, done.encodings = kept.encoded, kept.val_accuracy, kept.candidates
        levels_kept = kept.levels
    elif cfg.levels is not None:
        float_accuracy = round(accuracy(sub, ds.x_test, ds.y_test, device, dist), 6)
        q = quantize_subspace(sub, QuantizeConfig(levels=cfg.levels, device=device), ds)
        encoded, q_val, levels_kept = coding_registry.encode_quantized(q.codebook, q.codes), q.val_accuracy[q.method], cfg.levels
    else:
        fmt.round_for_storage_(sub, cfg.dtype)
    test = round(accuracy(sub, ds.x_test, ds.y_test, device, dist), 6)
    if encoded is None:
        metrics = _train_metrics(ds, test, round(result.val_accuracy, 6), result.best_epoch, cfg.size)
    else:
        metrics = _train_metrics(ds, test, round(q_val, 6), result.best_epoch, cfg.size, levels=levels_kept, theta=encoded["enc"], float_accuracy=float_accuracy)
    if result.interrupted:
        metrics["interrupted"] = True
    if cfg.baseline and not result.interrupted:
        dense = arch_mod.build(arch_rec["ref"], arch_rec["kwargs"])
        metrics["baseline"] = _start_from_base(dense, sub, base_sd)
        base_cfg = LoopConfig(epochs=cfg.baseline_epochs or cfg.epochs, lr=cfg.baseline_lr, batch_size=cfg.batch_size, device=device, patience=cfg.patience)
        base_res = fit(dense, ds, base_cfg, description="dense baseline", dist=dist, progress=progress)
        if base_res.interrupted:  # a partial baseline is no baseline: the subspace model is kept without it
            del metrics["baseline"]
            result.interrupted = True
            metrics["interrupted"] = True
        else:
            metrics["dense_test_accuracy"] = round(base_res.test_accuracy, 6)
            metrics["dense_epochs"] = base_res.best_epoch
            metrics["ratio_to_dense"] = round(metrics["test_accuracy"] / max(base_res.test_accuracy, 1e-12), 4)
    done.metrics, done.encoded = metrics, encoded
    return done


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

        self.file = fmt.save(self.sub, path, arch=self.arch, metrics=None if lean else self.metrics, data=None if lean else self.source.data, encoded=self.encoded)
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
    from squeeze.data import Dataset, check_fits, load_data
    from squeeze.fit import accuracy
    from squeeze.quantize import quantize_subspace

    f = source if isinstance(source, fmt.SqzFile) else fmt.read(source)
    sub = fmt.load_subspace(f, arch, base=base, device=config.device)
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


__all__ = ["Compressed", "compress", "model_for_data", "TrainConfig", "Trained", "train", "describe_base", "Quantized", "quantize", "KEPT_METRICS"]
