"""Projections: golden forward bits, the adjoint, the explicit matrix, gradients, errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from squeeze.projection import kinds, make_projection, projection_from_spec

pytestmark = pytest.mark.usefixtures("one_thread")

KINDS = ["sorf", "dense", "sparse"]

# Golden forward outputs: (kind, seed, d, D) -> (spec, SHA-256 of the float32 little-endian
# output for theta_d = arange(d) / d - 0.5), from the conformance table (tests/conformance.json,
# run on every backend by tests/test_conformance.py). Changing any of these is a format change:
# bump format_version (DESIGN.md, determinism contract, rule 6).
GOLDEN = {(r["kind"], r["seed"], r["d"], r["D"]): (r["spec"], r["sha256"]) for r in json.loads((Path(__file__).with_name("conformance.json")).read_text())["projection"]}


def golden_theta_d(d: int) -> torch.Tensor:
    return torch.arange(d, dtype=torch.float32) / d - 0.5


def sha256(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().astype("<f4").tobytes()).hexdigest()


def golden_digests() -> dict[str, str]:
    """The forward digest of every golden case (also run in a second process by test_subspace)."""
    out = {}
    for kind, seed, d, D in GOLDEN:
        out[f"{kind}/{seed}/{d}/{D}"] = sha256(make_projection(kind, D, d, seed).forward(golden_theta_d(d)))
    return out


def explicit_matrix(p) -> torch.Tensor:
    """P (D x d) in float64, column j = forward(e_j); exact for these small shapes."""
    eye = torch.eye(p.d, dtype=torch.float32)
    return torch.stack([p.forward(eye[j]) for j in range(p.d)], dim=1).double()


def _randn(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)


# ---------------------------------------------------------------- golden


@pytest.mark.parametrize("case", list(GOLDEN), ids=lambda c: c[0])
def test_golden_forward_digest(case):
    kind, seed, d, D = case
    spec, digest = GOLDEN[case]
    p = make_projection(kind, D, d, seed)
    assert p.spec() == spec
    y = p.forward(golden_theta_d(d))
    assert y.dtype == torch.float32 and y.shape == (D,)
    assert sha256(y) == digest
    # rebuilding from the stored spec gives the same bits
    assert sha256(projection_from_spec(kind, D, d, seed, spec).forward(golden_theta_d(d))) == digest


def test_registry_lists_the_kinds():
    assert set(KINDS) <= set(kinds())


# ---------------------------------------------------------------- properties


@pytest.mark.parametrize("kind", KINDS)
def test_forward_of_zero_is_zero(kind):
    p = make_projection(kind, 1000, 37, seed=3)
    y = p.forward(torch.zeros(37))
    assert bool((y == 0).all())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("D,d,seed", [(1, 1, 0), (10, 10, 1), (1000, 37, 2), (4099, 300, 2**64 - 1), (20000, 64, 5)])
def test_transpose_is_the_adjoint(kind, D, d, seed):
    p = make_projection(kind, D, d, seed)
    x, y = _randn(d, seed % 1000), _randn(D, seed % 1000 + 1)
    px, pty = p.forward(x), p.transpose(y)
    assert px.shape == (D,) and pty.shape == (d,) and pty.dtype == torch.float32
    lhs = float(px.double() @ y.double())
    rhs = float(x.double() @ pty.double())
    scale = float(px.double().norm() * y.double().norm()) + float(x.double().norm() * pty.double().norm())
    assert abs(lhs - rhs) <= 1e-5 * scale


@settings(max_examples=25, deadline=None)
@given(kind=st.sampled_from(KINDS), D=st.integers(1, 2000), frac=st.floats(0.0, 1.0), seed=st.integers(0, 2**64 - 1))
def test_transpose_is_the_adjoint_property(kind, D, frac, seed):
    d = max(1, min(D, int(frac * min(D, 128))))
    p = make_projection(kind, D, d, seed)
    x, y = _randn(d, 0), _randn(D, 1)
    px, pty = p.forward(x).double(), p.transpose(y).double()
    lhs, rhs = float(px @ y.double()), float(x.double() @ pty)
    assert abs(lhs - rhs) <= 1e-5 * (float(px.norm() * y.double().norm()) + float(x.double().norm() * pty.norm()))


@pytest.mark.parametrize("kind", KINDS)
def test_forward_and_transpose_agree_with_the_explicit_matrix(kind):
    D, d = 700, 24
    p = make_projection(kind, D, d, seed=11)
    P = explicit_matrix(p)
    x, y = _randn(d, 2), _randn(D, 3)
    fx, ty = p.forward(x).double(), p.transpose(y).double()
    assert torch.allclose(fx, P @ x.double(), rtol=0, atol=1e-6 * float((P.abs() @ x.double().abs()).max()))
    assert torch.allclose(ty, P.T @ y.double(), rtol=0, atol=1e-6 * float((P.abs().T @ y.double().abs()).max()))
    # unit columns up to the power-of-two scale: mean squared column norm within [1/2, 2]
    assert 0.5 <= float((P**2).sum(0).mean()) <= 2.0
    unit = 2.0 ** p.spec()["e"]
    if kind == "dense":
        assert bool((P.abs() == unit).all())  # every entry is +-2**e
        assert abs(float(P.sign().mean())) < 0.05
    if kind == "sparse":
        k = p.spec()["k"]
        assert bool(((P / unit) == (P / unit).round()).all())
        assert bool(((P != 0).sum(1) <= k).all()) and float(P.abs().max()) <= k * unit


def test_sorf_columns_are_exactly_orthogonal_without_truncation():
    d, n, blocks = 24, 32, 5
    p = make_projection("sorf", n * blocks, d, seed=8)
    P = explicit_matrix(p)
    c = 2.0 ** (2 * p.spec()["e"]) * blocks * n**3
    assert torch.equal(P.T @ P, c * torch.eye(d, dtype=torch.float64))


def test_dense_forward_bits_do_not_depend_on_the_chunk_size():
    p = make_projection("dense", 130, 70, seed=7)
    x = golden_theta_d(70)
    ref, ref_t = p.forward(x), p.transpose(golden_theta_d(130))
    for chunk in (1, 7, 64, 130):
        p.chunk = chunk
        assert torch.equal(p.forward(x), ref)
        assert torch.allclose(p.transpose(golden_theta_d(130)), ref_t, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_seed_changes_the_projection_and_input_dtype_does_not(kind):
    x = golden_theta_d(50)
    a = make_projection(kind, 2000, 50, seed=0).forward(x)
    b = make_projection(kind, 2000, 50, seed=1).forward(x)
    assert not torch.equal(a, b)
    assert torch.equal(make_projection(kind, 2000, 50, seed=0).forward(x.double()), a)


@pytest.mark.parametrize("kind", KINDS)
def test_autograd_bridge_backward_is_the_transpose(kind):
    p = make_projection(kind, 1500, 40, seed=4)
    x = _randn(40, 5).requires_grad_(True)
    w = _randn(1500, 6)
    (p(x) * w).sum().backward()
    assert torch.equal(x.grad, p.transpose(w))


@pytest.mark.parametrize("kind", KINDS)
def test_gradient_matches_finite_differences(kind):
    # loss(x) = <w, Px> + 0.5 |Px|^2, evaluated in float64 on the float32 forward: a quadratic,
    # so a central difference is exact up to the forward's float32 rounding
    D, d = 900, 30
    p = make_projection(kind, D, d, seed=12)
    w = _randn(D, 7).double()

    def loss(v: torch.Tensor) -> torch.Tensor:
        y = p(v).double()
        return (w * y).sum() + 0.5 * (y * y).sum()

    x = _randn(d, 8).requires_grad_(True)
    loss(x).backward()
    h = 0.25
    for j in range(0, d, 3):
        e = torch.zeros(d)
        e[j] = h
        with torch.no_grad():
            fd = float(loss(x + e) - loss(x - e)) / (2 * h)
        assert abs(fd - float(x.grad[j])) <= 1e-4 * (1 + abs(fd)), (j, fd, float(x.grad[j]))


# ---------------------------------------------------------------- errors


def test_unknown_kind_is_a_clear_error():
    with pytest.raises(ValueError, match=r"unknown projection 'gauss'; choose one of .*sorf"):
        make_projection("gauss", 100, 10, 0)
    with pytest.raises(ValueError, match="does not know"):
        projection_from_spec("gauss", 100, 10, 0, {})


@pytest.mark.parametrize("kind", KINDS)
def test_d_larger_than_D_is_a_clear_error(kind):
    with pytest.raises(ValueError, match=r"d=101 is larger than the number of parameters D=100; choose dim= at most 100"):
        make_projection(kind, 100, 101, 0)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("D,d", [(100, 0), (100, -5), (0, 0), (100, 2.5)])
def test_d_below_one_or_not_an_integer_is_a_clear_error(kind, D, d):
    with pytest.raises(ValueError, match=r"d >= 1 and D >= 1"):
        make_projection(kind, D, d, 0)


def _bad_seed_cases():
    out = []
    for kind in KINDS:
        for seed in (-1, 2**64, 1.5):
            out.append(pytest.param(kind, seed, id=f"{kind}-{seed}"))
    return out


@pytest.mark.parametrize("kind,seed", _bad_seed_cases())
def test_bad_seed_is_a_clear_error_when_the_projection_is_made(kind, seed):
    with pytest.raises(ValueError, match="seed"):
        make_projection(kind, 100, 10, seed)
