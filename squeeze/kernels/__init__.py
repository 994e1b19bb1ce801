"""Fast paths for regeneration, giving the same bits as the reference torch code.

The path is chosen per call from the environment variable ``SQUEEZE_KERNEL``:

* ``auto`` (default): for CPU tensors, regeneration tensor by tensor (loading, streaming,
  the training forward) takes the compiled C kernels of ``native.py`` when a C compiler
  builds them, and every other CPU kernel (and that one, without a compiler) the numba
  kernels when numba imports and passes a known-answer check, else the reference; CUDA
  tensors take the Triton kernels when Triton imports and passes a known-answer check on
  that GPU, else the reference.
* ``native``: as ``auto``, but an error if the C kernels cannot be built.
* ``numba``: the numba kernels for every CPU tensor (no C); an error if numba does not work.
  CUDA tensors take the reference path.
* ``triton``: the Triton kernels for every tensor; an error where they cannot run. CPU
  tensors need ``TRITON_INTERPRET=1`` set before squeeze imports its Triton kernels (tests
  use it to check the kernels' bits without a GPU).
* ``reference``: the eager torch code in ``squeeze/projection`` and ``squeeze/init.py``.

The functions below take a projection object (duck-typed: ``kind``, ``D``, ``d``, ``seed``,
``scale_exp``, and ``n``/``blocks`` for sorf, ``k`` for sparse) and torch tensors. The numba
functions return CPU tensors, the ``triton_*`` ones tensors on their input's device. Forwards
and ``theta0``/``regenerate`` are bit-exact with the reference; transposes (gradients only)
agree to rounding.

The CPU kernels run on ``NUMBA_NUM_THREADS`` threads (default: every CPU, at most torch's
thread count; ``pool.py``) and never hold a D x d matrix. The first call in a fresh install
compiles them: numba in about 10 s of CPU, cached next to ``cpu.py`` (a later process still
pays about 0.5 s and 130 MB to import numba and load it); the C kernels in about 1.5 s, cached
in ``~/.cache/squeeze`` (a later process loads them in milliseconds; ``native.py``).
Per-tensor regeneration (``tensor_module``) is what loading, streaming and the training
forward use; the other functions here take whole projections. Triton compiles its kernels on
first use on a GPU and caches them in ``~/.triton``.
"""

from __future__ import annotations

import functools
import os
import warnings

import numpy as np
import torch

from squeeze import rng

ENV_VAR = "SQUEEZE_KERNEL"
CHOICES = ("auto", "native", "numba", "reference", "triton")
_KAT = (0x6B200159, 0x99BA4EFE)  # Threefry-2x32-20 of key = counter = 0 (Random123 kat_vectors)

__all__ = [
    "CHOICES",
    "ENV_VAR",
    "available",
    "choice",
    "cpu_module",
    "dense_forward",
    "dense_transpose",
    "forward",
    "native_available",
    "regenerate",
    "tensor_module",
    "sorf_forward",
    "sorf_transpose",
    "sparse_forward",
    "sparse_transpose",
    "theta0",
    "transpose",
    "triton_available",
    "triton_forward",
    "triton_supports",
    "triton_theta0",
    "triton_transpose",
    "use_numba",
    "use_triton",
]


@functools.cache
def _load():
    """(cpu kernel module, None) when numba works here, else (None, reason)."""
    try:
        from squeeze.kernels import cpu

        x0, x1 = cpu.threefry2x32(0, 0, np.zeros(1, np.uint32), np.zeros(1, np.uint32))
        if (int(x0[0]), int(x1[0])) != _KAT:
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
    if want in ("reference", "triton") or device.type != "cpu":
        return False
    if available():
        return True
    if want == "numba":
        raise RuntimeError(f"{ENV_VAR}=numba but the numba kernels do not work here ({_load()[1]}); unset {ENV_VAR} or set it to reference")
    _warn_fallback()
    return False


def native_available() -> bool:
    """Whether the C kernels of ``native.py`` build (or are cached) and pass a known-answer check."""
    from squeeze.kernels import native

    return native.load()[0] is not None


