"""Every bad input to the CLI ends in one clear sentence on stderr that names the problem, a
non-zero exit code and no traceback (``--debug`` shows it)."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from squeeze import Subspace, SubspaceConfig
from squeeze import format as fmt
from squeeze.zoo import MLP
from squeeze_cli.app import main

ARCH = {"ref": "squeeze.zoo:MLP", "kwargs": {"input_shape": [1, 8, 8], "num_classes": 10, "hidden": [16]}}
TRAIN = ["train", "--arch", "squeeze.zoo:MLP", "--data", "digits", "--dim", "20", "--epochs", "1", "-o"]


@pytest.fixture
def sqz(tmp_path):
    sub = Subspace(MLP(**ARCH["kwargs"]), SubspaceConfig(dim=20, seed=3))
    with torch.no_grad():
        sub.theta_d.copy_(torch.linspace(-1, 1, 20))
    path = tmp_path / "m.sqz"
    fmt.save(sub, path, arch=ARCH, data={"name": "digits", "input_shape": [1, 8, 8], "classes": 10, "pre": {}})
    return path


def _meta(path, out, *, reseal: bool = True, **changes):
    """``path`` with metadata values changed, written to ``out``; ``reseal`` recomputes the records
    check (as a deliberate edit would), so the checks behind it are what these tests reach."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    header["__metadata__"].update({k: v if isinstance(v, str) else json.dumps(v) for k, v in changes.items()})
    text = json.dumps(header).encode()
    raw = struct.pack("<Q", len(text)) + text + raw[8 + n :]
    out.write_bytes(fmt.canonical_header(raw, check=True) if reseal else raw)
    return out


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def run(capsys, args: list[str], code: int = 2) -> str:
    """Run the CLI; check the exit code, that stderr holds one error sentence and no traceback,
    and that nothing went to stdout. Returns the sentence with its line wrapping undone."""
    capsys.readouterr()
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert rc == code, (rc, err)
    assert "Traceback" not in err and "internal error" not in err, err
    assert out == ""
    err = "\n".join(line for line in err.splitlines() if not line.startswith("warning: "))
    sentence = " ".join(err.split())
    assert sentence.startswith("error: ") and sentence.count("error:") == 1, err
    return sentence


def test_missing_file(capsys, tmp_path):
    for command in (["info"], ["verify"], ["decompress", "-o", tmp_path / "w.safetensors"]):
        msg = run(capsys, [*command[:1], tmp_path / "nope.sqz", *command[1:]])
        assert "nope.sqz does not exist" in msg
    assert not (tmp_path / "w.safetensors").exists()


def test_not_a_sqz_file(capsys, tmp_path):
    text = tmp_path / "notes.sqz"
    text.write_text("these are my notes, not a model\n" * 20)
    assert "notes.sqz is not a .sqz file" in run(capsys, ["info", text])
    ckpt = tmp_path / "weights.safetensors"
    save_file(MLP(**ARCH["kwargs"]).state_dict(), str(ckpt))
    assert "weights.safetensors is not a .sqz file (no squeeze metadata); was it written by squeeze?" in run(capsys, ["verify", ckpt])


def test_truncated_file(capsys, tmp_path, sqz):
    raw = sqz.read_bytes()
    for cut in (4, 100, len(raw) - 1):
        bad = tmp_path / "cut.sqz"
        bad.write_bytes(raw[:cut])
        msg = run(capsys, ["verify", bad])
        assert "cut.sqz" in msg and ("truncated" in msg or "is not a .sqz file" in msg), msg


def test_a_file_from_a_newer_squeeze(capsys, tmp_path, sqz):
    msg = run(capsys, ["info", _meta(sqz, tmp_path / "new.sqz", format_version="4")])
    assert "new.sqz has format version 4, newer than the version 3 this squeeze reads; upgrade squeeze." in msg


