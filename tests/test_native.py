"""The C regeneration kernels (``squeeze/kernels/native.py``): built once per machine, the same
bits as the numba kernels on every shape (the golden digests run on both paths in
tests/test_materialize.py), a clear fallback without a compiler, and loading without numba."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from squeeze import kernels
from squeeze.kernels import native

HAS_CC = shutil.which((os.environ.get("CC") or "cc").split()[0]) is not None
pytestmark = pytest.mark.skipif(not (HAS_CC and kernels.available()), reason="needs a C compiler and the numba kernels")


def test_the_c_kernels_build_where_there_is_a_compiler():
    lib, reason = native.load()
    assert lib is not None, reason
    assert kernels.native_available()


def _t0(rng: np.random.Generator, kind: int, numel: int) -> tuple:
    given = rng.standard_normal(numel).astype(np.float32) if kind == native.SEG_GIVEN else np.zeros(1, np.float32)
    return (np.int64(kind), np.float32(rng.uniform(0.01, 2.0)), np.uint32(rng.integers(2**32)), np.uint32(rng.integers(2**32)), given)


def _x(rng: np.random.Generator, size: int, d: int) -> np.ndarray:
    x = np.zeros(size, np.float32)
    x[:d] = rng.standard_normal(d).astype(np.float32)
    x[: d : max(1, d // 3)] = -0.0
    return x.view(np.uint32)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype == np.float32 and np.array_equal(a.view(np.uint32), b.view(np.uint32))


# (n, d, q, m): blocks from 1 to 8192 (below 16 and 64 the sign paths differ), ranges starting
# and ending inside blocks, spanning many blocks, or a single value.
SORF = [(1, 1, 0, 5), (2, 2, 3, 7), (8, 5, 9, 30), (16, 16, 0, 16), (32, 20, 40, 101), (64, 33, 7, 1000),
        (128, 100, 130, 517), (1024, 1000, 1000, 5000), (4096, 3000, 5, 20000), (8192, 8192, 8190, 3)]


@pytest.mark.parametrize("n, d, q, m", SORF)
@pytest.mark.parametrize("kind", [native.SEG_UNIFORM, native.SEG_CONST, native.SEG_GIVEN])
def test_sorf_tensor_matches_numba(n, d, q, m, kind):
    cpu = kernels.cpu_module()
    rng = np.random.default_rng(n * 7 + q + kind)
    x = _x(rng, n, d)
    keys = rng.integers(2**32, size=(3, 2)).astype(np.uint32)
    scale = np.float32(2.0**-5)
    for a in (0, 3):
        t0 = _t0(rng, kind, a + m)
        for has_s, s in ((False, np.float32(1)), (True, np.float32(-1.75))):
            want = cpu.sorf_tensor(x, n, keys, scale, q, a, t0, s, has_s, np.empty(m, np.float32))
            got = native.sorf_tensor(x, n, keys, scale, q, a, t0, s, has_s, np.full(m, np.nan, np.float32))
            assert _same(got, want), (n, d, q, m, kind, a, has_s)


# (kind, d, k, q, m): d of one value, below and above 64, not a power of two (the fold pads),
# sparse rows of 1 to 9 entries.
ROWS = [("dense", 1, 1, 0, 10), ("dense", 63, 1, 5, 300), ("dense", 65, 1, 0, 257), ("dense", 1100, 1, 77, 90),
        ("sparse", 10, 1, 0, 1000), ("sparse", 100, 2, 3, 999), ("sparse", 1000, 3, 12, 5000), ("sparse", 7, 9, 1, 70)]


@pytest.mark.parametrize("kind, d, k, q, m", ROWS)
@pytest.mark.parametrize("t0kind", [native.SEG_UNIFORM, native.SEG_CONST, native.SEG_GIVEN])
def test_rows_tensor_matches_numba(kind, d, k, q, m, t0kind):
    cpu = kernels.cpu_module()
    rng = np.random.default_rng(d * 13 + k + q + t0kind)
    x = _x(rng, 64 * ((d + 63) // 64) if kind == "dense" else d, d)
    k0, k1 = (int(v) for v in rng.integers(2**32, size=2))
    scale = np.float32(2.0**-3)
    for a in (0, 5):
        t0 = _t0(rng, t0kind, a + m)
        for has_s, s in ((False, np.float32(1)), (True, np.float32(0.3))):
            want = cpu.rows_tensor(kind, x, d, k, k0, k1, scale, q, a, t0, s, has_s, np.empty(m, np.float32))
            got = native.rows_tensor(kind, x, d, k, k0, k1, scale, q, a, t0, s, has_s, np.full(m, np.nan, np.float32))
            assert _same(got, want), (kind, d, k, q, m, t0kind, a, has_s)


@pytest.mark.parametrize("a, m", [(0, 1), (1, 2), (3, 1), (2, 5), (0, 4), (5, 200_003)])
def test_theta0_tensor_matches_numba(a, m):
    cpu = kernels.cpu_module()
    rng = np.random.default_rng(m)
    for kind in (native.SEG_UNIFORM, native.SEG_CONST, native.SEG_GIVEN):
        t0 = _t0(rng, kind, a + m)
        assert _same(native.theta0_tensor(t0, a, np.full(m, np.nan, np.float32)), cpu.theta0_tensor(t0, a, np.empty(m, np.float32)))


def test_thread_count_never_changes_a_bit(monkeypatch):
    from squeeze.kernels import pool

    rng = np.random.default_rng(0)
    x = _x(rng, 256, 200)
    keys = rng.integers(2**32, size=(3, 2)).astype(np.uint32)
    t0 = _t0(rng, native.SEG_UNIFORM, 300_000)
    outs = []
    for n in (1, 2, 5):
        monkeypatch.setattr(pool, "threads", lambda n=n: n)
        outs.append(native.sorf_tensor(x, 256, keys, np.float32(0.5), 11, 0, t0, np.float32(1), False, np.empty(300_000, np.float32)))
    assert _same(outs[0], outs[1]) and _same(outs[0], outs[2])


@pytest.fixture
def fresh_native(monkeypatch, tmp_path):
    """``native.load`` forgets its library for the test (and again afterwards); the cache is
    an empty folder."""
    monkeypatch.setenv("SQUEEZE_CACHE_DIR", str(tmp_path / "cache"))
    native.load.cache_clear()
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


def test_without_a_compiler_regeneration_falls_back_to_numba(fresh_native, monkeypatch):
    monkeypatch.setenv("CC", "false")  # a "compiler" that fails every build
    monkeypatch.delenv(kernels.ENV_VAR, raising=False)
    lib, reason = native.load()
    assert lib is None and "could not build regen.c" in reason
    assert not list(fresh_native.glob("*"))  # no half-written library left behind
    assert kernels.tensor_module("cpu") is kernels.cpu_module()
    monkeypatch.setenv(kernels.ENV_VAR, "native")
    with pytest.raises(RuntimeError, match="SQUEEZE_KERNEL=native but the C kernels cannot be built"):
        kernels.tensor_module("cpu")


LOAD_WITHOUT_NUMBA = textwrap.dedent(
    """
    import sys, squeeze
    model = squeeze.load(sys.argv[1])
    print(sum(p.numel() for p in model.parameters()), "numba" in sys.modules)
    """
)


def test_loading_a_file_never_imports_numba(tmp_path):
    import squeeze
    from squeeze.zoo import MLP

    sub = squeeze.Subspace(MLP(), squeeze.SubspaceConfig(dim=50, seed=3))
    path = tmp_path / "mlp.sqz"
    squeeze.save(sub, path, arch={"ref": "squeeze.zoo:MLP"})
    out = subprocess.run([sys.executable, "-c", LOAD_WITHOUT_NUMBA, str(path)], capture_output=True, text=True, check=False, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(sub.D), "False"]
