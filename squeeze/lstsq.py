"""The teacher's own weights in a subspace that spans them all (d = D): least squares, no training.

At d = D the projection P is square and of full rank, so ``theta_0 + P theta_d`` can be the
teacher itself: ``theta_d`` solves ``min |P theta_d - (theta_teacher - theta_0)|``, found by
conjugate gradients on the normal equations (CGLS) with the projection's own forward and
transpose. ``compress`` uses it for its largest candidate (:meth:`squeeze.frontier.Search.fit`):
distilling at d = D from zero took the longest fits of a search and could keep less of the
teacher than the teacher's own weights do (an MLP on MNIST-1D kept 0.90 of its teacher's test
accuracy at d = D, issue 25), while the solve takes a fraction of a second.

Measured on the teachers of ``benchmarks/selection.py`` (seed 0; test accuracy of the solved
weights against the teacher's): 300 iterations left relative residuals of 0.004 (GRU on MNIST-1D),
0.027 (CNN on digits) and 0.012 (MLP on MNIST-1D), each at exactly the teacher's accuracy.

    info = teacher_in_subspace(sub, teacher)    # sub.theta_d and its buffers now hold the teacher
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Solve:
    """How close the solved weights are: ``residual`` is ``|P theta_d - target| / |target|``."""

    iterations: int
    residual: float


@torch.no_grad()
def teacher_in_subspace(sub, teacher: nn.Module, *, max_iter: int = 300, tol: float = 1e-3) -> Solve:
    """Set ``sub.theta_d`` to the least-squares fit of the teacher's weights and copy its buffers
    (BatchNorm statistics).

    Args:
        sub: a :class:`~squeeze.subspace.Subspace` whose every tensor is in the subspace and
            without layerwise scales (``sub.plain``), of the teacher's architecture.
        teacher: the dense model.
        max_iter: the most CGLS iterations (each one forward and one transpose of P).
        tol: stop once the relative residual is below this.

    Raises:
        ValueError: a subspace that is not plain, or a teacher whose tensors do not match.
    """
    if not sub.plain:
        raise ValueError("the teacher's least-squares fit needs every tensor in the subspace and no layerwise scales")
    state = teacher.state_dict()
    missing = [s.name for s in sub.manifest if s.name not in state or state[s.name].numel() != s.numel]
    if missing:
        raise ValueError(f"the teacher has no tensor {missing[0]!r} of the subspace's shape")
    device = sub.theta_d.device
    target = torch.cat([state[s.name].detach().reshape(-1).to(device, torch.float64) for s in sub.manifest]) - sub.theta_0.double()
    P = lambda x: sub.projection.forward(x.float()).double()
    PT = lambda y: sub.projection.transpose(y.float()).double()
    x = torch.zeros(sub.projection.d, dtype=torch.float64, device=device)
    r = target.clone()
    norm = float(target.norm()) or 1.0
    s = PT(r)
    p, gamma, it = s.clone(), float(s.dot(s)), 0
    while it < max_iter and float(r.norm()) > tol * norm and gamma > 0:
        q = P(p)
        alpha = gamma / float(q.dot(q))
        x += alpha * p
        r -= alpha * q
        s = PT(r)
        g = float(s.dot(s))
        p = s + (g / gamma) * p
        gamma, it = g, it + 1
    sub.theta_d.copy_(x.float())
    buffers = sub.extra_tensors()
    for k, v in buffers.items():
        if k in state:
            v.copy_(state[k])
    return Solve(iterations=it, residual=float(r.norm()) / norm)


__all__ = ["Solve", "teacher_in_subspace"]