def tensor_module(where: torch.Tensor | torch.device | str):
    """The kernels that regenerate one tensor at a time on ``where`` (``theta0_tensor``,
    ``sorf_tensor``, ``rows_tensor``): ``squeeze.kernels.native`` or ``squeeze.kernels.cpu``
    (numba), chosen as the module docstring says; None for the reference path.

    Raises:
        RuntimeError: ``SQUEEZE_KERNEL=native`` but the C kernels cannot be built here.
    """
    want = choice()
    device = where.device if isinstance(where, torch.Tensor) else torch.device(where)
    if want in ("reference", "triton") or device.type != "cpu":
        return None
    if want in ("auto", "native"):
        from squeeze.kernels import native

        lib, reason = native.load()
        if lib is not None:
            return native
        if want == "native":
            raise RuntimeError(f"{ENV_VAR}=native but the C kernels cannot be built here ({reason}); unset {ENV_VAR} or set it to numba")
    return cpu_module() if use_numba(device) else None


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


@functools.cache
def _triton_status(device_type: str) -> str | None:
    """None when the Triton kernels run on tensors of ``device_type`` here, else the reason."""
    if device_type not in ("cpu", "cuda"):
        return f"there are no Triton kernels for {device_type} tensors"
    try:
        from squeeze.kernels import triton_rng
    except ImportError as exc:
        return f"triton does not import ({exc}); it ships with the CUDA builds of torch"
    from triton.runtime.interpreter import InterpretedFunction

    if device_type == "cpu" and not isinstance(triton_rng.threefry, InterpretedFunction):
        return "Triton runs CPU tensors only under TRITON_INTERPRET=1, set before squeeze imports its Triton kernels"
    if device_type == "cuda" and not torch.cuda.is_available():
        return "no CUDA device is available"
    try:
        zero = torch.zeros(1, dtype=torch.int64, device=device_type)
        x0, x1 = triton_rng.threefry2x32((0, 0), zero, zero)
        if (int(x0[0]), int(x1[0])) != _KAT:
            return "the Triton Threefry kernel failed its known-answer check"
    except Exception as exc:  # noqa: BLE001  (any compile or launch failure: fall back to the reference)
        return f"{type(exc).__name__}: {exc}"
    return None


def triton_available(where: torch.Tensor | torch.device | str = "cuda") -> bool:
    """Whether the Triton kernels import, run and pass a known-answer check on this device type."""
    device = where.device if isinstance(where, torch.Tensor) else torch.device(where)
    return _triton_status(device.type) is None


def use_triton(where: torch.Tensor | torch.device | str) -> bool:
    """Whether work on a tensor (or device) goes to the Triton kernels (see the module docstring).

    Raises:
        RuntimeError: ``SQUEEZE_KERNEL=triton`` but the Triton kernels cannot run on this device.
    """
    want = choice()
    device = where.device if isinstance(where, torch.Tensor) else torch.device(where)
    if want == "triton":
        reason = _triton_status(device.type)
        if reason is not None:
            raise RuntimeError(f"{ENV_VAR}=triton but the Triton kernels cannot run on {device.type} tensors here ({reason}); unset {ENV_VAR} or set it to reference")
        return True
    if want != "auto" or device.type != "cuda":
        return False
    reason = _triton_status("cuda")
    if reason is not None:
        _warn_triton_fallback(reason)
    return reason is None


@functools.cache
def _warn_triton_fallback(reason: str) -> None:
    warnings.warn(f"squeeze: the Triton kernels do not work here ({reason}); CUDA tensors take the slower reference path", RuntimeWarning, stacklevel=3)


_TRITON_KINDS = {"sorf": "triton_sorf", "dense": "triton_dense", "sparse": "triton_sparse"}


def _triton_kind(proj):
    """The Triton kernel module of ``proj.kind``, or None when there is none or ``proj`` does not fit it."""
    import importlib

    if proj.kind not in _TRITON_KINDS:
        return None
    module = importlib.import_module(f"squeeze.kernels.{_TRITON_KINDS[proj.kind]}")
    return module if module.fits(proj) else None


def triton_supports(proj) -> bool:
    """Whether a Triton kernel covers ``proj`` (its kind, and for sorf and dense its width)."""
    return _triton_kind(proj) is not None


