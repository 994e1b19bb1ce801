"""``squeeze intrinsic-dim``: the d sweep, d_int90 (Li et al. 2018) and the plot."""

from __future__ import annotations

import json

import pytest

from squeeze import arch as arch_mod
from squeeze.data import load_data
from squeeze.dimension import SweepConfig, SweepPoint, SweepResult, sweep
from squeeze_cli.app import main

pytestmark = pytest.mark.usefixtures("one_thread")  # small models: one thread is fastest on a busy machine
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _json(out: str) -> dict:
    return json.loads(out[out.index("{") :])


def test_cli_sweep_on_digits_json_and_plot(tmp_path, capsys):
    png = tmp_path / "curve.png"
    rc = main(["intrinsic-dim", "--arch", "squeeze.zoo:MLP", "--arch-kwargs", '{"hidden": [32]}', "--data", "digits", "--dims", "4,32,256,100000", "--epochs", "5", "--dense-lr", "0.01", "--plot", str(png), "--json"])
    captured = capsys.readouterr()
    assert rc == 0
    r = _json(captured.out)
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 5000
    assert [p["d"] for p in r["points"]] == [4, 32, 256] and r["skipped_dims"] == [100000]
    assert r["D"] == 64 * 32 + 32 + 32 * 10 + 10
    dense = r["dense"]["mean"]
    assert dense > 0.85 and r["threshold"] == pytest.approx(0.9 * dense)
    # d_int is the smallest tried d whose mean reaches 90% of dense, recomputed here from the points
    passing = [p["d"] for p in r["points"] if p["mean"] >= 0.9 * dense]
    assert r["d_int"] == (min(passing) if passing else None)
    assert r["points"][0]["mean"] < r["points"][-1]["mean"]  # 4 numbers cannot do what 256 do
    assert "skipped dims above D" in captured.err


def test_cli_sweep_prints_table(tmp_path, capsys):
    rc = main(["intrinsic-dim", "--arch", "squeeze.zoo:MLP", "--arch-kwargs", '{"hidden": [16]}', "--data", "digits", "--dims", "8,128", "--epochs", "2", "--repeats", "2"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "dense" in out and "128" in out and "d_int90" in out
    assert ("smallest tried d" in out) != ("not reached" in out)


def test_sweep_repeats_use_distinct_seeds():
    data = load_data("digits")
    result = sweep(lambda: arch_mod.build("squeeze.zoo:MLP", {"input_shape": [1, 8, 8], "num_classes": 10, "hidden": [16]}), data, [64], repeats=2, config=SweepConfig(epochs=2))
    assert len(result.dense.accuracies) == 2 and len(result.points[0].accuracies) == 2
    assert result.points[0].accuracies[0] != result.points[0].accuracies[1]  # different theta_0, P and data order


def test_all_dims_above_D_is_an_error(capsys):
    rc = main(["intrinsic-dim", "--arch", "squeeze.zoo:MLP", "--arch-kwargs", '{"hidden": [4]}', "--data", "digits", "--dims", "100000", "--epochs", "1"])
    assert rc == 2 and "exceeds the model's D" in capsys.readouterr().err


def test_bad_dims_list(capsys):
    rc = main(["intrinsic-dim", "--arch", "squeeze.zoo:MLP", "--data", "digits", "--dims", "10,x"])
    assert rc == 2 and "--dims must be a comma-separated list" in capsys.readouterr().err


def _result(means: list[tuple[int, float]], dense: float = 1.0) -> SweepResult:
    return SweepResult(dense=SweepPoint(None, [dense]), points=[SweepPoint(d, [m]) for d, m in means], fraction=0.9, D=10_000)


def test_d_int_rule_and_interpolation():
    r = _result([(10, 0.5), (100, 0.8), (1000, 0.95), (2000, 0.99)])
    assert r.d_int == 1000
    assert r.d_int_interpolated == pytest.approx(10 ** (2 + (0.9 - 0.8) / (0.95 - 0.8)))  # linear in log d
    assert _result([(10, 0.95), (100, 0.97)]).d_int_interpolated is None  # already passing at the smallest d
    none = _result([(10, 0.2), (100, 0.3)])
    assert none.d_int is None and none.d_int_interpolated is None
    # a noisy dip after the first passing d does not move d_int
    assert _result([(10, 0.5), (100, 0.91), (200, 0.89), (400, 0.95)]).d_int == 100


@pytest.mark.slow
def test_intrinsic_dim_mnist5k_mlp_and_lenet():
    """Li et al. (2018) on full MNIST: d_int90 = 750 (MLP), 290 (LeNet). On mnist5k the issue
    asks for an MLP d_int90 between 300 and 2,000 and a lower one for LeNet. Measured with these
    settings (and with `squeeze intrinsic-dim ... --repeats 2`): MLP 500 (dense 0.9095),
    LeNet 300 (dense 0.9285)."""
    data = load_data("mnist5k")
    dims = [100, 200, 300, 400, 500, 750, 1000, 1500, 2000]
    found = {}
    for name in ("MLP", "LeNet"):
        ref = f"squeeze.zoo:{name}"
        kwargs = arch_mod.complete_kwargs(ref, {}, data.input_shape, data.num_classes)
        result = sweep(lambda: arch_mod.build(ref, kwargs), data, dims, repeats=2, config=SweepConfig(epochs=10))
        found[name] = result.d_int
        assert result.dense.mean > 0.88, name
    assert found["MLP"] is not None and 300 <= found["MLP"] <= 2000, found
    assert found["LeNet"] is not None and found["LeNet"] < found["MLP"], found
