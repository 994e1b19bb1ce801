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
0.027 (CNN on digits) and 0.012 (MLP on MNIST-1D), each at exactly the teacher's accuracy; the
solve took 0.1-0.2 s. Its theta_d does not quantize: k-means to 16 levels kept 0.21-0.59 of the
teacher's test accuracy on three of those models (0.97-0.99 after only 10 iterations), so
``compress`` stores it as floats only. The default projection, SORF, solves best: a dense
Gaussian P of d = D is square and far worse conditioned (a small ResNet on digits: 0.94 of the
teacher's test predictions against 0.98 or more with SORF); whatever the solve gives is a
candidate like any other, validated and confirmed before it is kept.

    solve = teacher_in_subspace(sub, teacher, score=validation_objective)    # sub now holds the teacher
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Solve:
    """The kept iterate and how close its weights are: ``residual`` is ``|P theta_d - target| / |target|``;
    ``score`` is its score (None without one)."""

    iterations: int
    residual: float
    score: float | None = None


@torch.no_grad()
def teacher_in_subspace(sub, teacher: nn.Module, *, max_iter: int = 1600, tol: float = 1e-4, score: Callable[[], float] | None = None) -> Solve:
    """Set ``sub.theta_d`` to the least-squares fit of the teacher's weights and copy its buffers
    (BatchNorm statistics).

    Args:
        sub: a :class:`~squeeze.subspace.Subspace` whose every tensor is in the subspace and
            without layerwise scales (``sub.plain``), of the teacher's architecture.
        teacher: the dense model.
        max_iter: the most CGLS iterations (each one forward and one transpose of P).
        tol: stop once the relative residual is below this.
        score: lower is better, of ``sub`` as it stands (a validation objective): looked at
            after iterations 50, 100, 200, ... and the last, and the best iterate is kept. P of
            d = D is ill-conditioned when D is well below a power of two (SORF keeps D rows and
            columns of an orthogonal matrix of that size), and the residual's last part then
            costs large theta_d values for little: a LeNet on digits (D = 21,386 of 32,768)
            agreed with its teacher on 0.95 of the test images after 300 iterations, 0.99 after
            1,000 and 0.98 after 3,000. Without ``score``, the last iterate.

    Raises:
        ValueError: a subspace that is not plain, or a teacher whose tensors do not match.
    """
    if not sub.plain:
        raise ValueError("the teacher's least-squares fit needs every tensor in the subspace and no layerwise scales")
    state = teacher.state_dict()
    missing = [s.name for s in sub.manifest if s.name not in state or state[s.name].numel() != s.numel]
    if missing:
        raise ValueError(f"the teacher has no tensor {missing[0]!r} of the subspace's shape")
    for k, v in sub.extra_tensors().items():
        if k in state:
            v.copy_(state[k])
    device = sub.theta_d.device
    target = torch.cat([state[s.name].detach().reshape(-1).to(device, torch.float64) for s in sub.manifest]) - sub.theta_0.double()
    P = lambda x: sub.projection.forward(x.float()).double()  # noqa: E731
    PT = lambda y: sub.projection.transpose(y.float()).double()  # noqa: E731
    x = torch.zeros(sub.projection.d, dtype=torch.float64, device=device)
    r = target.clone()
    norm = float(target.norm()) or 1.0
    s = PT(r)
    p, gamma, it = s.clone(), float(s.dot(s)), 0
    kept, next_look = None, 50  # kept: (score, theta_d, iterations, residual)

    def look() -> None:
        nonlocal kept
        sub.theta_d.copy_(x.float())
        value = score() if score is not None else 0.0
        if kept is None or value < kept[0]:
            kept = (value, x.clone(), it, float(r.norm()) / norm)

    while it < max_iter and float(r.norm()) > tol * norm and gamma > 0:
        q = P(p)
        alpha = gamma / float(q.dot(q))
        x += alpha * p
        r -= alpha * q
        s = PT(r)
        g = float(s.dot(s))
        p = s + (g / gamma) * p
        gamma, it = g, it + 1
        if score is not None and it == next_look:
            look()
            next_look *= 2
    if kept is None or kept[2] != it:  # the last iterate
        look()
    value, x, it, residual = kept
    sub.theta_d.copy_(x.float())
    return Solve(iterations=it, residual=residual, score=value if score is not None else None)


__all__ = ["Solve", "teacher_in_subspace"]
