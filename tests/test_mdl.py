"""Description length and generalization bounds, checked against arithmetic written out by hand."""

import math

import numpy as np
import pytest
import torch

from squeeze.coding import code_length_bits, encode
from squeeze.bounds import (
    DEFAULT_C_GRID,
    binary_kl,
    catoni_bound,
    catoni_bound_optimized,
    complexity,
    generalization_bounds,
    kl_inverse,
    occam_bound,
    occam_kl_bound,
)
from squeeze.mdl import description_length, elias_gamma_bits
from squeeze.quantize import kmeans_quantize

# The worked case: n = 50000 samples, K = 10000 bits, err_train = 0.1, delta = 0.05.
N, K, ERR, DELTA = 50000, 10000, 0.1, 0.05
# B = (K ln 2 + ln(1/delta)) / n = (6931.4718056 + 2.9957323) / 50000
B = (10000 * 0.6931471805599453 + 2.995732273553991) / 50000


def test_complexity_by_hand():
    assert complexity(N, K, DELTA) == pytest.approx(B, rel=1e-15)
    assert B == pytest.approx(0.13868935, abs=1e-8)


def test_occam_sqrt_by_hand():
    # 0.1 + sqrt(0.13868935 / 2) = 0.1 + sqrt(0.06934468) = 0.1 + 0.26333377
    assert occam_bound(ERR, N, K, DELTA) == pytest.approx(0.1 + math.sqrt(B / 2), rel=1e-14)
    assert occam_bound(ERR, N, K, DELTA) == pytest.approx(0.36333377, abs=1e-8)


def test_occam_kl_by_hand():
    p = occam_kl_bound(ERR, N, K, DELTA)
    assert p == pytest.approx(0.32269237, abs=1e-8)
    # kl(0.1 || p) = 0.1 ln(0.1 / p) + 0.9 ln(0.9 / (1 - p)) equals B at the bound ...
    assert 0.1 * math.log(0.1 / p) + 0.9 * math.log(0.9 / (1 - p)) == pytest.approx(B, abs=1e-12)
    # ... and the bound is conservative (kl >= B) and tight (a hair lower gives kl < B).
    assert binary_kl(ERR, p) >= B and binary_kl(ERR, p - 1e-12) < B
    assert p < occam_bound(ERR, N, K, DELTA)  # Pinsker: the kl form is never looser


def test_occam_kl_with_zero_training_error_has_a_closed_form():
    # kl(0 || p) = -ln(1 - p) <= B  <=>  p <= 1 - exp(-B); here B = (5000 ln 2 + ln 20) / 60000.
    b = (5000 * math.log(2) + math.log(20)) / 60000
    assert occam_kl_bound(0.0, 60000, 5000, 0.05) == pytest.approx(1 - math.exp(-b), abs=1e-13)


def test_catoni_fixed_c_by_hand():
    # C = 1: (1 - exp(-0.1 - B)) / (1 - exp(-1)) = (1 - exp(-0.23868935)) / 0.63212056
    expect = (1 - math.exp(-1 * 0.1 - B)) / (1 - math.exp(-1))
    assert catoni_bound(ERR, N, K, DELTA, 1.0) == pytest.approx(expect, rel=1e-14)
    assert expect == pytest.approx(0.33591768, abs=1e-8)


def test_catoni_optimised_pays_for_the_grid_by_hand():
    G = len(DEFAULT_C_GRID)
    assert G == 49 and DEFAULT_C_GRID[0] == 2.0**-6 and DEFAULT_C_GRID[-1] == 2.0**6
    bound, c = catoni_bound_optimized(ERR, N, K, DELTA)
    assert c == pytest.approx(math.sqrt(2))  # 2^(2/4)
    # ln(1/delta) becomes ln(G/delta) = ln(49 / 0.05) = ln 980
    b_grid = (10000 * math.log(2) + math.log(980)) / 50000
    expect = (1 - math.exp(-math.sqrt(2) * 0.1 - b_grid)) / (1 - math.exp(-math.sqrt(2)))
    assert bound == pytest.approx(expect, rel=1e-14)
    assert bound == min(catoni_bound(ERR, N, K, DELTA / G, cc) for cc in DEFAULT_C_GRID)
    # Catoni at its best C is the kl bound at the same confidence (plus the grid's coarseness).
    assert occam_kl_bound(ERR, N, K, DELTA / G) <= bound <= occam_kl_bound(ERR, N, K, DELTA / G) + 1e-3


def test_generalization_bounds_and_headline():
    b = generalization_bounds(ERR, N, K, DELTA)
    assert b.headline == b.occam_kl == occam_kl_bound(ERR, N, K, DELTA)
    assert b.occam_sqrt == occam_bound(ERR, N, K, DELTA)
    assert (b.catoni, b.catoni_c) == catoni_bound_optimized(ERR, N, K, DELTA)


