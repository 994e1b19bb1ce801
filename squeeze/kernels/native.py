"""The C backend: every CPU regeneration path (``regen.c``), compiled once per machine, called by ctypes.

theta_0 of a plan's segments, the forward of each projection kind (whole, or one tensor's
range with theta_0 added in the same pass) and the training transposes, all walking a
:class:`squeeze.plan.RegenPlan`. Forwards give the reference's bits; transposes sum each
chunk of the work in float64 and add the chunks in order (``pool.run``), so a gradient repeats
bit for bit at a fixed thread count.

Compiled at first use, not at install: the build flags include ``-march=native`` and the cache
key hashes the CPU, so a wheel or an install on one machine never hands a library tuned for
one CPU to another, and ``pip install`` needs no compiler. The library is built from
``regen.c`` by ``$CC`` (default ``cc``) and cached as ``<cache>/regen-<key>.so``
(``$SQUEEZE_CACHE_DIR``, else ``$XDG_CACHE_HOME/squeeze``, else ``~/.cache/squeeze``; ``<key>``
hashes the source, the flags and the CPU): about 1.5 s once, milliseconds after. Flags: ``-O3
-march=native`` (retried without ``-march=native`` where refused), always ``-ffp-contract=off``
and no fast-math (no fused multiply-add, no reordered sum) and ``-fno-strict-aliasing`` (the
kernels read the same words as uint32 and float32). Without a compiler :func:`load` says why
and squeeze takes the reference path (``squeeze.kernels``).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shlex
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch

from squeeze.kernels.pool import run
from squeeze.rng import KAT_ZERO

SOURCE = Path(__file__).with_name("regen.c")
FLAGS = ("-O3", "-std=c11", "-shared", "-fPIC", "-ffp-contract=off", "-fno-fast-math", "-fno-strict-aliasing")
TUNE = ("-march=native",)

SEG = {"u": 0, "c": 1, "b": 2}  # segment kinds, as in regen.c
SEG_NONE = -1  # no theta_0: the projection alone

_P, _U32, _U64, _F, _I = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint64, ctypes.c_float, ctypes.c_int
_SIGNATURES = {
    "sq_threefry": (None, [_U32, _U32, _U32, _U32, _P]),
    "sq_theta0": (None, [_I, _F, _U32, _U32, _P, _U64, _U64, _P]),
    "sq_sorf_tensor": (_I, [_P, _U64, _U64, _U64, _P, _F, _U64, _U64, _U64, _I, _F, _U32, _U32, _P, _F, _I, _P]),
    "sq_rows_tensor": (_I, [_I, _P, _U64, _U64, _U32, _U32, _F, _U64, _U64, _U64, _U64, _I, _F, _U32, _U32, _P, _F, _I, _P]),
    "sq_sorf_transpose": (_I, [_P, _P, _U64, _U64, _U64, _U64, _P, _F, _P, _U64, _P, _P, _P, _P]),
    "sq_dense_transpose": (_I, [_P, _U64, _U64, _U64, _U32, _U32, _P]),
    "sq_sparse_transpose": (None, [_P, _U64, _U64, _U64, _U64, _U32, _U32, _P]),
}


def cache_dir() -> Path:
    """Where the compiled library is kept (see the module docstring)."""
    if os.environ.get("SQUEEZE_CACHE_DIR"):
        return Path(os.environ["SQUEEZE_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "squeeze"


def _cpu_identity() -> str:
    """The CPU's model and feature flags (Linux), part of the cache key."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            first = f.read(1 << 16).split("\n\n")[0]
        return "\n".join(line for line in first.splitlines() if line.startswith(("model name", "flags", "Features", "CPU part")))
    except OSError:
        return platform.processor()