def _triton_module(proj):
    module = _triton_kind(proj)
    if module is None:
        raise ValueError(f"no Triton kernel for this {proj.kind!r} projection (d={proj.d}); set {ENV_VAR}=reference")
    return module


def triton_forward(proj, x: torch.Tensor) -> torch.Tensor:
    """``P @ x`` with the Triton kernel of ``proj.kind``, on x's device (bit-exact with the reference).

    Raises:
        ValueError: no Triton kernel covers this projection (see :func:`triton_supports`).
    """
    return _triton_module(proj).forward(proj, x)


def triton_transpose(proj, y: torch.Tensor) -> torch.Tensor:
    """``P^T @ y`` with the Triton kernel of ``proj.kind``, on y's device (gradients)."""
    return _triton_module(proj).transpose(proj, y)


def triton_theta0(manifest, seed: int, base: dict[str, torch.Tensor] | None, device: torch.device | str) -> torch.Tensor:
    """The flat float32 theta_0 drawn by the Triton kernel on ``device``, bit-exact with
    ``init.regenerate_theta0`` (arguments as for :func:`theta0`)."""
    from squeeze.kernels import triton_init

    return triton_init.theta0(manifest, seed, base, device)


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


def regenerate(
    proj,
    theta_d: torch.Tensor,
    manifest,
    seed: int,
    base: dict[str, torch.Tensor] | None = None,
    *,
    selected: list[int] | None = None,
    scales: torch.Tensor | None = None,
) -> torch.Tensor:
    """theta = theta_0 + P @ theta_d, bit-exact with ``Subspace.theta``: the Triton path when
    :func:`use_triton` says so for ``theta_d`` (on its device), else the numba path (on the CPU).
    For sorf, theta_0 is drawn block by block inside the projection kernel and never stored on
    its own (numba: without ``selected`` or ``scales`` only).

    Args:
        proj: the projection, mapping to the total size of the ``selected`` tensors.
        theta_d: (d,) float32.
        manifest: ``init.TensorSpec`` entries; seed: the model's seed; base: tensors of ``("b",)`` entries.
        selected: manifest indices in the subspace, in manifest order (None: every tensor).
        scales: one layerwise scale per selected tensor (float32), or None.

    Raises:
        ValueError: the selected tensors' size differs from the projection's D.
    """
    chosen = list(range(len(manifest))) if selected is None else list(selected)
    D = sum(manifest[i].numel for i in chosen)
    if D != proj.D:
        raise ValueError(f"the manifest holds {D} values but the projection maps to D={proj.D}")
    if use_triton(theta_d):
        if proj.kind == "sorf" and triton_supports(proj):
            return _triton_kind(proj).regenerate(proj, theta_d, manifest, seed, base, selected, scales)
        with torch.no_grad():
            p = proj.forward(theta_d)  # the Triton kernel where one covers proj, else the reference
        return _add_pieces(triton_theta0(manifest, seed, base, theta_d.device), p, manifest, chosen, scales)
    if proj.kind == "sorf" and selected is None and scales is None:
        xbits = _padded_bits(theta_d, proj.n)
        segs = _segments(manifest, seed, base)
        out = cpu_module().sorf_forward(xbits, proj.n, proj.blocks, _sorf_keys(proj.seed), _scale(proj), segs, _empty(proj.D))
        return torch.from_numpy(out)
    return _add_pieces(theta0(manifest, seed, base), forward(proj, theta_d), manifest, chosen, scales)


def _add_pieces(t0: torch.Tensor, p: torch.Tensor, manifest, selected: list[int], scales: torch.Tensor | None) -> torch.Tensor:
    """t0 (theta_0) with each selected tensor's share of ``p`` added (times its scale), in place, with
    the operations of ``Subspace._pieces``."""
    starts = [0]
    for spec in manifest:
        starts.append(starts[-1] + spec.numel)
    offset = 0
    for k, i in enumerate(selected):
        n = manifest[i].numel
        piece = p[offset : offset + n]
        offset += n
        if scales is not None:
            piece = scales[k].detach().to(device=p.device, dtype=torch.float32) * piece
        t0[starts[i] : starts[i] + n] += piece
    return t0
