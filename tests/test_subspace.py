"""Subspace: golden digests, theta_d = 0 gives theta_0, include/layerwise, gradients,
determinism across processes, thread counts and torch.compile, and errors."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from squeeze.init import regenerate_theta0
from squeeze.projection import make_projection
from squeeze.subspace import Subspace, SubspaceConfig, digest_of

pytestmark = pytest.mark.usefixtures("one_thread")

KINDS = ["sorf", "dense", "sparse"]
SEED = 2024
DIM = 64


def zoo_model() -> nn.Module:
    """A small zoo-like model (conv, batch norm, linear, layer norm); input (N, 3, 4, 4)."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 32),
        nn.LayerNorm(32),
        nn.ReLU(),
        nn.Linear(32, 10),
    )


def golden_theta_d(d: int) -> torch.Tensor:
    return torch.arange(d, dtype=torch.float32) / d - 0.5


LAYERWISE = SubspaceConfig(dim=DIM, seed=SEED, layerwise=True, include=("0.weight", "4.*", "7.weight"))
LAYERWISE_SCALES = torch.tensor([0.5, -2.0, 3.25, 1.0])  # 0.weight, 4.weight, 4.bias, 7.weight

# Golden digests (SHA-256 of the float32 little-endian weights in manifest order) of
# zoo_model() with seed 2024, dim 64, theta_d = arange(d) / d - 0.5. D = 4762. From the
# conformance table (tests/conformance.json, run on every backend by tests/test_conformance.py).
# Changing any of these is a format change: bump format_version (DESIGN.md, rule 6).
_GOLDEN = {r["case"]: r["sha256"] for r in json.loads((Path(__file__).with_name("conformance.json")).read_text())["subspace"]}
GOLDEN_THETA0 = _GOLDEN.pop("theta_0")
GOLDEN_THETA = _GOLDEN


def golden_subspace(kind: str) -> Subspace:
    """The golden case of ``kind`` (or ``sorf/layerwise``) with its theta_d (and scales) set."""
    config = LAYERWISE if kind == "sorf/layerwise" else SubspaceConfig(dim=DIM, projection=kind, seed=SEED)
    sub = Subspace(zoo_model(), config)
    with torch.no_grad():
        sub.theta_d.copy_(golden_theta_d(sub.theta_d.numel()))
        if sub.scales is not None:
            sub.scales.copy_(LAYERWISE_SCALES)
    return sub


def golden_digests() -> dict[str, str]:
    """theta_0 and theta digests of every golden case (also computed in a second process)."""
    out = {"theta_0": digest_of(Subspace(zoo_model(), SubspaceConfig(dim=DIM, seed=SEED)).theta_0)}
    for kind in GOLDEN_THETA:
        out[kind] = golden_subspace(kind).digest()
    return out


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().view(torch.int32)


# ---------------------------------------------------------------- golden


def test_golden_theta0_digest():
    sub = Subspace(zoo_model(), SubspaceConfig(dim=DIM, seed=SEED))
    assert sub.D == 4762
    assert digest_of(sub.theta_0) == GOLDEN_THETA0
    assert sub.digest() == GOLDEN_THETA0  # theta_d starts at zero


@pytest.mark.parametrize("kind", list(GOLDEN_THETA))
def test_golden_theta_digest(kind):
    sub = golden_subspace(kind)
    assert sub.digest() == GOLDEN_THETA[kind]
    assert digest_of(sub.theta()) == GOLDEN_THETA[kind]


def test_digest_of_is_sha256_of_little_endian_float32():
    t = torch.tensor([1.0, -2.5, 3.0e-39, float("inf")])
    expected = hashlib.sha256(struct.pack("<4f", *t.tolist())).hexdigest()
    assert digest_of(t) == expected
    assert digest_of(t.double()) == expected
    assert digest_of(torch.stack([t, t], 1)[:, 0]) == expected  # non-contiguous view


# ---------------------------------------------------------------- determinism


def test_same_digests_in_a_second_process_with_another_thread_count():
    tests = Path(__file__).parent
    code = (
        "import importlib.util, json, torch\n"
        "torch.set_num_threads(2)\n"
        "out = {}\n"
        "for name in ('test_projection', 'test_subspace'):\n"
        f"    spec = importlib.util.spec_from_file_location(name, {str(tests)!r} + '/' + name + '.py')\n"
        "    mod = importlib.util.module_from_spec(spec)\n"
        "    spec.loader.exec_module(mod)\n"
        "    out.update({name + ':' + k: v for k, v in mod.golden_digests().items()})\n"
        "print(json.dumps(out))\n"
    )
    env = dict(os.environ, OMP_NUM_THREADS="2")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300, cwd=tests.parent, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    child = json.loads(proc.stdout.strip().splitlines()[-1])

    spec = importlib.util.spec_from_file_location("golden_projection", tests / "test_projection.py")
    proj = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(proj)
    here = {"test_projection:" + k: v for k, v in proj.golden_digests().items()}
    here.update({"test_subspace:" + k: v for k, v in golden_digests().items()})
    assert child == here
    assert here["test_subspace:theta_0"] == GOLDEN_THETA0
    for kind, digest in GOLDEN_THETA.items():
        assert here["test_subspace:" + kind] == digest


