"""``squeeze compress``: dense checkpoint -> .sqz by distillation, --dim auto, strict loading."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from safetensors.torch import save_file

from squeeze import arch as arch_mod
from squeeze import format as fmt
from squeeze.data import load_data
from squeeze.dimension import Trial, search_dim
from squeeze.fit import TrainConfig, accuracy, train
from squeeze.zoo import MLP
from squeeze_cli.app import main

pytestmark = pytest.mark.usefixtures("one_thread")  # small models: one thread is fastest on a busy machine
MLP_KW = '{"hidden": [32]}'


@pytest.fixture(scope="module")
def digits():
    return load_data("digits")


@pytest.fixture(scope="module")
def teacher(digits, tmp_path_factory):
    """A dense MLP trained on digits in the test, saved as a .pt state_dict."""
    torch.manual_seed(0)
    model = MLP(input_shape=digits.input_shape, num_classes=10, hidden=(32,))
    train(model, digits, TrainConfig(epochs=20, lr=3e-3), progress=False)
    path = tmp_path_factory.mktemp("teacher") / "mlp.pt"
    torch.save(model.state_dict(), path)
    return path, model, accuracy(model, digits.x_test, digits.y_test)


def _json(out: str) -> dict:
    return json.loads(out[out.index("{") :])


def test_compress_round_trip(teacher, digits, tmp_path, capsys):
    path, model, teacher_acc = teacher
    assert teacher_acc > 0.85
    out = tmp_path / "mlp.sqz"
    rc = main(["compress", str(path), "--arch", "squeeze.zoo:MLP", "--arch-kwargs", MLP_KW, "--data", "digits", "--dim", "256", "--epochs", "6", "-o", str(out), "--json"])
    report = _json(capsys.readouterr().out)
    assert rc == 0
    f = fmt.read(out)
    assert f.d == report["d"] == 256 and f.D == report["D"] == sum(p.numel() for p in model.parameters())
    assert report["sqz_bytes"] == out.stat().st_size and report["teacher_bytes"] == path.stat().st_size
    assert report["ratio"] == pytest.approx(report["teacher_bytes"] / report["sqz_bytes"], abs=0.05)
    assert report["teacher_accuracy"] == pytest.approx(teacher_acc, abs=1e-6)
    # the file records the metrics, and they are the metrics of the weights it regenerates
    assert f.metrics["test_accuracy"] == pytest.approx(report["accuracy"], abs=1e-6)
    assert f.metrics["dense_test_accuracy"] == pytest.approx(teacher_acc, abs=1e-6)
    loaded = fmt.load(out)
    assert accuracy(loaded, digits.x_test, digits.y_test) == pytest.approx(report["accuracy"], abs=1e-6)
    agreement = float((loaded(digits.x_test).argmax(1) == model.eval()(digits.x_test).argmax(1)).float().mean())
    assert agreement == pytest.approx(report["agreement"], abs=1e-6)
    assert report["accuracy"] >= 0.85 * teacher_acc  # d=256 of D=2,410 keeps most of the quality


USER_ARCH = textwrap.dedent(
    """
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 24), nn.Tanh(), nn.Linear(24, 10))

        def forward(self, x):
            return self.body(x)
    """
)


def test_auto_dim_user_architecture(digits, tmp_path, capsys):
    arch_file = tmp_path / "my_net.py"
    arch_file.write_text(USER_ARCH)
    ref = f"{arch_file}:Net"
    torch.manual_seed(1)
    dense = arch_mod.build(ref)
    train(dense, digits, TrainConfig(epochs=20, lr=3e-3), progress=False)
    ckpt = tmp_path / "net.safetensors"
    save_file({k: v.contiguous() for k, v in dense.state_dict().items()}, str(ckpt))
    out = tmp_path / "net.sqz"
    rc = main(["compress", str(ckpt), "--arch", ref, "--data", "digits", "--dim", "auto", "--target", "0.85", "--epochs", "4", "-o", str(out), "--json"])
    report = _json(capsys.readouterr().out)
    assert rc == 0 and report["reached"]
    threshold = 0.85 * report["teacher_accuracy"]
    assert report["accuracy"] >= threshold
    passing = [t["d"] for t in report["trials"] if t["accuracy"] >= threshold]
    assert report["d"] == min(passing) < report["D"]
    assert len({t["d"] for t in report["trials"]}) == len(report["trials"]) >= 2
    # an independent evaluation of the decompressed weights gives the reported accuracy
    weights = tmp_path / "net_dense.safetensors"
    assert main(["decompress", str(out), "--arch", ref, "-o", str(weights)]) == 0
    from safetensors.torch import load_file

    fresh = arch_mod.build(ref)
    fresh.load_state_dict(load_file(str(weights)), strict=True)
    assert accuracy(fresh, digits.x_test, digits.y_test) == pytest.approx(report["accuracy"], abs=1e-6)


def test_target_missed_keeps_best_file_and_fails(teacher, tmp_path, capsys):
    path, _, _ = teacher
    out = tmp_path / "tiny.sqz"
    rc = main(["compress", str(path), "--arch", "squeeze.zoo:MLP", "--arch-kwargs", MLP_KW, "--data", "digits", "--dim", "auto", "--max-dim", "4", "--target", "1.0", "--epochs", "1", "-o", str(out)])
    captured = capsys.readouterr()
    assert rc == 4
    assert "target not reached" in captured.err
    assert fmt.read(out).d <= 4  # the best file found is still written


def test_mismatched_checkpoint_lists_keys(teacher, tmp_path, capsys):
    _, model, _ = teacher
    state = dict(model.state_dict())
    state.pop("head.bias")
    state["extra.weight"] = torch.zeros(3)
    bad = tmp_path / "bad.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(bad))
    out = tmp_path / "bad.sqz"
    rc = main(["compress", str(bad), "--arch", "squeeze.zoo:MLP", "--arch-kwargs", MLP_KW, "--data", "digits", "--dim", "8", "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 2
    assert "missing: head.bias" in err and "unexpected: extra.weight" in err
    assert not out.exists()


def test_pickled_module_needs_trust_pickle(teacher, tmp_path, capsys):
    _, model, _ = teacher
    pickled = tmp_path / "whole.pt"
    torch.save(model, pickled)
    out = tmp_path / "p.sqz"
    args = ["compress", str(pickled), "--arch", "squeeze.zoo:MLP", "--arch-kwargs", MLP_KW, "--data", "digits", "--dim", "16", "--epochs", "1", "-o", str(out)]
    rc = main(args)
    err = capsys.readouterr().err
    assert rc == 2 and "pickle" in err and "--trust-pickle" in err
    assert not out.exists()
    assert main(args + ["--trust-pickle"]) == 0
    assert fmt.read(out).d == 16


def test_bad_dim_value(teacher, tmp_path, capsys):
    path, _, _ = teacher
    rc = main(["compress", str(path), "--arch", "squeeze.zoo:MLP", "--data", "digits", "--dim", "many", "-o", str(tmp_path / "x.sqz")])
    assert rc == 2 and "--dim must be a positive integer or 'auto'" in capsys.readouterr().err


def _step(at: int):
    """A search target: accuracy 1 from d = ``at`` on, else d / at."""
    return lambda d: Trial(d=d, accuracy=1.0 if d >= at else d / at)


@pytest.mark.parametrize("at", [1, 5, 64, 100, 300, 1000, 2047])
def test_search_finds_the_step_within_tolerance(at):
    found = search_dim(_step(at), 1.0, start=64, max_dim=4096, tolerance=0.125)
    assert found.reached and found.best.d >= at
    failing = [t.d for t in found.trials if t.accuracy < 1.0]
    lo = max((d for d in failing if d < found.best.d), default=0)
    assert found.best.d - lo <= max(1, -(-0.125 * lo // 1))  # the bracket is as narrow as asked
    assert found.best.d == min(t.d for t in found.trials if t.accuracy >= 1.0)


def test_search_unreachable_keeps_most_accurate():
    found = search_dim(_step(10_000), 1.0, start=64, max_dim=1000)
    assert not found.reached
    assert found.best.d == 1000 and [t.d for t in found.trials] == [64, 128, 256, 512, 1000]
    assert sum(t.payload is not None for t in found.trials) == 0  # payloads only on the best (None here)
