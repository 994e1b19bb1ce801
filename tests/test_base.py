"""Fine-tunes against a pretrained base: theta_0 is the base, the file a small delta that
records the base's digest, never its weights.

A small MLP is pretrained on digits 0-4 and its body (without the head) saved as
base.safetensors; fine-tunes on all ten digits use a new head drawn from the seed.
"""

from __future__ import annotations

import json
import struct
import textwrap

import pytest
import torch
from safetensors.torch import load_file, save_file

from squeeze import Subspace, SubspaceConfig
from squeeze import format as fmt
from squeeze import loading
from squeeze.base import base_digest, load_base
from squeeze.data import Dataset, load_data
from squeeze.errors import FormatError, SqueezeError
from squeeze.fit import TrainConfig, accuracy, predict, train
from squeeze.manifest import manifest_text
from squeeze.zoo import MLP
from squeeze_cli.app import main

HIDDEN = [64, 64]
BODY = ("layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias")


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_data("digits")


def _arch(ds: Dataset) -> dict:
    return {"ref": "squeeze.zoo:MLP", "kwargs": {"input_shape": list(ds.input_shape), "num_classes": 10, "hidden": HIDDEN}}


def _mlp(ds: Dataset) -> MLP:
    return MLP(input_shape=ds.input_shape, num_classes=10, hidden=tuple(HIDDEN))


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, digits):
    """(path of base.safetensors, its tensors): the body of an MLP trained on digits 0-4."""
    torch.manual_seed(0)
    m, mt = digits.y_train < 5, digits.y_test < 5
    low = Dataset(digits.name, digits.x_train[m], digits.y_train[m], digits.x_test[mt], digits.y_test[mt], 10, digits.preprocessing)
    model = _mlp(digits)
    res = train(model, low, TrainConfig(epochs=8, lr=1e-2, batch_size=64), progress=False)
    assert res.test_accuracy > 0.9
    body = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items() if not k.startswith("head.")}
    assert sorted(body) == sorted(BODY)
    path = tmp_path_factory.mktemp("base") / "base.safetensors"
    save_file(body, str(path))
    return path, body


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, pretrained, digits):
    """A trained fine-tune saved as ft.sqz: (path, subspace, its accuracy)."""
    path, _ = pretrained
    sub = Subspace(_mlp(digits), SubspaceConfig(dim=40, seed=1, layerwise=True), base=load_base(path))
    train(sub, digits, TrainConfig(epochs=8, lr=0.1, batch_size=64), progress=False)
    fmt.round_for_storage_(sub, "float16")
    acc = accuracy(sub, digits.x_test, digits.y_test)
    out = tmp_path_factory.mktemp("ft") / "ft.sqz"
    fmt.save(sub, out, arch=_arch(digits), metrics={"test_accuracy": acc}, data=digits.describe())
    return out, sub, acc


def _flat(text: str) -> str:
    """Console output with its line wrapping undone."""
    return " ".join(text.split())


def _tensor_names(path) -> list[str]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return sorted(k for k in json.loads(raw[8 : 8 + n]) if k != "__metadata__")


def test_theta0_is_the_base_and_a_new_head_comes_from_the_seed(pretrained, digits):
    _, body = pretrained
    sub = Subspace(_mlp(digits), SubspaceConfig(dim=40, seed=1), base=body)
    scratch = Subspace(_mlp(digits), SubspaceConfig(dim=40, seed=1))
    assert {s.name: s.init[0] for s in sub.manifest} == {**{n: "b" for n in BODY}, "head.weight": "u", "head.bias": "u"}
    got, fresh = sub.tensors(), scratch.tensors()
    for name in BODY:
        assert torch.equal(got[name], body[name])  # theta_d = 0 gives the base exactly
    for name in ("head.weight", "head.bias"):
        assert torch.equal(got[name], fresh[name])  # the seeded init, as from scratch
    assert sub.base_digest == base_digest(body, BODY)