def test_thread_count_does_not_change_the_bits():
    ref = {k: golden_subspace(k).digest() for k in KINDS}
    torch.set_num_threads(2)  # the one_thread fixture restores the count
    assert {k: golden_subspace(k).digest() for k in KINDS} == ref


def test_theta0_does_not_use_or_consume_torchs_rng():
    torch.manual_seed(1)
    a = zoo_model()
    torch.manual_seed(2)
    b = zoo_model()
    state = torch.get_rng_state()
    sa = Subspace(a, SubspaceConfig(dim=DIM, seed=SEED))
    sb = Subspace(b, SubspaceConfig(dim=DIM, projection="dense", seed=SEED))
    sa.theta(), sb.theta()
    assert torch.equal(state, torch.get_rng_state())
    assert digest_of(sa.theta_0) == digest_of(sb.theta_0) == GOLDEN_THETA0


@pytest.mark.skipif(not (shutil.which("cc") or shutil.which("gcc")), reason="torch.compile(backend='inductor') on CPU needs a C compiler (cc or gcc)")
def test_compiled_theta_gives_the_same_bits_as_eager():
    # One compile (cold: ~15 s of CPU) covers Subspace.theta and the sorf forward inside it.
    sub = golden_subspace("sorf")
    with torch.no_grad():
        eager = sub.theta()  # also fills the projection's sign cache before tracing
        compiled = torch.compile(sub.theta, backend="inductor")()
    torch._dynamo.reset()
    assert torch.equal(bits(compiled), bits(eager))
    assert digest_of(compiled) == GOLDEN_THETA["sorf"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_gives_the_same_bits_as_cpu():
    for kind, digest in GOLDEN_THETA.items():
        sub = golden_subspace(kind).cuda()
        assert sub.theta().device.type == "cuda"
        assert sub.digest() == digest
    sub = Subspace(zoo_model().cuda(), SubspaceConfig(dim=DIM, seed=SEED))
    assert sub.theta_0.device.type == "cuda" and digest_of(sub.theta_0) == GOLDEN_THETA0


# ---------------------------------------------------------------- properties


@pytest.mark.parametrize("kind", list(GOLDEN_THETA))
def test_theta_d_zero_gives_theta0_exactly(kind):
    sub = golden_subspace(kind)
    with torch.no_grad():
        sub.theta_d.zero_()
    theta = sub.theta()
    assert torch.equal(bits(theta), bits(sub.theta_0))
    assert torch.equal(bits(sub.theta_0), bits(regenerate_theta0(sub.manifest, SEED)))
    assert digest_of(theta) == GOLDEN_THETA0


def test_include_patterns_leave_other_tensors_at_theta0():
    sub = Subspace(zoo_model(), SubspaceConfig(dim=DIM, projection="dense", seed=SEED, include=("4.*", "0.bias")))
    assert [sub.manifest[i].name for i in sub.selected] == ["0.bias", "4.weight", "4.bias"]
    assert sub.D_sub == 8 + 4096 + 32 and sub.projection.D == sub.D_sub and sub.theta_d.numel() == DIM
    with torch.no_grad():
        sub.theta_d.copy_(golden_theta_d(DIM))
    theta0 = dict(zip([s.name for s in sub.manifest], torch.split(sub.theta_0, [s.numel for s in sub.manifest])))
    moved = []
    for name, t in sub.tensors().items():
        if name in ("0.bias", "4.weight", "4.bias"):
            moved.append(name)
            assert not torch.equal(t.reshape(-1), theta0[name])
        else:
            assert torch.equal(bits(t.reshape(-1)), bits(theta0[name])), name
    assert moved == ["0.bias", "4.weight", "4.bias"]


def test_layerwise_scales_multiply_each_tensors_share_of_the_projection():
    sub = golden_subspace("sorf/layerwise")
    names = [s.name for s in sub.manifest]
    selected = [names[i] for i in sub.selected]
    assert selected == ["0.weight", "4.weight", "4.bias", "7.weight"]
    assert sub.d == DIM and sub.theta_d.numel() == DIM - 4 and sub.scales.numel() == 4
    assert sorted(n for n, p in sub.named_parameters() if p.requires_grad) == ["scales", "theta_d"]
    with torch.no_grad():
        p = sub.projection.forward(sub.theta_d)
    pieces = dict(zip(selected, torch.split(p, [sub.manifest[i].numel for i in sub.selected])))
    theta0 = dict(zip(names, torch.split(sub.theta_0, [s.numel for s in sub.manifest])))
    for name, t in sub.tensors().items():
        if name in pieces:
            k = selected.index(name)
            assert torch.equal(bits(t.reshape(-1)), bits(theta0[name] + LAYERWISE_SCALES[k] * pieces[name])), name
        else:
            assert torch.equal(bits(t.reshape(-1)), bits(theta0[name])), name


@pytest.mark.parametrize("kind", list(GOLDEN_THETA))
def test_gradients_match_finite_differences(kind):
    # loss = <w, theta> + 0.5 |theta|^2 in float64 on the float32 theta: quadratic in theta_d
    # (and, for fixed theta_d, in the scales), so central differences are exact up to rounding
    sub = golden_subspace(kind)
    w = torch.randn(sub.D, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def loss() -> torch.Tensor:
        t = sub.theta().double()
        return (w * t).sum() + 0.5 * (t * t).sum()

    loss().backward()
    params = [sub.theta_d] + ([sub.scales] if sub.scales is not None else [])
    for param in params:
        grad = param.grad.clone()
        for j in list(range(0, param.numel(), 7))[:6]:
            h = 0.25
            with torch.no_grad():
                param[j] += h
                up = float(loss())
                param[j] -= 2 * h
                down = float(loss())
                param[j] += h
            fd = (up - down) / (2 * h)
            assert abs(fd - float(grad[j])) <= 1e-3 * (1 + abs(fd)), (j, fd, float(grad[j]))


def test_model_loss_gradient_matches_finite_differences():
    sub = golden_subspace("sorf").eval()
    x = torch.randn(16, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    y = torch.arange(16) % 10
    nn.functional.cross_entropy(sub(x), y).backward()
    grad = sub.theta_d.grad.clone()
    h = 1e-2
    for j in (0, 5, 31, 63):
        with torch.no_grad():
            sub.theta_d[j] += h
            up = float(nn.functional.cross_entropy(sub(x).double(), y))
            sub.theta_d[j] -= 2 * h
            down = float(nn.functional.cross_entropy(sub(x).double(), y))
            sub.theta_d[j] += h
        fd = (up - down) / (2 * h)
        assert abs(fd - float(grad[j])) <= 0.05 * abs(float(grad[j])) + 1e-4, (j, fd, float(grad[j]))


def test_forward_equals_the_materialized_module():
    sub = golden_subspace("dense").eval()
    dense = sub.materialize().eval()
    x = torch.randn(8, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(sub(x), dense(x))
    own = dict(dense.named_parameters())
    for name, t in sub.tensors().items():
        assert torch.equal(bits(own[name]), bits(t))
    assert digest_of(torch.cat([own[s.name].detach().reshape(-1) for s in sub.manifest])) == GOLDEN_THETA["dense"]
    # the wrapped model itself is untouched and frozen
    assert all(not p.requires_grad for p in sub.model.parameters())


@pytest.mark.parametrize("kind", list(GOLDEN_THETA))
def test_rebuilding_from_manifest_and_projection_spec_gives_the_same_bits(kind):
    sub = golden_subspace(kind)
    again = Subspace(zoo_model(), sub.config, manifest=sub.manifest, projection_spec=sub.projection.spec())
    with torch.no_grad():
        again.theta_d.copy_(sub.theta_d)
        if sub.scales is not None:
            again.scales.copy_(sub.scales)
    assert again.digest() == GOLDEN_THETA[kind]


def test_rebuilding_with_the_wrong_architecture_lists_the_tensors():
    sub = golden_subspace("sorf")
    other = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 16))
    with pytest.raises(ValueError, match=r"missing in the architecture: 5.weight.*different shapes.*4.weight \[32, 128\] vs \[16, 128\]"):
        Subspace(other, sub.config, manifest=sub.manifest)


# ---------------------------------------------------------------- errors


def test_dim_larger_than_D_is_a_clear_error():
    with pytest.raises(ValueError, match=r"d=5000 is larger than the number of parameters D=4762; choose dim= at most 4762"):
        Subspace(zoo_model(), SubspaceConfig(dim=5000))


@pytest.mark.parametrize("dim", [0, -1, True, 2.0, "64"])
def test_dim_below_one_or_not_an_integer_is_a_clear_error(dim):
    with pytest.raises(ValueError, match="dim must be a positive integer"):
        SubspaceConfig(dim=dim)


def test_unknown_projection_is_a_clear_error():
    with pytest.raises(ValueError, match=r"unknown projection 'gaussian'; choose one of dense, .*sorf"):
        SubspaceConfig(dim=10, projection="gaussian")


@pytest.mark.parametrize("seed", [-1, 2**64, 1.5, "1", None])
def test_bad_seed_is_a_clear_error(seed):
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*64\)"):
        SubspaceConfig(dim=10, seed=seed)


def test_bool_seed_is_rejected_like_a_bool_dim():
    with pytest.raises(ValueError, match="seed"):
        SubspaceConfig(dim=10, seed=True)


def test_include_matching_nothing_is_a_clear_error():
    with pytest.raises(ValueError, match=r"no tensor matches the include patterns \['head\.\*'\]"):
        Subspace(zoo_model(), SubspaceConfig(dim=10, include=("head.*",)))


def test_layerwise_dim_must_leave_room_for_theta_d():
    with pytest.raises(ValueError, match=r"dim=4 leaves no room for theta_d after 4 layerwise scales; choose dim > 4"):
        Subspace(zoo_model(), SubspaceConfig(dim=4, layerwise=True, include=LAYERWISE.include))


def test_projection_shape_errors_surface_through_make_projection():
    with pytest.raises(ValueError, match="d >= 1"):
        make_projection("sorf", 4762, 0, SEED)
