"""Findings 5, 6, 7, 9 and 10 of issue 27, run as a new user ran them: the real ``squeeze``
command in a subprocess on real files (scikit-learn digits, a user's own .py architecture)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from test_issue27_findings import TINY_CNN, squeeze

SCRIPT = """
import sys, torch
sys.path.insert(0, sys.argv[1])
from mynet import TinyCNN
torch.manual_seed(0)
torch.save(TinyCNN(), sys.argv[2])  # the whole module: its class is mynet.TinyCNN
"""


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """A user's folder: mynet.py, a pickled whole TinyCNN beside it, and digits as a flat CSV."""
    from sklearn.datasets import load_digits

    home = tmp_path_factory.mktemp("home")
    (home / "mynet.py").write_text(TINY_CNN)
    subprocess.run([sys.executable, "-c", SCRIPT, str(home), str(home / "full.pt")], check=True)
    d = load_digits()
    np.savetxt(home / "digits.csv", np.column_stack([d.data / 16.0, d.target]), delimiter=",", fmt="%.4f")
    return home


def test_5_a_pickled_whole_module_finds_its_class_beside_the_checkpoint(home, tmp_path):
    """Run from another folder with no PYTHONPATH: the checkpoint's folder is searched for mynet.py."""
    proc = squeeze("compress", home / "full.pt", "--data", "digits", "--dim", "20", "--levels", "8", "--epochs", "1", "-o", tmp_path / "c.sqz", cwd=tmp_path, code=2)
    err = " ".join(proc.stderr.split())
    assert "pass --trust-pickle if you trust the file" in err and "add --arch" not in err, err
    squeeze("compress", home / "full.pt", "--data", "digits", "--dim", "20", "--levels", "8", "--epochs", "1", "--trust-pickle", "-o", tmp_path / "c.sqz", cwd=tmp_path)
    info = json.loads(squeeze("info", "--json", tmp_path / "c.sqz", cwd=tmp_path).stdout)
    assert info["arch"]["ref"].endswith("mynet.py:TinyCNN") and info["d"] == 20
    (tmp_path / "alone").mkdir()
    (tmp_path / "alone" / "full.pt").write_bytes((home / "full.pt").read_bytes())  # without mynet.py: says which module is missing
    proc = squeeze("compress", tmp_path / "alone" / "full.pt", "--data", "digits", "--dim", "20", "--trust-pickle", "-o", tmp_path / "d.sqz", cwd=tmp_path / "alone", code=2)
    err = " ".join(proc.stderr.split())
    assert "cannot be imported" in err and "mynet" in err and "--arch" in err, err


def test_6_flat_csv_data_takes_an_input_shape_for_a_cnn(home, tmp_path):
    args = ["train", "--arch", home / "mynet.py:TinyCNN", "--data", home / "digits.csv", "--dim", "20", "--epochs", "1", "-o", tmp_path / "t.sqz"]
    proc = squeeze(*args, cwd=tmp_path, code=2)
    err = " ".join(proc.stderr.split())
    assert "its examples are flat (64 values each): give the shape of one example as --input-shape (e.g. 1,8,8" in err, err
    assert "add x_test and y_test" not in err and "a CSV holds one table" in err
    squeeze(*args, "--input-shape", "1,8,8", cwd=tmp_path)
    info = json.loads(squeeze("info", "--json", tmp_path / "t.sqz", cwd=tmp_path).stdout)
    assert info["input"]["input_shape"] == [1, 8, 8]
    proc = squeeze(*args[:-1], tmp_path / "u.sqz", "--input-shape", "1,9,9", cwd=tmp_path, code=2)
    assert "--input-shape [1, 9, 9] holds 81 values, but each example of digits.csv has 64" in " ".join(proc.stderr.split())


def test_7_the_candidate_table_shows_written_bytes_budget_and_wall_time(tmp_path):
    from safetensors.torch import save_file

    from squeeze.zoo import MLP

    torch.manual_seed(0)
    save_file(MLP(input_shape=(1, 8, 8), num_classes=10, hidden=(16,)).state_dict(), str(tmp_path / "t.safetensors"))
    args = ["compress", "t.safetensors", "--arch", "squeeze.zoo:MLP", "--arch-kwargs", '{"hidden": [16]}', "--data", "digits", "--size", "1000", "--epochs", "2", "--qat-steps", "5"]
    proc = squeeze(*args, "-o", "a.sqz", cwd=tmp_path, env={"COLUMNS": "250"}, code=None)
    assert proc.returncode in (0, 4), proc.stderr
    written = (tmp_path / "a.sqz").stat().st_size
    kept = [line for line in proc.stdout.splitlines() if "<- kept" in line]
    assert len(kept) == 1 and f"{written:,}" in kept[0], (written, kept)
    report = json.loads(squeeze(*args, "--json", "-o", "b.sqz", cwd=tmp_path, code=None).stdout)
    trials = report["trials"]
    kept_row = [t for t in trials if (t["d"], t["encoding"]) == (report["d"], report["encoding"])]
    assert kept_row[0]["bytes"] == report["sqz_bytes"] == (tmp_path / "b.sqz").stat().st_size
    assert sum(t["wall_seconds"] for t in trials) <= report["seconds"]


