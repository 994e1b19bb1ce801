"""The findings of issue 27, each run as a new user ran it: the real ``squeeze`` command in a
subprocess, on real files (scikit-learn digits, a user's own .py architecture)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from squeeze.zoo import MLP

TINY_CNN = '''
import torch
from torch import nn


class TinyCNN(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 8 * 8, num_classes)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))
'''


def squeeze(*args, cwd: Path, env: dict | None = None, code: int | None = 0) -> subprocess.CompletedProcess:
    """``squeeze ARGS`` in a fresh process, from ``cwd`` (nothing on PYTHONPATH)."""
    full = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SQUEEZE_KERNEL", "CC")}
    full.update(env or {})
    proc = subprocess.run([sys.executable, "-m", "squeeze_cli", *map(str, args)], cwd=cwd, env=full, capture_output=True, text=True, timeout=300)
    if code is not None:
        assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    return proc


@pytest.fixture(scope="module")
def user_cnn(tmp_path_factory) -> Path:
    """A .sqz made from the user's own mynet.py:TinyCNN on digits (BatchNorm buffers included)."""
    home = tmp_path_factory.mktemp("user")
    (home / "mynet.py").write_text(TINY_CNN)
    squeeze("train", "--arch", "mynet.py:TinyCNN", "--data", "digits", "--dim", "30", "--epochs", "1", "-o", "cnn.sqz", cwd=home)
    return home / "cnn.sqz"


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("teacher")
    torch.manual_seed(0)
    save_file(MLP(input_shape=(1, 8, 8), num_classes=10, hidden=(16,)).state_dict(), str(home / "t.safetensors"))
    return home / "t.safetensors"


def test_1_a_budget_below_the_smallest_file_is_a_clear_exit_4_not_an_interrupt(teacher):
    proc = squeeze("compress", teacher, "--arch", "squeeze.zoo:MLP", "--arch-kwargs", '{"hidden": [16]}', "--data", "digits", "--size", "500", "-o", "s.sqz", cwd=teacher.parent, code=4)
    err = " ".join(proc.stderr.split())
    assert "interrupted" not in err
    assert "no file fits in 500 bytes; the smallest file this model makes is about" in err and "Try a larger --size" in err
    smallest = int(err.split("makes is about ")[1].split(" bytes")[0].replace(",", ""))
    assert 500 < smallest < 2000
    assert not (teacher.parent / "s.sqz").exists()


def test_2_size_and_target_together_are_refused(teacher):
    proc = squeeze("compress", teacher, "--arch", "squeeze.zoo:MLP", "--data", "digits", "--size", "2KB", "--target", "0.9", "-o", "s.sqz", cwd=teacher.parent, code=2)
    assert "--size and --target are two goals" in " ".join(proc.stderr.split())
    from squeeze.compress import CompressConfig

    with pytest.raises(ValueError, match="target=0.9 and size=2,000 are two goals"):
        CompressConfig(size=2000, target=0.9)
    assert CompressConfig(size=2000).target == CompressConfig().target == 0.98  # the default alone is no second goal


@pytest.mark.parametrize("command", ["verify", "decompress"])
def test_3_a_kernel_that_cannot_be_built_is_a_clear_exit_2(user_cnn, tmp_path, command):
    env = {"CC": "/bin/false", "SQUEEZE_KERNEL": "native", "SQUEEZE_CACHE_DIR": str(tmp_path / "cache")}
    extra = ["-o", tmp_path / "w.safetensors"] if command == "decompress" else []
    proc = squeeze(command, user_cnn, *extra, cwd=tmp_path, env=env, code=2)
    err = " ".join(proc.stderr.split())
    assert err.startswith("error: SQUEEZE_KERNEL=native but the C kernels cannot be built here") and "SQUEEZE_KERNEL=reference always works" in err
    if command == "verify":
        proc = squeeze("verify", "--json", user_cnn, cwd=tmp_path, env=env, code=2)
        report = json.loads(proc.stdout)
        assert report["ok"] is False and report["status"] == "error" and "cannot be built" in report["reason"]


def test_4_verify_json_reports_unreadable_files(user_cnn, tmp_path):
    raw = user_cnn.read_bytes()
    (tmp_path / "cut.sqz").write_bytes(raw[:100])
    (tmp_path / "notes.sqz").write_text("my notes\n" * 30)
    for name in ("cut.sqz", "notes.sqz", "absent.sqz"):
        proc = squeeze("verify", "--json", name, cwd=tmp_path, code=2)
        report = json.loads(proc.stdout)
        assert report["ok"] is False and report["status"] == "unreadable" and report["file"] == name and report["reason"], report
    bad = bytearray(raw)
    bad[-3] ^= 0x55  # inside theta_d: the records check names the part
    (tmp_path / "bad.sqz").write_bytes(bytes(bad))
    report = json.loads(squeeze("verify", "--json", "bad.sqz", cwd=tmp_path, code=1).stdout)
    assert report["ok"] is False and report["status"] == "mismatch" and report["parts"], report


def test_8_verify_decompress_bench_info_need_only_the_file(user_cnn, tmp_path):
    """Run from a folder without mynet.py: the file's manifest is enough for the weights."""
    ok = json.loads(squeeze("verify", "--json", user_cnn, cwd=tmp_path).stdout)
    assert ok["ok"] is True and ok["status"] == "ok"
    out = tmp_path / "w.safetensors"
    squeeze("decompress", user_cnn, "-o", out, cwd=tmp_path)
    from safetensors.torch import load_file

    sys.path.insert(0, str(user_cnn.parent))
    try:
        from mynet import TinyCNN
    finally:
        sys.path.remove(str(user_cnn.parent))
    model = TinyCNN()
    model.load_state_dict(load_file(str(out)), strict=True)  # every tensor, buffers included
    bench = json.loads(squeeze("bench", "--json", "--repeats", "1", user_cnn, cwd=tmp_path).stdout)
    assert all(row["same_digest"] for row in bench["paths"])
    info = json.loads(squeeze("info", "--json", user_cnn, cwd=tmp_path).stdout)
    assert info["arch"]["ref"].endswith("mynet.py:TinyCNN")
    proc = squeeze("export", user_cnn, "-o", tmp_path / "m.onnx", cwd=tmp_path, code=2)  # running it needs the module
    assert "--arch" in proc.stderr
