"""The C backend (``squeeze/kernels/native.py``, ``regen.c``) against the reference torch path:
the same float32 bits for every forward, theta_0 and per-tensor range; transposes to rounding;
built once per machine; the reference path with a notice where no compiler builds it; and no
module that imports numba. (The golden digests run on every backend in tests/test_conformance.py.)"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from squeeze import kernels, plan, rng
from squeeze.init import regenerate_theta0
from squeeze.manifest import TensorSpec
from squeeze.kernels import native
from squeeze.projection import make_projection

HAS_CC = shutil.which((os.environ.get("CC") or "cc").split()[0]) is not None

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
    """``proj.forward``, ``proj.transpose`` and ``regenerate_theta0`` stay the reference; the C
    kernels are called directly."""
    if not HAS_CC:
        pytest.skip("no C compiler here")
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


# ---------------------------------------------------------------- forwards and transposes


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed,D,d", CASES)
def test_forward_bit_exact(kind, seed, D, d):
    proj = make_projection(kind, D, d, seed)
    for x in inputs(d, seed):
        assert same_bits(native.forward(proj.plan, x), proj.forward(x)), (kind, seed, D, d)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed,D,d", CASES)
def test_transpose_matches(kind, seed, D, d):
    proj = make_projection(kind, D, d, seed)
    y = torch.randn(D, generator=torch.Generator().manual_seed(1))
    want = proj.transpose(y)
    got = native.transpose(proj.plan, y)
    assert got.dtype == torch.float32 and got.shape == (d,)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * float(want.abs().max()) + 1e-30)


@pytest.mark.parametrize("d", [1500, 3000, 5000])
def test_sorf_large_blocks(d):
    proj = make_projection("sorf", 3 * d + 7, d, d)
    for x in inputs(d, 0):
        assert same_bits(native.forward(proj.plan, x), proj.forward(x))
    y = torch.randn(3 * d + 7)
    torch.testing.assert_close(native.transpose(proj.plan, y), proj.transpose(y), rtol=1e-4, atol=1e-4)


def test_sorf_transpose_with_mostly_zero_gradients():
    """A gradient like an embedding table's (a few rows touched, the rest zero): the C transpose
    agrees with the reference, a NaN propagates, all zeros give zeros."""
    d, D = 300, 5000
    proj = make_projection("sorf", D, d, 3)
    y = torch.zeros(D)
    y[1000:1010] = torch.randn(10, generator=torch.Generator().manual_seed(2))
    y[4999] = 1.5  # the last block's last value
    want = proj.transpose(y)
    got = native.transpose(proj.plan, y)
    assert float(want.abs().max()) > 0
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * float(want.abs().max()))
    assert same_bits(native.transpose(proj.plan, torch.zeros(D)), torch.zeros(d))
    y[2500] = float("nan")
    assert torch.isnan(native.transpose(proj.plan, y)).all()


@pytest.mark.parametrize("k", [2, 3, 5, 8])
def test_sparse_forward_bit_exact_k(k):
    proj = make_projection("sparse", 2000, 37, 9, k=k)
    for x in inputs(37, k):
        assert same_bits(native.forward(proj.plan, x), proj.forward(x))
    y = torch.randn(2000)
    torch.testing.assert_close(native.transpose(proj.plan, y), proj.transpose(y), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_scale_exponents(kind):
    # A large scale pushes products toward overflow, a small one toward subnormals.
    for e in (-140, -30, 0, 20, 100):
        proj = make_projection(kind, 500, 20, 4, scale_exp=e)
        for x in inputs(20, 3):
            assert same_bits(native.forward(proj.plan, x), proj.forward(x)), e


def test_threefry_matches_reference():
    g = np.random.default_rng(0)
    c = g.integers(0, 2**32, (2, 200), dtype=np.int64)
    for key in [(0, 0), (0xDEADBEEF, 0x12345678), (2**32 - 1, 1)]:
        r0, r1 = rng.threefry2x32(key, torch.from_numpy(c[0]), torch.from_numpy(c[1]))
        got = [native.threefry(*key, int(c0), int(c1)) for c0, c1 in zip(c[0], c[1])]
        assert got == list(zip(r0.tolist(), r1.tolist()))


# ---------------------------------------------------------------- theta_0 and per-tensor ranges


@pytest.mark.parametrize("seed", [0, 3, 2**64 - 2])
def test_theta0_bit_exact(seed):
    manifest, base = manifest_and_base()
    assert same_bits(native.theta0_all(plan.build(manifest, seed), base), regenerate_theta0(manifest, seed, base))


def test_theta0_needs_the_base():
    manifest, _ = manifest_and_base()
    with pytest.raises(ValueError, match="base"):
        native.theta0_all(plan.build(manifest, 0), None)


@pytest.mark.parametrize("n", [0, 1, 3, 4, 5, 63, 64, 65, 1000, 70001])
def test_uniform_ranges_match_reference(n):
    seg = plan.build([TensorSpec("w", (n,), ("u", 0.0234375))], 99).segments[0]
    want = rng.uniform16(seg.key, n) * seg.value
    for a in (0, 1, 3) if n > 3 else (0,):
        got = native.theta0(native.Tensor0(seg), a, np.full(n - a, np.nan, np.float32))
        assert same_bits(torch.from_numpy(got), want[a:]), (n, a)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("d", [1, 7, 100])
def test_per_tensor_ranges_match_reference(kind, d):
    """Every range of every segment, with and without a layerwise scale: theta_0 + (s *) P x."""
    manifest, base = manifest_and_base()
    D = sum(s.numel for s in manifest)
    proj = make_projection(kind, D, d, 21)
    rplan = plan.build(manifest, 21, proj)
    for x in inputs(d, d)[:2]:
        t0 = regenerate_theta0(manifest, 21, base)
        p = proj.forward(x)
        bits = native.xbits(rplan.projection, x)
        for seg in rplan.segments:
            given = rplan.base_tensor(seg, base).numpy() if seg.kind == "b" else None
            for s in (None, np.float32(-1.75)):
                for a in {0, seg.numel // 3}:
                    m = seg.numel - a
                    got = native.project(rplan.projection, bits, seg.proj_offset + a, a, native.Tensor0(seg, given), s, np.full(m, np.nan, np.float32))
                    lo = seg.start + a
                    piece = p[lo : lo + m] if s is None else torch.tensor(s) * p[lo : lo + m]
                    assert same_bits(torch.from_numpy(got), t0[lo : lo + m] + piece), (seg.name, a, s)


def test_same_bits_with_any_thread_count(monkeypatch):
    from squeeze.kernels import pool

    proj = make_projection("sorf", 70000, 100, 8)
    x = torch.randn(100)
    y = torch.randn(70000)
    want, grad = native.forward(proj.plan, x), native.transpose(proj.plan, y)
    for n in (1, 3):
        monkeypatch.setattr(pool, "threads", lambda n=n: n)
        assert same_bits(native.forward(proj.plan, x), want)
    monkeypatch.setattr(pool, "threads", lambda: 1)
    assert same_bits(native.transpose(proj.plan, y), native.transpose(proj.plan, y))  # a fixed count repeats
    torch.testing.assert_close(native.transpose(proj.plan, y), grad, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- the registry


def test_choice_from_environment(monkeypatch):
    cpu_tensor = torch.zeros(1)
    monkeypatch.delenv(kernels.ENV_VAR, raising=False)
    assert kernels.choice() == "auto" and kernels.cpu(cpu_tensor) is native
    monkeypatch.setenv(kernels.ENV_VAR, "reference")
    assert kernels.cpu(cpu_tensor) is None
    monkeypatch.setenv(kernels.ENV_VAR, "NATIVE")
    assert kernels.cpu(cpu_tensor) is native and kernels.cpu("cpu") is native
    assert kernels.cpu(torch.device("cuda")) is None
    for gone in ("numba", "fast"):
        monkeypatch.setenv(kernels.ENV_VAR, gone)
        with pytest.raises(ValueError, match="SQUEEZE_KERNEL"):
            kernels.choice()


@pytest.fixture
def fresh_native(monkeypatch, tmp_path):
    """``native.load`` forgets its library for the test (and again afterwards); the cache is
    an empty folder."""
    monkeypatch.setenv("SQUEEZE_CACHE_DIR", str(tmp_path / "cache"))
    native.load.cache_clear()
    kernels._notice.cache_clear()
    yield tmp_path / "cache"
    native.load.cache_clear()


def test_the_library_is_built_once_and_then_reused(fresh_native):
    assert native.load()[0] is not None
    built = list(fresh_native.glob("regen-*.so"))
    assert len(built) == 1
    stamp = built[0].stat().st_mtime_ns
    native.load.cache_clear()
    assert native.load()[0] is not None
    assert list(fresh_native.glob("regen-*.so")) == built and built[0].stat().st_mtime_ns == stamp


def test_without_a_compiler_the_reference_runs_with_one_notice(fresh_native, monkeypatch):
    monkeypatch.setenv("CC", "/bin/false")  # a "compiler" that fails every build
    monkeypatch.delenv(kernels.ENV_VAR, raising=False)
    lib, reason = native.load()
    assert lib is None and "could not build regen.c" in reason
    assert not list(fresh_native.glob("*"))  # no half-written library left behind
    proj = make_projection("sorf", 1000, 10, 0)
    x = torch.randn(10)
    with pytest.warns(RuntimeWarning, match="no C kernels here") as caught:
        got = proj.forward(x)
        proj.forward(x)
    assert len(caught) == 1 and len(str(caught[0].message).splitlines()) == 1
    assert same_bits(got, proj.reference_forward(x))
    monkeypatch.setenv(kernels.ENV_VAR, "native")
    with pytest.raises(RuntimeError, match="SQUEEZE_KERNEL=native but the C kernels cannot be built"):
        kernels.cpu("cpu")


CC_FALSE_CHILD = textwrap.dedent(
    """
    import sys, warnings, squeeze
    warnings.simplefilter("always")
    model = squeeze.load(sys.argv[1])
    print(sum(p.numel() for p in model.parameters()))
    """
)


def test_a_file_loads_and_verifies_without_a_compiler(tmp_path):
    import squeeze
    from squeeze.zoo import MLP

    sub = squeeze.Subspace(MLP(), squeeze.SubspaceConfig(dim=50, seed=3))
    path = tmp_path / "mlp.sqz"
    squeeze.save(sub, path, arch={"ref": "squeeze.zoo:MLP"})
    env = dict(os.environ, CC="/bin/false", SQUEEZE_CACHE_DIR=str(tmp_path / "cache"))
    env.pop(kernels.ENV_VAR, None)
    out = subprocess.run([sys.executable, "-c", CC_FALSE_CHILD, str(path)], capture_output=True, text=True, check=False, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(sub.D)]
    notices = [line for line in out.stderr.splitlines() if "no C kernels here" in line]
    assert len(notices) == 1, out.stderr


def test_no_module_imports_numba():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    offenders = [str(p) for folder in ("squeeze", "cli") for p in (root / folder).rglob("*.py") if "import numba" in p.read_text() or "from numba" in p.read_text()]
    assert offenders == []
    assert "numba" not in (root / "pyproject.toml").read_text().split("[project.optional-dependencies]")[0]


BIG_DENSE = textwrap.dedent(
    """
    import resource, torch
    from squeeze.kernels import native
    from squeeze.projection import base
    from squeeze.projection.dense import Dense
    from squeeze.rng import sign_rows
    D, d = 4_000_000, 10_000
    proj = Dense(D, d, seed=17)
    x = torch.randn(d, generator=torch.Generator().manual_seed(0))
    y = native.forward(proj.plan, x)
    g = native.transpose(proj.plan, torch.ones(D))
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


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_works_in_a_forked_child():
    import multiprocessing

    proj = make_projection("sorf", 50000, 100, 2)
    x = torch.randn(100)
    native.forward(proj.plan, x)  # the parent's thread pool exists before the fork
    with multiprocessing.get_context("fork").Pool(1) as pool:
        child = pool.apply_async(_forward_bits, (proj, x)).get(timeout=120)
    assert child == _forward_bits(proj, x)


def _forward_bits(proj, x) -> bytes:
    return native.forward(proj.plan, x).numpy().tobytes()
