"""Compress a trained dense checkpoint into a ``.sqz`` file: the dense model is the teacher,
and theta_d is fitted by distillation (KL to the teacher's outputs mixed with cross-entropy
on the labels), starting from theta_0.

    teacher = load_teacher("model.safetensors", arch.build(ref, kwargs))
    result = compress(teacher, lambda: arch.build(ref, kwargs), data, CompressConfig(size=1500))
    format.save(result.sub, "model.sqz", encoded=result.encoded, metrics=result.metrics(), ...)

What a user pays for is bytes, so the search runs on the (d, encoding) plane: each trained d
(distilled until the validation objective stops improving, :data:`squeeze.defaults.CONVERGE`) is
stored as float16 and, reusing the same trained float model, quantized to each of a few
levels (k-means, then quantization-aware fine-tuning, range coded). Two goals:

- ``target``: the smallest file that keeps ``target`` of the teacher's accuracy. Two shares
  of the training split are held out (:mod:`squeeze.holdout`, sized from the data): the
  *validation* share picks each trial's epoch and proposes candidates (validation accuracy at
  least ``target`` x the teacher's plus ``margin`` paired standard errors); the *confirmation*
  share, which no training and no ranking reads, then checks the proposals from the smallest
  up, and the target is declared reached only for a file whose ``confidence`` interval of its
  share of the teacher's accuracy there lies above ``target``. When no proposal is confirmed
  the search moves up the frontier (twice the largest d tried, every encoding) while fits
  remain. Why: validation read three times (epoch, ranking, verdict) was optimistic three
  times over; on small data sets the old rule (one 10% share) kept files that reported 0.95
  and kept 0.89-0.92 of the teacher on fresh data (issue 25; ``benchmarks/selection.py``
  measures both rules). The teacher's accuracy on either share is optimistic when it was
  trained on those examples, which makes the check stricter, never looser.
  d doubles until a candidate passes on validation, then the search bisects d per encoding
  and tries larger d with fewer levels wherever the estimated bytes could beat the best file
  so far: the doubled d, or when that would be larger than the best file, the largest d
  estimated to stay below it.
- ``size``: the most accurate file within a byte budget: for each encoding, the largest d
  whose file fits (estimated from measured bytes, then checked by writing the file).

``dim`` and ``levels`` pin either axis. Every choice (d, levels, epoch, k-means or QAT) is made
on the validation share carved from the training split (:mod:`squeeze.search`), the verdict on
the confirmation share; the test split is evaluated after the choice, once per candidate, for
the report. With ``size`` there is no verdict to give, so no confirmation share is held out.

theta_d starts at zero (theta = theta_0). A warm start at the least-squares projection of
the teacher, alpha * P^T (theta_teacher - theta_0) with the best scalar alpha, was measured
and not kept: for squeeze.zoo:MLP on mnist5k it starts at chance (10% test accuracy, like
theta_0), and after 10 epochs it changed test accuracy by +0.5 points at d = 750 (10 seeds)
and -0.4 points at d = 300 (6 seeds), within seed noise (sd about 1 point). The teacher's
displacement from theta_0 is mostly the difference of two independent random inits, and a
random d-dimensional subspace keeps only a d/D share of it. Work is reused instead by
quantizing each trained float model to every level rather than retraining.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from squeeze import coding_registry, holdout
from squeeze import format as fmt
from squeeze.checkpoint import load_state_dict, match_state_dict
from squeeze.data import Dataset
from squeeze.dimension import count_params
from squeeze.defaults import CONVERGE, LEVELS, TARGET  # LEVELS: the quantized encodings searched besides float16
from squeeze.fit import TrainConfig, distill_objective, predict, train
from squeeze.projection import kinds
from squeeze.quantize import QuantizeConfig, kmeans_quantize, quantize_subspace
from squeeze.search import Candidate, best_of, bits_per_value, choose, encoding_name, levels_of
from squeeze.subspace import Subspace, SubspaceConfig

SELECTIONS = ("confirm", "validation")  # see CompressConfig.selection


@dataclass(frozen=True)
class CompressConfig:
    """How a dense model is compressed.

    Args:
        dim: d; None searches it.
        levels: L levels of the stored theta_d; None searches the float ``dtype`` and ``level_grid``.
        target: the share of the teacher's validation accuracy to reach (the smallest such file is kept).
        size: a byte budget: the most accurate file within it is kept. ``target`` and ``size`` are
            two goals: give one (``target`` None means the default, 0.98, without ``size``).
        projection: projection kind.
        seed: seed of theta_0 and P (and of the data order).
        epochs: the cap on passes over the training data per fit.
        patience: stop a fit after this many epochs without a better validation objective (None: exactly ``epochs``).
        lr: Adam learning rate of theta_d.
        batch_size: examples per step.
        distill_weight: weight of the KL term to the teacher against cross-entropy on labels.
        device: ``cpu`` or ``cuda``.
        dtype: the float encoding searched (``float16`` or ``float32``).
        level_grid: the levels searched when ``levels`` is None.
        qat_steps: quantization-aware fine-tuning steps per quantized candidate (None: 300 with
            ``size``, which trains a few candidates, and 100 with ``target``, which trains up to
            three per fit: a default search then stays within about two minutes).
        start_dim: the first d tried by the search.
        max_dim: the largest d the search may try (None: the model's D).
        tolerance: bisection stops when the bracket is narrower than this share of d.
        max_fits: the most float models trained by a search.
        margin: with ``target``, a candidate passes when its validation accuracy exceeds
            ``target`` x the teacher's by this many of its paired standard errors
            (:attr:`~squeeze.search.Candidate.val_se`); 0 compares with the target itself.
        selection: ``confirm`` (default): a confirmation share of the training split, used by
            no training and no ranking, checks the kept file before the target is declared
            reached (:func:`holdout_size` sizes both shares); ``validation``: the rule before
            it, one 10% share for epochs, ranking and the verdict (kept to measure against).
        refit: train the chosen (d, encoding) again on the whole training split before it is
            saved (:func:`_refit`); its interval and verdict are those of the searched model.
        confidence: the two-sided level of the kept file's interval on the confirmation share;
            the target is reached when the interval's lower end clears it.
    """

    dim: int | None = None
    levels: int | None = None
    target: float | None = None
    size: int | None = None
    projection: str = "sorf"
    seed: int = 0
    epochs: int = CONVERGE["epochs"]
    patience: int | None = CONVERGE["patience"]
    lr: float = 0.1
    batch_size: int = 128
    distill_weight: float = 0.5
    device: str = "cpu"
    dtype: str = "float16"
    level_grid: tuple[int, ...] = LEVELS
    qat_steps: int | None = None
    start_dim: int = 256
    max_dim: int | None = None
    tolerance: float = 0.125
    max_fits: int = 6
    margin: float = 1.0
    selection: str = "confirm"
    refit: bool = True
    confidence: float = 0.8

    def __post_init__(self):
        if self.target is not None and self.size is not None:
            raise ValueError(
                f"target={self.target:g} and size={self.size:,} are two goals and only one can decide: size= keeps the best file within a byte budget,"
                " target= the smallest file keeping that share of the teacher's accuracy; give one"
            )
        if self.target is None:
            object.__setattr__(self, "target", TARGET)  # without size, the goal; with size, only the reference of the validation intervals
        if self.dim is not None and (not isinstance(self.dim, int) or self.dim < 1):
            raise ValueError(f"dim must be a positive integer or None (searched), got {self.dim!r}")
        if self.levels is not None and not 2 <= self.levels <= 1 << 15:
            raise ValueError(f"levels must be in [2, 32768] or None (searched), got {self.levels!r}")
        if not 0 < self.target <= 1:
            raise ValueError(f"target must be in (0, 1] (a share of the teacher's accuracy), got {self.target}")
        if self.size is not None and self.size < 1:
            raise ValueError(f"size must be a positive number of bytes, got {self.size}")
        if self.projection not in kinds():
            raise ValueError(f"unknown projection {self.projection!r}; choose one of {', '.join(kinds())}")
        if self.dtype not in ("float16", "float32"):
            raise ValueError(f"dtype must be float16 or float32, got {self.dtype!r}")
        if not 0 <= self.distill_weight <= 1:
            raise ValueError(f"distill_weight must be in [0, 1], got {self.distill_weight}")
        if self.margin < 0:
            raise ValueError(f"margin must be >= 0 standard errors, got {self.margin}")
        if self.selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}, got {self.selection!r}")
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence}")
        if self.start_dim < 1 or (self.max_dim is not None and self.max_dim < 1) or self.max_fits < 1:
            raise ValueError(f"start_dim, max_dim and max_fits must be positive (got {self.start_dim}, {self.max_dim}, {self.max_fits})")

    def steps_of_qat(self) -> int:
        """``qat_steps``, or its default for the goal."""
        return self.qat_steps if self.qat_steps is not None else 300 if self.size is not None else 100

    def encodings(self) -> list[str]:
        """The encodings the search may use."""
        if self.levels is not None:
            return [encoding_name(self.levels)]
        return [encoding_name(None, self.dtype)] + [encoding_name(L) for L in sorted(set(self.level_grid))]


@dataclass
class CompressResult:
    """A compressed model and what was measured.

    ``sub`` holds the kept theta_d exactly as stored (``encoded`` is its coded form, None for
    floats); accuracies are of the dense model the file decompresses to. ``reached`` says
    whether the goal was met on the validation split. ``candidates`` lists every candidate
    tried, in order, each with its test accuracy (measured after the choice). ``threshold`` is
    ``target`` x the teacher's validation accuracy; a candidate passes when it clears it by
    ``margin`` of its own standard errors.
    """

    sub: Subspace | None
    kept: Candidate | None
    teacher_val_accuracy: float
    teacher_accuracy: float
    accuracy: float
    agreement: float
    target: float
    size: int | None
    reached: bool
    interrupted: bool
    seconds: float
    data_name: str
    candidates: list[Candidate] = field(default_factory=list)
    fits: int = 0
    threshold: float = 0.0
    val_examples: int = 0
    confirm_examples: int = 0
    confidence: float = 0.8
    teacher_confirm_accuracy: float | None = None  # the teacher's accuracy on the confirmation share
    refitted: bool = False  # the kept file was trained again on the whole training split (CompressConfig.refit)
    smallest_bytes: int | None = None  # with a size no candidate could meet: the smallest file this model makes (d = 1), estimated

    @property
    def confirm_share(self) -> float | None:
        """The kept file's accuracy as a share of the teacher's on the confirmation share."""
        return None if self.kept is None else self.kept.confirm_share

    @property
    def confirm_interval(self) -> tuple[float, float] | None:
        """Its ``confidence`` interval (the target is reached when the lower end clears it)."""
        k = self.kept
        return None if k is None or k.confirm_share is None else (k.confirm_low, k.confirm_high)

    @property
    def encoded(self) -> dict | None:
        return None if self.kept is None else self.kept.encoded

    @property
    def d(self) -> int:
        return self.kept.d

    @property
    def D(self) -> int:
        return self.sub.D

    def search_record(self) -> dict:
        """How many candidates were tried: what ``squeeze mdl`` charges for the choice."""
        return {"candidates": len(self.candidates)}

    def metrics(self, lean: bool = False) -> dict:
        """The metrics recorded in the file (no run-dependent numbers such as times); ``lean``:
        only the search record."""
        share = None if self.confirm_share is None else (self.confirm_share, *self.confirm_interval)
        return file_metrics(
            self.size, self.target, search=self.search_record(), interrupted=self.interrupted, lean=lean,
            test_accuracy=self.accuracy, dense_test_accuracy=self.teacher_accuracy, confirm=share,
        )


def file_metrics(size: int | None, target: float, *, search: dict | None = None, interrupted: bool = True, lean: bool = False,
                 test_accuracy: float | None = None, dense_test_accuracy: float | None = None, confirm: tuple | None = (0.1234, 0.1234, 0.1234)) -> dict:
    """The metrics a compressed file records (the data set's name is in the file's data record):
    the test accuracy of the file and of the teacher, the kept file's share of the teacher's
    accuracy on the confirmation share with its interval (``confirm``: share, low, high), the goal
    and the search record, which ``squeeze mdl`` charges. ``lean`` keeps only the search record.
    Without ``search`` and accuracies (a placeholder, to measure a candidate's bytes before the
    end), every number takes its longest printed form, so the final file is never larger than
    the candidate measured with it. Validation accuracies are not recorded: they are the
    search's own (optimistic) numbers, in the compress report."""
    out = {"search": search or {"candidates": 999}}
    if lean:
        return out
    out["test_accuracy"] = round(test_accuracy, 4) if test_accuracy is not None else 0.1234
    out["dense_test_accuracy"] = round(dense_test_accuracy, 4) if dense_test_accuracy is not None else 0.1234
    if confirm is not None:
        out["confirm"] = [round(x, 4) for x in confirm]
    out["size" if size is not None else "target"] = size if size is not None else target
    if interrupted:
        out["interrupted"] = True
    return out


def load_teacher(path: str | Path, model: nn.Module, *, trust_pickle: bool = False) -> nn.Module:
    """Load a dense checkpoint into ``model`` strictly and return it in eval mode.

    Args:
        path: a ``.safetensors`` or ``.pt`` state_dict (a pickled whole module only with ``trust_pickle``).
        model: the architecture, freshly built.
        trust_pickle: allow unpickling (runs code from the file).

    Raises:
        SqueezeError: unreadable file, pickle without permission, or keys that do not match
            the architecture (missing and unexpected keys are listed).
    """
    path = Path(path)
    state = load_state_dict(path, trust_pickle=trust_pickle)
    match_state_dict(model, state, path.name)
    return model.eval()


class _Search:
    """The state of one compression search: trained float models per d, and the candidates."""

    def __init__(self, teacher, build, data, config: CompressConfig, measure, on_trial, progress, base):
        self.teacher, self.build, self.data, self.config = teacher, build, data, config
        self.measure, self.on_trial, self.progress, self.base = measure, on_trial, progress, base
        self.candidates: list[Candidate] = []
        self.floats: dict[int, tuple[Subspace, dict, int, float]] = {}  # d -> (sub, float state, epochs, seconds)
        self.interrupted = False
        self.probes: dict[str, Candidate] = {}
        self.last = time.time()  # the end of the previous candidate: each candidate's wall time runs from it
        self.smallest: int | None = None  # the smallest file (d = 1) of an encoding none of whose files fits the budget
        # the search trains on fit and reads validation; confirmation is kept for the verdict
        # (a byte budget gives no verdict to confirm: all but the validation share is fitted)
        self.search_data, fraction, self.confirm = holdout.carve(data, "validation" if config.size is not None else config.selection)
        self.train_cfg = TrainConfig(
            epochs=config.epochs, lr=config.lr, batch_size=config.batch_size, device=config.device,
            seed=config.seed, distill_weight=config.distill_weight, patience=config.patience, val_fraction=fraction,
        )
        _, self.val = self.search_data.validation_split(fraction)
        D = count_params(build())
        self.dims = min(config.max_dim or D, D)
        self.val_teacher_logits = predict(teacher, self.val.x_train, device=config.device)
        self.val_teacher = self.val_teacher_logits.argmax(1)
        self.teacher_right = (self.val_teacher == self.val.y_train).double()  # per validation example
        if self.confirm is not None:
            self.confirm_teacher_right = (predict(teacher, self.confirm.x_train, device=config.device).argmax(1) == self.confirm.y_train).double()

    def fit(self, d: int) -> bool:
        """Distil at d (once); False when Ctrl-C stopped it (the search then stops). An
        interrupted fit is kept (its best finished epoch) only when d is pinned."""
        if d in self.floats:
            return True
        cfg = self.config
        sub = self.subspace(d)
        res = train(sub, self.search_data, self.train_cfg, teacher=self.teacher, progress=self.progress, description=f"d={d:,}")
        if res.interrupted:
            self.interrupted = True
            if res.best_epoch == 0 or cfg.dim is None:
                return False
        self.floats[d] = (sub, _state(sub), res.best_epoch, res.seconds)
        return not res.interrupted

    def probe(self, enc: str, d: int) -> None:
        """Measure the fixed cost and the coded size of ``enc`` without training: k-means codes
        of the largest trained float theta_d (they code like the trained ones), or before any
        training, of a seeded Gaussian theta_d at d (a first guess for :meth:`estimate`)."""
        if self.floats:
            d = max(self.floats)
            sub, state, epochs, _ = self.floats[d]
            _restore(sub, state)
        else:
            epochs = 0
            sub = self.subspace(d)
            with torch.no_grad():
                sub.theta_d.copy_(0.01 * torch.randn(d, generator=torch.Generator().manual_seed(self.config.seed)))
        fmt.round_buffers_for_storage_(sub)
        encoded = None
        if levels_of(enc) is not None:
            codebook, codes = kmeans_quantize(sub.theta_d.detach(), levels_of(enc))
            encoded = coding_registry.encode_quantized(codebook, codes)
            with torch.no_grad():
                sub.theta_d.copy_(codebook[codes])
        total, payload = self.measure(sub, encoded, enc)
        self.probes[enc] = Candidate(d=d, encoding=enc, bytes=total, payload_bytes=payload, val_accuracy=0.0, val_agreement=0.0, epochs=epochs, seconds=0.0)

    def candidate(self, d: int, enc: str, quick: bool = False) -> Candidate:
        """The candidate (d, enc) from the float model at d (fitted before); cached. ``quick``:
        k-means without fine-tuning (after Ctrl-C)."""
        for c in self.candidates:
            if c.d == d and c.encoding == enc:
                return c
        sub, state, epochs, seconds = self.floats[d]
        _restore(sub, state)
        start = time.time()
        encoded, method = self.store(sub, enc, 0 if quick else self.config.steps_of_qat(), self.search_data, self.train_cfg.val_fraction)
        if encoded is not None:
            seconds += time.time() - start
        logits = predict(sub, self.val.x_train, device=self.config.device)
        pred = logits.argmax(1)
        right = (pred == self.val.y_train).double()
        paired = right - self.config.target * self.teacher_right
        total, payload = self.measure(sub, encoded, enc)
        c = Candidate(
            d=d, encoding=enc, bytes=total, payload_bytes=payload,
            val_accuracy=float(right.mean()),
            val_agreement=float((pred == self.val_teacher).float().mean()),
            epochs=epochs, seconds=seconds, method=method, state=_state(sub), encoded=encoded,
            val_se=float(paired.std() / math.sqrt(len(paired))) if len(paired) > 1 else 0.0,
            val_share=holdout.share_interval(right, self.teacher_right, self.config.confidence),
            val_loss=float(distill_objective(logits, self.val.y_train, self.val_teacher_logits, self.config.distill_weight)),
        )
        c.wall_seconds, self.last = time.time() - self.last, time.time()
        self.candidates.append(c)
        if self.on_trial is not None:
            self.on_trial(c)
        return c

    def subspace(self, d: int) -> Subspace:
        """A fresh subspace model at d (theta_d = 0) of the search's projection and seed."""
        cfg = self.config
        return Subspace(self.build(), SubspaceConfig(dim=d, projection=cfg.projection, seed=cfg.seed), base=self.base)

    def store(self, sub: Subspace, enc: str, steps: int, data: Dataset, val_fraction: float) -> tuple[dict | None, str]:
        """Put ``sub`` in the form the file stores for ``enc``: theta_d rounded to the float
        type, or quantized (k-means, then ``steps`` of QAT on ``data``, the better of the two on
        its ``val_fraction`` share); BatchNorm statistics rounded as the file stores them.
        Returns ``(encoded theta_d or None for floats, method)``."""
        L = levels_of(enc)
        encoded, method = None, "float"
        if L is None:
            fmt.round_for_storage_(sub, {"f16": "float16", "f32": "float32"}[enc])
        else:
            cfg = self.config
            qcfg = QuantizeConfig(
                levels=L, steps=steps, batch_size=cfg.batch_size, distill_weight=cfg.distill_weight,
                val_fraction=val_fraction, seed=cfg.seed, device=cfg.device,
            )
            q = quantize_subspace(sub, qcfg, data)
            encoded, method = coding_registry.encode_quantized(q.codebook, q.codes), q.method
        fmt.round_buffers_for_storage_(sub)
        return encoded, method

    def look(self, c: Candidate) -> bool:
        """Score ``c`` once on the confirmation share (its share of the teacher's accuracy there,
        with the interval); whether the interval's lower end clears the target."""
        if c.confirm_share is None:
            sub = self.floats[c.d][0]
            _restore(sub, c.state)
            right = (predict(sub, self.confirm.x_train, device=self.config.device).argmax(1) == self.confirm.y_train).double()
            c.confirm_share, c.confirm_low, c.confirm_high = holdout.share_interval(right, self.confirm_teacher_right, self.config.confidence)
        return c.confirm_low >= self.config.target

    def estimate(self, enc: str, d: int) -> int:
        """Bytes of (d, enc): from the largest measured candidate of that encoding, else its probe."""
        same = [c for c in self.candidates if c.encoding == enc]
        if same:
            return max(same, key=lambda c: c.d).estimate_bytes(d)
        if enc not in self.probes or (self.floats and self.probes[enc].epochs == 0):
            self.probe(enc, min(1024, self.dims))
        return self.probes[enc].estimate_bytes(d)

    def largest_fitting(self, enc: str, budget: int, aim: float = 1.0) -> int:
        """The largest d whose (d, enc) file is estimated to fit ``budget``, its theta_d part
        aimed at ``aim`` of the room the fixed cost leaves (0: none fits)."""
        fixed = self.estimate(enc, 0)
        per = (self.estimate(enc, 100_000) - fixed) / 100_000
        return max(0, min(self.dims, int(aim * (budget - fixed) / per)))


def _state(sub: Subspace) -> dict:
    """What a candidate owns: theta_d, the layerwise scales and the buffers (not the module's
    own, unused weights, which would cost D values per candidate)."""
    state = {"theta_d": sub.theta_d.detach().clone(), "buffers": {k: v.detach().clone() for k, v in sub.extra_tensors().items()}}
    if sub.scales is not None:
        state["scales"] = sub.scales.detach().clone()
    return state


@torch.no_grad()
def _restore(sub: Subspace, state: dict) -> None:
    sub.theta_d.copy_(state["theta_d"])
    if "scales" in state:
        sub.scales.copy_(state["scales"])
    for k, v in sub.extra_tensors().items():
        v.copy_(state["buffers"][k])


def _default_measure(sub: Subspace, encoded: dict | None, enc: str) -> tuple[int, int]:
    """(file bytes, theta_d bytes) of ``sub`` saved without metrics or architecture."""
    with tempfile.TemporaryDirectory() as tmp:
        f = fmt.save(sub, Path(tmp) / "c.sqz", dtype={"f16": "float16", "f32": "float32"}.get(enc, "float16"), encoded=encoded)
    payload = coding_registry.stored_bytes(encoded) if encoded is not None else f.theta_d.numel() * (2 if enc == "f16" else 4)
    return f.size_bytes, payload


def _search_size(s: _Search, budget: int) -> None:
    """For each encoding, the largest d whose file fits the budget: estimated (aiming the theta_d
    part 5% below the room left, as the coded size varies with training), checked by writing
    the file, and corrected once when it was over the budget or more than 15% under it.

    float16 is skipped when 16 or more levels are searched: at the same bytes they hold 4x the
    values, and 16 levels kept the float model's validation accuracy (mnist5k MLP at d = 3,000:
    float 0.910, 16 levels by k-means alone 0.905, after fine-tuning 0.925)."""
    cfg = s.config
    encs = cfg.encodings()
    if cfg.dim is not None:
        _pinned(s, encs)
        return
    if any((levels_of(e) or 0) >= 16 for e in encs):
        encs = [e for e in encs if levels_of(e) is not None]
    for enc in encs:
        d = s.largest_fitting(enc, budget, aim=0.95)
        if d < 1:
            smallest = s.estimate(enc, 1)
            s.smallest = smallest if s.smallest is None else min(s.smallest, smallest)
        for _ in range(2):
            if d < 1 or any(c.d == d and c.encoding == enc for c in s.candidates) or len(s.floats) >= cfg.max_fits:
                break
            if not s.fit(d):
                return
            c = s.candidate(d, enc)
            if 0.85 * budget <= c.bytes <= budget or c.d == s.dims:
                break
            d = s.largest_fitting(enc, budget, aim=0.97)


def _pinned(s: _Search, encs: list[str]) -> None:
    """d pinned: every encoding at that d."""
    finished = s.fit(s.config.dim)
    if s.config.dim in s.floats:
        for enc in sorted(encs, key=bits_per_value):
            s.candidate(s.config.dim, enc, quick=not finished)


def _search_target(s: _Search, threshold: float) -> None:
    """The smallest file reaching ``threshold``: double d until a candidate passes, then bisect
    d per encoding, and try larger d for encodings that could still give a smaller file."""
    cfg = s.config
    encs = cfg.encodings()
    if cfg.dim is not None:
        _pinned(s, encs)
        return
    dims = s.dims
    d = min(cfg.start_dim, dims)
    while True:
        if not s.fit(d):
            return
        for enc in encs:
            s.candidate(d, enc)
        if choose(s.candidates, threshold=threshold, margin=cfg.margin)[1] or d >= dims or len(s.floats) >= cfg.max_fits:
            break
        d = min(2 * d, dims)
    while len(s.floats) < cfg.max_fits:
        best, reached = choose(s.candidates, threshold=threshold, margin=cfg.margin)
        if not reached:
            return
        proposals = []
        for enc in encs:
            tried = {c.d: c.passes(threshold, cfg.margin) for c in s.candidates if c.encoding == enc}
            passing = [x for x, ok in tried.items() if ok]
            if passing:
                hi = min(passing)
                lo = max([x for x, ok in tried.items() if not ok and x < hi], default=0)
                nxt = (lo + hi) // 2 if hi - lo > max(1, math.ceil(cfg.tolerance * max(lo, 1))) else None
            else:
                nxt = min(2 * max(tried), dims) if tried and max(tried) < dims else None
                if nxt and s.estimate(enc, nxt) >= best.bytes:  # doubling overshoots: the largest d still smaller
                    top = s.largest_fitting(enc, best.bytes - 1)
                    nxt = top if top > math.ceil((1 + cfg.tolerance) * max(tried)) else None
            if nxt and nxt not in tried and s.estimate(enc, nxt) < best.bytes:
                proposals.append((s.estimate(enc, nxt), nxt, enc))
        if not proposals:
            return
        _, d, enc = min(proposals)
        if not s.fit(d):
            return
        for e in encs:
            if e == enc or s.estimate(e, d) < best.bytes:
                s.candidate(d, e)


def _confirm(s: _Search, threshold: float) -> Candidate | None:
    """The smallest candidate whose validation accuracy reaches the threshold (no margin: the
    confirmation is the gate) and whose interval on the confirmation share clears the target;
    candidates are looked at in order of bytes, each once. When none
    does, the search moves up the frontier: it trains twice the largest d tried (every encoding)
    and looks again, while fits and d remain (never with d pinned). None: nothing confirmed."""
    cfg = s.config
    encs = cfg.encodings()
    while True:
        passing = sorted((c for c in s.candidates if c.passes(threshold)), key=lambda c: (c.bytes, -c.val_accuracy, c.d))
        for c in passing:
            if s.look(c):
                return c
        top = max((c.d for c in s.candidates), default=0)
        if cfg.dim is not None or top >= s.dims or len(s.floats) >= cfg.max_fits or s.interrupted:
            return None
        d = min(2 * top, s.dims)
        if not s.fit(d):
            return None
        for enc in encs:
            s.candidate(d, enc)


def _refit(s: _Search, c: Candidate) -> Candidate | None:
    """The chosen (d, encoding) trained again on the whole training split (the held-out shares
    included) for as many epochs as its best epoch in the search, then stored the same way
    (k-means, or QAT when the search chose it). The choice and the verdict were made before,
    on the model trained without those shares; more data for the same recipe gives a file at
    least as good in expectation (on digits, 1,050 -> 1,350 examples for a CNN moved its test
    share of the teacher from 0.957 to 0.986). None when Ctrl-C stops it or its file would not
    fit the byte budget (the searched file is kept)."""
    cfg = s.config
    sub = s.subspace(c.d)
    epochs = max(1, c.epochs)
    tc = replace(s.train_cfg, epochs=epochs, patience=epochs, val_fraction=0.0)  # exactly `epochs` passes
    res = train(sub, s.data, tc, teacher=s.teacher, progress=s.progress, description=f"refit d={c.d:,}")
    if res.interrupted:
        s.interrupted = True
        return None
    encoded, _ = s.store(sub, c.encoding, 0 if c.method == "kmeans" else cfg.steps_of_qat(), s.data, 0.1)  # QAT or k-means: 10% of all the data, as QuantizeConfig by default
    total, payload = s.measure(sub, encoded, c.encoding)
    if cfg.size is not None and total > cfg.size:
        return None
    return replace(c, bytes=total, payload_bytes=payload, method=f"{c.method}+refit", seconds=res.seconds, state=_state(sub), encoded=encoded)


def compress(
    teacher: nn.Module,
    build: Callable[[], nn.Module],
    data: Dataset,
    config: CompressConfig = CompressConfig(),
    *,
    measure: Callable[[Subspace, dict | None, str], tuple[int, int]] | None = None,
    on_trial: Callable[[Candidate], None] | None = None,
    progress: bool = True,
    base: dict[str, torch.Tensor] | None = None,
) -> CompressResult:
    """Search (d, encoding) for the smallest file reaching the target, or the most accurate
    file within ``config.size`` bytes, by distilling ``teacher``.

    Args:
        teacher: the dense model, loaded (see :func:`load_teacher`).
        build: makes a fresh module of the teacher's architecture.
        data: the data set; validation is carved from its training split, and its test split
            is evaluated only after the choice.
        config: a :class:`CompressConfig`.
        measure: ``measure(sub, encoded, encoding) -> (file bytes, theta_d bytes)`` of the file a
            candidate makes (default: saved without metrics or architecture).
        on_trial: called with each new candidate (to print it).
        progress: show training progress (see :func:`squeeze.fit.train`).
        base: a pretrained base state_dict; theta_0 is the base (a fine-tune delta).

    Returns:
        A :class:`CompressResult`. When the goal is missed it holds the best candidate by the
        same rule and ``reached`` is False; after Ctrl-C it holds the best finished candidate
        (``sub`` None when none finished) and ``interrupted`` is True.
    """
    start = time.time()
    dev = config.device
    teacher = teacher.to(dev).eval()
    s = _Search(teacher, build, data, config, measure or _default_measure, on_trial, progress, base)
    teacher_val = float(s.teacher_right.mean())
    # each candidate must clear it by config.margin of its own standard errors: picking the
    # smallest of many candidates that pass on the validation examples favours the lucky ones
    threshold = config.target * teacher_val
    confirmed = None
    try:
        if config.size is not None:
            _search_size(s, config.size)
        else:
            _search_target(s, threshold)
            if s.confirm is not None and s.candidates:
                confirmed = _confirm(s, threshold)
    except KeyboardInterrupt:
        s.interrupted = True
    kept, reached = choose(s.candidates, threshold=None if config.size is not None else threshold, budget=config.size, margin=config.margin)
    if s.confirm is not None and kept is not None:  # (a target) the verdict is the confirmation's: validation only proposes
        kept, reached = (confirmed, True) if confirmed is not None else (best_of(s.candidates), False)
        s.look(kept)  # the kept file's interval, for the report
    refitted = None
    try:
        if config.refit and kept is not None and not s.interrupted:
            refitted = _refit(s, kept)
    except KeyboardInterrupt:  # the searched file is kept
        s.interrupted = True
    kept = refitted or kept
    # the choice is made: now the test split, once per candidate, for the report
    teacher_test = predict(teacher, data.x_test, device=dev).argmax(1)
    sub = None
    for c in s.candidates + ([refitted] if refitted else []):
        model = s.floats[c.d][0]
        _restore(model, c.state)
        pred = predict(model.materialize(), data.x_test, device=dev).argmax(1)  # what the file decompresses to
        c.test_accuracy = float((pred == data.y_test).float().mean())
        c.test_agreement = float((pred == teacher_test).float().mean())
    if kept is not None:
        sub = s.floats[kept.d][0]
        _restore(sub, kept.state)
    return CompressResult(
        sub=sub,
        kept=kept,
        teacher_val_accuracy=teacher_val,
        teacher_accuracy=float((teacher_test == data.y_test).float().mean()),
        accuracy=kept.test_accuracy if kept else 0.0,
        agreement=kept.test_agreement if kept else 0.0,
        target=config.target,
        size=config.size,
        reached=reached and not s.interrupted,
        interrupted=s.interrupted,
        seconds=time.time() - start,
        data_name=data.name,
        candidates=s.candidates,
        fits=len(s.floats),
        threshold=threshold,
        val_examples=len(s.val.y_train),
        confirm_examples=0 if s.confirm is None else len(s.confirm.y_train),
        teacher_confirm_accuracy=None if s.confirm is None else float(s.confirm_teacher_right.mean()),
        refitted=refitted is not None,
        confidence=config.confidence,
        smallest_bytes=None if s.candidates else s.smallest,
    )


__all__ = ["CompressConfig", "CompressResult", "LEVELS", "file_metrics", "load_teacher", "compress"]
