"""The README's Python section, run exactly as written (issue 27), and the library verbs."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def python_section() -> str:
    """The first ```python block under the README's '## Python' heading."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Python\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_python_section_runs_as_written(tmp_path, monkeypatch):
    code = python_section()
    assert "squeeze.compress(" in code and ".save(" in code and "squeeze.load(" in code and "squeeze.export_onnx(" in code
    (tmp_path / "samples").symlink_to(ROOT / "samples")  # the README's paths are relative to the checkout
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "README.md (Python)", "exec"), scope)
    import squeeze

    report = squeeze.verify("mlp.sqz")
    assert report.ok and report.status == "ok", report
    model = scope["model"]
    f = squeeze.read("mlp.sqz")
    assert sum(p.numel() for p in model.parameters()) == f.D
    assert (tmp_path / "mlp.onnx").stat().st_size > 0


def test_verify_returns_a_report_for_every_kind_of_file(tmp_path):
    import torch

    import squeeze
    from squeeze.zoo import MLP

    sub = squeeze.Subspace(MLP(input_shape=(1, 8, 8), num_classes=10, hidden=(16,)), squeeze.SubspaceConfig(dim=20, seed=1))
    with torch.no_grad():
        sub.theta_d.copy_(torch.linspace(-1, 1, 20))
    good = tmp_path / "good.sqz"
    squeeze.save(sub, good, arch={"ref": "squeeze.zoo:MLP", "kwargs": {"input_shape": [1, 8, 8], "num_classes": 10, "hidden": [16]}})
    ok = squeeze.verify(good)
    assert (ok.ok, ok.status, ok.exit_code, ok.D) == (True, "ok", 0, sub.D)
    raw = good.read_bytes()
    (tmp_path / "cut.sqz").write_bytes(raw[: len(raw) // 2])
    cut = squeeze.verify(tmp_path / "cut.sqz")
    assert (cut.ok, cut.status, cut.exit_code) == (False, "unreadable", 2) and "truncated" in cut.reason
    missing = squeeze.verify(tmp_path / "absent.sqz")
    assert (missing.status, missing.reason) == ("unreadable", f"{tmp_path / 'absent.sqz'} does not exist")
    bad = bytearray(raw)
    bad[-5] ^= 0x0F
    (tmp_path / "bad.sqz").write_bytes(bytes(bad))
    damaged = squeeze.verify(tmp_path / "bad.sqz")
    assert (damaged.ok, damaged.status, damaged.exit_code) == (False, "mismatch", 1) and damaged.parts, damaged


def test_the_verbs_are_the_package_attributes_even_after_their_modules_are_imported():
    import squeeze
    import squeeze.compress  # noqa: F401  (a module of the same name)
    import squeeze.verify  # noqa: F401
    from squeeze.api import compress
    from squeeze.training import train
    from squeeze.verify import verify

    assert squeeze.compress is compress and squeeze.train is train and squeeze.verify is verify
    assert squeeze.CompressConfig(size=1500).size == 1500


def test_every_command_file_is_thin():
    """Each command parses, calls one library verb and prints (issue 27): about 120 lines at most."""
    commands = ROOT / "cli" / "commands"
    long = {p.name: n for p in commands.glob("*.py") if (n := len(p.read_text().splitlines())) > 125}
    assert not long, long


def test_quantize_returns_a_result_that_saves_and_reports(tmp_path):
    import torch

    import squeeze
    from squeeze.quantize import QuantizeConfig
    from squeeze.zoo import MLP

    sub = squeeze.Subspace(MLP(input_shape=(1, 8, 8), num_classes=10, hidden=(16,)), squeeze.SubspaceConfig(dim=40, seed=2))
    with torch.no_grad():
        sub.theta_d.copy_(torch.linspace(-1, 1, 40))
    squeeze.save(sub, tmp_path / "f.sqz", arch={"ref": "squeeze.zoo:MLP", "kwargs": {"input_shape": [1, 8, 8], "num_classes": 10, "hidden": [16]}})
    done = squeeze.quantize(tmp_path / "f.sqz", QuantizeConfig(levels=4, steps=5), data="digits")
    f = done.save(tmp_path / "q.sqz")
    report = done.report()
    assert report["levels"] == 4 and report["bytes_after"] == f.size_bytes and report["bytes_before"] == squeeze.read(tmp_path / "f.sqz").size_bytes
    assert 0 <= report["test_accuracy_after"] <= 1 and f.metrics["levels"] == 4
    assert squeeze.verify(tmp_path / "q.sqz").ok
    assert len(set(squeeze.read(tmp_path / "q.sqz").theta_d.tolist())) <= 4
