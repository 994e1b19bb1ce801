"""Entropy coding of integer codes: round trip, closeness to the empirical entropy, golden bytes."""

import math

import numpy as np
import pytest
import torch
from safetensors.torch import load, save

from squeeze.coding import EncodedSymbols, code_length_bits, decode, empirical_entropy_bits, encode


def _skewed(kind: str, L: int) -> np.ndarray:
    k = np.arange(L, dtype=np.float64)
    if kind == "geometric":
        p = 0.5**k
    elif kind == "zipf":
        p = 1.0 / (k + 1)
    else:  # "peaked": one symbol takes ~95%, the rest share the remainder unevenly
        p = np.r_[1.0, 0.05 * 0.7**k[1:]] if L > 1 else np.ones(1)
    return p / p.sum()


@pytest.mark.parametrize("L", [2, 4, 8, 16, 32])
@pytest.mark.parametrize("n", [1000, 10000, 100000])
@pytest.mark.parametrize("kind", ["geometric", "zipf", "peaked"])
def test_round_trip_and_length_close_to_entropy(L, n, kind):
    rng = np.random.default_rng(1000 * L + n)
    codes = torch.from_numpy(rng.choice(L, size=n, p=_skewed(kind, L)))
    enc = encode(codes, L)
    assert torch.equal(decode(enc, n), codes)
    bits = code_length_bits(enc)
    nh = empirical_entropy_bits(codes, L)
    assert bits <= 1.01 * nh + 64, (bits, nh)
    assert bits >= nh - 64  # no code beats the empirical entropy by more than the flush


def test_golden_words():
    # Pins the bytes: a change in constriction's model quantization or coder is a format change.
    codes = np.array([0, 1, 0, 0, 3, 0, 1, 0, 0, 0, 2, 0, 1, 0, 0, 3] * 4)
    enc = encode(codes, 4)
    assert enc.counts.tolist() == [40, 12, 4, 8]
    assert enc.words.tolist() == [1859943168, 4100358202, 2543780379, 1170298857]


def test_rebuilt_from_stored_integers_through_safetensors():
    rng = np.random.default_rng(0)
    codes = torch.from_numpy(rng.choice(16, size=5000, p=_skewed("zipf", 16)))
    enc = encode(codes, 16)
    blob = save(
        {"theta_words": torch.from_numpy(enc.words), "symbol_counts": torch.from_numpy(enc.counts)},
        metadata={"n": str(enc.n), "levels": str(enc.levels)},
    )
    t = load(blob)
    back = EncodedSymbols(t["theta_words"].numpy(), t["symbol_counts"].numpy())
    assert torch.equal(decode(back, 5000), codes)


def test_unused_symbols_cost_nothing_and_decode():
    codes = torch.tensor([0, 5, 5, 0, 7, 5] * 100)
    enc = encode(codes, 32)
    assert enc.counts[[1, 2, 3, 4, 6]].sum() == 0
    assert torch.equal(decode(enc), codes)
    assert code_length_bits(enc) <= 1.01 * empirical_entropy_bits(codes, 32) + 64


@pytest.mark.parametrize("L", [1, 4])
def test_single_used_symbol_has_no_words(L):
    codes = torch.full((1000,), L - 1)
    enc = encode(codes, L)
    assert code_length_bits(enc) == 0
    assert torch.equal(decode(enc, 1000), codes)


def test_empty_message():
    enc = encode(torch.zeros(0, dtype=torch.int64), 4)
    assert enc.n == 0 and code_length_bits(enc) == 0
    assert decode(enc).numel() == 0


def test_empirical_entropy_by_hand():
    # counts 3 and 1: -3 log2(3/4) - 1 log2(1/4) = 3 * 0.41504 + 2
    assert empirical_entropy_bits(np.array([0, 0, 0, 1]), 2) == pytest.approx(-3 * math.log2(0.75) + 2, abs=1e-12)
    assert empirical_entropy_bits(np.array([2, 2, 2]), 4) == 0.0


def test_corrupt_streams_are_rejected():
    rng = np.random.default_rng(3)
    codes = rng.choice(8, size=10000, p=_skewed("geometric", 8))
    enc = encode(codes, 8)
    with pytest.raises(ValueError, match="corrupt"):
        decode(EncodedSymbols(enc.words[: enc.words.size // 2], enc.counts))
    flipped = enc.words.copy()
    flipped[10] ^= 1
    with pytest.raises(ValueError, match="corrupt"):
        decode(EncodedSymbols(flipped, enc.counts))
    with pytest.raises(ValueError, match="inconsistent"):
        decode(enc, 9999)
    with pytest.raises(ValueError, match="non-negative"):
        EncodedSymbols(enc.words, -enc.counts)
    with pytest.raises(ValueError, match="uint32"):
        EncodedSymbols(enc.words.astype(np.int64), enc.counts)


def test_bad_input():
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        encode(torch.tensor([0, 4]), 4)
    with pytest.raises(ValueError, match="integer"):
        encode(torch.tensor([0.0, 1.0]), 4)
    with pytest.raises(ValueError, match="levels"):
        encode(torch.tensor([0]), 0)
