"""The counter-based generator: published known answers, layout, and distribution sanity.

Golden values here pin the generator and the draw layout; changing any of them is a format
change that needs a ``format_version`` bump (DESIGN.md, determinism contract, rule 6).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from squeeze import rng

pytestmark = pytest.mark.usefixtures("one_thread")

M32 = 0xFFFFFFFF
u32 = st.integers(0, M32)

# Random123 tests/kat_vectors, lines "threefry2x32 R  ctr0 ctr1  key0 key1  out0 out1".
KAT = {
    13: [
        ((0x00000000, 0x00000000), (0x00000000, 0x00000000), (0x9D1C5EC6, 0x8BD50731)),
        ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0xFD36D048, 0x2D17272C)),
        ((0x243F6A88, 0x85A308D3), (0x13198A2E, 0x03707344), (0xBA3E4725, 0xF27D669E)),
    ],
    20: [
        ((0x00000000, 0x00000000), (0x00000000, 0x00000000), (0x6B200159, 0x99BA4EFE)),
        ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
        ((0x243F6A88, 0x85A308D3), (0x13198A2E, 0x03707344), (0xC4923A9C, 0x483DF7A0)),
    ],
    32: [
        ((0x00000000, 0x00000000), (0x00000000, 0x00000000), (0xCEE3D47E, 0xA23DFD5C)),
        ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x6E2FE0D0, 0xB1B76F82)),
        ((0x243F6A88, 0x85A308D3), (0x13198A2E, 0x03707344), (0xE2827716, 0xC3C05CDF)),
    ],
}


def reference_threefry(key: tuple[int, int], ctr: tuple[int, int], rounds: int = 20) -> tuple[int, int]:
    """A plain-int Threefry-2x32 written from the Random123 specification, independent of squeeze."""
    rot = (13, 15, 26, 6, 17, 29, 16, 24)
    ks = (key[0], key[1], key[0] ^ key[1] ^ 0x1BD11BDA)
    x0, x1 = (ctr[0] + ks[0]) & M32, (ctr[1] + ks[1]) & M32
    for r in range(rounds):
        x0 = (x0 + x1) & M32
        x1 = (((x1 << rot[r % 8]) | (x1 >> (32 - rot[r % 8]))) & M32) ^ x0
        if r % 4 == 3:
            i = r // 4 + 1
            x0 = (x0 + ks[i % 3]) & M32
            x1 = (x1 + ks[(i + 1) % 3] + i) & M32
    return x0, x1


# ---------------------------------------------------------------- known answers


@pytest.mark.parametrize("ctr,key,expected", KAT[20])
def test_threefry2x32_20_known_answers(ctr, key, expected):
    assert rng.threefry2x32(key, *ctr) == expected
    x0, x1 = rng.threefry2x32(key, torch.tensor([ctr[0]]), torch.tensor([ctr[1]]))
    assert (int(x0[0]), int(x1[0])) == expected


@pytest.mark.parametrize("rounds", [13, 32])
def test_threefry2x32_other_round_counts_known_answers(rounds, monkeypatch):
    # The key schedule is injected every 4 rounds; 13 and 32 rounds exercise it past 20.
    monkeypatch.setattr(rng, "ROUNDS", rounds)
    for ctr, key, expected in KAT[rounds]:
        assert rng.threefry2x32(key, *ctr) == expected


def test_reference_implementation_matches_known_answers():
    for rounds, rows in KAT.items():
        for ctr, key, expected in rows:
            assert reference_threefry(key, ctr, rounds) == expected


@settings(max_examples=30, deadline=None)
@given(key=st.tuples(u32, u32), c0=st.lists(u32, min_size=1, max_size=16), c1=st.lists(u32, min_size=1, max_size=16))
def test_vectorised_threefry_matches_reference(key, c0, c1):
    n = min(len(c0), len(c1))
    x0, x1 = rng.threefry2x32(key, torch.tensor(c0[:n]), torch.tensor(c1[:n]))
    got = list(zip(x0.tolist(), x1.tolist()))
    assert got == [reference_threefry(key, (a, b)) for a, b in zip(c0[:n], c1[:n])]
    assert x0.dtype == torch.int64 and int(x0.max()) <= M32 and int(x0.min()) >= 0


# ---------------------------------------------------------------- keys, streams, blocks


def test_stream_key_is_threefry_of_the_stream_under_the_seed():
    seed, stream = 0x0123456789ABCDEF, rng.stream_id(rng.STREAM_PROJECTION, 7)
    assert stream == (1 << 32) | 7
    expected = reference_threefry((seed & M32, seed >> 32), (stream & M32, stream >> 32))
    assert rng.stream_key(seed, stream) == expected


@pytest.mark.parametrize("seed", [-1, 2**64, 2**70])
def test_stream_key_rejects_seed_out_of_range(seed):
    with pytest.raises(ValueError, match=r"seed must be in \[0, 2\*\*64\)"):
        rng.stream_key(seed, 0)


def test_streams_and_seeds_give_distinct_keys():
    keys = {rng.stream_key(s, rng.stream_id(k, i)) for s in (0, 1, 2**32, 2**64 - 1) for k in (0, 1) for i in (0, 1, 2)}
    assert len(keys) == 4 * 2 * 3


def test_blocks_are_counter_addressed_across_the_32_bit_boundary():
    key = rng.stream_key(5, 0)
    start = 2**32 - 3
    x0, x1 = rng.blocks(key, start, 6)
    for j in range(6):
        i = start + j
        assert (int(x0[j]), int(x1[j])) == reference_threefry(key, (i & M32, i >> 32))
    a0, a1 = rng.blocks(key, 0, 40)
    b0, b1 = rng.blocks(key, 17, 23)
    assert torch.equal(a0[17:], b0) and torch.equal(a1[17:], b1)


# ---------------------------------------------------------------- signs


def test_signs_layout_is_bit_i_mod_64_of_block_i_div_64():
    key = rng.stream_key(11, 3)
    n = 200
    s = rng.signs(key, n)
    x0, x1 = rng.blocks(key, 0, 4)
    for i in range(n):
        word = (x0 if i % 64 < 32 else x1)[i // 64]
        bit = (int(word) >> (i % 32)) & 1
        assert float(s[i]) == (-1.0 if bit else 1.0)


def test_signs_values_prefix_and_distribution():
    key = rng.stream_key(2024, 0)
    n = 1 << 18
    s = rng.signs(key, n)
    assert s.dtype == torch.float32 and s.shape == (n,)
    assert bool(((s == 1.0) | (s == -1.0)).all())
    assert torch.equal(rng.signs(key, 1000), s[:1000])  # a prefix does not depend on n
    assert torch.equal(rng.signs(key, 63), s[:63])
    # mean of n fair signs has sd 1/sqrt(n) ~ 0.002; 0.01 is 5 sd
    assert abs(float(s.double().mean())) < 0.01
    # lag-1 correlation, same sd
    assert abs(float((s[1:].double() * s[:-1].double()).mean())) < 0.01
    # every bit position of the 64-bit block is fair (n/64 = 4096 samples each, sd 1/64)
    per_bit = s.reshape(-1, 64).double().mean(0)
    assert float(per_bit.abs().max()) < 0.08


# ---------------------------------------------------------------- uniform16


def test_uniform16_layout_is_16_bit_halves_of_each_block():
    key = rng.stream_key(9, 1)
    u = rng.uniform16(key, 11)
    x0, x1 = rng.blocks(key, 0, 3)
    for i in range(11):
        b = i // 4
        k = [int(x0[b]) & 0xFFFF, int(x0[b]) >> 16, int(x1[b]) & 0xFFFF, int(x1[b]) >> 16][i % 4]
        assert float(u[i]) == (2 * k + 1 - 65536) * 2.0**-16


def test_uniform16_values_are_odd_multiples_of_2_pow_minus_16():
    key = rng.stream_key(77, 0)
    u = rng.uniform16(key, 1 << 16)
    assert u.dtype == torch.float32
    scaled = u.double() * 2**16
    assert torch.equal(scaled, scaled.round())  # exact multiples of 2**-16
    ints = scaled.to(torch.int64)
    assert bool((ints % 2 == 1).all())  # odd: never zero, symmetric grid
    assert int(ints.min()) >= -65535 and int(ints.max()) <= 65535
    assert bool((u.abs() < 1.0).all())
    assert torch.equal(rng.uniform16(key, 1001), u[:1001])


def test_uniform16_distribution():
    key = rng.stream_key(123, 4)
    n = 1 << 18
    u = rng.uniform16(key, n).double()
    # exact variance of the grid is (1 - 2**-32) / 3
    mean, var = float(u.mean()), float(u.var(unbiased=False))
    assert abs(mean) < 5 * (1 / 3 / n) ** 0.5
    # sd of the sample variance of a uniform is sqrt(4/45 / n) ~ 6e-4
    assert abs(var - 1 / 3) < 0.005
    # 16 equal bins of (-1, 1): counts within 5 sd of n/16
    counts = torch.histc(u, bins=16, min=-1.0, max=1.0)
    sd = (n / 16 * (1 - 1 / 16)) ** 0.5
    assert float((counts - n / 16).abs().max()) < 5 * sd
    # the low bit of k (which decides the last mantissa bit) is fair
    low = ((u * 2**16 + 65535) / 2).round().to(torch.int64) & 1
    assert abs(float(low.double().mean()) - 0.5) < 0.01


def test_streams_are_uncorrelated():
    n = 1 << 16
    a = rng.uniform16(rng.stream_key(0, rng.stream_id(rng.STREAM_INIT, 0)), n).double()
    b = rng.uniform16(rng.stream_key(0, rng.stream_id(rng.STREAM_INIT, 1)), n).double()
    c = rng.uniform16(rng.stream_key(1, rng.stream_id(rng.STREAM_INIT, 0)), n).double()
    # correlation of independent uniforms has sd 1/sqrt(n) ~ 0.004
    for x, y in ((a, b), (a, c), (b, c)):
        assert abs(float(torch.corrcoef(torch.stack([x, y]))[0, 1])) < 0.02


# ---------------------------------------------------------------- golden draws

# Golden draws, from the conformance table (tests/conformance.json, run on every backend by
# tests/test_conformance.py). Changing any value is a format change: bump format_version.
_DRAWS = {r["draw"]: r for r in json.loads((Path(__file__).with_name("conformance.json")).read_text())["draws"]}
GOLDEN_KEY = tuple(_DRAWS["signs"]["key"])
GOLDEN_SIGNS_SHA256 = _DRAWS["signs"]["sha256"]
GOLDEN_UNIFORM16_SHA256 = _DRAWS["uniform16"]["sha256"]
GOLDEN_STREAM_KEY = tuple(_DRAWS["stream_key"]["key"])  # rng.stream_key(2**40 + 3, stream_id(1, 2))


def _sha(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().astype("<f4").tobytes()).hexdigest()


def test_golden_draws():
    assert _sha(rng.signs(GOLDEN_KEY, 1000)) == GOLDEN_SIGNS_SHA256
    assert _sha(rng.uniform16(GOLDEN_KEY, 1000)) == GOLDEN_UNIFORM16_SHA256
    assert rng.stream_key(2**40 + 3, rng.stream_id(1, 2)) == GOLDEN_STREAM_KEY