def test_7_over_budget_rows_are_marked():
    from types import SimpleNamespace

    from rich.console import Console

    from squeeze.search import Candidate
    from squeeze_cli.tables import trials_table

    rows = [Candidate(d=d, encoding="q4", bytes=b, payload_bytes=b - 600, val_accuracy=0.9, val_agreement=0.9, epochs=3, seconds=9.0, wall_seconds=w, test_accuracy=0.9) for d, b, w in ((900, 1100, 2.0), (700, 980, 1.5))]
    result = SimpleNamespace(candidates=rows, kept=rows[1], size=1000, refitted=False, seconds=5.0)
    console = Console(width=250, record=True)
    console.print(trials_table(result, written_bytes=972))
    text = console.export_text()
    over = [line for line in text.splitlines() if "1,100" in line]
    assert over and "over 1,000" in over[0]
    assert "972" in text and "3.5 s for the candidates, 1.5 s for the refit and the test split (5.0 s in all)" in text


def test_9_info_speaks_plain_english(tmp_path):
    squeeze("train", "--arch", "squeeze.zoo:MLP", "--arch-kwargs", '{"hidden": [16]}', "--data", "digits", "--dim", "20", "--epochs", "1", "-o", "m.sqz", cwd=tmp_path, env={"COLUMNS": "200"})
    out = squeeze("info", "m.sqz", cwd=tmp_path, env={"COLUMNS": "200"}).stdout
    assert "metric metric" not in out and "1 candidates" not in out
    bench = squeeze("bench", "m.sqz", "--repeats", "1", cwd=tmp_path, env={"COLUMNS": "200"}).stdout
    assert "1 threads" not in bench and "1 thread," in bench


def test_9_missing_arch_and_data_are_reported_together(tmp_path):
    proc = squeeze("train", "--dim", "20", "-o", "m.sqz", cwd=tmp_path, code=2)
    err = " ".join(proc.stderr.split())
    assert "--arch (" in err and "--data (" in err and "are required" in err


def test_9_tiny_graphs_name_the_batch_dimension_batch(tmp_path):
    import onnx

    squeeze("train", "--arch", "squeeze.zoo:MLP", "--arch-kwargs", '{"hidden": [16]}', "--data", "digits", "--dim", "20", "--epochs", "1", "-o", "m.sqz", cwd=tmp_path)
    for extra, name in (([], "full.onnx"), (["--tiny"], "tiny.onnx")):
        squeeze("export", "m.sqz", *extra, "-o", name, cwd=tmp_path)
        graph = onnx.load(str(tmp_path / name)).graph
        assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch", name
        assert graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch", name


@pytest.fixture(scope="module")
def small_sqz(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("demo")
    squeeze("train", "--arch", "squeeze.zoo:MLP", "--arch-kwargs", '{"hidden": [16]}', "--data", "digits", "--dim", "20", "--epochs", "1", "-o", "m.sqz", cwd=home)
    return home / "m.sqz"


def _serve(sqz: Path, tmp: Path) -> tuple[subprocess.Popen, dict]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"TMPDIR": str(tmp)}
    proc = subprocess.Popen([sys.executable, "-m", "squeeze_cli", "demo", str(sqz), "--json"], cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line, proc.stderr.read()
    return proc, json.loads(line)


def test_9_demo_json_and_10_no_listing_and_sigterm_cleans_up(small_sqz, tmp_path):
    squeeze("demo", small_sqz, "--no-serve", "-o", tmp_path / "site", "--json", cwd=tmp_path)  # --json is an option now
    proc, info = _serve(small_sqz, tmp_path)
    try:
        assert info["url"].startswith("http://127.0.0.1:") and info["model_bytes"] > 0
        folders = [p for p in tmp_path.iterdir() if p.name.startswith("squeeze-demo-")]
        assert len(folders) == 1 and (folders[0] / "model.onnx").exists()
        with urllib.request.urlopen(info["url"] + "model.json") as r:
            assert json.loads(r.read())["tiny"] is True
        for folder in ("vendor/", "examples/", "vendor/onnxruntime-web/"):
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(info["url"] + folder)
            assert e.value.code == 404, folder
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0, proc.stderr.read()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("squeeze-demo-")]  # the temporary folder is gone
