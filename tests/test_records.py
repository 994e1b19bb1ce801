"""The records check (squeeze/records.py): every part's tag moves when any byte of it moves, and
only that part is named; informational records stay outside."""

from __future__ import annotations

import pytest

from squeeze import records

META = {
    "format": "squeeze", "format_version": "2", "spec": '{"D":8,"d":2,"gen":"threefry2x32-20","kind":"dense","p":{},"seed":"3"}',
    "params": "w:8:u1", "theta": '{"enc":"f16"}', "weights_sha256": "ab" * 32, "bufs": '[["bn.mean","f32h",[2]]]',
    "buffers_sha256": "cd" * 32, "arch": '{"ref":"squeeze.zoo:MLP"}', "data": '{"classes":10,"input_shape":[64],"pre":{"scale":0.0625}}',
    "base": "ef" * 32, "metrics": '{"test_accuracy":0.5}', "created_by": "squeeze 0.1.0",
}
HEADER = {"theta_d": {"dtype": "F16", "shape": [2], "data_offsets": [0, 4]}, "bufs": {"dtype": "U8", "shape": [4], "data_offsets": [4, 8]}}
BODY = bytes(range(8))


def check(meta=META, header=HEADER, body=BODY) -> str:
    return records.encode(records.tags(meta, header, body))


def test_whole_records_pass_and_the_value_is_compact():
    stored = check()
    assert len(stored) == records.ENCODED_LENGTH == 32
    assert records.damaged(stored, META, HEADER, BODY) == []


@pytest.mark.parametrize("key,part", [("spec", "recipe"), ("params", "recipe"), ("theta", "recipe"), ("weights_sha256", "recipe"),
                                      ("bufs", "buffers"), ("buffers_sha256", "buffers"), ("arch", "architecture"),
                                      ("data", "input description"), ("base", "base")])
def test_a_changed_metadata_value_names_its_part(key, part):
    stored = check()
    for changed in (META[key][:-1] + chr(ord(META[key][-1]) ^ 1), META[key] + " ", None):
        meta = dict(META)
        if changed is None:
            del meta[key]
        else:
            meta[key] = changed
        assert records.damaged(stored, meta, HEADER, BODY) == [part], (key, changed)


def test_the_input_scale_of_the_issue_is_caught():
    stored = check()
    meta = dict(META, data=META["data"].replace("0.0625", "0.0626"))
    assert records.damaged(stored, meta, HEADER, BODY) == ["input description"]


@pytest.mark.parametrize("at,part", [(0, "theta_d"), (3, "theta_d"), (4, "buffers"), (7, "buffers")])
def test_a_flipped_tensor_byte_names_its_part(at, part):
    stored = check()
    body = bytearray(BODY)
    body[at] ^= 0x10
    assert records.damaged(stored, META, HEADER, bytes(body)) == [part]


