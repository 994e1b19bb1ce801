"""Held-out shares of the training split, and how sure a measurement on them is.

``compress`` carves two shares from the training split (never from the test split):

    confirm | validation | fit        (sizes: holdout_size(n) each, the rest is fitted)

* **validation** picks each trial's epoch and ranks the candidates (the search reads it many
  times, so the best score on it is optimistic);
* **confirmation** is read only to check a file the search already chose: the target is
  declared reached when the lower end of the kept file's interval on it clears the target.

Both are sized from the data: 15% of the training split each, at least 100 examples (at most a
fifth of the split) and at most 10% of it past 2,000 examples, never more than 2,000. Accuracy on
100 examples moves in steps of 0.01; the interval below says how far that is from the truth.

    share, lo, hi = share_interval(student_right, teacher_right, confidence=0.8)
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import torch

from squeeze.data import SPLIT_SEED, Dataset


def holdout_size(n: int) -> int:
    """Examples in each of the validation and confirmation shares of ``n`` training examples."""
    k = max(round(0.15 * n), min(100, n // 5))
    return max(1, min(k, max(300, round(0.1 * n)), 2000))


def carve(data: Dataset, selection: str) -> tuple[Dataset, float, Dataset | None]:
    """``(search data, validation fraction, confirmation)``: the search trains on ``search
    data``, whose ``validation_split(fraction)`` is the validation share; the confirmation share
    (None for ``selection == "validation"``, the rule with one 10% share) is in neither.

    The confirmation share is the first ``holdout_size(n)`` of the permutation
    :meth:`Dataset.validation_split` draws, so a teacher trained by :func:`squeeze.fit.train`
    with its 10% share held out never saw it when that share is at least as large."""
    if selection == "validation":
        return data, 0.1, None
    n = len(data.y_train)
    k = holdout_size(n)
    perm = torch.from_numpy(np.random.default_rng(SPLIT_SEED + 1).permutation(n))
    fraction = (k + 0.5) / (n - k)  # validation_split takes int((n - k) * fraction) = k examples
    return data.subset(perm[k:]), fraction, data.subset(perm[:k])


def share_interval(student_right: torch.Tensor, teacher_right: torch.Tensor, confidence: float) -> tuple[float, float, float]:
    """The student's accuracy as a share of the teacher's on the same examples, and its
    two-sided ``confidence`` interval (paired: the error of the mean of ``s - r t`` over the
    examples, divided by the teacher's accuracy; a student that mostly agrees with the teacher
    gets a narrow one)."""
    s, t = student_right.double(), teacher_right.double()
    t_mean = float(t.mean())
    if t_mean == 0:
        return float("inf") if float(s.mean()) > 0 else 1.0, 0.0, float("inf")
    r = float(s.mean()) / t_mean
    n = len(s)
    se = float((s - r * t).std() / math.sqrt(n)) / t_mean if n > 1 else float("inf")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    return r, r - z * se, r + z * se


__all__ = ["holdout_size", "carve", "share_interval"]