def test_finetune_beats_random_init_at_the_same_dim(finetuned, digits):
    _, _, acc = finetuned
    scratch = Subspace(_mlp(digits), SubspaceConfig(dim=40, seed=1, layerwise=True))
    train(scratch, digits, TrainConfig(epochs=8, lr=0.1, batch_size=64), progress=False)
    scratch_acc = accuracy(scratch, digits.x_test, digits.y_test)
    assert acc >= 0.5, acc
    assert acc >= scratch_acc + 0.05, (acc, scratch_acc)


def test_file_records_the_base_digest_not_its_weights(finetuned, pretrained):
    out, _, _ = finetuned
    _, body = pretrained
    f = fmt.read(out)
    assert f.base == base_digest(body, BODY)
    assert _tensor_names(out) == ["scales", "theta_d"]
    assert f.size_bytes < 2048


def test_decompress_with_the_right_base_reproduces_the_digest(finetuned, pretrained, digits, tmp_path, capsys):
    out, sub, _ = finetuned
    path, body = pretrained
    again = loading.load_subspace(out, base=path)
    assert again.digest() == fmt.read(out).weights_sha256 == sub.digest()
    assert torch.equal(predict(again, digits.x_test), predict(sub, digits.x_test))
    dense = tmp_path / "ft.safetensors"
    assert main(["decompress", str(out), "--base", str(path), "-o", str(dense)]) == 0
    assert fmt.read(out).weights_sha256 in capsys.readouterr().out
    state = load_file(str(dense))
    model = _mlp(digits)
    model.load_state_dict(state, strict=True)
    assert torch.equal(predict(model, digits.x_test), predict(sub, digits.x_test))
    # a .pt base (a plain state_dict) is the same base
    torch.save(body, tmp_path / "base.pt")
    assert loading.load_subspace(out, base=tmp_path / "base.pt").digest() == again.digest()


def test_a_different_base_is_refused(finetuned, pretrained, tmp_path, capsys):
    out, _, _ = finetuned
    _, body = pretrained
    changed = {k: v.clone() for k, v in body.items()}
    changed["layers.1.weight"][3, 5] += 1e-3  # one weight
    other = tmp_path / "other.safetensors"
    save_file(changed, str(other))
    expected = fmt.read(out).base
    with pytest.raises(SqueezeError, match=f"made against {expected[:16]}"):
        loading.load_subspace(out, base=other)
    for cmd in (["verify", str(out)], ["decompress", str(out), "-o", str(tmp_path / "x.safetensors")]):
        assert main([*cmd, "--base", str(other)]) == 2
        err = _flat(capsys.readouterr().err)
        assert expected[:16] in err and "original base" in err
    assert not (tmp_path / "x.safetensors").exists()
    lacking = tmp_path / "lacking.safetensors"
    save_file({k: v for k, v in body.items() if k != "layers.1.bias"}, str(lacking))
    with pytest.raises(SqueezeError, match="lacks tensors the file needs: layers.1.bias"):
        loading.load_subspace(out, base=lacking)


def test_no_base_is_refused_with_a_clear_message(finetuned, tmp_path, capsys):
    out, _, _ = finetuned
    assert main(["decompress", str(out), "-o", str(tmp_path / "x.safetensors")]) == 2
    err = _flat(capsys.readouterr().err)
    assert "fine-tune of a base model" in err and "--base" in err and "Traceback" not in err
    with pytest.raises(SqueezeError, match="pass base="):
        loading.load(out)