def _compile(target: Path, compiler: list[str]) -> None:
    """Build ``regen.c`` into ``target`` (written under a temporary name, then renamed)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        errors = ""
        for flags in (FLAGS + TUNE, FLAGS):
            proc = subprocess.run([*compiler, *flags, "-o", tmp, str(SOURCE)], capture_output=True, text=True, check=False)
            if proc.returncode == 0:
                os.replace(tmp, target)
                return
            errors = proc.stderr.strip()[-500:]
        raise RuntimeError(f"{' '.join(compiler)} could not build {SOURCE.name}: {errors}")
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@functools.cache
def load() -> tuple[ctypes.CDLL | None, str | None]:
    """(the library, None) when it builds (or is cached) and passes the Threefry known answer,
    else (None, the reason)."""
    try:
        compiler = shlex.split(os.environ.get("CC") or "cc")
        key = hashlib.sha256(b"\0".join([SOURCE.read_bytes(), " ".join(compiler + list(FLAGS + TUNE)).encode(), platform.machine().encode(), _cpu_identity().encode()])).hexdigest()[:20]
        path = cache_dir() / f"regen-{key}.so"
        if not path.exists():
            _compile(path, compiler)
        lib = ctypes.CDLL(str(path))
        for name, (restype, argtypes) in _SIGNATURES.items():
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = restype, argtypes
        if threefry(0, 0, 0, 0, lib) != KAT_ZERO:
            return None, "the compiled Threefry failed its known-answer check"
        return lib, None
    except Exception as exc:  # noqa: BLE001  (no compiler, no writable cache, a bad build: the reference instead)
        return None, f"{type(exc).__name__}: {exc}"


def _lib() -> ctypes.CDLL:
    lib, reason = load()
    if lib is None:
        raise RuntimeError(f"the native kernels do not work here ({reason})")
    return lib


def _check(status: int) -> None:
    if status != 0:
        raise MemoryError("the native regeneration kernel could not allocate its workspace")


def threefry(k0: int, k1: int, c0: int, c1: int, lib=None) -> tuple[int, int]:
    """Threefry-2x32-20 of one counter under one key."""
    out = np.zeros(2, np.uint32)
    (lib or _lib()).sq_threefry(k0, k1, c0, c1, out.ctypes.data)
    return int(out[0]), int(out[1])


def _f32(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float32).contiguous().reshape(-1).numpy()


def xbits(pp, x: torch.Tensor) -> np.ndarray:
    """theta_d as the kernels take it: float32 zero-padded (+0.0) to the kind's width, as uint32 bits."""
    size = pp.n if pp.kind == "sorf" else 64 * ((pp.d + 63) // 64) if pp.kind == "dense" else pp.d
    out = np.zeros(size, np.float32)
    out[: x.shape[0]] = _f32(x)
    return out.view(np.uint32)


_NO_GIVEN = np.zeros(1, np.float32)


class Tensor0:
    """One segment's theta_0 as the kernels take it: (kind, value, key words, given values)."""

    def __init__(self, seg=None, given: np.ndarray | None = None):
        if seg is None:
            self.args = (SEG_NONE, 0.0, 0, 0, _NO_GIVEN)
        else:
            k0, k1 = seg.key or (0, 0)
            self.args = (SEG[seg.kind], float(seg.value), k0, k1, _NO_GIVEN if given is None else np.ascontiguousarray(given, np.float32))


def theta0(t0: Tensor0, a: int, out: np.ndarray) -> np.ndarray:
    """theta_0 values a .. a+len(out)-1 of one segment into ``out`` (float32)."""
    lib = _lib()
    kind, val, k0, k1, given = t0.args
    base = out.ctypes.data

    def work(c, lo, hi):
        lib.sq_theta0(kind, val, k0, k1, given.ctypes.data, a + lo, a + hi, base + 4 * lo)

    run(work, out.shape[0], 1 << 16)
    return out


def project(pp, bits: np.ndarray, q: int, a: int, t0: Tensor0, s: float | None, out: np.ndarray) -> np.ndarray:
    """Outputs q .. q+len(out)-1 of ``P x`` (x as :func:`xbits`), each added to theta_0 value
    a + j of one segment (``t0``; times the layerwise scale ``s`` first when given) into ``out``:
    ``theta_0 + p`` or ``theta_0 + s * p``, or ``p`` alone for ``Tensor0()``."""
    lib = _lib()
    kind, val, k0, k1, given = t0.args
    has_s, s = (0, 1.0) if s is None else (1, float(s))
    m = out.shape[0]
    scale = pp.scale
    if pp.kind == "sorf":
        n = pp.n
        keys = np.array(pp.keys, np.uint32)
        b0, b1 = q // n, (q + m + n - 1) // n

        def work(c, lo, hi):
            _check(lib.sq_sorf_tensor(bits.ctypes.data, n, b0 + lo, b0 + hi, keys.ctypes.data, scale, q, m, a, kind, val, k0, k1, given.ctypes.data, s, has_s, out.ctypes.data))

        run(work, b1 - b0, max(1, 4096 // n))
        return out
    sparse = int(pp.kind == "sparse")
    (pk0, pk1), per_row = pp.keys[0], pp.k if sparse else pp.d

    def rows(c, lo, hi):
        _check(lib.sq_rows_tensor(sparse, bits.ctypes.data, pp.d, pp.k, pk0, pk1, scale, q, lo, hi, a, kind, val, k0, k1, given.ctypes.data, s, has_s, out.ctypes.data))

    run(rows, m, max(1, (1 << 16) // per_row))
    return out


def forward(pp, x: torch.Tensor) -> torch.Tensor:
    """``P @ x`` (d,) -> (D,) float32, bit-exact with the reference."""
    return torch.from_numpy(project(pp, xbits(pp, x), 0, 0, Tensor0(), None, np.empty(pp.D, np.float32)))


def sorf_transpose(pp, g: np.ndarray, x: np.ndarray, pstart: np.ndarray, dst: np.ndarray, sc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both gradients of theta = theta_0 + sc[k] * (P x) for tensors k (SORF), in one pass over
    the blocks they cover: (P^T (sc * g) as (d,) float64, the scales' gradients <g_k, (P x)_k>).

    Args:
        g: float32 gradients; tensor k's start at g[dst[k]].
        x: (d,) float32, theta_d.
        pstart: (K + 1,) uint64: tensor k is the projection's outputs pstart[k] .. pstart[k+1]-1.
        dst: (K,) uint64; sc: (K,) float32 scales (ones when there are none).
    """
    lib = _lib()
    n, K = pp.n, sc.shape[0]
    keys = np.array(pp.keys, np.uint32)
    b0, b1 = int(pstart[0]) // n, (int(pstart[-1]) + n - 1) // n

    def work(c, lo, hi):
        acc, gs = np.zeros(n, np.float64), np.zeros(K, np.float64)
        _check(lib.sq_sorf_transpose(g.ctypes.data, x.ctypes.data, x.shape[0], n, b0 + lo, b0 + hi, keys.ctypes.data, pp.scale, pstart.ctypes.data, K, dst.ctypes.data, sc.ctypes.data, acc.ctypes.data, gs.ctypes.data))
        return acc, gs

    parts = run(work, b1 - b0, max(1, 4096 // n))
    return np.sum([p[0] for p in parts], axis=0)[: x.shape[0]], np.sum([p[1] for p in parts], axis=0)


def transpose(pp, y: torch.Tensor) -> torch.Tensor:
    """``P^T @ y`` (D,) -> (d,) float32 (gradients; float64 sums per chunk, chunks in order)."""
    lib = _lib()
    y = _f32(y)
    if pp.kind == "sorf":
        x = np.zeros(pp.d, np.float32)
        one = np.array([1.0], np.float32)
        acc, _ = sorf_transpose(pp, y, x, np.array([0, pp.D], np.uint64), np.zeros(1, np.uint64), one)
        return torch.from_numpy(acc.astype(np.float32))
    (k0, k1), d, dense = pp.keys[0], pp.d, pp.kind == "dense"

    def work(c, lo, hi):
        acc = np.zeros(64 * ((d + 63) // 64) if dense else d, np.float64)
        if dense:
            _check(lib.sq_dense_transpose(y.ctypes.data, d, lo, hi, k0, k1, acc.ctypes.data))
        else:
            lib.sq_sparse_transpose(y.ctypes.data, d, pp.k, lo, hi, k0, k1, acc.ctypes.data)
        return acc

    total = np.sum(run(work, y.shape[0], max(1, (1 << 16) // (d if dense else pp.k))), axis=0)[:d]
    return torch.from_numpy(total.astype(np.float32) * np.float32(pp.scale))


def theta0_all(plan, base) -> torch.Tensor:
    """The flat float32 theta_0 of a plan, bit-exact with the reference."""
    out = np.empty(plan.D, np.float32)
    for seg in plan.segments:
        if seg.numel:
            given = _f32(plan.base_tensor(seg, base)) if seg.kind == "b" else None
            theta0(Tensor0(seg, given), 0, out[seg.start : seg.start + seg.numel])
    return torch.from_numpy(out)
