"""The first commands a user types: train, info, verify, decompress, on real data."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from squeeze import arch, format as fmt
from squeeze import loading
from squeeze.data import load_data
from squeeze.fit import accuracy
from squeeze_cli.app import main

ZOO = ["MLP", "LeNet", "ResNet", "TransformerClassifier"]


@pytest.fixture(scope="module")
def digits():
    return load_data("digits")


def _dense_accuracy(path, ref: str, kwargs: dict, data) -> float:
    """Accuracy of a decompressed state_dict loaded strictly into a fresh architecture."""
    model = arch.build(ref, kwargs)
    state = load_file(str(path)) if str(path).endswith(".safetensors") else torch.load(path, weights_only=True)
    model.load_state_dict(state, strict=True)
    return accuracy(model.eval(), data.x_test, data.y_test)


@pytest.mark.parametrize("name", ZOO)
def test_every_zoo_architecture_trains_saves_verifies_and_decompresses(name, tmp_path, capsys, digits):
    out = tmp_path / f"{name}.sqz"
    rc = main(["train", "--arch", f"squeeze.zoo:{name}", "--data", "digits", "--dim", "64", "--epochs", "1", "--batch-size", "64", "-o", str(out)])
    assert rc == 0
    f = fmt.read(out)
    assert f.d == 64 and f.data["input_shape"] == [1, 8, 8] and f.data["pre"] == {"scale": 1 / 16}
    capsys.readouterr()
    assert main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["bytes"] == out.stat().st_size and info["D"] == f.D and info["weights_sha256"] == f.weights_sha256
    assert main(["verify", str(out)]) == 0
    assert f.weights_sha256 in capsys.readouterr().out.replace("\n", "")
    for suffix in (".safetensors", ".pt"):
        dense = tmp_path / f"{name}{suffix}"
        assert main(["decompress", str(out), "-o", str(dense)]) == 0
        assert f.weights_sha256 in capsys.readouterr().out.replace("\n", "")
        # the same accuracy as recorded in the file, from the plain state_dict
        assert _dense_accuracy(dense, f.arch["ref"], f.arch.get("kwargs", {}), digits) == pytest.approx(f.metrics["test_accuracy"], abs=1e-6)
    if name == "ResNet":  # BatchNorm statistics survive the round trip, and are not the defaults
        sub = loading.load_subspace(out)
        state = load_file(str(tmp_path / f"{name}.safetensors"))
        assert torch.equal(state["stem.1.running_mean"], sub.model.stem[1].running_mean)
        assert not torch.equal(state["stem.1.running_mean"], torch.zeros_like(state["stem.1.running_mean"]))


def test_mlp_on_mnist5k_in_a_750_dimensional_subspace(tmp_path, capsys):
    """The issue's headline: >= 90% of the dense baseline in at most 3,072 bytes."""
    out = tmp_path / "mlp.sqz"
    torch.manual_seed(0)
    rc = main(["train", "--arch", "squeeze.zoo:MLP", "--data", "mnist5k", "--dim", "750", "--baseline", "-o", str(out)])
    assert rc == 0
    f = fmt.read(out)
    print(f"mnist5k MLP d=750: {f.size_bytes} bytes, test accuracy {f.metrics['test_accuracy']:.4f}, dense {f.metrics['dense_test_accuracy']:.4f}")
    assert f.size_bytes <= 3072 and f.dense_bytes() / f.size_bytes >= 250
    assert f.metrics["test_accuracy"] >= 0.9 * f.metrics["dense_test_accuracy"]
    dense = tmp_path / "mlp.safetensors"
    assert main(["decompress", str(out), "-o", str(dense)]) == 0
    data = load_data("mnist5k")
    assert _dense_accuracy(dense, "squeeze.zoo:MLP", {}, data) == pytest.approx(f.metrics["test_accuracy"], abs=1e-6)


def test_bench_times_every_path_and_checks_their_bits(tmp_path, capsys):
    out = tmp_path / "m.sqz"
    assert main(["train", "--arch", "squeeze.zoo:LeNet", "--data", "digits", "--dim", "32", "--epochs", "1", "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["bench", str(out), "--repeats", "2"]) == 0
    text = capsys.readouterr().out
    from squeeze import kernels

    paths = 2 if kernels.native_available() else 1
    assert "reference" in text and "read dense" in text and ("native" in text) == (paths == 2)
    assert text.count("same") == paths and "DIFFERENT" not in text
