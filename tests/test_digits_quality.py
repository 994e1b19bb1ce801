"""Quality floor on real data: a subspace of d = 1000 reaches 90% of dense accuracy on digits.

scikit-learn's ``load_digits`` (1797 8x8 images, bundled with scikit-learn, no download); an
MLP 64-128-10 (D = 9610) trained densely and in a sorf subspace with Adam in the same test.
torch.manual_seed fixes the dense init and the data order only; the subspace's theta_0 and P
come from its own seed.
"""

from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from squeeze.subspace import Subspace, SubspaceConfig

pytestmark = pytest.mark.usefixtures("one_thread")

EPOCHS = 20
BATCH = 64


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))


def _data():
    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X / 16.0, y, test_size=0.3, random_state=0, stratify=y)
    return (
        torch.tensor(Xtr, dtype=torch.float32),
        torch.tensor(ytr),
        torch.tensor(Xte, dtype=torch.float32),
        torch.tensor(yte),
    )


def _train(module: nn.Module, params, lr: float, data) -> float:
    """Adam on cross-entropy, shuffled minibatches; returns test accuracy."""
    Xtr, ytr, Xte, yte = data
    opt = torch.optim.Adam(params, lr=lr)
    order = torch.Generator().manual_seed(0)
    module.train()
    for _ in range(EPOCHS):
        perm = torch.randperm(len(Xtr), generator=order)
        for i in range(0, len(Xtr), BATCH):
            idx = perm[i : i + BATCH]
            loss = nn.functional.cross_entropy(module(Xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    module.eval()
    with torch.no_grad():
        return float((module(Xte).argmax(1) == yte).float().mean())


def test_subspace_reaches_90_percent_of_dense_accuracy_on_digits():
    data = _data()
    torch.manual_seed(0)
    dense = mlp()
    dense_acc = _train(dense, dense.parameters(), 1e-2, data)

    sub = Subspace(mlp(), SubspaceConfig(dim=1000, projection="sorf", seed=0))
    assert sub.D == 64 * 128 + 128 + 128 * 10 + 10 and sub.theta_d.numel() == 1000
    sub_acc = _train(sub, [sub.theta_d], 5e-2, data)

    assert dense_acc >= 0.9, f"dense baseline too weak: {dense_acc:.3f}"
    assert sub_acc >= 0.9 * dense_acc, f"subspace accuracy {sub_acc:.3f} < 90% of dense {dense_acc:.3f}"
    # the trained subspace model regenerates to a plain module with the same predictions
    Xte = data[2]
    with torch.no_grad():
        assert torch.equal(sub.materialize().eval()(Xte).argmax(1), sub(Xte).argmax(1))
