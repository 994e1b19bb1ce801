"""The ``train`` verb: train a model directly in a random subspace (Li et al., 2018), from
scratch or as a fine-tune against a pretrained base, for a given d or a byte budget.

    done = squeeze.train("squeeze.pretrained:MiniLMClassifier", "words.npz", squeeze.TrainConfig(), base="arch")
    done.save("ft.sqz")   # at most 4,096 bytes: d and the encoding chosen for the budget
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass

import torch
from torch import nn

from squeeze.api import NEEDS_BASE, Log, model_for_data
from squeeze.errors import SqueezeError


# target=: the budgets tried, smallest first, and the confidence of the confirmation interval
TARGET_SIZES = (1024, 2048, 4096, 8192, 16384, 32768)
CONFIDENCE = 0.8


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class TrainConfig:
    """How :func:`train` trains a model in a random subspace (Li et al., 2018).

    One of ``dim`` (d, the number of trained values), ``size`` (a byte budget: d and the
    encoding are chosen to fit it, see :mod:`squeeze.budget`) or ``target`` (an accuracy that
    chooses the budget). A fine-tune against a base needs none: it defaults to the fine-tune recipe, :data:`squeeze.defaults.FINETUNE` (a 4 KB file).
    Fields left None take the recipe's value (fine-tunes) or the plain one (training from scratch).

    Args:
        dim: d, the number of trained values.
        size: the byte budget of the file (the file as saved, ``lean`` or not).
        target: instead of ``dim`` or ``size``: the smallest budget of :data:`TARGET_SIZES` whose
            file reaches this accuracy on a confirmation share of the training split that neither
            training nor the choice of encoding read (the lower end of its 80% interval must clear it).
        projection, seed: the projection kind and the seed of theta_0 and P.
        epochs, patience, lr, batch_size: the training loop (``patience`` None: exactly ``epochs``).
        device: ``cpu`` or ``cuda``.
        dtype: storage of theta_d (``float16`` or ``float32``); ignored with ``levels`` or ``size``.
        layerwise: one learned scale per tensor (SAID); the scales count in ``dim``.
        include: fnmatch patterns of the tensors in the subspace (the others stay at theta_0).
        levels: quantize theta_d to this many levels at the end (k-means + QAT), range coded;
            with ``size`` or ``target``: the only encoding tried (default: each of :data:`squeeze.defaults.LEVELS`).
        baseline: also train the dense model with the same rule and record its accuracy.
        baseline_lr, baseline_epochs: the dense baseline's learning rate and epoch cap (None: ``epochs``).
    """

    dim: int | None = None
    size: int | None = None
    target: float | None = None
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
        if sum(x is not None for x in (self.dim, self.size, self.target)) > 1:
            raise ValueError("give one of dim= (d), size= (a byte budget that chooses d) or target= (an accuracy that chooses the budget)")
        if self.target is not None and not 0 < self.target <= 1:
            raise ValueError(f"target must be an accuracy in (0, 1], got {self.target!r}")
        if self.dtype not in ("float16", "float32"):
            raise ValueError(f"dtype must be float16 or float32, got {self.dtype!r}")
        if self.levels is not None and not 2 <= self.levels <= 1 << 15:
            raise ValueError(f"levels must be in [2, 32768] or None, got {self.levels!r}")

    def resolved(self, fine_tune: bool) -> "TrainConfig":
        """This config with every None field filled: the fine-tune recipe with a base, else the plain defaults.

        Raises:
            SqueezeError: training from scratch with none of dim, size and target.
        """
        from dataclasses import replace

        from squeeze.defaults import FINETUNE

        plain = {"epochs": 10, "batch_size": 128, "layerwise": False}
        recipe = FINETUNE if fine_tune else plain
        fill = {k: recipe[k] for k in plain if getattr(self, k) is None}
        chosen = self.dim is not None or self.size is not None or self.target is not None
        if fine_tune and not chosen:
            fill["size"] = FINETUNE["size"]
        elif not chosen:
            raise SqueezeError("dim= (d, the number of trained values), size= (a byte budget) or target= (an accuracy) is required; a fine-tune against base= defaults to a 4 KB file")
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
    confirm: dict | None = None  # with a target: the kept file on the confirmation share, and the budgets tried

    @property
    def reached(self) -> bool | None:
        """With a target: whether the kept file's confirmation interval clears it."""
        return None if self.confirm is None else self.confirm["reached"]

    @property
    def interrupted(self) -> bool:
        return bool(self.fit.interrupted)

    @property
    def size(self) -> int | None:
        """The byte budget the file was trained for (with a target: the budget kept)."""
        return self.metrics.get("size") or self.config.size

    def save(self, path: str | os.PathLike, *, lean: bool | None = None):
        """Write the file (``lean`` None: as :func:`train` was told); returns it as it reads back (``SqzFile``)."""
        from squeeze import format as fmt

        lean = self.lean if lean is None else lean
        self.file = fmt.save(self.sub, path, arch=self.arch, metrics=None if lean else self.metrics, data=None if lean else self.data.describe(), dtype=self.config.dtype, encoded=self.encoded, lean=lean)
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
        if self.size:
            out.update(size=self.size, encodings={str(k): v for k, v in (self.encodings or {}).items()})
        if self.confirm is not None:
            out.update(target=self.config.target, confirm=self.confirm)
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
    from squeeze import format as fmt

    def file_bytes(sub, encoded: dict) -> int:
        return fmt.size_of(sub, arch=arch_rec, metrics=None if lean else metrics, data=None if lean else ds.describe(), encoded=encoded, lean=lean)

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
    from squeeze.base import load_base

    cfg = config.resolved(fine_tune=base is not None)
    torch.manual_seed(cfg.seed)  # torch's own draws (a dense baseline's init, measured init scales) repeat too
    model, arch_rec, ds = model_for_data(arch, data, arch_kwargs=arch_kwargs, input_shape=input_shape, log=log)
    base_sd = load_base(base, trust_pickle=trust_pickle, model=model) if base is not None else None
    base_name = None if base is None else str(base) if not isinstance(base, dict) else "state_dict"
    run = dict(arch=arch, arch_rec=arch_rec, base_sd=base_sd, base_name=base_name, dist=dist, progress=progress, lean=lean, log=log)
    if cfg.target is None:
        return _train_one(model, ds, cfg, cfg.size, **run)
    return _train_for_target(model, ds, cfg, run, log)