def test_layerwise_and_include_patterns_round_trip(pretrained, digits, tmp_path):
    path, body = pretrained
    config = SubspaceConfig(dim=48, seed=5, layerwise=True, include=("head.*", "layers.1.*"))
    sub = Subspace(_mlp(digits), config, base=load_base(path))
    assert [sub.manifest[i].name for i in sub.selected] == ["layers.1.weight", "layers.1.bias", "head.weight", "head.bias"]
    assert sub.scales.numel() == 4 and sub.theta_d.numel() == 44
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        sub.theta_d.copy_(torch.randn(44, generator=g))
        sub.scales.copy_(torch.rand(4, generator=g) + 0.5)
    fmt.round_for_storage_(sub, "float16")
    got = sub.tensors()
    for name in ("layers.0.weight", "layers.0.bias"):
        assert torch.equal(got[name], body[name])  # outside the patterns: the base, untouched
    assert not torch.equal(got["layers.1.weight"], body["layers.1.weight"])
    out = tmp_path / "lw.sqz"
    f = fmt.save(sub, out, arch=_arch(digits))
    assert f.spec["inc"] == ["head.*", "layers.1.*"] and f.spec["lw"] == 1
    again = loading.load_subspace(out, base=path)
    assert again.config == config
    assert torch.equal(again.scales, sub.scales)
    assert again.digest() == f.weights_sha256 == sub.digest()


