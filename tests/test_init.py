"""theta_0: per-tensor init specs against PyTorch's own defaults, and exact regeneration."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from torch import nn

from squeeze import rng
from squeeze import plan
from squeeze.init import regenerate_theta0, segment_theta0
from squeeze.manifest import TensorSpec, build_manifest, manifest_text, parse_manifest_text, round_bits

pytestmark = pytest.mark.usefixtures("one_thread")

# ---------------------------------------------------------------- modules under test

# Each variance is pooled over fresh inits (PyTorch) and seeds (squeeze) up to 32k samples
# (at least 16k: 64 draws of the smallest tensor). The sample variance of a uniform then has
# a relative sd of at most 0.7% (Gaussian 1.1%), so 5% is several standard deviations wide.
N_SAMPLES = 1 << 15
MAX_DRAWS = 64


class Custom(nn.Module):
    """A module no rule knows: theta_0 falls back to its own measured std / constant."""

    def __init__(self):
        super().__init__()
        self.kernel = nn.Parameter(torch.randn(256, 256) * 0.05)
        self.gain = nn.Parameter(torch.full((64,), 0.5))

    def forward(self, x):
        return x @ self.kernel * self.gain.mean()


class ScaledLinear(nn.Linear):
    """A Linear subclass with one more parameter of its own (a constant gain of 2)."""

    def __init__(self, i: int, o: int):
        super().__init__(i, o)
        self.gain = nn.Parameter(torch.full((o,), 2.0))


MODULES = {
    "linear": lambda: nn.Linear(16, 4096),
    "conv1d": lambda: nn.Conv1d(16, 4096, 2),
    "conv2d": lambda: nn.Conv2d(8, 4096, 2),
    "conv3d": lambda: nn.Conv3d(4, 4096, 2),
    "conv2d_groups": lambda: nn.Conv2d(64, 4096, 2, groups=8),
    "conv_transpose2d": lambda: nn.ConvTranspose2d(8, 4096, 2),  # fan_in from weight.shape[1]
    "bilinear": lambda: nn.Bilinear(8, 16, 2048),
    "batchnorm1d": lambda: nn.BatchNorm1d(64),
    "batchnorm2d": lambda: nn.BatchNorm2d(64),
    "batchnorm3d": lambda: nn.BatchNorm3d(64),
    "layernorm": lambda: nn.LayerNorm([8, 16]),
    "groupnorm": lambda: nn.GroupNorm(4, 64),
    "instancenorm_affine": lambda: nn.InstanceNorm2d(16, affine=True),
    "embedding": lambda: nn.Embedding(1000, 64),
    "embedding_padding": lambda: nn.Embedding(1000, 64, padding_idx=0),
    "mha": lambda: nn.MultiheadAttention(256, 4, add_bias_kv=True),
    "mha_kdim_vdim": lambda: nn.MultiheadAttention(256, 4, kdim=64, vdim=32),
    "rnn": lambda: nn.RNN(16, 256),
    "gru": lambda: nn.GRU(16, 128, num_layers=2),
    "lstm": lambda: nn.LSTM(16, 128, num_layers=2, proj_size=32),
    "custom": Custom,
}


def _cases():
    out = []
    for case, factory in MODULES.items():
        for name, _ in factory().named_parameters():
            out.append(pytest.param(case, name, id=f"{case}:{name}"))
    return out


@functools.cache
def _pooled(case: str):
    """(manifest, {name: torch's fresh values pooled over several inits}, draws per tensor)."""
    torch.manual_seed(0)
    first = MODULES[case]()
    manifest = build_manifest(first)
    draws = {s.name: min(MAX_DRAWS, math.ceil(N_SAMPLES / s.numel)) for s in manifest}
    pools = {n: [p.detach().reshape(-1).clone()] for n, p in first.named_parameters()}
    for _ in range(max(draws.values()) - 1):
        for n, p in MODULES[case]().named_parameters():
            if len(pools[n]) < draws[n]:
                pools[n].append(p.detach().reshape(-1).clone())
    return manifest, {n: torch.cat(v).double() for n, v in pools.items()}, draws


@pytest.mark.parametrize("case,name", _cases())
def test_theta0_variance_matches_pytorch_default(case, name):
    manifest, pools, draws = _pooled(case)
    index = next(i for i, s in enumerate(manifest) if s.name == name)
    spec = manifest[index]
    fresh = pools[name]
    regen = torch.cat([segment_theta0(plan.build(manifest, seed).segments[index]) for seed in range(draws[name])]).double()
    assert regen.dtype == torch.float64 and regen.numel() == fresh.numel()
    if spec.init[0] == "c":
        # constants must be exactly PyTorch's constant
        assert torch.equal(regen, fresh), f"{case}:{name}: spec {spec.init}, PyTorch gives {fresh.unique()[:5].tolist()}"
        return
    v_torch = float(fresh.var(unbiased=False))
    v_regen = float(regen.var(unbiased=False))
    assert v_torch > 0, f"{case}:{name}: PyTorch initialises it to a constant {float(fresh[0])}, squeeze draws {spec.init}"
    assert abs(v_regen / v_torch - 1) < 0.05, f"{case}:{name}: variance {v_regen:.4g} vs PyTorch {v_torch:.4g} ({spec.init})"
    assert abs(float(regen.mean())) < 5 * math.sqrt(v_regen / regen.numel())


def test_extra_parameter_on_a_known_module_subclass_uses_the_measured_fallback():
    spec = {s.name: s for s in build_manifest(ScaledLinear(64, 128))}
    assert spec["weight"].init == ("u", round_bits(1 / 8))
    assert spec["gain"].init == ("c", 2.0)


# ---------------------------------------------------------------- specs


def test_kaiming_bounds_follow_pytorch_fan_in():
    m = {s.name: s.init for s in build_manifest(nn.Sequential(nn.Linear(100, 7), nn.Conv2d(6, 4, 3, groups=2), nn.ConvTranspose1d(4, 6, 5)))}
    assert m["0.weight"] == m["0.bias"] == ("u", round_bits(1 / math.sqrt(100)))
    assert m["1.weight"] == m["1.bias"] == ("u", round_bits(1 / math.sqrt(3 * 9)))
    assert m["2.weight"] == m["2.bias"] == ("u", round_bits(1 / math.sqrt(6 * 5)))


def test_specs_do_not_depend_on_the_modules_random_values():
    def make():
        return nn.Sequential(nn.Linear(10, 20), nn.LayerNorm(20), nn.Embedding(5, 20), nn.LSTM(20, 8))

    torch.manual_seed(1)
    a = build_manifest(make())
    torch.manual_seed(2)
    b = build_manifest(make())
    assert a == b


def test_shared_parameters_appear_once_under_the_first_name():
    lin = nn.Linear(4, 4)
    model = nn.Sequential(lin, nn.ReLU(), lin)
    assert [s.name for s in build_manifest(model)] == ["0.weight", "0.bias"]


@pytest.mark.parametrize("x", [1.0, 0.1, 1 / math.sqrt(3), math.sqrt(3), 1e-5, 12345.678, 2.0**-40])
def test_round_bits_keeps_eight_significant_bits(x):
    r = round_bits(x)
    m, _ = math.frexp(r)
    assert m * 256 == int(m * 256)
    assert abs(r / x - 1) <= 2.0**-9
    assert float(torch.tensor(r, dtype=torch.float32)) == r  # exact in float32


def test_uniform_theta0_is_an_exact_product_fma_safe():
    # every 16-bit draw times an 8-bit bound is exact in float32, so a fused multiply-add
    # (compiled kernels) and separate ops give the same bits
    spec = TensorSpec("w", (300, 301), ("u", round_bits(1 / math.sqrt(301))))
    t = segment_theta0(plan.build([spec], seed=99).segments[0])
    key = rng.stream_key(99, rng.stream_id(rng.STREAM_INIT, 0))
    exact = rng.uniform16(key, spec.numel).double() * spec.init[1]
    assert torch.equal(t.double(), exact)
    assert float(t.abs().max()) < spec.init[1]


def test_theta0_layout_one_stream_per_manifest_entry():
    manifest = [TensorSpec("a", (3, 5), ("u", 0.5)), TensorSpec("b", (4,), ("c", 1.0)), TensorSpec("c", (7,), ("u", 0.25))]
    theta = regenerate_theta0(manifest, seed=2**63 + 1)
    assert theta.dtype == torch.float32 and theta.shape == (15 + 4 + 7,)
    for i, (lo, hi) in ((0, (0, 15)), (2, (19, 26))):
        key = rng.stream_key(2**63 + 1, rng.stream_id(rng.STREAM_INIT, i))
        assert torch.equal(theta[lo:hi], rng.uniform16(key, hi - lo) * manifest[i].init[1])
    assert torch.equal(theta[15:19], torch.ones(4))


def test_base_tensors_come_from_the_base():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    manifest = build_manifest(model, base_names={"0.weight"})
    assert manifest[0].init == ("b",)
    base = {"0.weight": torch.arange(12, dtype=torch.float64).reshape(4, 3)}
    theta = regenerate_theta0(manifest, seed=0, base=base)
    assert torch.equal(theta[:12], torch.arange(12, dtype=torch.float32))
    assert torch.equal(theta[12:], regenerate_theta0(build_manifest(model), seed=0)[12:])
    with pytest.raises(ValueError, match="base"):
        regenerate_theta0(manifest, seed=0)


def test_tensor_spec_text_round_trip_and_rejects_bad_entries():
    specs = [
        TensorSpec("x.w", (2, 3), ("u", 0.125)),
        TensorSpec("b", (0,), ("c", 1.0)),
        TensorSpec("e", (5,), ("b",)),
        TensorSpec("scalar", (), ("c", -0.1)),
        TensorSpec("odd name;with:seps", (4,), ("u", round_bits(1 / 3))),
    ]
    assert [s.to_text() for s in specs[:4]] == ["x.w:2x3:u1p-3", "b:0:c1p0", "e:5:b", "scalar::c-3602879701896397p-55"]
    assert parse_manifest_text(manifest_text(specs)) == specs  # exact, separators escaped
    for bad in ("w:2:gauss1p0", "w:-1:c0p0", "w:2", "w:2:u0.5", "w:2:unan", "w:2x:u1p0"):
        with pytest.raises(ValueError):
            TensorSpec.from_text(bad)
