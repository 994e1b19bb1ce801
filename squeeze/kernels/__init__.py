"""Fast paths for regeneration, giving the same bits as the reference torch code.

The path is chosen per call from the environment variable ``SQUEEZE_KERNEL``:

* ``auto`` (default): the numba CPU kernels for CPU tensors when numba imports and passes
  a known-answer check, else the reference; CUDA tensors always take the reference path.
* ``numba``: the numba kernels for CPU tensors; an error if numba does not work.
* ``reference``: the eager torch code in ``squeeze/projection`` and ``squeeze/init.py``.

The functions below take a projection object (duck-typed: ``kind``, ``D``, ``d``, ``seed``,
``scale_exp``, and ``n``/``blocks`` for sorf, ``k`` for sparse) and torch tensors, and return
torch tensors on the CPU. Forwards and ``theta0``/``regenerate`` are bit-exact with the
reference; transposes (gradients only) agree to rounding.

The kernels run on ``NUMBA_NUM_THREADS`` threads (default: every CPU) and never hold a D x d
matrix. The first call in a fresh install compiles them (about 10 s of CPU); numba caches the
machine code next to ``cpu.py`` and later processes load it in a fraction of a second.
"""

from __future__ import annotations

import functools
import os
import warnings

import numpy as np
import torch

from squeeze import rng

ENV_VAR = "SQUEEZE_KERNEL"
CHOICES = ("auto", "numba", "reference")

__all__ = [
    "CHOICES",
    "ENV_VAR",
    "available",
    "choice",
    "cpu_module",
    "dense_forward",
    "dense_transpose",
    "forward",
    "regenerate",
    "sorf_forward",
    "sorf_transpose",
    "sparse_forward",
    "sparse_transpose",
    "theta0",
    "transpose",
    "use_numba",
]


@functools.cache
def _load():
    """(cpu kernel module, None) when numba works here, else (None, reason)."""
    try:
        from squeeze.kernels import cpu

        # Threefry-2x32-20 known answer (Random123 kat_vectors): key = counter = 0.
        x0, x1 = cpu.threefry2x32(0, 0, np.zeros(1, np.uint32), np.zeros(1, np.uint32))
        if (int(x0[0]), int(x1[0])) != (0x6B200159, 0x99BA4EFE):
            return None, "the numba Threefry kernel failed its known-answer check"
        return cpu, None
    except Exception as exc:  # noqa: BLE001  (any import or compile failure: fall back to the reference)
        return None, f"{type(exc).__name__}: {exc}"


def available() -> bool:
    """Whether the numba CPU kernels import, compile and pass a known-answer check."""
    return _load()[0] is not None


def choice() -> str:
    """The path asked for by ``SQUEEZE_KERNEL`` (``auto`` when unset).

    Raises:
        ValueError: the variable holds something else.
    """
    value = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if value not in CHOICES:
        raise ValueError(f"{ENV_VAR}={value!r} is not a kernel choice; set it to one of {', '.join(CHOICES)}")
    return value


def use_numba(where: torch.Tensor | torch.device | str) -> bool:
    """Whether work on a tensor (or device) goes to the numba kernels (see the module docstring).

    Raises:
        RuntimeError: ``SQUEEZE_KERNEL=numba`` but numba does not work here.
    """
    want = choice()
    device = where.device if isinstance(where, torch.Tensor) else torch.device(where)
    if want == "reference" or device.type != "cpu":
        return False
    if available():
        return True
    if want == "numba":
        raise RuntimeError(f"{ENV_VAR}=numba but the numba kernels do not work here ({_load()[1]}); unset {ENV_VAR} or set it to reference")
    _warn_fallback()
    return False


@functools.cache
def _warn_fallback() -> None:
    warnings.warn(f"squeeze: the numba kernels do not work here ({_load()[1]}); using the slower reference path", RuntimeWarning, stacklevel=3)


def cpu_module():
    """The numba kernel module ``squeeze.kernels.cpu`` (numpy in, numpy out).

    Raises:
        RuntimeError: numba does not work here.
    """
    cpu, reason = _load()
    if cpu is None:
        raise RuntimeError(f"the numba kernels do not work here ({reason}); set {ENV_VAR}=reference")
    return cpu



