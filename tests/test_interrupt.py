"""Interrupted runs lose nothing: every output is written to a temporary file, fsynced and
renamed into place, so Ctrl-C (or any failure) leaves the previous file or nothing, never half a
file; an interrupted ``train`` saves the best result so far and says where."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from squeeze import Subspace, SubspaceConfig
from squeeze import format as fmt
from squeeze import loading
from squeeze.atomic import atomic_path, write_bytes
from squeeze.data import load_data
from squeeze.fit import accuracy
from squeeze.zoo import MLP
from squeeze_cli.app import main

ARCH = {"ref": "squeeze.zoo:MLP", "kwargs": {"input_shape": [1, 8, 8], "num_classes": 10, "hidden": [16]}}
TRAIN = ["train", "--arch", "squeeze.zoo:MLP", "--arch-kwargs", '{"hidden": [32]}', "--data", "digits", "--dim", "60", "--batch-size", "64"]


def _sqz(path: Path, seed: int = 3) -> Path:
    sub = Subspace(MLP(**ARCH["kwargs"]), SubspaceConfig(dim=20, seed=seed))
    with torch.no_grad():
        sub.theta_d.copy_(torch.linspace(-1, 1, 20))
    fmt.save(sub, path, arch=ARCH)
    return path


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


class Interrupt:
    """A stand-in for a writer that is interrupted half-way: it writes half of what the real
    writer would, then raises KeyboardInterrupt (as Ctrl-C does)."""

    def __init__(self, real, path_arg: int = 1):
        self.real, self.path_arg, self.calls = real, path_arg, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        self.real(*args, **kwargs)
        path = Path(args[self.path_arg])
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        raise KeyboardInterrupt


# --------------------------------------------------------------------------- the atomic writer


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError, SystemExit])
@pytest.mark.parametrize("previous", [b"the previous file", None])
def test_a_failed_write_leaves_the_previous_file_or_nothing(tmp_path, error, previous):
    target = tmp_path / "out.bin"
    if previous is not None:
        target.write_bytes(previous)
    with pytest.raises(error):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half of the new")
            raise error
    assert (target.read_bytes() if target.exists() else None) == previous
    assert _leftovers(tmp_path) == []


def test_an_interrupt_after_the_bytes_are_written_but_before_the_rename(tmp_path, monkeypatch):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")

    def interrupted_fsync(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted_fsync)
    with pytest.raises(KeyboardInterrupt):
        write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


def test_a_written_file_is_complete_and_has_an_ordinary_mode(tmp_path):
    target = tmp_path / "new" / "dir" / "out.bin"
    write_bytes(target, b"x" * 10_000)
    assert target.read_bytes() == b"x" * 10_000
    mask = os.umask(0o022)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask
    assert _leftovers(target.parent) == []


# --------------------------------------------------------------------------- train


@pytest.fixture(scope="module")
def digits():
    return load_data("digits")


def test_train_interrupted_saves_the_best_so_far_and_says_where(tmp_path, monkeypatch, capsys, digits):
    out = tmp_path / "model.sqz"
    per_epoch = -(-len(digits.validation_split(0.1)[0].y_train) // 64)
    stop = 2 * per_epoch + per_epoch // 2  # Ctrl-C in the middle of the third epoch
    real_step, steps = torch.optim.Adam.step, []

    def step(self, *args, **kwargs):
        steps.append(1)
        if len(steps) == stop:
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    assert main([*TRAIN, "--epochs", "4", "--patience", "0", "-o", str(out)]) == 130
    err = capsys.readouterr().err
    assert len(steps) == stop  # it stopped at the interrupt
    assert f"saved the best finished epoch ({fmt.read(out).metrics['epochs']}) to {out}" in " ".join(err.split())
    assert "Traceback" not in err
    f = fmt.read(out)
    model = loading.load(out)  # complete, and its digest verifies
    assert f.metrics["epochs"] in (1, 2) and f.metrics["interrupted"] is True  # interrupted in its third epoch: a finished one is kept
    assert f.metrics["test_accuracy"] == round(accuracy(model, digits.x_test, digits.y_test), 6)  # the file's own numbers
    assert f.metrics["test_accuracy"] > 0.25  # trained for two epochs: not a random model (0.1)
    assert _leftovers(tmp_path) == []


def test_train_interrupted_while_a_forward_puts_the_parameters_back(tmp_path, monkeypatch, capsys):
    """Ctrl-C inside functional_call's finally block, as it restores the wrapped model's meta
    parameters: the run still saves its best finished epoch (it used to fail with "Cannot copy
    out of meta tensor" when the best state was restored into a half-restored model)."""
    import squeeze.subspace as subspace_module

    out, calls = tmp_path / "model.sqz", []
    real_call = subspace_module.functional_call

    def interrupted_while_restoring(module, tensors, args, kwargs):
        calls.append(1)
        result = real_call(module, tensors, args, kwargs)
        if len(calls) == 40:  # well into the second epoch; leave one regenerated tensor behind
            name = next(iter(tensors))
            owner, _, leaf = name.rpartition(".")
            module.get_submodule(owner)._parameters[leaf] = torch.nn.Parameter(tensors[name].detach().clone())
            raise KeyboardInterrupt
        return result

    monkeypatch.setattr(subspace_module, "functional_call", interrupted_while_restoring)
    assert main([*TRAIN, "--epochs", "4", "--patience", "0", "-o", str(out)]) == 130
    err = " ".join(capsys.readouterr().err.split())
    assert "Traceback" not in err and "meta tensor" not in err, err
    assert f"saved the best finished epoch ({fmt.read(out).metrics['epochs']}) to {out}" in err
    assert loading.load(out) is not None  # complete, and its digest verifies


def test_train_interrupted_while_saving_keeps_the_previous_file(tmp_path, monkeypatch, capsys):
    import safetensors.torch

    out = _sqz(tmp_path / "model.sqz")
    before = out.read_bytes()
    real = safetensors.torch.save

    def interrupted_save(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.torch, "save", interrupted_save)
    assert main([*TRAIN, "--epochs", "1", "--force", "-o", str(out)]) == 130
    assert "Traceback" not in capsys.readouterr().err
    assert out.read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_sigint_to_a_training_process(tmp_path):
    """Ctrl-C as a user sends it: SIGINT to ``squeeze train`` once training has started."""
    out = tmp_path / "model.sqz"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "500"}
    # torch.optim imports torch._dynamo on first use, which takes seconds and happens after the
    # "training" line but before the loop: import it first, so the signal lands in the loop.
    cmd = [sys.executable, "-c", "import torch._dynamo; from squeeze_cli.app import run; run()", *TRAIN, "--epochs", "100000", "--patience", "0", "-o", str(out)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        seen = ""
        while not seen.startswith("training"):  # "training ... subspace of D=..." comes right before the loop
            line = proc.stderr.readline()
            assert line, f"squeeze train ended before training: {seen}"
            seen = line
        time.sleep(3.0)  # a few epochs
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        proc.kill()
    stderr = " ".join((seen + stderr).split())
    assert "Traceback" not in stderr, stderr
    assert "saved the best finished epoch" in stderr and str(out) in stderr, stderr
    assert "wrote" in stdout
    assert proc.returncode == 130
    loading.load(out)  # complete, and its digest verifies
    assert _leftovers(tmp_path) == []


# --------------------------------------------------------------------------- decompress


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
@pytest.mark.parametrize("previous", [True, False])
def test_decompress_interrupted_while_writing(tmp_path, monkeypatch, capsys, suffix, previous):
    sqz = _sqz(tmp_path / "m.sqz")
    out = tmp_path / f"weights{suffix}"
    if previous:
        assert main(["decompress", str(_sqz(tmp_path / "other.sqz", seed=9)), "-o", str(out)]) == 0
        before = out.read_bytes()
    if suffix == ".safetensors":  # streamed: Ctrl-C while the second tensor is regenerated, the first one written
        from squeeze.materialize import Regenerator

        calls, fill = [], Regenerator.fill

        def interrupted(self, *args, **kwargs):
            calls.append(1)
            if len(calls) == 2:
                raise KeyboardInterrupt
            return fill(self, *args, **kwargs)

        monkeypatch.setattr(Regenerator, "fill", interrupted)
    else:
        writer = Interrupt(torch.save)
        monkeypatch.setattr(torch, "save", writer)
    assert main(["decompress", str(sqz), "-o", str(out), "--force"]) == 130
    assert len(calls) == 2 if suffix == ".safetensors" else writer.calls == 1
    if previous:
        assert out.read_bytes() == before
    else:
        assert not out.exists()
    assert _leftovers(tmp_path) == []


def test_decompress_writes_complete_weights(tmp_path):
    sqz = _sqz(tmp_path / "m.sqz")
    out = tmp_path / "w.safetensors"
    assert main(["decompress", str(sqz), "-o", str(out)]) == 0
    from safetensors.torch import load_file

    model = MLP(**ARCH["kwargs"])
    model.load_state_dict(load_file(str(out)), strict=True)
    ref = loading.load(sqz)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref.state_dict().values()))


