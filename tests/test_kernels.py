"""The numba CPU kernels give the same float32 bits as the reference torch path."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from squeeze import kernels, rng
from squeeze.init import TensorSpec, regenerate_theta0
from squeeze.projection import make_projection

pytestmark = pytest.mark.skipif(not kernels.available(), reason="numba kernels do not work here")

# (seed, D, d): d = 1, d not a power of two, SORF blocks n from 1 to 1024 (n < 64: several
# blocks per Threefry block), D not a multiple of n, D = d, seeds using both key words.
CASES = [
    (0, 1000, 10),
    (7, 5000, 100),
    (3, 777, 1),
    (2**63 + 5, 3001, 33),
    (1, 4096, 64),
    (12345, 4099, 1000),
    (5, 130, 17),
    (2**64 - 1, 65, 65),
    (11, 300, 5),
    (4, 2000, 200),
    (6, 1500, 300),
]
KINDS = ["sorf", "dense", "sparse"]


@pytest.fixture(autouse=True)
def reference_path(monkeypatch):
    """``proj.forward``, ``proj.transpose`` and ``regenerate_theta0`` stay the reference even
    where they dispatch to the kernels; the kernels are called directly."""
    monkeypatch.setenv(kernels.ENV_VAR, "reference")


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype == torch.float32 and a.shape == b.shape and torch.equal(a.view(torch.int32), b.view(torch.int32))


def inputs(d: int, seed: int) -> list[torch.Tensor]:
    """Random values with negative zeros, small integers (sums cancel to +-0), and all zeros."""
    g = torch.Generator().manual_seed(seed % 2**31)
    x = torch.randn(d, generator=g)
    x[:: max(1, d // 4)] = -0.0
    ints = torch.randint(-1, 2, (d,), generator=g).to(torch.float32)
    ints[ints == 0] = -0.0
    return [x, ints, torch.zeros(d), -torch.zeros(d)]


def reference_transpose(proj, y):
    with torch.no_grad():
        return proj.transpose(y)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed,D,d", CASES)
def test_forward_bit_exact(kind, seed, D, d):
    proj = make_projection(kind, D, d, seed)
    for x in inputs(d, seed):
        assert same_bits(kernels.forward(proj, x), proj.forward(x)), (kind, seed, D, d)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed,D,d", CASES)
def test_transpose_matches(kind, seed, D, d):
    proj = make_projection(kind, D, d, seed)
    y = torch.randn(D, generator=torch.Generator().manual_seed(1))
    want = reference_transpose(proj, y)
    got = kernels.transpose(proj, y)
    assert got.dtype == torch.float32 and got.shape == (d,)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * float(want.abs().max()) + 1e-30)


@pytest.mark.parametrize("d", [1500, 3000, 5000])
def test_sorf_large_blocks(d):
    proj = make_projection("sorf", 3 * d + 7, d, d)
    for x in inputs(d, 0):
        assert same_bits(kernels.forward(proj, x), proj.forward(x))
    y = torch.randn(3 * d + 7)
    torch.testing.assert_close(kernels.transpose(proj, y), proj.transpose(y), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("k", [2, 3, 5, 8])
def test_sparse_forward_bit_exact_k(k):
    proj = make_projection("sparse", 2000, 37, 9, k=k)
    for x in inputs(37, k):
        assert same_bits(kernels.forward(proj, x), proj.forward(x))
    y = torch.randn(2000)
    torch.testing.assert_close(kernels.transpose(proj, y), proj.transpose(y), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_scale_exponents(kind):
    # A large scale pushes products toward overflow, a small one toward subnormals.
    for e in (-140, -30, 0, 20, 100):
        proj = make_projection(kind, 500, 20, 4, scale_exp=e)
        for x in inputs(20, 3):
            assert same_bits(kernels.forward(proj, x), proj.forward(x)), e


def test_threefry_known_answers():
    # Random123 kat_vectors for threefry2x32_20.
    x0, x1 = kernels.cpu_module().threefry2x32(0, 0, np.zeros(1, np.uint32), np.zeros(1, np.uint32))
    assert (int(x0[0]), int(x1[0])) == (0x6B200159, 0x99BA4EFE)
    x0, x1 = kernels.cpu_module().threefry2x32(0xFFFFFFFF, 0xFFFFFFFF, np.full(1, 0xFFFFFFFF, np.uint32), np.full(1, 0xFFFFFFFF, np.uint32))
    assert (int(x0[0]), int(x1[0])) == (0x1CB996FC, 0xBB002BE7)
    x0, x1 = kernels.cpu_module().threefry2x32(0x13198A2E, 0x03707344, np.array([0x243F6A88], np.uint32), np.array([0x85A308D3], np.uint32))
    assert (int(x0[0]), int(x1[0])) == (0xC4923A9C, 0x483DF7A0)


def test_threefry_matches_reference():
    g = np.random.default_rng(0)
    c0 = g.integers(0, 2**32, 5000, dtype=np.uint64).astype(np.uint32)
    c1 = g.integers(0, 2**32, 5000, dtype=np.uint64).astype(np.uint32)
    for key in [(0, 0), (0xDEADBEEF, 0x12345678), (2**32 - 1, 1)]:
        x0, x1 = kernels.cpu_module().threefry2x32(*key, c0, c1)
        r0, r1 = rng.threefry2x32(key, torch.from_numpy(c0.astype(np.int64)), torch.from_numpy(c1.astype(np.int64)))
        assert np.array_equal(x0.astype(np.int64), r0.numpy()) and np.array_equal(x1.astype(np.int64), r1.numpy())


@pytest.mark.parametrize("n", [0, 1, 3, 4, 5, 63, 64, 65, 1000, 70001])
def test_signs_and_uniform_match_reference(n):
    key = rng.stream_key(99, rng.stream_id(rng.STREAM_PROJECTION, 2))
    cpu = kernels.cpu_module()
    assert same_bits(torch.from_numpy(cpu.signs(*key, n)), rng.signs(key, n))
    for bound in (1.0, 0.0234375, 0.1, 1 / 3, 1e-30):
        assert same_bits(torch.from_numpy(cpu.uniform16_scaled(*key, n, bound)), rng.uniform16(key, n) * bound), bound


def manifest_and_base():
    manifest = [
        TensorSpec("a.weight", (37, 11), ("u", 0.0234375)),
        TensorSpec("a.bias", (37,), ("c", 0.0)),
        TensorSpec("empty", (0,), ("u", 1.0)),
        TensorSpec("norm.weight", (5,), ("c", 1.0)),
        TensorSpec("odd", (3, 3), ("u", 0.1)),  # a bound with more than 8 significant bits
        TensorSpec("neg", (2,), ("c", -0.0)),
        TensorSpec("base.w", (4, 5), ("b",)),
        TensorSpec("big", (6001,), ("u", 1.5)),
        TensorSpec("third", (7,), ("c", 1 / 3)),
        TensorSpec("base.b", (3,), ("b",)),
    ]
    g = torch.Generator().manual_seed(5)
    base = {"base.w": torch.randn(4, 5, generator=g), "base.b": torch.tensor([-0.0, 0.0, 2.5])}
    return manifest, base


@pytest.mark.parametrize("seed", [0, 3, 2**64 - 2])
def test_theta0_bit_exact(seed):
    manifest, base = manifest_and_base()
    assert same_bits(kernels.theta0(manifest, seed, base), regenerate_theta0(manifest, seed, base))


def test_theta0_needs_the_base():
    manifest, _ = manifest_and_base()
    with pytest.raises(ValueError, match="base"):
        kernels.theta0(manifest, 0, None)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("d", [1, 7, 100])
def test_regenerate_bit_exact(kind, d):
    manifest, base = manifest_and_base()
    D = sum(s.numel for s in manifest)
    proj = make_projection(kind, D, d, 21)
    for x in inputs(d, d):
        want = regenerate_theta0(manifest, 21, base) + proj.forward(x)
        assert same_bits(kernels.regenerate(proj, x, manifest, 21, base), want), kind


def test_regenerate_checks_size():
    manifest, base = manifest_and_base()
    with pytest.raises(ValueError, match="D="):
        kernels.regenerate(make_projection("sorf", 100, 4, 0), torch.zeros(4), manifest, 0, base)


def test_same_bits_with_any_thread_count(monkeypatch):
    from squeeze.kernels import pool

    proj = make_projection("sorf", 70000, 100, 8)
    x = torch.randn(100)
    want = kernels.forward(proj, x)
    for n in (1, 3):
        monkeypatch.setattr(pool, "threads", lambda n=n: n)
        assert same_bits(kernels.forward(proj, x), want)


def test_choice_from_environment(monkeypatch):
    cpu_tensor = torch.zeros(1)
    monkeypatch.delenv(kernels.ENV_VAR, raising=False)
    assert kernels.choice() == "auto" and kernels.use_numba(cpu_tensor)
    monkeypatch.setenv(kernels.ENV_VAR, "reference")
    assert not kernels.use_numba(cpu_tensor)
    monkeypatch.setenv(kernels.ENV_VAR, "NUMBA")
    assert kernels.use_numba(cpu_tensor) and kernels.use_numba("cpu")
    assert not kernels.use_numba(torch.device("cuda"))
    monkeypatch.setenv(kernels.ENV_VAR, "fast")
    with pytest.raises(ValueError, match="SQUEEZE_KERNEL"):
        kernels.choice()


def test_unknown_kind_is_refused():
    class Kron:
        kind = "kron"

    with pytest.raises(ValueError, match="kron"):
        kernels.forward(Kron(), torch.zeros(3))


BIG_DENSE = textwrap.dedent(
    """
    import resource, torch
    from squeeze import kernels
    from squeeze.projection import base
    from squeeze.projection.dense import Dense, sign_rows
    D, d = 4_000_000, 10_000
    proj = Dense(D, d, seed=17)
    x = torch.randn(d, generator=torch.Generator().manual_seed(0))
    y = kernels.dense_forward(proj, x)
    g = kernels.dense_transpose(proj, torch.ones(D))
    rows = [0, 1, 2_345_678, D - 1]
    ref = torch.stack([base.fold_sum(sign_rows(proj.key, d, i, 1, "cpu") * x)[0] for i in rows]) * 2.0**proj.scale_exp
    assert torch.equal(y[rows].view(torch.int32), ref.view(torch.int32))
    assert y.shape == (D,) and g.shape == (d,) and bool(torch.isfinite(g).all())
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    """
)


@pytest.mark.slow
def test_dense_large_runs_in_bounded_memory():
    out = subprocess.run([sys.executable, "-c", BIG_DENSE], check=False, capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stderr
    peak_kib = int(out.stdout.split()[-1])
    assert peak_kib < 2 * 1024 * 1024, f"peak RSS {peak_kib / 1024:.0f} MiB"
    assert math.isfinite(peak_kib)


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_works_in_a_forked_child():
    import multiprocessing

    proj = make_projection("sorf", 50000, 100, 2)
    x = torch.randn(100)
    kernels.forward(proj, x)  # the parent's thread pool exists before the fork
    with multiprocessing.get_context("fork").Pool(1) as pool:
        child = pool.apply_async(_forward_bits, (proj, x)).get(timeout=120)
    assert child == _forward_bits(proj, x)


def _forward_bits(proj, x) -> bytes:
    return kernels.forward(proj, x).numpy().tobytes()