@functools.lru_cache(maxsize=256)
def _key(seed: int, kind: int, index: int) -> tuple[np.uint32, np.uint32]:
    k0, k1 = rng.stream_key(seed, rng.stream_id(kind, index))
    return np.uint32(k0), np.uint32(k1)


@functools.lru_cache(maxsize=64)
def _sorf_keys(seed: int) -> np.ndarray:
    return np.array([_key(seed, rng.STREAM_PROJECTION, r) for r in range(3)], dtype=np.uint32)


def _scale(proj) -> np.float32:
    return np.float32(2.0**proj.scale_exp)


def _as_f32(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float32).contiguous().numpy()


def _empty(n: int) -> np.ndarray:
    """A float32 output array; numpy asks the kernel for huge pages on large ones, so the
    first touch costs a fraction of the page faults of numba's own allocation."""
    return np.empty(n, np.float32)


def _padded_bits(x: torch.Tensor, size: int) -> np.ndarray:
    """x as float32 zero-padded (+0.0) to ``size`` values, viewed as uint32 bits."""
    out = np.zeros(size, np.float32)
    out[: x.shape[0]] = _as_f32(x)
    return out.view(np.uint32)


def sorf_forward(proj, x: torch.Tensor) -> torch.Tensor:
    """SORF ``P @ x``: (d,) -> (D,) float32, bit-exact with ``SORF.forward``."""
    xbits = _padded_bits(x, proj.n)
    out = cpu_module().sorf_forward(xbits, proj.n, proj.blocks, _sorf_keys(proj.seed), _scale(proj), cpu_module().no_segments(), _empty(proj.D))
    return torch.from_numpy(out)


def sorf_transpose(proj, y: torch.Tensor) -> torch.Tensor:
    """SORF ``P^T @ y``: (D,) -> (d,) float32 (gradients)."""
    out = cpu_module().sorf_transpose(_as_f32(y), proj.n, proj.blocks, _sorf_keys(proj.seed), _scale(proj), proj.d)
    return torch.from_numpy(out)


