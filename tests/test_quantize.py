"""Quantization: deterministic 1-D k-means, the straight-through estimator, quantization-aware fine-tuning."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from squeeze.quantize import STEQuantizer, dequantize, kmeans_quantize, nearest, quantization_aware_finetune, ste_quantize
from squeeze.subspace import Subspace, SubspaceConfig


@pytest.fixture
def one_thread():
    """The models here are tiny: extra threads only add synchronisation (badly so on a busy machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_nearest_matches_brute_force():
    x = torch.randn(5000, generator=_gen(0))
    cb = torch.randn(13, generator=_gen(1))  # unsorted
    brute = (x[:, None] - cb[None, :]).abs().argmin(dim=1)
    assert torch.equal(cb[nearest(x, cb)], cb[brute])


@pytest.mark.parametrize("L", [2, 4, 8, 16, 32])
def test_kmeans_is_a_lloyd_fixed_point(L):
    x = torch.randn(20000, generator=_gen(L))
    cb, codes = kmeans_quantize(x, L)
    assert cb.dtype == torch.float32 and cb.shape == (L,) and codes.dtype == torch.int64 and codes.shape == x.shape
    assert torch.all(cb[1:] >= cb[:-1])
    assert torch.equal(codes, nearest(x, cb))  # every value goes to its nearest centre
    for k in range(L):  # every centre is the mean of its values
        assert cb[k].item() == pytest.approx(x[codes == k].double().mean().item(), abs=1e-5)


def test_kmeans_is_deterministic_and_near_lloyd_max():
    x = torch.randn(50000, generator=_gen(7))
    cb1, c1 = kmeans_quantize(x, 8)
    cb2, c2 = kmeans_quantize(x.clone(), 8)
    assert torch.equal(cb1, cb2) and torch.equal(c1, c2)
    mse = ((dequantize(cb1, c1) - x) ** 2).mean().item()
    assert mse == pytest.approx(0.03454, rel=0.05)  # the Lloyd-Max 8-level Gaussian quantizer


def test_kmeans_recovers_clusters_and_few_distinct_values():
    x = torch.tensor([-1.0, 2.0, 5.0]).repeat_interleave(100)
    cb, codes = kmeans_quantize(x, 3)
    assert cb.tolist() == [-1.0, 2.0, 5.0]
    assert torch.equal(dequantize(cb, codes), x)
    cb, codes = kmeans_quantize(torch.tensor([0.5, 0.5, 1.5]), 8)  # fewer distinct values than L
    assert torch.equal(dequantize(cb, codes), torch.tensor([0.5, 0.5, 1.5]))


def test_kmeans_rejects_bad_input():
    with pytest.raises(ValueError, match="levels"):
        kmeans_quantize(torch.randn(10), 0)
    with pytest.raises(ValueError, match="1-D"):
        kmeans_quantize(torch.randn(2, 3), 4)
    with pytest.raises(ValueError, match="NaN"):
        kmeans_quantize(torch.tensor([0.0, float("nan")]), 2)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        dequantize(torch.zeros(2), torch.tensor([2]))


def test_ste_values_and_gradients():
    x = torch.tensor([-0.9, -0.2, 0.1, 0.4, 1.3], requires_grad=True)
    cb = torch.tensor([0.0, -1.0, 1.0], requires_grad=True)  # unsorted on purpose
    out = ste_quantize(x, cb)
    assert out.tolist() == [-1.0, 0.0, 0.0, 0.0, 1.0]
    g = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    out.backward(g)
    assert torch.equal(x.grad, g)  # straight through
    assert cb.grad.tolist() == [2.0 + 3.0 + 4.0, 1.0, 5.0]  # summed over each entry's values


def test_ste_quantizer_module():
    q = STEQuantizer(torch.tensor([-1.0, 1.0]))
    assert isinstance(q.codebook, nn.Parameter)
    x = torch.tensor([-0.3, 0.2])
    assert q(x).tolist() == [-1.0, 1.0] and q.codes(x).tolist() == [0, 1]


def _problem(layerwise: bool = False):
    g = _gen(0)
    X = torch.randn(512, 8, generator=g)
    y = (X @ torch.randn(8, 3, generator=g)).argmax(dim=1)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))
    sub = Subspace(model, SubspaceConfig(dim=64, seed=3, layerwise=layerwise))
    batches = [(X[i : i + 128], y[i : i + 128]) for i in range(0, 512, 128)]
    opt = torch.optim.Adam(sub.parameters(), lr=0.05)
    for _ in range(5):
        for xb, yb in batches:
            opt.zero_grad()
            F.cross_entropy(sub(xb), yb).backward()
            opt.step()
    return sub, batches, X, y


def _loss(model, batch):
    return F.cross_entropy(model(batch[0]), batch[1])


def test_qat_with_zero_steps_is_kmeans(one_thread):
    sub, batches, _, _ = _problem()
    expect_cb, expect_codes = kmeans_quantize(sub.theta_d.detach().clone(), 4)
    cb, codes = quantization_aware_finetune(sub, _loss, batches, levels=4, steps=0, lr=1e-2)
    assert torch.equal(cb, expect_cb) and torch.equal(codes, expect_codes)
    assert torch.equal(sub.theta_d.detach(), cb[codes])


@pytest.mark.parametrize("layerwise", [False, True])
def test_qat_writes_quantized_values_and_beats_plain_kmeans(layerwise, one_thread):
    sub, batches, X, y = _problem(layerwise)
    param = sub.theta_d
    scales = None if sub.scales is None else sub.scales.detach().clone()
    start = sub.theta_d.detach().clone()
    with torch.no_grad():
        cb0, codes0 = kmeans_quantize(start, 2)
        sub.theta_d.copy_(cb0[codes0])
        loss_kmeans = F.cross_entropy(sub(X), y).item()
        sub.theta_d.copy_(start)

    cb, codes = quantization_aware_finetune(sub, _loss, batches, levels=2, steps=60, lr=1e-2)
    assert sub.theta_d is param  # updated in place, not replaced
    assert cb.shape == (2,) and torch.all(cb[1:] >= cb[:-1])
    assert torch.equal(sub.theta_d.detach(), cb[codes])
    if scales is not None:
        assert torch.equal(sub.scales.detach(), scales)  # left alone
    with torch.no_grad():
        loss_qat = F.cross_entropy(sub(X), y).item()
    assert loss_qat < loss_kmeans, (loss_qat, loss_kmeans)


def test_qat_rejects_a_used_up_iterator(one_thread):
    sub, batches, _, _ = _problem()
    with pytest.raises(ValueError, match="empty"):
        quantization_aware_finetune(sub, _loss, iter(batches), levels=4, steps=10, lr=1e-2)
