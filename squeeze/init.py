"""theta_0 by the reference path: the draws of a plan's segments (the definition of the bits).

A manifest entry's init spec (:mod:`squeeze.manifest`) becomes a plan segment
(:mod:`squeeze.plan`); its theta_0 is uniform16 draws of stream ``(STREAM_INIT, index)`` times
the bound (kind ``u``), the constant (``c``), or the base checkpoint's tensor (``b``).
"""

from __future__ import annotations

import torch

from squeeze import kernels, plan, rng
from squeeze.manifest import TensorSpec


def segment_theta0(seg: plan.Segment, device: torch.device | str = "cpu") -> torch.Tensor:
    """The reference theta_0 of a ``u`` or ``c`` segment: uniform16 draws times the bound, or the constant."""
    if seg.kind == "c":
        return torch.full((seg.numel,), seg.value, dtype=torch.float32, device=device)
    return rng.uniform16(seg.key, seg.numel, device) * seg.value


def plan_theta0(rplan: plan.RegenPlan, base: dict[str, torch.Tensor] | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
    """The flat float32 theta_0 of a plan: a fast backend where one runs, else the reference."""
    fast = kernels.theta0(rplan, base, device)
    if fast is not None:
        return fast
    parts = [rplan.base_tensor(seg, base, device) if seg.kind == "b" else segment_theta0(seg, device) for seg in rplan.segments]
    return torch.cat(parts) if parts else torch.zeros(0, device=device)


def regenerate_theta0(
    manifest: list[TensorSpec], seed: int, base: dict[str, torch.Tensor] | None = None, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """The flat float32 theta_0 (D values) in manifest order."""
    return plan_theta0(plan.build(manifest, seed), base, device)
