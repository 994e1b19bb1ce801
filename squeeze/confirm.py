"""After the search, for the file it chose: the verdict on the confirmation share
(:func:`confirm`) and the refit on the whole training split (:func:`refit`).

The confirmation share (:mod:`squeeze.holdout`) is read by no training and no ranking: the
target is declared reached only for a file whose ``confidence`` interval of its share of the
teacher's accuracy there lies above ``target``. Validation read three times (epoch, ranking,
verdict) was optimistic three times over (issue 25; ``benchmarks/selection.py`` measures both
rules). The teacher's accuracy on the share is optimistic when it was trained on those
examples, which makes the check stricter, never looser.
"""

from __future__ import annotations

from dataclasses import replace

from squeeze.fit import train
from squeeze.frontier import Search, snapshot
from squeeze.search import Candidate


def confirm(s: Search, threshold: float) -> Candidate | None:
    """The smallest candidate whose validation accuracy reaches the threshold (no margin: the
    confirmation is the gate) and whose interval on the confirmation share clears the target;
    candidates are looked at in order of bytes, each once. When no trained one
    does, the search moves up the frontier: it trains twice the largest d trained (every
    encoding, below D) and looks again, while fits and d remain (never with d pinned). The
    teacher's own weights at d = D (:mod:`squeeze.lstsq`) are looked at last, once nothing
    smaller can be. None: nothing confirmed."""
    cfg = s.config
    encs = cfg.encodings()
    while True:
        passing = sorted((c for c in s.candidates if c.passes(threshold) and c.d not in s.solved), key=lambda c: (c.bytes, -c.val_accuracy, c.d))
        for c in passing:
            if s.look(c):
                return c
        top = max((c.d for c in s.candidates if c.d not in s.solved), default=0)
        d = min(2 * top, s.dims - 1 if s.solved else s.dims)
        if cfg.dim is not None or d <= top or not s.may_fit():
            break
        if not s.fit(d):
            return None
        for enc in s.encodings_at(d, encs):
            s.candidate(d, enc)
    copies = sorted((c for c in s.candidates if c.d in s.solved and c.passes(threshold)), key=lambda c: c.bytes)
    return next((c for c in copies if s.look(c)), None)


def refit(s: Search, c: Candidate) -> Candidate | None:
    """The chosen (d, encoding) trained again on the whole training split (the held-out shares
    included) for as many epochs as its best epoch in the search, then stored the same way
    (k-means, or QAT when the search chose it). The choice and the verdict were made before,
    on the model trained without those shares; more data for the same recipe gives a file at
    least as good in expectation (on digits, 1,050 -> 1,350 examples for a CNN moved its test
    share of the teacher from 0.957 to 0.986). None when Ctrl-C or the time limit stops it, its file would not
    fit the byte budget, or ``c`` is the teacher's own weights (the searched file is kept)."""
    cfg = s.config
    if c.d in s.solved:  # the teacher's own weights: the teacher already learned from every example
        return None
    sub = s.subspace(c.d)
    epochs = max(1, c.epochs)
    tc = replace(s.train_cfg, epochs=epochs, patience=epochs, val_fraction=0.0, lr=s.rates[c.d])  # exactly `epochs` passes, at the search's rate for d
    res = train(sub, s.data, tc, teacher=s.teacher, progress=s.progress, description=f"refit d={c.d:,}", deadline=s.end)
    if res.interrupted or res.out_of_time:
        s.interrupted |= res.interrupted
        s.out_of_time |= res.out_of_time
        return None
    encoded, _ = s.store(sub, c.encoding, 0 if c.method == "kmeans" else cfg.steps_of_qat(), s.data, 0.1)  # QAT or k-means: 10% of all the data, as QuantizeConfig by default
    total, payload = s.measure(sub, encoded, c.encoding)
    if cfg.size is not None and total > cfg.size:
        return None
    return replace(c, bytes=total, payload_bytes=payload, method=f"{c.method}+refit", seconds=res.seconds, state=snapshot(sub), encoded=encoded)


__all__ = ["confirm", "refit"]
