"""Loading a ``.sqz`` file into modules: the architecture it was made for (checked against its
manifest), the :class:`Subspace` it describes (its base checked, its digest verified), and the
plain regenerated ``nn.Module``. :mod:`squeeze.format` reads and writes the bytes; this module
turns a parsed file into weights.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from squeeze import arch as arch_mod, format as fmt, materialize as mat
from squeeze.base import ARCH, base_digest, load_base
from squeeze.errors import ArchError, DigestMismatch, FormatError, SqueezeError
from squeeze.format import SqzFile
from squeeze.meta import parameters_on_meta, skip_init, to_device
from squeeze.subspace import Subspace, check_manifest


def build_model(f: SqzFile, arch: str | nn.Module | None = None, arch_kwargs: dict | None = None, *, empty: bool = False) -> nn.Module:
    """The module the file was made for: ``arch`` if given, else the file's own reference.

    A reference read from the file is only followed to a ``torch.nn.Module`` class of an
    importable package: a file never makes squeeze run a Python file or call other code (pass
    ``arch`` to choose such an architecture yourself). The module is first built on the meta
    device and checked against the manifest, so arguments from a hostile file cannot make it
    allocate more than the manifest (already checked against memory) describes. With
    ``empty``, its parameters stay on the meta device (:func:`squeeze.meta.parameters_on_meta`).
    """
    if isinstance(arch, nn.Module):
        return arch
    if arch is None:
        if not f.arch:
            raise ArchError("the file does not record its architecture; pass arch= (e.g. 'squeeze.zoo:MLP')")
        ref, kwargs = f.arch["ref"], f.arch.get("kwargs", {})
        arch_mod.check_recorded_ref(ref)
    else:
        ref = arch
        kwargs = arch_kwargs if arch_kwargs is not None else f.arch.get("kwargs", {}) if f.arch and _same_factory(f.arch.get("ref", ""), arch) else {}
    try:
        with torch.device("meta"), skip_init():  # shapes only; no init (and no Python meta kernels)
            probe = arch_mod.build(ref, kwargs)
    except SqueezeError:
        raise
    except Exception:
        probe = None  # not every module builds on the meta device; the real build decides
    if probe is not None:
        try:
            check_manifest(f.manifest, probe)
        except ValueError as e:
            raise ArchError(str(e)) from None
    try:
        if empty:
            with parameters_on_meta():
                return arch_mod.build(ref, kwargs)
        return arch_mod.build(ref, kwargs)
    except SqueezeError:
        raise
    except Exception as e:
        raise ArchError(f"building {ref} with arguments {json.dumps(kwargs)[:200]} failed ({type(e).__name__}: {str(e)[:200]}); pass the architecture the file was made with") from None


def _same_factory(recorded: str, given: str) -> bool:
    """Whether ``given`` names the recorded factory, perhaps by another path to the same .py
    file (``mynet.py:Net`` recorded, ``/home/me/mynet.py:Net`` given): its kwargs then apply."""
    if recorded == given:
        return True
    (rw, _, rn), (gw, _, gn) = recorded.rpartition(":"), given.rpartition(":")
    return rn == gn and rw.endswith(".py") and gw.endswith(".py") and Path(rw).name == Path(gw).name


def load_subspace(
    source: str | os.PathLike | SqzFile,
    arch: str | nn.Module | None = None,
    *,
    arch_kwargs: dict | None = None,
    base=None,
    device: str | torch.device = "cpu",
    verify: bool = True,
) -> Subspace:
    """Rebuild the :class:`Subspace` of a file (and check its digest).

    Args:
        source: a path or a :class:`SqzFile`.
        arch: an architecture reference or module; defaults to the one in the file.
        arch_kwargs: keyword arguments for ``arch`` (defaults to the file's).
        base: the base of a fine-tune: a checkpoint path, ``"arch"`` (the weights the architecture
            builds itself with), a ``module:factory`` reference, a state_dict or a module.
        device: where to regenerate.
        verify: refuse regenerated weights whose digest differs from the file's.

    Raises:
        FormatError, ArchError, DigestMismatch, SqueezeError.
    """
    f = source if isinstance(source, SqzFile) else fmt.read(source)
    # theta_0, theta, the model's own copy and workspace (float32), and a sparse P's (D, k) table
    fmt.check_memory(f.D, f"the file describes {f.D:,} parameters", 16 + 40 * f.spec["p"].get("k", 0))
    # Without PyTorch's init: the weights are regenerated later, unless the base is the model's own.
    model = to_device(build_model(f, arch, arch_kwargs, empty=not (f.base is not None and str(base) == ARCH)), device)
    base_sd = None
    if f.base is not None:
        if base is None:
            raise SqueezeError(f"this file is a fine-tune of a base model (digest {f.base[:16]}...); pass base= with that checkpoint, or base='arch' if the architecture loads its pretrained weights itself")
        base_sd = load_base(base, model=model)
        names = [s.name for s in f.manifest if s.init[0] == "b"]
        absent = [n for n in names if n not in base_sd]
        if absent:
            raise SqueezeError(f"the base lacks tensors the file needs: {', '.join(absent[:6])}; pass the base the file was made with")
        got = base_digest(base_sd, names)
        if got != f.base:
            raise SqueezeError(f"the base checkpoint has digest {got[:16]}..., but the file was made against {f.base[:16]}...; pass the original base")
    try:
        sub = Subspace(model, f.config(), base=base_sd, manifest=f.manifest, projection_spec=f.spec["p"])
    except ValueError as e:
        raise ArchError(str(e)) from None
    if sub.theta_d.numel() != f.theta_d.numel():
        raise FormatError(f"the file holds {f.theta_d.numel()} theta_d values but its spec implies {sub.theta_d.numel()}; the file is damaged")
    with torch.no_grad():
        sub.theta_d.copy_(f.theta_d.to(device))
        if sub.scales is not None:
            if f.scales is None or f.scales.numel() != sub.scales.numel():
                raise FormatError("the file's layerwise scales do not match its spec; the file is damaged")
            sub.scales.copy_(f.scales.to(device))
    _load_extras(sub, f.extras)
    if verify:
        check_digests(f, sub.digest())
    return sub


def check_digests(f: SqzFile, weights_sha256: str) -> None:
    """Refuse stored buffers, or regenerated weights (their SHA-256 given), that differ from the file's digests.

    Raises:
        DigestMismatch: either differs.
    """
    if (f.buffers_sha256 or f.extras) and (f.buffers_sha256 is None or fmt.buffers_digest(f.extras) != f.buffers_sha256):
        raise DigestMismatch("the stored buffers (BatchNorm statistics) do not match their SHA-256 in the file; the file is damaged")
    if weights_sha256 != f.weights_sha256:
        raise DigestMismatch(f"regenerated weights have SHA-256 {weights_sha256[:16]}..., the file says {f.weights_sha256[:16]}...; the file is damaged or was made by an incompatible squeeze")


def _load_extras(sub: Subspace, extras: dict[str, torch.Tensor]) -> None:
    want = sub.extra_tensors()
    missing = [k for k in want if k not in extras]
    unexpected = [k for k in extras if k not in want]
    bad = [k for k in want if k in extras and (extras[k].shape != want[k].shape or extras[k].dtype != want[k].dtype)]
    if missing or unexpected or bad:
        raise ArchError(f"the file's buffers do not match the architecture (missing {missing[:6]}, unexpected {unexpected[:6]}, wrong shape or dtype {bad[:6]}); pass the architecture the file was made with")
    with torch.no_grad():
        for k, v in want.items():
            v.copy_(extras[k])


def load(path: str | os.PathLike, arch: str | nn.Module | None = None, *, base=None, device: str | torch.device = "cpu") -> nn.Module:
    """Regenerate a plain ``nn.Module`` (eval mode) from a ``.sqz`` file, verifying its digest
    (computed while each parameter is regenerated into its own storage)."""
    f = fmt.read(path)
    model, got = mat.materialize(load_subspace(f, arch, base=base, device=device, verify=False))
    check_digests(f, got)
    return model.eval()


def dense_state_dict(sub: Subspace) -> dict[str, torch.Tensor]:
    """The full state_dict of the regenerated model (loads with ``strict=True``)."""
    return {k: v.detach().cpu().contiguous() for k, v in sub.materialize().state_dict().items()}


__all__ = ["build_model", "check_digests", "dense_state_dict", "load", "load_subspace"]
