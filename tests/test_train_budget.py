"""Training for a byte budget (``squeeze.train`` with ``size=``, and the fine-tune default):
d and the encoding are chosen so that the file fits, on validation, never on the test split."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import squeeze
from squeeze import format as fmt
from squeeze import loading
from squeeze.data import Dataset, load_data
from squeeze.defaults import FINETUNE
from squeeze.errors import SqueezeError
from squeeze.fit import TrainConfig as LoopConfig, train as fit
from squeeze.zoo import MLP
from squeeze_cli.app import main

ARCH = "squeeze.zoo:MLP"
KW = {"hidden": [64, 64]}


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_data("digits")


@pytest.mark.parametrize("size,lean", [(1200, True), (1500, False)])
def test_the_file_fits_its_budget_and_uses_most_of_it(tmp_path, digits, size, lean):
    done = squeeze.train(ARCH, digits, squeeze.TrainConfig(size=size, epochs=3), arch_kwargs=KW, progress=False, lean=lean)
    f = done.save(tmp_path / "m.sqz")
    assert f.size_bytes <= size
    assert (not f.metrics) == lean
    report = done.report()
    sized_for = report["encodings"]["16"]["bytes"]  # d is sized for 16 levels; a smaller encoding may win on validation
    assert size >= sized_for >= 0.9 * size, f"{sized_for} bytes at 16 levels of a {size}-byte budget: d={done.sub.d} is not the largest that fits"
    kept = report["encodings"][str(report["levels"])]
    # sized with placeholder metrics of their longest form: exact when lean, never smaller than the file otherwise
    assert kept["fits"] and (kept["bytes"] == f.size_bytes if lean else f.size_bytes <= kept["bytes"] <= f.size_bytes + 16)
    # the kept encoding is the best on validation among those that fit (ties: the more levels)
    best = max(c["val_accuracy"] for c in report["encodings"].values() if c["fits"])
    assert report["levels"] == max(int(L) for L, c in report["encodings"].items() if c["fits"] and c["val_accuracy"] == best)
    assert squeeze.verify(tmp_path / "m.sqz").ok


def test_a_larger_budget_keeps_a_larger_d(digits):
    small = squeeze.train(ARCH, digits, squeeze.TrainConfig(size=1100, epochs=1), arch_kwargs=KW, progress=False, lean=True)
    large = squeeze.train(ARCH, digits, squeeze.TrainConfig(size=2200, epochs=1), arch_kwargs=KW, progress=False, lean=True)
    assert large.sub.d > 2 * small.sub.d


def test_the_choice_never_reads_the_test_split(tmp_path, digits):
    """Two data sets that differ only in their test split give the same file bytes but the metrics."""
    flipped = Dataset(digits.name, digits.x_train, digits.y_train, -digits.x_test, (digits.y_test + 1) % 10, 10, digits.preprocessing)
    a = squeeze.train(ARCH, digits, squeeze.TrainConfig(size=1200, epochs=2), arch_kwargs=KW, progress=False, lean=True)
    b = squeeze.train(ARCH, flipped, squeeze.TrainConfig(size=1200, epochs=2), arch_kwargs=KW, progress=False, lean=True)
    assert a.sub.d == b.sub.d and a.metrics["levels"] == b.metrics["levels"]
    assert torch.equal(a.sub.theta_d, b.sub.theta_d)
    assert a.metrics["test_accuracy"] != b.metrics["test_accuracy"]


def test_a_budget_smaller_than_the_fixed_part_is_refused(digits):
    with pytest.raises(SqueezeError, match="leaves no room for theta_d"):
        squeeze.train(ARCH, digits, squeeze.TrainConfig(size=300, epochs=1), arch_kwargs=KW, progress=False)


def test_training_from_scratch_needs_dim_or_size(digits):
    with pytest.raises(SqueezeError, match="dim=.*size="):
        squeeze.train(ARCH, digits, squeeze.TrainConfig(epochs=1), arch_kwargs=KW, progress=False)
    with pytest.raises(ValueError, match="give one of"):
        squeeze.TrainConfig(dim=100, size=2000)


@pytest.fixture(scope="module")
def base_path(tmp_path_factory, digits):
    """The body of an MLP trained on digits 0-4 (the new head is drawn from the seed)."""
    torch.manual_seed(0)
    m, mt = digits.y_train < 5, digits.y_test < 5
    low = Dataset(digits.name, digits.x_train[m], digits.y_train[m], digits.x_test[mt], digits.y_test[mt], 10, digits.preprocessing)
    model = MLP(input_shape=digits.input_shape, num_classes=10, hidden=(64, 64))
    fit(model, low, LoopConfig(epochs=8, lr=1e-2, batch_size=64), progress=False)
    path = tmp_path_factory.mktemp("base") / "base.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items() if not k.startswith("head")}, path)
    return path


def test_a_fine_tune_needs_no_d_and_follows_the_recipe(tmp_path, digits, base_path):
    done = squeeze.train(ARCH, digits, squeeze.TrainConfig(), arch_kwargs=KW, base=str(base_path), progress=False)
    cfg = done.config
    assert (cfg.size, cfg.epochs, cfg.batch_size, cfg.layerwise) == (FINETUNE["size"], FINETUNE["epochs"], FINETUNE["batch_size"], True)
    assert done.fit.epochs_run == FINETUNE["epochs"]
    f = done.save(tmp_path / "ft.sqz")
    assert f.size_bytes <= FINETUNE["size"] and f.base
    assert done.report()["needs"] == squeeze.api.NEEDS_BASE
    again = loading.load_subspace(tmp_path / "ft.sqz", base=str(base_path))
    assert torch.equal(again.theta_d, done.sub.theta_d)


def test_the_cli_fine_tune_is_one_command(tmp_path, digits, base_path):
    data = tmp_path / "d.npz"
    import numpy as np

    np.savez(data, x=digits.x_train.numpy(), y=digits.y_train.numpy(), x_test=digits.x_test.numpy(), y_test=digits.y_test.numpy())
    out = tmp_path / "ft.sqz"
    code = main(["train", "--arch", ARCH, "--arch-kwargs", json.dumps(KW), "--data", str(data), "--base", str(base_path), "--size", "3KB", "-o", str(out), "--json"])
    assert code == 0
    assert out.stat().st_size <= 3000
    code = main(["train", "--arch", ARCH, "--data", str(data), "--dim", "100", "--size", "3000", "-o", str(tmp_path / "x.sqz")])
    assert code == 2 and not (tmp_path / "x.sqz").exists()


def test_a_target_keeps_the_smallest_budget_confirmed_on_data_training_never_read(digits, base_path):
    done = squeeze.train(ARCH, digits, squeeze.TrainConfig(target=0.8), arch_kwargs=KW, base=str(base_path), progress=False, lean=True)
    c = done.confirm
    assert c["reached"] and c["low"] >= 0.8 and c["examples"] > 0
    assert [t["size"] for t in c["tried"]] == sorted(t["size"] for t in c["tried"])  # smallest first, stopped at the first that cleared
    assert all(t["low"] < 0.8 for t in c["tried"][:-1])
    assert done.size == c["tried"][-1]["size"] and done.report()["target"] == 0.8
    with pytest.raises(ValueError, match="one of"):
        squeeze.TrainConfig(target=0.9, size=4096)


def test_the_cli_exits_4_when_the_target_is_not_reached(tmp_path, digits, base_path, monkeypatch):
    import numpy as np

    import squeeze.training

    monkeypatch.setattr(squeeze.training, "TARGET_SIZES", (2048,))  # one budget: keep the test short
    data = tmp_path / "d.npz"
    np.savez(data, x=digits.x_train.numpy(), y=digits.y_train.numpy(), x_test=digits.x_test.numpy(), y_test=digits.y_test.numpy())
    out = tmp_path / "t.sqz"
    code = main(["train", "--arch", ARCH, "--arch-kwargs", json.dumps(KW), "--data", str(data), "--base", str(base_path), "--target", "0.9999", "--epochs", "1", "-o", str(out)])
    assert code == 4 and out.exists()


def test_a_budget_past_the_model_keeps_d_at_its_number_of_weights(digits):
    done = squeeze.train(ARCH, digits, squeeze.TrainConfig(size=100_000, epochs=1), arch_kwargs=KW, progress=False, lean=True)
    assert done.sub.d == done.sub.D


def test_size_of_is_the_size_save_writes(tmp_path, digits, base_path):
    """The budget is measured with format.size_of (no regeneration, no disk): it must equal what save writes."""
    from squeeze import Subspace, SubspaceConfig
    from squeeze.coding_registry import encode_quantized
    from squeeze.quantize import kmeans_quantize
    from squeeze.zoo import LeNet

    base = load_file(base_path)
    cases = [
        (Subspace(MLP(input_shape=digits.input_shape, num_classes=10, hidden=(64, 64)), SubspaceConfig(dim=300, layerwise=True), base=base), {"metrics": {"test_accuracy": 0.9}, "data": digits.describe()}),
        (Subspace(LeNet(input_shape=(1, 8, 8), num_classes=10), SubspaceConfig(dim=200, seed=3)), {"arch": {"ref": "squeeze.zoo:LeNet", "kwargs": {}}}),
    ]
    for i, (sub, kw) in enumerate(cases):
        with torch.no_grad():
            sub.theta_d.copy_(torch.randn(sub.theta_d.numel(), generator=torch.Generator().manual_seed(i)) * 0.1)
        for encoded in (None, encode_quantized(*kmeans_quantize(sub.theta_d.detach(), 8))):
            for dtype in ("float16", "float32"):
                written = fmt.save(sub, tmp_path / f"m{i}.sqz", dtype=dtype, encoded=encoded, **kw).size_bytes
                assert fmt.size_of(sub, dtype=dtype, encoded=encoded, **kw) == written