# --------------------------------------------------------------------------- export


@pytest.mark.parametrize("previous", [True, False])
def test_export_interrupted_while_writing(tmp_path, monkeypatch, previous):
    import onnx_ir

    sqz = _sqz(tmp_path / "m.sqz")
    out = tmp_path / "m.onnx"
    if previous:
        out.write_bytes(b"the previous export")
    writer = Interrupt(onnx_ir.save)
    monkeypatch.setattr(onnx_ir, "save", writer)
    assert main(["export", str(sqz), "-o", str(out), "--input-shape", "1,8,8", *(["--force"] if previous else [])]) == 130
    assert writer.calls == 1
    assert (out.read_bytes() if out.exists() else None) == (b"the previous export" if previous else None)
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("stage", ["writing", "checking"])
def test_export_with_external_data_interrupted_leaves_the_previous_pair(tmp_path, monkeypatch, stage):
    import onnx_ir

    import squeeze.export as export

    out, data = tmp_path / "m.onnx", tmp_path / "m.onnx.data"
    out.write_bytes(b"previous graph")
    data.write_bytes(b"previous weights")
    if stage == "writing":
        monkeypatch.setattr(onnx_ir, "save", Interrupt(onnx_ir.save))
    else:

        def interrupted_check(*args, **kwargs):
            raise KeyboardInterrupt

        monkeypatch.setattr(export, "compare_onnx", interrupted_check)
    with pytest.raises(KeyboardInterrupt):
        export.export_onnx(_sqz(tmp_path / "m.sqz"), out, input_shape=(1, 8, 8), external_data=True)
    assert out.read_bytes() == b"previous graph" and data.read_bytes() == b"previous weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.data", "m.sqz"]