def _train_for_target(model, ds, cfg: TrainConfig, run: dict, log: Log) -> Trained:
    """The smallest budget of TARGET_SIZES whose file clears ``cfg.target`` on the confirmation share."""
    from squeeze import holdout
    from squeeze.fit import predict

    search, fraction, confirm = holdout.carve(ds, "confirm")
    done = None
    tried = []
    for size in TARGET_SIZES:
        try:
            candidate = _train_one(copy.deepcopy(model), search, cfg, size, val_fraction=fraction, **run)
            run["base_name"] = None  # said once
        except SqueezeError as e:  # the fixed part alone is larger than this budget
            log(f"{size:,} bytes: {e}")
            continue
        if candidate.fit.best_epoch == 0 or candidate.interrupted:
            return candidate
        right = (predict(candidate.sub, confirm.x_train, device=cfg.device).argmax(1).cpu() == confirm.y_train).double()
        acc, low, high = holdout.share_interval(right, torch.ones_like(right), CONFIDENCE)
        tried.append({"size": size, "d": candidate.sub.d, "confirm_accuracy": round(acc, 6), "low": round(low, 6)})
        log(f"{size:,} bytes (d = {candidate.sub.d:,}): {acc:.4f} on {len(right)} confirmation examples, {CONFIDENCE:.0%} interval from {low:.4f}")
        done = candidate
        done.confirm = {"accuracy": round(acc, 6), "low": round(low, 6), "high": round(min(high, 1.0), 6), "examples": len(right), "reached": low >= cfg.target, "tried": tried}
        if low >= cfg.target:
            break
    if done is None:
        raise SqueezeError(f"none of the budgets {', '.join(f'{b:,}' for b in TARGET_SIZES)} bytes leaves room for theta_d")
    return done


