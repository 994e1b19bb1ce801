"""The regeneration backends and the registry that picks one per call.

Four backends walk the same :class:`squeeze.plan.RegenPlan` and give the bits of the
reference (checked by tests/test_conformance.py against one table of golden digests):

* ``reference``: the torch code in ``squeeze/rng.py``, ``init.py`` and ``projection/`` (the
  definition of the bits, written to be read);
* ``native``: C (``native.py``), every CPU path: theta_0, forwards, and the training transposes;
* ``triton``: GPU kernels (``gpu.py``); CPU tensors run them only under ``TRITON_INTERPRET=1``;
* the ONNX emitter (``squeeze/onnx``), which writes the same plan as a graph.

The environment variable ``SQUEEZE_KERNEL`` chooses: ``auto`` (default: C for CPU tensors,
Triton for CUDA tensors, the reference where either cannot run, with a one-line notice),
``native`` or ``triton`` (an error where it cannot run), or ``reference``.
Each fast backend module offers ``forward(pp, x)`` and ``transpose(pp, y)`` for a
:class:`~squeeze.plan.ProjectionPlan` and theta_0 of a :class:`~squeeze.plan.RegenPlan`.
"""

from __future__ import annotations

import functools
import os
import warnings

import torch

from squeeze.errors import KernelError
from squeeze.rng import KAT_ZERO

ENV_VAR = "SQUEEZE_KERNEL"
CHOICES = ("auto", "native", "reference", "triton")
FAST_KINDS = ("sorf", "dense", "sparse")  # the kinds with a C and a Triton kernel

__all__ = ["CHOICES", "ENV_VAR", "choice", "cpu", "fast", "native_available", "theta0", "triton_available", "use_triton"]


def choice() -> str:
    """The path asked for by ``SQUEEZE_KERNEL`` (``auto`` when unset).

    Raises:
        ValueError: the variable holds something else.
    """
    value = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if value not in CHOICES:
        raise ValueError(f"{ENV_VAR}={value!r} is not a kernel choice; set it to one of {', '.join(CHOICES)}")
    return value


def _device(where) -> torch.device:
    return where.device if isinstance(where, torch.Tensor) else torch.device(where)


def native_available() -> bool:
    """Whether the C kernels build (or are cached) and pass the known-answer check."""
    from squeeze.kernels import native

    return native.load()[0] is not None


@functools.cache
def _notice(message: str) -> None:
    """One warning per message and process: a fast backend cannot run, the reference does."""
    warnings.warn(f"squeeze: {message}", RuntimeWarning, stacklevel=4)


def _unavailable(what: str) -> KernelError:
    """The error for a kernel asked for by name that cannot run here (the file is not at fault)."""
    return KernelError(f"{what}; unset {ENV_VAR} or set it to reference; regeneration needs no particular kernel: {ENV_VAR}=reference always works")


def cpu(where):
    """The C backend module for work on ``where`` (a CPU tensor or device), or None for the
    reference path.

    Raises:
        KernelError: ``SQUEEZE_KERNEL=native`` but the C kernels cannot be built here.
    """
    want = choice()
    if want in ("reference", "triton") or _device(where).type != "cpu":
        return None
    from squeeze.kernels import native

    lib, reason = native.load()
    if lib is not None:
        return native
    if want == "native":
        raise _unavailable(f"{ENV_VAR}=native but the C kernels cannot be built here ({reason})")
    _notice(f"no C kernels here ({reason.splitlines()[0][:200]}); regenerating with the slower reference path")
    return None


@functools.cache
def _triton_status(device_type: str) -> str | None:
    """None when the Triton kernels run on tensors of ``device_type`` here, else the reason."""
    if device_type not in ("cpu", "cuda"):
        return f"there are no Triton kernels for {device_type} tensors"
    try:
        from squeeze.kernels import gpu
    except ImportError as exc:
        return f"triton does not import ({exc}); it ships with the CUDA builds of torch"
    from triton.runtime.interpreter import InterpretedFunction

    if device_type == "cpu" and not isinstance(gpu.threefry, InterpretedFunction):
        return "Triton runs CPU tensors only under TRITON_INTERPRET=1, set before squeeze imports its Triton kernels"
    if device_type == "cuda" and not torch.cuda.is_available():
        return "no CUDA device is available"
    try:
        zero = torch.zeros(1, dtype=torch.int64, device=device_type)
        x0, x1 = gpu.threefry2x32((0, 0), zero, zero)
        if (int(x0[0]), int(x1[0])) != KAT_ZERO:
            return "the Triton Threefry kernel failed its known-answer check"
    except Exception as exc:  # noqa: BLE001  (any compile or launch failure: fall back to the reference)
        return f"{type(exc).__name__}: {exc}"
    return None


def triton_available(where: torch.Tensor | torch.device | str = "cuda") -> bool:
    """Whether the Triton kernels import, run and pass the known-answer check on this device type."""
    return _triton_status(_device(where).type) is None


def use_triton(where: torch.Tensor | torch.device | str) -> bool:
    """Whether work on a tensor (or device) goes to the Triton kernels (see the module docstring).

    Raises:
        KernelError: ``SQUEEZE_KERNEL=triton`` but the Triton kernels cannot run on this device.
    """
    want = choice()
    device = _device(where)
    if want == "triton":
        reason = _triton_status(device.type)
        if reason is not None:
            raise _unavailable(f"{ENV_VAR}=triton but the Triton kernels cannot run on {device.type} tensors here ({reason})")
        return True
    if want != "auto" or device.type != "cuda":
        return False
    reason = _triton_status("cuda")
    if reason is not None:
        _notice(f"the Triton kernels do not work here ({reason}); CUDA tensors take the slower reference path")
    return reason is None


def fast(where, proj):
    """The backend that runs ``proj``'s forward and transpose on ``where``: an object with
    ``forward(pp, x)`` and ``transpose(pp, y)`` (C or Triton), or None for the reference."""
    if use_triton(where):
        from squeeze.kernels import gpu

        return gpu if gpu.fits(proj.plan) else None
    return cpu(where) if proj.kind in FAST_KINDS else None


def theta0(plan, base, device) -> torch.Tensor | None:
    """theta_0 of ``plan`` by a fast backend on ``device``, or None where the reference runs."""
    if use_triton(device):
        from squeeze.kernels import gpu

        return gpu.theta0(plan, base, device)
    native = cpu(device)
    return None if native is None else native.theta0_all(plan, base)
