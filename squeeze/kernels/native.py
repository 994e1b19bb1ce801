"""The per-tensor regeneration kernels in C (``regen.c``), compiled once per machine, called by ctypes.

Loading and streaming a file need only the forward of one tensor at a time
(:class:`squeeze.materialize.Regenerator`). The numba kernels do that as fast, but numba's
import and its first call cost about 0.5 s and 130 MB in every process, more than PyTorch's
own loading of a 124M-parameter checkpoint. This module gives the same functions as
``squeeze.kernels.cpu`` for that job (``theta0_tensor``, ``sorf_tensor``, ``rows_tensor``,
same arguments, same bits) from a shared library that loads in milliseconds.

The library is built from ``regen.c`` by the C compiler (``$CC``, default ``cc``) the first time
it is needed and cached as ``<cache>/regen-<key>.so``, where ``<cache>`` is
``$SQUEEZE_CACHE_DIR``, else ``$XDG_CACHE_HOME/squeeze``, else ``~/.cache/squeeze``, and
``<key>`` hashes the source, the flags and the CPU. Flags: ``-O3 -march=native`` (retried
without ``-march=native`` where the compiler refuses it), and always ``-ffp-contract=off`` and
no fast-math, so that no multiply-add is fused and no sum reordered, and
``-fno-strict-aliasing`` (the kernels read the same words as uint32 and as float32). Without a compiler
:func:`load` says why and squeeze uses the numba kernels instead.
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

from squeeze.kernels import _KAT
from squeeze.kernels.pool import run

SOURCE = Path(__file__).with_name("regen.c")
FLAGS = ("-O3", "-std=c11", "-shared", "-fPIC", "-ffp-contract=off", "-fno-fast-math", "-fno-strict-aliasing")
TUNE = ("-march=native",)

SEG_UNIFORM, SEG_CONST, SEG_GIVEN = 0, 1, 2  # as in regen.c and cpu.py

_P, _U32, _U64, _F, _I = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint64, ctypes.c_float, ctypes.c_int
_SIGNATURES = {
    "sq_threefry": (None, [_U32, _U32, _U32, _U32, _P]),
    "sq_theta0": (None, [_I, _F, _U32, _U32, _P, _U64, _U64, _P]),
    "sq_sorf_tensor": (_I, [_P, _U64, _U64, _U64, _P, _F, _U64, _U64, _U64, _I, _F, _U32, _U32, _P, _F, _I, _P]),
    "sq_rows_tensor": (_I, [_I, _P, _U64, _U64, _U32, _U32, _F, _U64, _U64, _U64, _U64, _I, _F, _U32, _U32, _P, _F, _I, _P]),
}


def cache_dir() -> Path:
    """Where the compiled library is kept (see the module docstring)."""
    if os.environ.get("SQUEEZE_CACHE_DIR"):
        return Path(os.environ["SQUEEZE_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "squeeze"


def _cpu_identity() -> str:
    """The CPU's model and feature flags (Linux), so a cache shared between machines never
    hands a library built for one CPU to another."""
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
    """(the library, None) when it builds (or is cached) and passes a known-answer check, else
    (None, the reason)."""
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
        out = np.zeros(2, np.uint32)
        lib.sq_threefry(0, 0, 0, 0, out.ctypes.data)
        if (int(out[0]), int(out[1])) != _KAT:
            return None, "the compiled Threefry failed its known-answer check"
        return lib, None
    except Exception as exc:  # noqa: BLE001  (no compiler, no writable cache, a bad build: numba instead)
        return None, f"{type(exc).__name__}: {exc}"


def _lib() -> ctypes.CDLL:
    lib, reason = load()
    if lib is None:
        raise RuntimeError(f"the native kernels do not work here ({reason})")
    return lib


def _check(status: int) -> None:
    if status != 0:
        raise MemoryError("the native regeneration kernel could not allocate its workspace")


def _tensor_args(t0: tuple) -> tuple:
    kind, val, k0, k1, given = t0
    return int(kind), float(val), int(k0), int(k1), np.ascontiguousarray(given, np.float32)


def theta0_tensor(t0: tuple, a: int, out: np.ndarray) -> np.ndarray:
    """theta_0 values a .. a+len(out)-1 of one tensor into ``out`` (float32); as ``cpu.theta0_tensor``."""
    lib = _lib()
    kind, val, k0, k1, given = _tensor_args(t0)
    base = out.ctypes.data

    def work(c, lo, hi):
        lib.sq_theta0(kind, val, k0, k1, given.ctypes.data, a + lo, a + hi, base + 4 * lo)

    run(work, out.shape[0], 1 << 16)
    return out


def sorf_tensor(xbits: np.ndarray, n: int, keys: np.ndarray, scale: np.float32, q: int, a: int, t0: tuple, s: np.float32, has_s: bool, out: np.ndarray) -> np.ndarray:
    """Values a .. a+len(out)-1 of one tensor, ``theta_0 + (s *) SORF.forward(x)[q:]``, into
    ``out``; arguments as ``cpu.sorf_tensor``."""
    lib = _lib()
    kind, val, k0, k1, given = _tensor_args(t0)
    xbits = np.ascontiguousarray(xbits, np.uint32)
    keys = np.ascontiguousarray(keys, np.uint32)
    m = out.shape[0]
    b0, b1 = q // n, (q + m + n - 1) // n

    def work(c, lo, hi):
        _check(lib.sq_sorf_tensor(xbits.ctypes.data, n, b0 + lo, b0 + hi, keys.ctypes.data, float(scale), q, m, a, kind, val, k0, k1, given.ctypes.data, float(s), int(has_s), out.ctypes.data))

    run(work, b1 - b0, max(1, 4096 // n))
    return out


def rows_tensor(kind: str, xbits: np.ndarray, d: int, k: int, k0: int, k1: int, scale: np.float32, q: int, a: int, t0: tuple, s: np.float32, has_s: bool, out: np.ndarray) -> np.ndarray:
    """As :func:`sorf_tensor` for the dense and sparse projections; arguments as ``cpu.rows_tensor``."""
    lib = _lib()
    tkind, val, tk0, tk1, given = _tensor_args(t0)
    xbits = np.ascontiguousarray(xbits, np.uint32)
    sparse = int(kind != "dense")
    per_row = k if sparse else d

    def work(c, lo, hi):
        _check(lib.sq_rows_tensor(sparse, xbits.ctypes.data, d, k, int(k0), int(k1), float(scale), q, lo, hi, a, tkind, val, tk0, tk1, given.ctypes.data, float(s), int(has_s), out.ctypes.data))

    run(work, out.shape[0], max(1, (1 << 16) // per_row))
    return out