def dense_forward(proj, x: torch.Tensor) -> torch.Tensor:
    """Dense ``P @ x``: (d,) -> (D,) float32, bit-exact with ``Dense.forward``; O(D + d) memory."""
    k0, k1 = _key(proj.seed, rng.STREAM_PROJECTION, 0)
    xbits = _padded_bits(x, 64 * ((proj.d + 63) // 64))
    return torch.from_numpy(cpu_module().dense_forward(xbits, proj.d, k0, k1, _scale(proj), _empty(proj.D)))


def dense_transpose(proj, y: torch.Tensor) -> torch.Tensor:
    """Dense ``P^T @ y``: (D,) -> (d,) float32 (gradients); O(D + d) memory."""
    k0, k1 = _key(proj.seed, rng.STREAM_PROJECTION, 0)
    return torch.from_numpy(cpu_module().dense_transpose(_as_f32(y), proj.d, k0, k1, _scale(proj)))


def sparse_forward(proj, x: torch.Tensor) -> torch.Tensor:
    """Sparse ``P @ x``: (d,) -> (D,) float32, bit-exact with ``Sparse.forward``."""
    k0, k1 = _key(proj.seed, rng.STREAM_PROJECTION, 0)
    xbits = _padded_bits(x, proj.d)
    return torch.from_numpy(cpu_module().sparse_forward(xbits, proj.d, proj.k, k0, k1, _scale(proj), _empty(proj.D)))


def sparse_transpose(proj, y: torch.Tensor) -> torch.Tensor:
    """Sparse ``P^T @ y``: (D,) -> (d,) float32 (gradients)."""
    k0, k1 = _key(proj.seed, rng.STREAM_PROJECTION, 0)
    return torch.from_numpy(cpu_module().sparse_transpose(_as_f32(y), proj.d, proj.k, k0, k1, _scale(proj)))


_FORWARD = {"sorf": sorf_forward, "dense": dense_forward, "sparse": sparse_forward}
_TRANSPOSE = {"sorf": sorf_transpose, "dense": dense_transpose, "sparse": sparse_transpose}


def forward(proj, x: torch.Tensor) -> torch.Tensor:
    """``P @ x`` with the numba kernel of ``proj.kind``.

    Raises:
        ValueError: no kernel for this projection kind.
    """
    if proj.kind not in _FORWARD:
        raise ValueError(f"no numba kernel for projection {proj.kind!r}; set {ENV_VAR}=reference")
    return _FORWARD[proj.kind](proj, x)


def transpose(proj, y: torch.Tensor) -> torch.Tensor:
    """``P^T @ y`` with the numba kernel of ``proj.kind``."""
    if proj.kind not in _TRANSPOSE:
        raise ValueError(f"no numba kernel for projection {proj.kind!r}; set {ENV_VAR}=reference")
    return _TRANSPOSE[proj.kind](proj, y)


def _segments(manifest, seed: int, base: dict[str, torch.Tensor] | None):
    """The manifest as the segment arrays of ``cpu.theta0_into``."""
    cpu = cpu_module()
    S = len(manifest)
    start = np.zeros(S + 1, np.uint64)
    kind = np.zeros(S, np.int64)
    val = np.zeros(S, np.float32)
    k0 = np.zeros(S, np.uint32)
    k1 = np.zeros(S, np.uint32)
    off = np.zeros(S, np.uint64)
    given = []
    n_given = 0
    for i, spec in enumerate(manifest):
        start[i + 1] = start[i] + spec.numel
        tag = spec.init[0]
        if tag == "u":
            kind[i] = cpu.SEG_UNIFORM
            val[i] = np.float32(spec.init[1])
            k0[i], k1[i] = _key(seed, rng.STREAM_INIT, i)
        elif tag == "c":
            kind[i] = cpu.SEG_CONST
            val[i] = np.float32(spec.init[1])
        elif tag == "b":
            if base is None or spec.name not in base:
                raise ValueError(f"tensor {spec.name!r} comes from a base checkpoint; pass --base")
            t = _as_f32(base[spec.name]).reshape(-1)
            if t.shape[0] != spec.numel:
                raise ValueError(f"base tensor {spec.name!r} has {t.shape[0]} values, the manifest expects {spec.numel}; pass the matching base")
            kind[i] = cpu.SEG_GIVEN
            off[i] = n_given
            given.append(t)
            n_given += spec.numel
        else:
            raise ValueError(f"unknown init kind {tag!r} for tensor {spec.name!r}")
    given_arr = np.concatenate(given) if given else np.zeros(1, np.float32)
    return start, kind, val, k0, k1, off, given_arr


def theta0(manifest, seed: int, base: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """The flat float32 theta_0 on the CPU, bit-exact with ``init.regenerate_theta0``.

    Args:
        manifest: ``init.TensorSpec`` entries (``name``, ``numel``, ``init``) in order.
        seed: the model's seed.
        base: tensors for the manifest's ``("b",)`` entries.
    """
    segs = _segments(manifest, seed, base)
    return torch.from_numpy(cpu_module().theta0_into(segs, _empty(int(segs[0][-1]))))


def regenerate(proj, theta_d: torch.Tensor, manifest, seed: int, base: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """``theta_0 + P @ theta_d`` on the CPU (every tensor in the subspace, no layerwise scales),
    bit-exact with ``regenerate_theta0(...) + proj.forward(theta_d)``. For sorf, theta_0 is
    drawn block by block inside the projection kernel and never stored on its own.

    Raises:
        ValueError: the manifest's size differs from the projection's D.
    """
    D = sum(s.numel for s in manifest)
    if D != proj.D:
        raise ValueError(f"the manifest holds {D} values but the projection maps to D={proj.D}")
    if proj.kind == "sorf":
        xbits = _padded_bits(theta_d, proj.n)
        segs = _segments(manifest, seed, base)
        out = cpu_module().sorf_forward(xbits, proj.n, proj.blocks, _sorf_keys(proj.seed), _scale(proj), segs, _empty(proj.D))
        return torch.from_numpy(out)
    t0 = theta0(manifest, seed, base)
    return t0.add_(forward(proj, theta_d))
