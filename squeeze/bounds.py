"""Bounds on the test error of a model from its training error and its description length.

    b = generalization_bounds(err_train=0.012, n=60000, k_bits=dl.total_bits, delta=0.05)
    b.headline                                   # the kl-inverse Occam bound

Bounds on the test error (0-1 loss) of the fixed model h, from its training error
``err_train`` on n i.i.d. samples, its description length K bits and confidence 1 - delta.
Write ``B = (K ln 2 + ln(1/delta)) / n``.

- Occam bound, square-root form (Hoeffding + union bound over the prefix code):
  ``err_test <= err_train + sqrt(B / 2) = err_train + sqrt((K ln 2 + ln(1/delta)) / (2n))``.
- Occam bound, kl form (Chernoff + union bound; Langford & Seeger; the headline):
  ``kl(err_train || err_test) <= B``, where ``kl(q || p) = q ln(q/p) + (1-q) ln((1-q)/(1-p))``;
  the bound is the largest p >= err_train with ``kl(err_train || p) <= B``, found by bisection
  (the returned value is the upper end of the final bracket, so it never understates the bound).
- Catoni's bound (Catoni 2007, Thm 1.2.6, with the point-mass posterior on h, whose KL to the
  prior is K ln 2): for a fixed C > 0,
  ``err_test <= (1 - exp(-C err_train - (K ln 2 + ln(1/delta)) / n)) / (1 - exp(-C))``.
  C is chosen as the best of a grid of G values fixed in advance; by a union bound over the
  grid (delta / G for each C) this costs ``ln G``: the optimised bound replaces
  ``ln(1/delta)`` by ``ln(G/delta)``. The default grid is ``C = 2^(k/4)``, k = -24..24 (G = 49).

Every bound is clipped to 1 (a larger value says nothing).

The description length K itself is :mod:`squeeze.mdl`'s; the formulas are written out in
``docs/mdl.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DEFAULT_C_GRID: tuple[float, ...] = tuple(2.0 ** (k / 4) for k in range(-24, 25))


def _check(err_train: float, n: int, k_bits: float, delta: float) -> None:
    if not 0.0 <= err_train <= 1.0:
        raise ValueError(f"err_train must be a fraction in [0, 1], got {err_train!r}")
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer (the number of training samples), got {n!r}")
    if not k_bits >= 0 or not math.isfinite(k_bits):
        raise ValueError(f"k_bits must be a finite number >= 0, got {k_bits!r}")
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must lie in (0, 1), e.g. 0.05, got {delta!r}")


def complexity(n: int, k_bits: float, delta: float) -> float:
    """``B = (K ln 2 + ln(1/delta)) / n``, the complexity term of the Occam bounds."""
    return (k_bits * math.log(2) + math.log(1 / delta)) / n


def binary_kl(q: float, p: float) -> float:
    """``kl(q || p) = q ln(q/p) + (1-q) ln((1-q)/(1-p))`` in nats, with ``0 ln 0 = 0``."""
    out = 0.0
    for a, b in ((q, p), (1 - q, 1 - p)):
        if a > 0:
            if b <= 0:
                return math.inf
            out += a * math.log(a / b)
    return out


def kl_inverse(q: float, bound: float, iters: int = 200) -> float:
    """The largest p in [q, 1] with ``kl(q || p) <= bound``, by bisection.

    Args:
        q: the empirical error, in [0, 1].
        bound: the allowed divergence in nats (>= 0).
        iters: bisection steps (stops earlier when the bracket no longer shrinks).

    Returns:
        The upper end of the final bracket (never below the true inverse).
    """
    lo, hi = q, 1.0
    if binary_kl(q, hi) <= bound:
        return 1.0
    for _ in range(iters):
        mid = (lo + hi) / 2
        if mid <= lo or mid >= hi:
            break
        if binary_kl(q, mid) <= bound:
            lo = mid
        else:
            hi = mid
    return hi


def occam_bound(err_train: float, n: int, k_bits: float, delta: float) -> float:
    """``err_train + sqrt((K ln 2 + ln(1/delta)) / (2n))``, clipped to 1.

    Args:
        err_train: training error (0-1 loss) in [0, 1].
        n: number of training samples.
        k_bits: K, the prefix-free description length in bits.
        delta: the bound holds with probability 1 - delta.

    Returns:
        The upper bound on the test error.
    """
    _check(err_train, n, k_bits, delta)
    return min(1.0, err_train + math.sqrt(complexity(n, k_bits, delta) / 2))


def occam_kl_bound(err_train: float, n: int, k_bits: float, delta: float) -> float:
    """The largest p with ``kl(err_train || p) <= (K ln 2 + ln(1/delta)) / n``.

    Args:
        err_train: training error (0-1 loss) in [0, 1].
        n: number of training samples.
        k_bits: K, the prefix-free description length in bits.
        delta: the bound holds with probability 1 - delta.

    Returns:
        The upper bound on the test error.
    """
    _check(err_train, n, k_bits, delta)
    return kl_inverse(err_train, complexity(n, k_bits, delta))


def catoni_bound(err_train: float, n: int, k_bits: float, delta: float, c: float) -> float:
    """Catoni's bound for one C fixed in advance, clipped to 1:
    ``(1 - exp(-C err_train - (K ln 2 + ln(1/delta)) / n)) / (1 - exp(-C))``.

    Args:
        err_train: training error (0-1 loss) in [0, 1].
        n: number of training samples.
        k_bits: K, the prefix-free description length in bits.
        delta: the bound holds with probability 1 - delta.
        c: Catoni's C > 0.

    Returns:
        The upper bound on the test error.
    """
    _check(err_train, n, k_bits, delta)
    if not c > 0 or not math.isfinite(c):
        raise ValueError(f"C must be a finite number > 0, got {c!r}")
    return min(1.0, -math.expm1(-c * err_train - complexity(n, k_bits, delta)) / -math.expm1(-c))


def catoni_bound_optimized(
    err_train: float, n: int, k_bits: float, delta: float, grid: tuple[float, ...] = DEFAULT_C_GRID
) -> tuple[float, float]:
    """Catoni's bound at the best C of a grid, paying ``ln(len(grid))`` for the choice.

    Each C is evaluated at confidence ``delta / G`` (G = ``len(grid)``), i.e. with
    ``ln(G/delta)`` in place of ``ln(1/delta)``, so the minimum holds with probability 1 - delta.

    Args:
        err_train: training error (0-1 loss) in [0, 1].
        n: number of training samples.
        k_bits: K, the prefix-free description length in bits.
        delta: the bound holds with probability 1 - delta.
        grid: the candidate values of C, fixed before seeing the data.

    Returns:
        ``(bound, C)``: the smallest bound over the grid and the C that gives it.
    """
    if not grid:
        raise ValueError("the grid of C values is empty")
    per_c = delta / len(grid)
    return min((catoni_bound(err_train, n, k_bits, per_c, c), c) for c in grid)


@dataclass(frozen=True)
class Bounds:
    """Upper bounds on the test error, each holding with probability 1 - delta.

    Args:
        occam_sqrt: the square-root Occam bound.
        occam_kl: the kl-inverse Occam bound (the headline).
        catoni: Catoni's bound at the best C of the grid (union bound included).
        catoni_c: that C.
    """

    occam_sqrt: float
    occam_kl: float
    catoni: float
    catoni_c: float

    @property
    def headline(self) -> float:
        """The kl-inverse Occam bound."""
        return self.occam_kl


def generalization_bounds(
    err_train: float, n: int, k_bits: float, delta: float = 0.05, grid: tuple[float, ...] = DEFAULT_C_GRID
) -> Bounds:
    """All three bounds for one model (see the module docstring for the formulas).

    Args:
        err_train: training error (0-1 loss) in [0, 1].
        n: number of training samples.
        k_bits: K, the prefix-free description length in bits (``DescriptionLength.total_bits``).
        delta: each bound holds with probability 1 - delta.
        grid: Catoni's candidate values of C.

    Returns:
        A :class:`Bounds`.
    """
    catoni, c = catoni_bound_optimized(err_train, n, k_bits, delta, grid)
    return Bounds(
        occam_sqrt=occam_bound(err_train, n, k_bits, delta),
        occam_kl=occam_kl_bound(err_train, n, k_bits, delta),
        catoni=catoni,
        catoni_c=c,
    )


__all__ = [
    "DEFAULT_C_GRID",
    "Bounds",
    "binary_kl",
    "catoni_bound",
    "catoni_bound_optimized",
    "complexity",
    "generalization_bounds",
    "kl_inverse",
    "occam_bound",
    "occam_kl_bound",
]