# --------------------------------------------------------------------------- compress


@pytest.fixture
def teacher(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "teacher.safetensors"
    save_file(MLP(input_shape=(1, 8, 8), num_classes=10, hidden=(32,)).state_dict(), str(path))
    return path


def _compress(teacher, out, *extra):
    return ["compress", str(teacher), "--arch", "squeeze.zoo:MLP", "--arch-kwargs", '{"hidden": [32]}', "--data", "digits", "--batch-size", "64", "-o", str(out), *extra]


def _interrupt_at(monkeypatch, stop: int) -> list:
    """Ctrl-C at optimiser step ``stop`` (a KeyboardInterrupt where the signal would land)."""
    real_step, steps = torch.optim.Adam.step, []

    def step(self, *args, **kwargs):
        steps.append(1)
        if len(steps) == stop:
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    return steps


def test_compress_interrupted_saves_the_best_finished_epoch_and_says_so(tmp_path, monkeypatch, capsys, teacher, digits):
    out = tmp_path / "c.sqz"
    per_epoch = -(-len(digits.validation_split(0.1)[0].y_train) // 64)
    stop = per_epoch + per_epoch // 2  # Ctrl-C in the middle of the second epoch of the only fit
    steps = _interrupt_at(monkeypatch, stop)
    assert main(_compress(teacher, out, "--dim", "50", "--levels", "4", "--epochs", "3")) == 130
    err = " ".join(capsys.readouterr().err.split())
    assert len(steps) == stop
    assert f"interrupted: saved the best finished trial (d = 50, q4, {out.stat().st_size:,} bytes) to {out}" in err and "Traceback" not in err
    f = fmt.read(out)
    assert f.d == 50 and f.metrics["interrupted"] is True
    loading.load(out)  # complete, and its digest verifies
    assert _leftovers(tmp_path) == []


def test_compress_interrupted_in_a_search_keeps_only_finished_trials(tmp_path, monkeypatch, capsys, teacher, digits):
    out = tmp_path / "s.sqz"
    per_epoch = -(-len(digits.validation_split(0.1)[0].y_train) // 64)
    # the first fit (d = 256) runs 2 epochs; Ctrl-C lands in the second (d = 512)
    _interrupt_at(monkeypatch, 2 * per_epoch + per_epoch // 2)
    assert main(_compress(teacher, out, "--dim", "auto", "--levels", "4", "--epochs", "2", "--patience", "0", "--qat-steps", "0", "--target", "1.0")) == 130
    err = " ".join(capsys.readouterr().err.split())
    f = fmt.read(out)
    assert f.d == 256 and f.metrics["interrupted"] is True and f.metrics["search"]["candidates"] == 1  # the finished trial, not the interrupted one
    assert "saved the best finished trial (d = 256" in err


def test_compress_interrupted_while_saving_keeps_the_previous_file(tmp_path, monkeypatch, teacher):
    import safetensors.torch

    out = _sqz(tmp_path / "c.sqz")
    before = out.read_bytes()
    real = safetensors.torch.save

    def interrupted_save(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.torch, "save", interrupted_save)
    assert main(_compress(teacher, out, "--dim", "30", "--levels", "4", "--epochs", "1", "--force")) == 130
    assert out.read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_sigint_to_compress_over_an_existing_file_leaves_it_byte_identical(tmp_path, teacher):
    """Ctrl-C as a user sends it, to a search writing over an existing file with --force: the
    file is not replaced, even though a finished trial exists."""
    out = _sqz(tmp_path / "good.sqz")
    before = out.read_bytes()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "500"}
    args = _compress(teacher, out, "--force", "--epochs", "60", "--patience", "0", "--levels", "4", "--qat-steps", "0", "--target", "1.0")
    cmd = [sys.executable, "-c", "import torch._dynamo; from squeeze_cli.app import run; run()", *args]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        seen = ""
        while not seen.strip().startswith("d ="):  # the first trial finished; the second fit starts
            line = proc.stderr.readline()
            assert line, f"compress ended before its first trial: {seen}"
            seen = line
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        proc.kill()
    stderr = " ".join((seen + stderr).split())
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr
    assert "existed before this run and is left unchanged" in stderr, stderr
    assert out.read_bytes() == before
    assert _leftovers(tmp_path) == []
