"""The stopping rule compress, train and intrinsic-dim share: train until the held-out objective
stops improving, keep the best epoch, and show every epoch when the output is piped."""

from __future__ import annotations

import json

import pytest
import torch

from squeeze import Subspace, SubspaceConfig
from squeeze import format as fmt
from squeeze.data import load_data
from squeeze.defaults import CONVERGE
from squeeze.fit import TrainConfig, distill_objective, predict, train
from squeeze.zoo import MLP
from squeeze_cli.app import main

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits():
    return load_data("digits")


def test_training_stops_when_the_validation_loss_stops_improving_and_keeps_the_best_epoch(digits):
    sub = Subspace(MLP(digits.input_shape, 10, hidden=(32,)), SubspaceConfig(dim=200, seed=1))
    res = train(sub, digits, TrainConfig(epochs=500, lr=0.1, patience=4), progress=False)
    assert res.epochs_run < 500  # stopped by the rule, not the cap
    losses = [h["val_loss"] for h in res.history]
    assert res.epochs_run - res.best_epoch == 4 and min(losses) == losses[res.best_epoch - 1] == res.val_loss
    _, val = digits.validation_split(0.1)
    again = float(distill_objective(predict(sub, val.x_train), val.y_train, None, 0.5))
    assert again == pytest.approx(res.val_loss, rel=1e-5)  # the model is left at its best epoch


def test_every_epoch_is_a_plain_line_when_piped(digits, capsys):
    sub = Subspace(MLP(digits.input_shape, 10, hidden=(16,)), SubspaceConfig(dim=50))
    res = train(sub, digits, TrainConfig(epochs=3, lr=0.1), progress=True, description="d=50")
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("d=50: epoch")]
    assert res.epochs_run == 3 and len(lines) == 3 and "epoch 3 (cap 3)" in lines[-1]  # the last epoch shows
    assert "\r" not in err and "\x1b" not in err  # no bar, no escape codes


def test_train_uses_the_rule_and_the_baseline_takes_its_own_settings(tmp_path, capsys):
    out = tmp_path / "t.sqz"
    args = ["train", "--arch", "squeeze.zoo:MLP", "--arch-kwargs", '{"hidden": [32]}', "--data", "digits", "--dim", "100", "--patience", "3",
            "--baseline", "--baseline-lr", "0.003", "--baseline-epochs", "4", "--json", "-o", str(out)]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    m = fmt.read(out).metrics
    assert report["epochs"] - report["best_epoch"] == 3 or report["epochs"] == CONVERGE["epochs"]
    assert m["epochs"] == report["best_epoch"] and 1 <= m["dense_epochs"] <= 4
    assert report["ratio"] == pytest.approx(fmt.read(out).dense_bytes() / out.stat().st_size, abs=0.05)
    assert main(args) == 2 and "--force" in capsys.readouterr().err  # an existing file needs --force


def test_the_sweep_reports_the_epochs_each_run_kept(digits):
    from squeeze.dimension import SweepConfig, sweep

    res = sweep(lambda: MLP(digits.input_shape, 10, hidden=(16,)), digits, [32], config=SweepConfig(patience=2, epochs=50))
    assert len(res.dense.epochs) == 1 and len(res.points[0].epochs) == 1 and 1 <= res.points[0].epochs[0] <= 50
    assert torch.isfinite(torch.tensor(res.points[0].mean))


def test_a_diverged_epoch_goes_back_to_the_best_state_with_half_the_rate(digits):
    def run(recover):
        sub = Subspace(MLP(digits.input_shape, 10, hidden=(32,)), SubspaceConfig(dim=200, seed=1))
        return sub, train(sub, digits, TrainConfig(epochs=30, lr=1.0, patience=5, recover=recover), progress=False)

    sub, res = run(2.0)
    _, plain = run(None)  # the same run without recovery: it blows up at the same epoch and stops short
    losses = [h["val_loss"] for h in res.history]
    blown = [h["epoch"] for h in res.history if h.get("recovered")]
    assert res.recoveries == len(blown) == 1 and plain.recoveries == 0
    e = blown[0]
    assert losses[e - 1] > 2.0 * min(losses[: e - 1])  # the rule: above twice the best so far
    assert [h["val_loss"] for h in plain.history[:e]] == losses[:e]  # identical until it diverged
    assert res.best_epoch > e and res.val_loss < plain.val_loss  # it went on improving after the recovery
    _, val = digits.validation_split(0.1)
    assert float(distill_objective(predict(sub, val.x_train), val.y_train, None, 0.5)) == pytest.approx(res.val_loss, rel=1e-5)
    with pytest.raises(ValueError, match="recover"):
        TrainConfig(recover=1.0)