def test_tensor_layout_changes_are_caught():
    stored = check()
    for entry in ({"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}, {"dtype": "F16", "shape": [1, 2], "data_offsets": [0, 4]},
                  {"dtype": "F16", "shape": [2], "data_offsets": [4, 8]}, "garbage"):
        assert records.damaged(stored, META, dict(HEADER, theta_d=entry), BODY) == ["theta_d"]
    assert records.damaged(stored, META, dict(HEADER, scales={"dtype": "F32", "shape": [0], "data_offsets": [8, 8]}), BODY) == ["theta_d"]


def test_informational_records_are_outside():
    stored = check()
    meta = dict(META, metrics='{"test_accuracy":0.9}', created_by="someone else", unknown_key="x")
    assert records.damaged(stored, meta, HEADER, BODY) == []


@pytest.mark.parametrize("stored", ["", "x" * 31, "!" * 32, check()[:-1] + "+"])
def test_a_malformed_check_value_names_every_part(stored):
    assert records.damaged(stored, META, HEADER, BODY) == list(records.PARTS)


def test_offsets_outside_the_body_do_not_raise():
    header = dict(HEADER, theta_d={"dtype": "F16", "shape": [2], "data_offsets": [0, 10**12]})
    assert records.damaged(check(), META, header, BODY) == ["theta_d"]


# --------------------------------------------------------------------------- real files

import json  # noqa: E402
import struct  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from squeeze import Subspace, SubspaceConfig, coding_registry  # noqa: E402
from squeeze import format as fmt  # noqa: E402
from squeeze.errors import RecordsDamaged  # noqa: E402
from squeeze.zoo import MLP, ResNet  # noqa: E402
from squeeze_cli.app import main  # noqa: E402

RESNET = {"ref": "squeeze.zoo:ResNet", "kwargs": {"input_shape": [1, 8, 8], "num_classes": 10, "widths": [2]}}
MLP_ARCH = {"ref": "squeeze.zoo:MLP", "kwargs": {"input_shape": [1, 8, 8], "num_classes": 10, "hidden": [16]}}
DATA = {"name": "digits", "input_shape": [1, 8, 8], "classes": 10, "pre": {"scale": 0.0625}}


def _split(raw: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def _join(header: dict, body: bytes) -> bytes:
    text = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    return struct.pack("<Q", len(text)) + text + body


def _edit(raw: bytes, key: str, change) -> bytes:
    """``raw`` with metadata ``key`` changed by ``change`` (on the parsed JSON when it is JSON, else on the string)."""
    header, body = _split(raw)
    meta = header["__metadata__"]
    try:
        meta[key] = json.dumps(change(json.loads(meta[key])), separators=(",", ":"), sort_keys=True)
    except ValueError:
        meta[key] = change(meta[key])
    return _join(header, body)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A ResNet with BatchNorm buffers, layerwise; a quantized MLP; an MLP fine-tune against a base."""
    tmp = tmp_path_factory.mktemp("records")
    torch.manual_seed(0)
    out = {}
    sub = Subspace(ResNet(input_shape=(1, 8, 8), num_classes=10, widths=(2,)), SubspaceConfig(dim=32, seed=5, layerwise=True))
    with torch.no_grad():
        sub.theta_d.copy_(torch.linspace(-0.5, 0.5, sub.theta_d.numel()))
        for b in sub.extra_tensors().values():
            b.copy_(torch.rand(b.shape) + 0.5 if b.dtype.is_floating_point else torch.tensor(7))
    fmt.round_for_storage_(sub, "float16")
    fmt.save(sub, tmp / "resnet.sqz", arch=RESNET, data=DATA, metrics={"test_accuracy": 0.5})
    out["resnet"] = tmp / "resnet.sqz"
    sub = Subspace(MLP(**MLP_ARCH["kwargs"]), SubspaceConfig(dim=24, seed=7))
    codebook, codes = torch.tensor([-1.0, -0.25, 0.25, 1.0]), torch.arange(24) % 4
    with torch.no_grad():
        sub.theta_d.copy_(codebook[codes])
    fmt.save(sub, tmp / "q.sqz", arch=MLP_ARCH, data=DATA, encoded=coding_registry.encode_quantized(codebook, codes, "q"))
    out["q"] = tmp / "q.sqz"
    base_model = MLP(**MLP_ARCH["kwargs"])
    base = {k: v.detach().clone() for k, v in base_model.state_dict().items()}
    torch.save(base, tmp / "base.pt")
    sub = Subspace(MLP(**MLP_ARCH["kwargs"]), SubspaceConfig(dim=16, seed=6), base=base)
    fmt.save(sub, tmp / "ft.sqz", arch=MLP_ARCH, data=DATA)
    out["ft"] = tmp / "ft.sqz"
    return out


# (file, metadata key, change, the part verify must name): one per kind of value that changes an output.
VALUE_KINDS = [
    ("resnet", "spec", lambda s: {**s, "seed": str(int(s["seed"]) + 1)}, "recipe"),
    ("resnet", "params", lambda t: t[:-1] + chr(ord(t[-1]) ^ 1), "recipe"),
    ("q", "theta", lambda e: {**e, "enc": "rc" if e["enc"] == "q" else "q"}, "recipe"),
    ("resnet", "weights_sha256", lambda h: ("0" if h[0] != "0" else "1") + h[1:], "recipe"),
    ("resnet", "bufs", lambda t: t[:-1] + chr(ord(t[-1]) ^ 1), "buffers"),
    ("resnet", "buffers_sha256", lambda h: ("0" if h[0] != "0" else "1") + h[1:], "buffers"),
    ("resnet", "arch", lambda a: {**a, "kwargs": {**a["kwargs"], "widths": [3]}}, "architecture"),
    ("q", "arch", lambda a: {**a, "ref": "squeeze.zoo:LeNet"}, "architecture"),
    ("resnet", "data", lambda d: {**d, "pre": {"scale": 0.0626}}, "input description"),
    ("q", "data", lambda d: {**d, "input_shape": [1, 4, 16]}, "input description"),
    ("q", "data", lambda d: {**d, "classes": 9}, "input description"),
    ("ft", "base", lambda h: ("0" if h[0] != "0" else "1") + h[1:], "base"),
]


@pytest.mark.parametrize("name,key,change,part", VALUE_KINDS, ids=[f"{k}-{p}-{i}" for i, (_, k, _, p) in enumerate(VALUE_KINDS)])
def test_a_changed_value_makes_verify_exit_1_naming_the_part(files, tmp_path, capsys, name, key, change, part):
    bad = tmp_path / "bad.sqz"
    bad.write_bytes(_edit(files[name].read_bytes(), key, change))
    with pytest.raises(RecordsDamaged) as e:
        fmt.read(bad)
    assert e.value.parts == [part]
    capsys.readouterr()
    args = ["--base", str(files["ft"].parent / "base.pt")] if name == "ft" else []
    assert main(["verify", str(bad), *args]) == 1
    assert f"{part} damaged" in capsys.readouterr().err


@pytest.mark.parametrize("tensor", ["theta_d", "scales", "bufs"])
def test_a_changed_tensor_byte_names_its_part(files, tmp_path, tensor):
    raw = files["resnet"].read_bytes()
    header, body = _split(raw)
    start, end = header[tensor]["data_offsets"]
    flipped = bytearray(raw)
    flipped[len(raw) - len(body) + start] ^= 0x04
    with pytest.raises(RecordsDamaged) as e:
        fmt.parse(bytes(flipped), "bad.sqz")
    assert e.value.parts == ["buffers" if tensor == "bufs" else "theta_d"]


def test_the_codebook_is_checked(files):
    raw = files["q"].read_bytes()
    header, body = _split(raw)
    names = [k for k in header if k not in ("__metadata__", "theta_d")]
    assert names, header.keys()
    for name in names:
        start, _ = header[name]["data_offsets"]
        flipped = bytearray(raw)
        flipped[len(raw) - len(body) + start] ^= 0x01
        with pytest.raises(RecordsDamaged, match="theta_d damaged"):
            fmt.parse(bytes(flipped), "q.sqz")


def test_informational_records_change_nothing_checked(files, tmp_path):
    bad = tmp_path / "m.sqz"
    raw = _edit(files["resnet"].read_bytes(), "metrics", lambda m: {**m, "test_accuracy": 0.99})
    bad.write_bytes(_edit(raw, "created_by", lambda s: "someone else"))
    f = fmt.read(bad)
    assert f.records_checked and f.metrics["test_accuracy"] == 0.99
    assert main(["verify", str(bad)]) == 0


def _as_version_1(raw: bytes) -> bytes:
    header, body = _split(raw)
    header["__metadata__"].pop(records.KEY)
    header["__metadata__"]["format_version"] = "1"
    return _join(header, body)


def test_a_version_1_file_still_reads_and_verifies_with_its_records_unchecked(files, tmp_path):
    old = tmp_path / "old.sqz"
    old.write_bytes(_as_version_1(files["resnet"].read_bytes()))
    f = fmt.read(old)
    assert not f.records_checked and f.weights_sha256 == fmt.read(files["resnet"]).weights_sha256
    assert main(["verify", str(old)]) == 0
    shipped = Path(__file__).resolve().parents[1] / "samples" / "web" / "mlp.sqz"  # written by squeeze before version 2
    assert not fmt.read(shipped).records_checked
    assert main(["verify", str(shipped)]) == 0


def test_a_version_1_file_with_a_check_is_a_damaged_version(files, tmp_path):
    header, body = _split(files["resnet"].read_bytes())
    header["__metadata__"]["format_version"] = "1"
    with pytest.raises(RecordsDamaged, match="format version 1"):
        fmt.parse(_join(header, body), "v.sqz")


def test_check_false_reads_a_damaged_file_for_inspection(files):
    raw = _edit(files["resnet"].read_bytes(), "data", lambda d: {**d, "pre": {"scale": 0.5}})
    f = fmt.parse(raw, "x.sqz", check=False)
    assert not f.records_checked and f.data["pre"] == {"scale": 0.5}


def test_ten_thousand_metadata_value_mutations_accept_no_different_model(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent / "fuzz"))
    import fuzz_records

    counts = fuzz_records.run(10_000, seed=1, workdir=tmp_path, report_every=1e9)
    assert counts["inputs"] == 10_000 and counts["failures"] == 0
    assert counts["rejected"] > 5_000 and counts["accepted"] > 100  # both outcomes are exercised


def test_info_and_export_refuse_a_damaged_file_unless_unchecked(files, tmp_path, capsys):
    """The issue's case: a changed input scale. info and export refuse it (exit 2, the part named);
    --unchecked reads it for inspection, and info says its records are unchecked."""
    bad = tmp_path / "bad.sqz"
    bad.write_bytes(_edit(files["resnet"].read_bytes(), "data", lambda d: {**d, "pre": {"scale": 0.0626}}))
    capsys.readouterr()
    assert main(["info", str(bad)]) == 2
    assert "input description damaged" in capsys.readouterr().err
    assert main(["export", str(bad), "--tiny", "-o", str(tmp_path / "bad.onnx")]) == 2
    assert "input description damaged" in capsys.readouterr().err and not (tmp_path / "bad.onnx").exists()
    assert main(["info", str(bad), "--unchecked", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["records_checked"] is False and shown["input"]["pre"] == {"scale": 0.0626}
    assert main(["info", str(files["resnet"]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["records_checked"] is True
    assert main(["export", str(bad), "--tiny", "--unchecked", "-o", str(tmp_path / "bad.onnx")]) == 0
    assert (tmp_path / "bad.onnx").exists()