def test_a_damaged_spec(capsys, tmp_path, sqz):
    msg = run(capsys, ["info", _meta(sqz, tmp_path / "bad.sqz", spec={"kind": "sorf", "seed": 3.5, "d": 20, "D": 1210, "gen": "threefry2x32-20", "p": {"e": -10}})])
    assert "bad.sqz: the seed (a decimal string) must be an integer in [0, 18446744073709551615], got 3.5; the file is damaged." in msg


def test_unknown_arch_path(capsys, tmp_path, sqz):
    msg = run(capsys, ["verify", sqz, "--arch", tmp_path / "nowhere.py:Net"])
    assert "nowhere.py does not exist; check the path in --arch" in msg
    msg = run(capsys, ["verify", sqz, "--arch", "no_such_package.models:Net"])
    assert "cannot import module 'no_such_package.models'" in msg
    msg = run(capsys, ["verify", sqz, "--arch", "squeeze.zoo:NoSuchNet"])
    assert "squeeze.zoo has no class or function 'NoSuchNet'" in msg
    msg = run(capsys, [*TRAIN, tmp_path / "o.sqz", "--arch", "squeeze.zoo"])
    assert "must look like 'squeeze.zoo:MLP'" in msg


def test_an_arch_that_does_not_match_the_file(capsys, sqz):
    msg = run(capsys, ["verify", sqz, "--arch", "squeeze.zoo:LeNet"])
    assert "the architecture does not match the file's tensors" in msg and "pass the architecture the file was made with" in msg


def test_an_architecture_the_file_names_is_never_run(capsys, tmp_path, sqz):
    flag = tmp_path / "pwned"
    bad = _meta(sqz, tmp_path / "evil.sqz", arch={"ref": "os:system", "kwargs": {"command": f"touch {flag}"}})
    msg = run(capsys, ["export", bad, "-o", tmp_path / "evil.onnx"])  # running the weights needs the module
    assert "the file's architecture 'os:system' is not a torch.nn.Module class; squeeze does not run code a file names" in msg
    assert not flag.exists()
    capsys.readouterr()
    assert main(["verify", str(bad)]) == 0  # the weights need only the manifest: the recorded reference is never followed
    assert not flag.exists()


@pytest.mark.parametrize(
    "arrays, words",
    [
        (dict(x=np.zeros((30, 5), np.float32), y=np.arange(30) % 3), "this architecture needs image input (C, H, W) or a flat square image, got input shape [5]"),
        (dict(x=np.zeros((30, 1, 8, 8), np.float32), y=np.arange(30) % 3 - 1), "labels must be integers 0..K-1"),
        (dict(x=np.zeros((30, 1, 8, 8), np.float32), y=(np.arange(30) % 3) + 0.5), "labels must be integers 0..K-1"),
        (dict(x=np.zeros((30, 1, 8, 8), np.float32), y=np.arange(29) % 3), "x has 30 examples but y has 29 labels"),
        (dict(x=np.zeros((30, 1, 8, 8), np.float32), y=(np.arange(30) % 3) * 10**10), "which makes 20,000,000,001 classes for 30 examples"),
        (dict(x=np.full((30, 1, 8, 8), np.nan, np.float32), y=np.arange(30) % 3), "contains NaN or infinite values"),
    ],
)
def test_data_with_the_wrong_shape_or_labels(capsys, tmp_path, arrays, words):
    data = _npz(tmp_path / "d.npz", **arrays)
    msg = run(capsys, ["train", "--arch", "squeeze.zoo:LeNet", "--data", data, "--dim", "20", "--epochs", "1", "-o", tmp_path / "o.sqz"])
    assert words in msg
    assert not (tmp_path / "o.sqz").exists()


def test_data_that_does_not_fit_the_architecture(capsys, tmp_path):
    msg = run(capsys, [*TRAIN, tmp_path / "o.sqz", "--arch-kwargs", '{"input_shape": [1, 28, 28]}'])
    assert "the model cannot take inputs of shape [1, 8, 8] from digits" in msg
    msg = run(capsys, [*TRAIN, tmp_path / "o.sqz", "--data", "no_such_data"])
    assert "data 'no_such_data' is neither a built-in set (digits, mnist5k, mnist1d[:N]) nor an existing file" in msg


