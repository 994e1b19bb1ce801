"""Embedding tables regenerated where looked up (squeeze.lookup): the same outputs and gradients,
bit for bit, as the whole table, whatever else reads the table."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from squeeze import Subspace, SubspaceConfig, lookup


class Bag(nn.Module):
    """An embedding (optionally tied to the output layer, or read whole by the forward) and a head."""

    def __init__(self, vocab=700, width=48, tied=False, reads_weight=False, max_norm=None):
        super().__init__()
        self.emb = nn.Embedding(vocab, width, max_norm=max_norm)
        self.pos = nn.Embedding(8, width)
        self.mix = nn.Linear(width, width)
        self.head = nn.Linear(width, 5)
        self.tied, self.reads_weight = tied, reads_weight

    def forward(self, ids):
        h = self.emb(ids) + self.pos(torch.arange(ids.shape[1]))
        h = torch.tanh(self.mix(h)).mean(1)
        if self.tied:
            return F.linear(h, self.emb.weight)[:, :5]
        out = self.head(h)
        if self.reads_weight:
            out = out + self.emb.weight.square().mean()
        return out


def _whole_tables(sub):
    return sub.tensors(), contextlib.nullcontext()


def _run(sub, ids, y):
    sub.zero_grad(set_to_none=True)
    out = sub(ids)
    F.cross_entropy(out, y).backward()
    grads = [p.grad.clone() for p in sub.parameters() if p.requires_grad]
    return out.detach().clone(), grads


def _subspace(model, **config):
    torch.manual_seed(3)
    sub = Subspace(model, SubspaceConfig(seed=11, **config))
    with torch.no_grad():
        sub.theta_d.normal_(0, 0.05)
        if sub.scales is not None:
            sub.scales.uniform_(0.5, 1.5)
    return sub


CASES = {
    "sorf layerwise, pieces wider than a row": dict(dim=300, layerwise=True),
    "sorf, rows wider than a piece": dict(dim=12),
    "dense": dict(dim=40, projection="dense"),
    "sparse": dict(dim=40, projection="sparse"),
    "table outside the subspace": dict(dim=50, include=("mix.*", "head.*")),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("model", ["plain", "tied", "reads weight", "max_norm"])
def test_lookups_give_the_whole_tables_bits(case, model, monkeypatch):
    kw = {"plain": {}, "tied": {"tied": True}, "reads weight": {"reads_weight": True}, "max_norm": {"max_norm": 1.0}}[model]
    sub = _subspace(Bag(**kw), **CASES[case])
    ids = torch.tensor([[3, 17, 17, 650, 2, 0], [699, 5, 6, 7, 8, 9]])
    y = torch.tensor([1, 4])
    lazy_out, lazy_grads = _run(sub, ids, y)
    with monkeypatch.context() as m:
        m.setattr(Subspace, "_forward_tensors", _whole_tables)
        out, grads = _run(sub, ids, y)
    assert torch.equal(lazy_out, out)
    assert len(grads) == len(lazy_grads) >= 1
    for a, b in zip(lazy_grads, grads):
        assert torch.equal(a, b)


def test_a_lookup_fills_only_the_pieces_of_its_rows():
    sub = _subspace(Bag(vocab=3000, width=32), dim=100, layerwise=True)
    tensors, lookups = sub._forward_tensors()
    assert isinstance(lookups, lookup.Lookups)
    table = tensors["emb.weight"]
    lazy = lookups._lazy(table)
    assert lazy is not None and lazy.unit == 128 and not lazy.filled.any()
    ids = torch.tensor([[0, 1, 2999]])
    with lookups:
        looked_up = F.embedding(ids, table)
    assert 1 <= lazy.filled.sum() <= 4 < len(lazy.filled)
    assert torch.equal(looked_up[0], sub.tensors()["emb.weight"][ids[0]])
    with lookups:
        whole = table * 1.0  # any other use fills the rest first
    assert lazy.filled.all()
    assert torch.equal(whole, sub.tensors()["emb.weight"])


def test_a_model_without_embeddings_runs_as_before():
    model = nn.Sequential(nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 2))
    sub = _subspace(model, dim=20)
    tensors, context = sub._forward_tensors()
    assert isinstance(context, contextlib.nullcontext)
    assert set(tensors) == {s.name for s in sub.manifest}


def test_a_sparse_embedding_of_the_model_trains_with_the_dense_ones_bits(monkeypatch):
    sparse_model, dense_model = Bag(), Bag()
    sparse_model.emb.sparse = True  # its gradient comes sparse, even without squeeze.lookup
    ids, y = torch.tensor([[4, 4, 9, 123]]), torch.tensor([2])
    sparse_out, sparse_grads = _run(_subspace(sparse_model, dim=64, layerwise=True), ids, y)
    with monkeypatch.context() as m:
        m.setattr(Subspace, "_forward_tensors", _whole_tables)
        out, grads = _run(_subspace(dense_model, dim=64, layerwise=True), ids, y)
    assert torch.equal(sparse_out, out)
    for a, b in zip(sparse_grads, grads, strict=True):
        assert torch.equal(a, b)
