"""The search behind ``compress``: trained float models and candidates on the (d, encoding)
frontier, and the two walks over it (:func:`search_target`, :func:`search_size`).

    s = Search(teacher, build, data, config, default_measure, on_trial, progress, base)
    search_target(s, threshold)      # or search_size(s, config.size); then s.candidates

Each trained d (distilled until the validation objective stops improving,
:data:`squeeze.defaults.CONVERGE`; again from zero at a tenth of the rate when it stopped
improving within half its patience or fitted worse than a smaller d, keeping the better fit on
validation) is stored as float16
and, reusing the same trained float model, quantized to each of a few levels (k-means, then
quantization-aware fine-tuning, range coded); every candidate is scored on the validation share
(:mod:`squeeze.holdout`).

At d = D (the whole model) nothing is trained: the float candidate is the teacher's own weights
by least squares (:mod:`squeeze.lstsq`), made first and read by the walk below only as the last
resort of the verdict; quantized encodings stop at D - 1 (:meth:`Search.top`). With a time limit,
no fit starts or goes on past its search share (:meth:`Search.may_fit`).

- ``target``: d doubles until a trained candidate passes on validation, then the search bisects d per
  encoding and tries larger d with fewer levels wherever the estimated bytes could beat the
  best file so far: the doubled d, or when that would be larger than the best file, the largest
  d estimated to stay below it. The verdict is :func:`squeeze.confirm.confirm`'s.
- ``size``: for each encoding, the largest d whose file fits (estimated from measured bytes,
  then checked by writing the file).

theta_d starts at zero (theta = theta_0). A warm start at the least-squares projection of the
teacher did no better than seed noise (squeeze.zoo:MLP on mnist5k): the teacher's displacement
from theta_0 is mostly the difference of two independent random inits, of which a random
d-dimensional subspace keeps only a d/D share. Work is reused instead by quantizing each trained
float model to every level rather than retraining.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from squeeze import coding_registry, holdout, lstsq
from squeeze import format as fmt
from squeeze.data import Dataset
from squeeze.dimension import count_params
from squeeze.fit import TrainConfig, distill_objective, predict, train
from squeeze.quantize import QuantizeConfig, kmeans_quantize, quantize_subspace
from squeeze.search import Candidate, bits_per_value, choose, levels_of
from squeeze.subspace import Subspace, SubspaceConfig

# A fit whose validation objective was best within the first half of its patience (10 epochs by
# default) is fitted again from zero at SLOWER times the rate, and the better of the two on the
# validation objective is kept: some models overshoot at the default rate (an MLP with LayerNorm
# on MNIST-1D kept 0.39 test accuracy at d = D with rate 0.1 and 0.49 at 0.01, its teacher 0.52),
# while others need it (a CNN on digits lost 0.02 at every d at 0.01). A slow fit is retried only
# when a smaller d fitted better: a larger subspace holds more (each step of ``rate`` on all d values
# moves every weight by about rate * sqrt(d / D)), so its worse fit says the step is too large
# (with mixed inputs, the MLP on MNIST-1D at d = D: share of the teacher kept 0.74 and 0.90 ->
# 1.04 and 1.05, seeds 1 and 2).
SLOWER = 0.1
# With a time limit (CompressConfig.time_limit), no fit starts or goes on past SEARCH_SHARE of it,
# and the refit runs only when it is expected to end within REFIT_SHARE of it.
SEARCH_SHARE, REFIT_SHARE = 0.7, 0.95


class Search:
    """The state of one compression search: trained float models per d, and the candidates.
    ``config`` is a :class:`squeeze.compress.CompressConfig`; ``measure``, ``on_trial``,
    ``progress`` and ``base`` are :func:`squeeze.compress.compress`'s arguments."""

    def __init__(self, teacher, build, data, config, measure, on_trial, progress, base):
        self.teacher, self.build, self.data, self.config = teacher, build, data, config
        self.measure, self.on_trial, self.progress, self.base = measure, on_trial, progress, base
        self.candidates: list[Candidate] = []
        self.floats: dict[int, tuple[Subspace, dict, int, float]] = {}  # d -> (sub, float state, epochs, seconds)
        self.rates: dict[int, float] = {}  # d -> the learning rate its kept fit used (the refit uses it too)
        self.objectives: dict[int, float] = {}  # d -> the validation objective of its kept fit
        self.interrupted = False
        self.probes: dict[str, Candidate] = {}
        self.last = time.time()  # the end of the previous candidate: each candidate's wall time runs from it
        self.smallest: int | None = None  # the smallest file (d = 1) of an encoding none of whose files fits the budget
        # the time limit (a target only): fits start and run until SEARCH_SHARE of it, the refit must end by REFIT_SHARE
        limit = config.time_limit if config.size is None else None
        now = time.monotonic()
        self.deadline = now + SEARCH_SHARE * limit if limit else None
        self.end = now + REFIT_SHARE * limit if limit else None
        self.out_of_time = False  # the search stopped at its time limit
        self.fit_seconds: list[float] = []  # wall seconds of each trained fit (retries included)
        # the search trains on fit and reads validation; confirmation is kept for the verdict
        # (a byte budget gives no verdict to confirm: all but the validation share is fitted)
        self.search_data, fraction, self.confirm = holdout.carve(data, "validation" if config.size is not None else config.selection)
        self.train_cfg = TrainConfig(
            epochs=config.epochs, lr=config.lr, batch_size=config.batch_size, device=config.device,
            seed=config.seed, distill_weight=config.distill_weight, patience=config.patience, val_fraction=fraction, mix=config.mix,
        )
        _, self.val = self.search_data.validation_split(fraction)
        self.D = count_params(build())
        self.dims = min(config.max_dim or self.D, self.D)
        self.solved: set[int] = set()  # the d (= D) whose float model is the teacher's own weights (squeeze.lstsq), not trained
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
        if d == self.D and sub.plain and cfg.dim is None:  # P spans every weight: the teacher's own, by least squares
            start = time.time()
            def stored() -> float:  # the validation objective of the iterate as the file stores it
                fmt.round_for_storage_(sub, cfg.dtype)
                return self.objective(sub)

            solve = lstsq.teacher_in_subspace(sub, self.teacher, score=stored)
            self.floats[d] = (sub, snapshot(sub), 0, time.time() - start)
            self.rates[d], self.objectives[d] = self.train_cfg.lr, solve.score
            self.solved.add(d)
            return True
        res = train(sub, self.search_data, self.train_cfg, teacher=self.teacher, progress=self.progress, description=f"d={d:,}", deadline=self.deadline)
        rate, stopped = self.train_cfg.lr, res.interrupted
        self.out_of_time |= res.out_of_time
        if stopped:
            self.interrupted = True
            if res.best_epoch == 0 or cfg.dim is None:
                return False
        elif res.out_of_time:  # its best epoch so far is kept; the search stops after it
            if res.best_epoch == 0:
                return False
        elif self.train_cfg.patience and (res.best_epoch <= self.train_cfg.patience // 2 or any(o < res.val_loss for x, o in self.objectives.items() if x < d)):
            # it bottomed out at once, or a smaller d fitted better: try a smaller step
            slow, low = self.subspace(d), replace(self.train_cfg, lr=self.train_cfg.lr * SLOWER)
            res2 = train(slow, self.search_data, low, teacher=self.teacher, progress=self.progress, description=f"d={d:,} lr={low.lr:g}", deadline=self.deadline)
            self.out_of_time |= res2.out_of_time
            if res2.interrupted:
                stopped = self.interrupted = True
            better = res2.best_epoch > 0 and res2.val_loss < res.val_loss
            if better:
                sub, rate = slow, low.lr
            res = replace(res2 if better else res, seconds=res.seconds + res2.seconds)
        self.fit_seconds.append(res.seconds)
        self.floats[d] = (sub, snapshot(sub), res.best_epoch, res.seconds)
        self.rates[d], self.objectives[d] = rate, res.val_loss
        return not stopped

    def top(self, enc: str) -> int:
        """The largest d of an encoding: D is the teacher's own weights (:mod:`squeeze.lstsq`),
        whose theta_d does not quantize (solving for every weight spreads it wide: k-means to 16
        levels kept 0.21-0.59 of the teacher's test accuracy on three models), so quantized
        encodings stop one below it."""
        return self.dims - 1 if levels_of(enc) is not None and self.dims == self.D > 1 and self.config.dim is None else self.dims

    def encodings_at(self, d: int, encs: list[str]) -> list[str]:
        """The encodings of ``encs`` a candidate at d may take."""
        return [e for e in encs if d <= self.top(e)]

    def objective(self, model) -> float:
        """The training objective of ``model`` on the validation share (lower is better)."""
        logits = predict(model, self.val.x_train, device=self.config.device)
        return float(distill_objective(logits, self.val.y_train, self.val_teacher_logits, self.config.distill_weight))

    def trained(self) -> int:
        """Float models trained so far (what ``max_fits`` caps; the least-squares one is not trained)."""
        return len(self.floats) - len(self.solved)

    def may_fit(self) -> bool:
        """Whether another float model may be trained: fewer than ``max_fits`` so far, and
        before the time limit's search deadline with room for a fit as long as the median one."""
        if self.trained() >= self.config.max_fits or self.out_of_time or self.interrupted:
            return False
        if self.deadline is not None and self.fit_seconds and time.monotonic() + sorted(self.fit_seconds)[len(self.fit_seconds) // 2] > self.deadline:
            self.out_of_time = True
        return not self.out_of_time

    def room_to_refit(self, d: int) -> bool:
        """Whether the refit of a file at d (on all the training data, as long as its fit
        scaled by the data) is expected to end within the time limit."""
        if self.end is None or d in self.solved:
            return True
        seconds = self.floats[d][3] * len(self.data.y_train) / max(1, len(self.search_data.y_train))
        return time.monotonic() + seconds <= self.end

    def probe(self, enc: str, d: int) -> None:
        """Measure the fixed cost and the coded size of ``enc`` without training: k-means codes
        of the largest trained float theta_d (they code like the trained ones; not the
        least-squares one), or before any
        training, of a seeded Gaussian theta_d at d (a first guess for :meth:`estimate`)."""
        if self.trained():
            d = max(x for x in self.floats if x not in self.solved)
            sub, state, epochs, _ = self.floats[d]
            restore(sub, state)
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
        restore(sub, state)
        start = time.time()
        encoded, method = self.store(sub, enc, 0 if quick else self.config.steps_of_qat(), self.search_data, self.train_cfg.val_fraction)
        if encoded is not None:
            seconds += time.time() - start
        if d in self.solved:
            method = "lstsq" if method == "float" else f"lstsq+{method}"
        logits = predict(sub, self.val.x_train, device=self.config.device)
        pred = logits.argmax(1)
        right = (pred == self.val.y_train).double()
        paired = right - self.config.target * self.teacher_right
        total, payload = self.measure(sub, encoded, enc)
        c = Candidate(
            d=d, encoding=enc, bytes=total, payload_bytes=payload,
            val_accuracy=float(right.mean()),
            val_agreement=float((pred == self.val_teacher).float().mean()),
            epochs=epochs, seconds=seconds, method=method, state=snapshot(sub), encoded=encoded,
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
            restore(sub, c.state)
            right = (predict(sub, self.confirm.x_train, device=self.config.device).argmax(1) == self.confirm.y_train).double()
            c.confirm_share, c.confirm_low, c.confirm_high = holdout.share_interval(right, self.confirm_teacher_right, self.config.confidence)
        return c.confirm_low >= self.config.target

    def estimate(self, enc: str, d: int) -> int:
        """Bytes of (d, enc): from the largest measured candidate of that encoding, else its probe."""
        same = [c for c in self.candidates if c.encoding == enc]
        if same:
            return max(same, key=lambda c: c.d).estimate_bytes(d)
        if enc not in self.probes or (self.trained() and self.probes[enc].epochs == 0):
            self.probe(enc, min(1024, self.dims))
        return self.probes[enc].estimate_bytes(d)

    def largest_fitting(self, enc: str, budget: int, aim: float = 1.0) -> int:
        """The largest d whose (d, enc) file is estimated to fit ``budget``, its theta_d part
        aimed at ``aim`` of the room the fixed cost leaves (0: none fits)."""
        fixed = self.estimate(enc, 0)
        per = (self.estimate(enc, 100_000) - fixed) / 100_000
        return max(0, min(self.top(enc), int(aim * (budget - fixed) / per)))


def snapshot(sub: Subspace) -> dict:
    """What a candidate owns: theta_d, the layerwise scales and the buffers (not the module's
    own, unused weights, which would cost D values per candidate)."""
    state = {"theta_d": sub.theta_d.detach().clone(), "buffers": {k: v.detach().clone() for k, v in sub.extra_tensors().items()}}
    if sub.scales is not None:
        state["scales"] = sub.scales.detach().clone()
    return state


@torch.no_grad()
def restore(sub: Subspace, state: dict) -> None:
    sub.theta_d.copy_(state["theta_d"])
    if "scales" in state:
        sub.scales.copy_(state["scales"])
    for k, v in sub.extra_tensors().items():
        v.copy_(state["buffers"][k])


def default_measure(sub: Subspace, encoded: dict | None, enc: str) -> tuple[int, int]:
    """(file bytes, theta_d bytes) of ``sub`` saved without metrics or architecture."""
    with tempfile.TemporaryDirectory() as tmp:
        f = fmt.save(sub, Path(tmp) / "c.sqz", dtype={"f16": "float16", "f32": "float32"}.get(enc, "float16"), encoded=encoded)
    payload = coding_registry.stored_bytes(encoded) if encoded is not None else f.theta_d.numel() * (2 if enc == "f16" else 4)
    return f.size_bytes, payload


def search_size(s: Search, budget: int) -> None:
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
            if d < 1 or any(c.d == d and c.encoding == enc for c in s.candidates) or not s.may_fit():
                break
            if not s.fit(d):
                return
            c = s.candidate(d, enc)
            if 0.85 * budget <= c.bytes <= budget or c.d == s.top(enc):
                break
            d = s.largest_fitting(enc, budget, aim=0.97)


def _pinned(s: Search, encs: list[str]) -> None:
    """d pinned: every encoding at that d."""
    finished = s.fit(s.config.dim)
    if s.config.dim in s.floats:
        for enc in sorted(encs, key=bits_per_value):
            s.candidate(s.config.dim, enc, quick=not finished)


def search_target(s: Search, threshold: float) -> None:
    """The smallest file reaching ``threshold``: double d until a candidate passes, then bisect
    d per encoding, and try larger d for encodings that could still give a smaller file."""
    cfg = s.config
    encs = cfg.encodings()
    if cfg.dim is not None:
        _pinned(s, encs)
        return
    dims = s.dims
    if dims == s.D:  # the teacher's own weights, at no training cost: the fallback (squeeze.confirm)
        s.fit(dims)
        for enc in s.encodings_at(dims, encs):
            s.candidate(dims, enc)
    trained = lambda: [c for c in s.candidates if c.d not in s.solved]  # noqa: E731  (what the walk reads)
    d = min(cfg.start_dim, dims)
    while True:
        if not s.fit(d):
            return
        for enc in s.encodings_at(d, encs):
            s.candidate(d, enc)
        if choose(trained(), threshold=threshold, margin=cfg.margin)[1] or d >= dims or not s.may_fit():
            break
        d = min(2 * d, dims)
    while s.may_fit():
        best, reached = choose(trained(), threshold=threshold, margin=cfg.margin)
        if not reached:
            return
        proposals = []
        for enc in encs:
            tried = {c.d: c.passes(threshold, cfg.margin) for c in trained() if c.encoding == enc}
            passing = [x for x, ok in tried.items() if ok]
            if passing:
                hi = min(passing)
                lo = max([x for x, ok in tried.items() if not ok and x < hi], default=0)
                nxt = (lo + hi) // 2 if hi - lo > max(1, math.ceil(cfg.tolerance * max(lo, 1))) else None
            else:
                nxt = min(2 * max(tried), s.top(enc)) if tried and max(tried) < s.top(enc) else None
                if nxt and s.estimate(enc, nxt) >= best.bytes:  # doubling overshoots: the largest d still smaller
                    top = s.largest_fitting(enc, best.bytes - 1)
                    nxt = top if top > math.ceil((1 + cfg.tolerance) * max(tried)) else None
            if nxt and nxt not in tried and nxt not in s.solved and s.estimate(enc, nxt) < best.bytes:
                proposals.append((s.estimate(enc, nxt), nxt, enc))
        if not proposals:
            return
        _, d, enc = min(proposals)
        if not s.fit(d):
            return
        for e in s.encodings_at(d, encs):
            if e == enc or s.estimate(e, d) < best.bytes:
                s.candidate(d, e)


__all__ = ["Search", "default_measure", "restore", "search_size", "search_target", "snapshot"]