def _train_one(model, ds, cfg: TrainConfig, size: int | None, *, arch, arch_rec, base_sd, base_name, dist, progress, lean, log, val_fraction: float = 0.1) -> Trained:
    """Train once: for ``cfg.dim``, or for the byte budget ``size``."""
    from squeeze import arch as arch_mod, budget, coding_registry, format as fmt
    from squeeze.defaults import LEVELS
    from squeeze.fit import TrainConfig as LoopConfig, accuracy, train as fit
    from squeeze.quantize import QuantizeConfig, quantize_subspace
    from squeeze.subspace import Subspace, SubspaceConfig

    def sub_at(dim: int):
        return Subspace(copy.deepcopy(model) if size else model, SubspaceConfig(dim=dim, projection=cfg.projection, seed=cfg.seed, layerwise=cfg.layerwise, include=tuple(cfg.include)), base=base_sd)

    levels = (cfg.levels,) if cfg.levels else LEVELS
    if size:
        placeholder = _train_metrics(ds, 0.123456, 0.123456, 999, size, levels=max(levels), theta="rc", float_accuracy=0.123456)
        if cfg.baseline:
            placeholder.update(baseline="full fine-tuning from the base", dense_test_accuracy=0.123456, dense_epochs=999, ratio_to_dense=0.1234)
        file_bytes = _file_bytes(arch_rec, ds, placeholder, lean)
        sub = budget.subspace_for_size(sub_at, size, max(levels), file_bytes)
    else:
        sub = sub_at(cfg.dim)
    if base_name is not None:
        log(describe_base(sub, base_name, base_sd, arch))
    fits = f" (the largest d whose file fits {size:,} bytes)" if size else ""
    log(f"training {arch} on {ds.name} in a {sub.d}-dimensional {cfg.projection} subspace of D={sub.D:,}{fits}")
    device = dist.device if dist is not None else cfg.device
    result = fit(sub, ds, LoopConfig(epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, device=device, patience=cfg.patience, val_fraction=val_fraction), description="subspace", dist=dist, progress=progress)
    done = Trained(sub=sub, arch=arch_rec, data=ds, config=cfg, fit=result, metrics={}, lean=lean)
    if result.best_epoch == 0:
        return done
    encoded, float_accuracy, q_val = None, None, None
    fmt.round_scales_for_storage_(sub)  # float16 scales: what the budget's probe file counted
    if size:
        float_accuracy = round(accuracy(sub, ds.x_test, ds.y_test, device, dist), 6)
        kept = budget.encode_within(sub, ds, size, levels, file_bytes, device, val_fraction)
        encoded, q_val, done.encodings = kept.encoded, kept.val_accuracy, kept.candidates
        levels_kept = kept.levels
    elif cfg.levels is not None:
        float_accuracy = round(accuracy(sub, ds.x_test, ds.y_test, device, dist), 6)
        q = quantize_subspace(sub, QuantizeConfig(levels=cfg.levels, device=device, val_fraction=val_fraction), ds)
        encoded, q_val, levels_kept = coding_registry.encode_quantized(q.codebook, q.codes), q.val_accuracy[q.method], cfg.levels
    else:
        fmt.round_for_storage_(sub, cfg.dtype)
    test = round(accuracy(sub, ds.x_test, ds.y_test, device, dist), 6)
    if encoded is None:
        metrics = _train_metrics(ds, test, round(result.val_accuracy, 6), result.best_epoch, size)
    else:
        metrics = _train_metrics(ds, test, round(q_val, 6), result.best_epoch, size, levels=levels_kept, theta=encoded["enc"], float_accuracy=float_accuracy)
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


__all__ = ["TrainConfig", "Trained", "train", "describe_base"]