def test_cli_train_against_a_base_with_full_finetuning_baseline(pretrained, tmp_path, capsys):
    path, body = pretrained
    out = tmp_path / "cli.sqz"
    rc = main(["train", "--arch", "squeeze.zoo:MLP", "--arch-kwargs", json.dumps({"hidden": HIDDEN}), "--data", "digits", "--dim", "40",
               "--layerwise", "--include", "head.*", "--include", "layers.1.*", "--base", str(path), "--baseline", "--epochs", "2", "-o", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "4 of 6 tensors from the base" in _flat(captured.err)
    f = fmt.read(out)
    assert f.base == base_digest(body, BODY)
    assert f.spec["inc"] == ["head.*", "layers.1.*"] and f.spec["lw"] == 1
    assert f.metrics["baseline"] == "full fine-tuning from the base"
    assert 0 < f.metrics["dense_test_accuracy"] <= 1
    assert main(["verify", str(out), "--base", str(path)]) == 0
    # a base that shares no tensor with the architecture is refused up front
    assert main(["train", "--arch", "squeeze.zoo:MLP", "--data", "digits", "--dim", "40", "--base", str(path), "-o", str(tmp_path / "x.sqz")]) == 2
    assert "shares no tensor" in _flat(capsys.readouterr().err)


def test_base_arch_takes_the_architectures_own_pretrained_weights(pretrained, tmp_path, capsys):
    path, body = pretrained
    arch_file = tmp_path / "pretrained_mlp.py"
    arch_file.write_text(textwrap.dedent(f"""
        from safetensors.torch import load_file
        from squeeze.zoo import MLP

        class PretrainedMLP(MLP):
            def __init__(self, input_shape=(64,), num_classes=10):
                super().__init__(input_shape, num_classes, hidden=(64, 64))
                if not self.head.weight.is_meta:  # squeeze first builds on the meta device to check shapes
                    self.load_state_dict(load_file({str(path)!r}), strict=False)

            def base_state_dict(self):
                return {{k: v for k, v in self.state_dict().items() if not k.startswith("head.")}}

        def make_base():
            return PretrainedMLP()
    """))
    arch = f"{arch_file}:PretrainedMLP"
    out = tmp_path / "arch.sqz"
    rc = main(["train", "--arch", arch, "--data", "digits", "--dim", "40", "--base", "arch", "--epochs", "1", "-o", str(out)])
    assert rc == 0, capsys.readouterr().err
    f = fmt.read(out)
    assert f.base == base_digest(body, BODY)  # the same base as the checkpoint file
    assert {s.name: s.init[0] for s in f.manifest}["head.weight"] == "u"
    dense = tmp_path / "arch.safetensors"
    assert main(["decompress", str(out), "--arch", arch, "--base", "arch", "-o", str(dense)]) == 0
    assert f.weights_sha256 in capsys.readouterr().out
    assert loading.load_subspace(out, arch, base=path).digest() == f.weights_sha256  # the file works as a base too
    assert loading.load_subspace(out, arch, base=f"{arch_file}:make_base").digest() == f.weights_sha256  # and a factory
    with pytest.raises(SqueezeError, match="base='arch' takes the base"):
        load_base("arch")


class _Many(torch.nn.Module):
    """A hundred small tensors: a manifest larger than theta_d, like a pretrained transformer's."""

    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ModuleList(torch.nn.Linear(4, 4) for _ in range(50))

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return x


def test_a_large_manifest_is_stored_packed(tmp_path):
    model = _Many()
    base = {k: v.detach().clone() for k, v in model.state_dict().items() if not k.startswith("blocks.49.")}
    sub = Subspace(model, SubspaceConfig(dim=16, seed=2), base=base)
    with torch.no_grad():
        sub.theta_d.copy_(torch.linspace(-1, 1, 16))
    fmt.round_for_storage_(sub, "float16")
    out = tmp_path / "many.sqz"
    f = fmt.save(sub, out)
    raw = out.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    meta = json.loads(raw[8 : 8 + n])["__metadata__"]
    plain = manifest_text(sub.manifest)
    assert meta["params"].startswith("zlib:") and len(meta["params"]) < len(plain) / 4
    assert f.manifest == sub.manifest
    assert loading.load_subspace(out, _Many(), base=base).digest() == sub.digest()
    damaged = raw.replace(meta["params"][10:30].encode(), b"A" * 20)
    with pytest.raises(FormatError, match="recipe damaged"):
        fmt.parse(damaged, "damaged.sqz")
    with pytest.raises(FormatError, match="packed manifest"):  # past the records check, as a deliberate edit
        fmt.parse(fmt.canonical_header(damaged, check=True), "damaged.sqz")


def test_cli_compress_a_dense_finetune_against_its_base(pretrained, digits, tmp_path, capsys):
    """A dense fine-tune (base body + a head, all weights trained on digits 0-9) compressed as
    a delta against the base: the file names the base by digest and verifies only with it."""
    path, body = pretrained
    torch.manual_seed(3)
    dense = _mlp(digits)
    dense.load_state_dict(body, strict=False)
    teacher_res = train(dense, digits, TrainConfig(epochs=8, lr=1e-2, batch_size=64), progress=False)
    ckpt = tmp_path / "finetuned.safetensors"
    save_file({k: v.contiguous() for k, v in dense.state_dict().items()}, str(ckpt))
    out = tmp_path / "delta.sqz"
    kwargs = json.dumps({"hidden": HIDDEN})
    rc = main(["compress", str(ckpt), "--arch", "squeeze.zoo:MLP", "--arch-kwargs", kwargs, "--data", "digits", "--dim", "64", "--epochs", "8", "--size", "100KB", "--base", str(path), "-o", str(out)])
    assert rc == 0
    f = fmt.read(out)
    assert f.base == base_digest(body, BODY) and set(_tensor_names(out)) <= {"theta_d", "codes", "codebook"}  # theta_d (however it is coded), never base weights
    # the base is worth having: the same d from a random theta_0 does worse
    scratch = tmp_path / "scratch.sqz"
    assert main(["compress", str(ckpt), "--arch", "squeeze.zoo:MLP", "--arch-kwargs", kwargs, "--data", "digits", "--dim", "64", "--epochs", "8", "--size", "100KB", "-o", str(scratch)]) == 0
    print(f"teacher {teacher_res.test_accuracy:.4f}, delta against the base {f.metrics['test_accuracy']:.4f}, from scratch {fmt.read(scratch).metrics['test_accuracy']:.4f}")
    assert f.metrics["test_accuracy"] > fmt.read(scratch).metrics["test_accuracy"] + 0.05
    capsys.readouterr()
    assert main(["verify", str(out), "--base", str(path)]) == 0
    assert main(["verify", str(out)]) == 2
    assert "pass --base" in _flat(capsys.readouterr().err)
