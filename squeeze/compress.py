"""Compress a trained dense checkpoint into a ``.sqz`` file: the dense model is the teacher,
and theta_d is fitted by distillation (KL to the teacher's outputs mixed with cross-entropy
on the labels, and KL to the teacher on mixtures of pairs of training inputs), starting from theta_0.

    teacher = load_teacher("model.safetensors", arch.build(ref, kwargs))
    result = compress(teacher, lambda: arch.build(ref, kwargs), data, CompressConfig(size=1500))
    format.save(result.sub, "model.sqz", encoded=result.encoded, metrics=result.metrics(), ...)

What a user pays for is bytes, so the search runs on the (d, encoding) plane
(:mod:`squeeze.frontier`): each trained d is stored as float16 and quantized to a few levels.
Two goals:

- ``target``: the smallest file that keeps ``target`` of the teacher's accuracy. Two shares
  of the training split are held out (:mod:`squeeze.holdout`, sized from the data): the
  *validation* share picks each trial's epoch and proposes candidates (validation accuracy at
  least ``target`` x the teacher's plus ``margin`` paired standard errors); the *confirmation*
  share, which no training and no ranking reads, then checks the proposals from the smallest
  up (:mod:`squeeze.confirm`), moving up the frontier while fits remain when none is confirmed.
  The largest candidate, at d = D, is not trained: it is the teacher's own weights, solved by
  least squares in a fraction of a second (:mod:`squeeze.lstsq`), and it is looked at last. A
  search that finds nothing smaller still keeps a file the confirmation vouches for, and a
  time limit (``time_limit``, 2 minutes by default) can cut the search without weakening it.
- ``size``: the most accurate file within a byte budget: for each encoding, the largest d
  whose file fits.

``dim`` and ``levels`` pin either axis. Every choice (d, levels, epoch, k-means or QAT) is made
on the validation share carved from the training split (:mod:`squeeze.search`), the verdict on
the confirmation share; the test split is evaluated after the choice, once per candidate, for
the report. With ``size`` there is no verdict to give, so no confirmation share is held out.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from squeeze.checkpoint import load_state_dict, match_state_dict
from squeeze.confirm import confirm, refit
from squeeze.data import Dataset
from squeeze.defaults import CONVERGE, LEVELS, TARGET, TIME_LIMIT  # LEVELS: the quantized encodings searched besides float16
from squeeze.fit import predict
from squeeze.frontier import Search, default_measure, restore, search_size, search_target
from squeeze.projection import kinds
from squeeze.search import Candidate, best_of, choose, encoding_name
from squeeze.subspace import Subspace

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
        mix: weight of the KL term to the teacher on mixtures of pairs of training inputs, one
            per example in each batch (:class:`squeeze.fit.TrainConfig`); 0: none. A student
            that matches the teacher between the training examples keeps more of its accuracy on
            fresh data (``benchmarks/selection.py``, default target: misses on the test split
            fell from 9 of 27 runs to 2 with the rate rule of :meth:`squeeze.frontier.Search.fit`),
            for about twice the CPU time.
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
        time_limit: with ``target``, the wall seconds a compress should take (None: no limit).
            No fit starts or goes on after 70% of it (:meth:`squeeze.frontier.Search.may_fit`;
            a fit stopped by it keeps its best epoch), and the refit runs only when it is
            expected to end within 95% of it. The limit cuts only the search for smaller files:
            the verdict is the confirmation's as always, and at d = D the file is the teacher's
            own weights, found in a fraction of a second (:mod:`squeeze.lstsq`), so a search
            that ran out of time keeps a larger file, not a worse promise. When it binds, the
            result depends on the machine's speed (``CompressResult.out_of_time`` says so).
        margin: with ``target``, a candidate passes when its validation accuracy exceeds
            ``target`` x the teacher's by this many of its paired standard errors
            (:attr:`~squeeze.search.Candidate.val_se`); 0 compares with the target itself.
        selection: ``confirm`` (default): a confirmation share of the training split, used by
            no training and no ranking, checks the kept file before the target is declared
            reached (:func:`holdout_size` sizes both shares); ``validation``: the rule before
            it, one 10% share for epochs, ranking and the verdict (kept to measure against).
        refit: train the chosen (d, encoding) again on the whole training split before it is
            saved (:func:`squeeze.confirm.refit`); its interval and verdict are those of the searched model.
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
    mix: float = 1.0
    device: str = "cpu"
    dtype: str = "float16"
    level_grid: tuple[int, ...] = LEVELS
    qat_steps: int | None = None
    start_dim: int = 256
    max_dim: int | None = None
    tolerance: float = 0.125
    max_fits: int = 10
    time_limit: float | None = TIME_LIMIT
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
        if not self.mix >= 0:
            raise ValueError(f"mix must be >= 0 (0: no mixed inputs), got {self.mix}")
        if not 0 <= self.distill_weight <= 1:
            raise ValueError(f"distill_weight must be in [0, 1], got {self.distill_weight}")
        if self.margin < 0:
            raise ValueError(f"margin must be >= 0 standard errors, got {self.margin}")
        if self.selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}, got {self.selection!r}")
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence}")
        if self.time_limit is not None and not self.time_limit > 0:
            raise ValueError(f"time_limit must be a positive number of seconds or None (no limit), got {self.time_limit}")
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
    fits: int = 0  # float models trained (the least-squares copy at d = D is not one)
    threshold: float = 0.0
    val_examples: int = 0
    confirm_examples: int = 0
    confidence: float = 0.8
    teacher_confirm_accuracy: float | None = None  # the teacher's accuracy on the confirmation share
    refitted: bool = False  # the kept file was trained again on the whole training split (CompressConfig.refit)
    out_of_time: bool = False  # the time limit stopped the search (or left no time to refit): a longer one may find a smaller file
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
    s = Search(teacher, build, data, config, measure or default_measure, on_trial, progress, base)
    teacher_val = float(s.teacher_right.mean())
    # each candidate must clear it by config.margin of its own standard errors: picking the
    # smallest of many candidates that pass on the validation examples favours the lucky ones
    threshold = config.target * teacher_val
    confirmed = None
    try:
        if config.size is not None:
            search_size(s, config.size)
        else:
            search_target(s, threshold)
            if s.confirm is not None and s.candidates:
                confirmed = confirm(s, threshold)
    except KeyboardInterrupt:
        s.interrupted = True
    kept, reached = choose(s.candidates, threshold=None if config.size is not None else threshold, budget=config.size, margin=config.margin)
    if s.confirm is not None and kept is not None:  # (a target) the verdict is the confirmation's: validation only proposes
        kept, reached = (confirmed, True) if confirmed is not None else (best_of(s.candidates), False)
        s.look(kept)  # the kept file's interval, for the report
    refitted = None
    try:
        if config.refit and kept is not None and not s.interrupted:
            if s.room_to_refit(kept.d):
                refitted = refit(s, kept)
            else:
                s.out_of_time = True
    except KeyboardInterrupt:  # the searched file is kept
        s.interrupted = True
    kept = refitted or kept
    # the choice is made: now the test split, once per candidate, for the report
    teacher_test = predict(teacher, data.x_test, device=dev).argmax(1)
    sub = None
    for c in s.candidates + ([refitted] if refitted else []):
        model = s.floats[c.d][0]
        restore(model, c.state)
        pred = predict(model.materialize(), data.x_test, device=dev).argmax(1)  # what the file decompresses to
        c.test_accuracy = float((pred == data.y_test).float().mean())
        c.test_agreement = float((pred == teacher_test).float().mean())
    if kept is not None:
        sub = s.floats[kept.d][0]
        restore(sub, kept.state)
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
        fits=s.trained(),
        threshold=threshold,
        val_examples=len(s.val.y_train),
        confirm_examples=0 if s.confirm is None else len(s.confirm.y_train),
        teacher_confirm_accuracy=None if s.confirm is None else float(s.confirm_teacher_right.mean()),
        refitted=refitted is not None,
        out_of_time=s.out_of_time,
        confidence=config.confidence,
        smallest_bytes=None if s.candidates else s.smallest,
    )


__all__ = ["CompressConfig", "CompressResult", "LEVELS", "file_metrics", "load_teacher", "compress"]