def test_bounds_are_monotone_and_clipped():
    for f in (occam_bound, occam_kl_bound, lambda e, n, k, d: catoni_bound_optimized(e, n, k, d)[0]):
        assert f(0.1, N, 20000, DELTA) > f(0.1, N, 10000, DELTA)  # longer description, looser
        assert f(0.1, 2 * N, 10000, DELTA) < f(0.1, N, 10000, DELTA)  # more data, tighter
        assert f(0.2, N, 10000, DELTA) > f(0.1, N, 10000, DELTA)
        assert f(0.1, N, 10000, 0.01) > f(0.1, N, 10000, DELTA)
        assert f(0.5, 100, 10**6, DELTA) == 1.0  # vacuous
    assert kl_inverse(1.0, 0.3) == 1.0
    assert kl_inverse(0.3, 0.0) == pytest.approx(0.3, abs=1e-8)  # kl is flat near q: sqrt(eps) accuracy


def test_binary_kl_edges():
    assert binary_kl(0.0, 0.5) == pytest.approx(math.log(2))
    assert binary_kl(0.3, 0.3) == 0.0
    assert binary_kl(0.3, 1.0) == math.inf


def test_bad_bound_arguments():
    with pytest.raises(ValueError, match="err_train"):
        occam_bound(1.5, N, K, DELTA)
    with pytest.raises(ValueError, match="delta"):
        occam_kl_bound(0.1, N, K, 0.0)
    with pytest.raises(ValueError, match="n must"):
        catoni_bound(0.1, 0, K, DELTA, 1.0)
    with pytest.raises(ValueError, match="C must"):
        catoni_bound(0.1, N, K, DELTA, 0.0)
    with pytest.raises(ValueError, match="k_bits"):
        occam_bound(0.1, N, -1, DELTA)


def test_elias_gamma_by_hand():
    # 2 floor(log2 x) + 1: 1 -> "1", 2 -> "010", 4 -> "00100", 1000 -> 9 zeros + 10 bits
    assert [elias_gamma_bits(x) for x in (1, 2, 3, 4, 7, 8, 1000)] == [1, 3, 3, 5, 5, 7, 19]
    with pytest.raises(ValueError):
        elias_gamma_bits(0)


def test_description_length_items_by_hand():
    codes = torch.tensor([0] * 600 + [1] * 300 + [2] * 100)  # counts 600, 300, 100, 0; d = 1000, L = 4
    codes = codes[torch.randperm(1000, generator=torch.Generator().manual_seed(0))]
    enc = encode(codes, 4)
    m = enc.words.size
    dl = description_length(enc, D=123456, search_bits=math.log2(12), extra_bits=96)
    assert dl.message_bits == 32 * m == code_length_bits(enc)
    assert dl.codebook_bits == 4 * 32
    # gamma(601) + gamma(301) + gamma(101) + gamma(1) = 19 + 17 + 13 + 1
    assert dl.symbol_model_bits == 50
    assert dl.seed_and_spec_bits == 64 + 8
    # gamma(1000) + gamma(4) + gamma(m + 1)
    assert dl.prefix_bits == 19 + 5 + (2 * int(math.floor(math.log2(m + 1))) + 1)
    assert dl.search_bits == pytest.approx(3.5849625)
    assert dl.total_bits == pytest.approx(32 * m + 128 + 50 + 72 + dl.prefix_bits + math.log2(12) + 96)
    assert (dl.raw_bits, dl.dense_bits, dl.d, dl.levels) == (32000, 32 * 123456, 1000, 4)
    assert dl.as_dict()["total_bits"] == dl.total_bits
    assert description_length(enc, D=10, codebook_value_bits=16).codebook_bits == 4 * 16
    with pytest.raises(ValueError, match="search_bits"):
        description_length(enc, D=10, search_bits=-1.0)
    with pytest.raises(ValueError, match="16 or 32"):
        description_length(enc, D=10, codebook_value_bits=8)


def test_end_to_end_quantize_code_bound():
    theta = torch.randn(2000, generator=torch.Generator().manual_seed(1))
    cb, codes = kmeans_quantize(theta, 8)
    enc = encode(codes, 8)
    dl = description_length(enc, D=200000)
    assert dl.total_bits < dl.raw_bits / 8  # ~2.8 bits per number instead of 32
    b = generalization_bounds(0.02, 60000, dl.total_bits, 0.05)
    assert 0.02 < b.occam_kl < b.occam_sqrt < 1
    assert np.isfinite(b.catoni) and b.catoni < 1