def test_impossible_dimension_and_unknown_projection(capsys, tmp_path):
    msg = run(capsys, [*TRAIN, tmp_path / "o.sqz", "--dim", "10000000"])
    assert "d=10000000 is larger than the number of parameters D=" in msg and "choose --dim at most" in msg
    msg = run(capsys, [*TRAIN, tmp_path / "o.sqz", "--dim", "0"])
    assert "dim must be a positive integer, got 0" in msg
    msg = run(capsys, [*TRAIN, tmp_path / "o.sqz", "--projection", "gaussian"])
    assert "unknown projection 'gaussian'; choose one of" in msg
    assert not (tmp_path / "o.sqz").exists()


def test_bad_output_and_device(capsys, tmp_path, sqz):
    assert "must end in .safetensors or .pt" in run(capsys, ["decompress", sqz, "-o", tmp_path / "w.npy"])
    assert "unknown device 'tpu'; use cpu or cuda" in run(capsys, ["verify", sqz, "--device", "tpu"])


def test_a_pickled_base_is_refused_with_the_reason(capsys, tmp_path):
    base = MLP(**ARCH["kwargs"])
    sub = Subspace(MLP(**ARCH["kwargs"]), SubspaceConfig(dim=20, seed=3), base={k: v.detach() for k, v in base.state_dict().items()})
    fmt.save(sub, tmp_path / "ft.sqz", arch=ARCH)
    torch.save(base, tmp_path / "base.pt")  # the whole module: pickle
    msg = run(capsys, ["verify", tmp_path / "ft.sqz", "--base", tmp_path / "base.pt"])
    assert "base.pt is not a plain state_dict: it holds a pickled squeeze.zoo.MLP object" in msg and "pickle, which can run code" in msg
    msg = run(capsys, ["verify", tmp_path / "ft.sqz"])
    assert "this file is a fine-tune of a base model" in msg and "pass --base" in msg


def test_debug_shows_the_traceback(capsys, tmp_path):
    capsys.readouterr()
    rc = main(["info", str(tmp_path / "nope.sqz"), "--debug"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "Traceback" in err and "FormatError" in err


def test_a_tampered_file_fails_verify_with_exit_code_1_and_the_reason(capsys, tmp_path, sqz):
    spec = {**fmt.read(sqz).spec, "seed": "4"}
    for reseal, reason in ((False, "its records fail their check: recipe damaged"), (True, "regenerated weights have SHA-256")):
        bad = _meta(sqz, tmp_path / "bad.sqz", reseal=reseal, spec=spec)
        capsys.readouterr()
        assert main(["verify", str(bad)]) == 1
        err = " ".join(capsys.readouterr().err.split())
        assert "FAILED" in err and reason in err and "the file is damaged" in err



def test_a_pickled_checkpoint_needs_trust_pickle(capsys, tmp_path):
    torch.save(MLP(input_shape=(1, 8, 8), num_classes=10, hidden=(16,)), tmp_path / "model.pt")  # the whole module: pickle
    args = ["compress", tmp_path / "model.pt", "--arch", "squeeze.zoo:MLP", "--arch-kwargs", '{"hidden": [16]}', "--data", "digits", "--dim", "20", "--epochs", "1", "-o", tmp_path / "c.sqz"]
    msg = run(capsys, args)
    assert "model.pt is not a plain state_dict: it holds a pickled squeeze.zoo.MLP object" in msg and "pass --trust-pickle if you trust the file" in msg
    assert not (tmp_path / "c.sqz").exists()
    assert main([str(a) for a in args] + ["--trust-pickle"]) == 0
    assert fmt.read(tmp_path / "c.sqz").d == 20
