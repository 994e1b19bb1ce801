"""The fixed cost of a file: BatchNorm statistics packed into one tensor and a CNN's manifest
zlib-packed, with the same regenerated bits, the same buffers and their digest; files with the
earlier one-tensor-per-buffer layout still read."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import load as st_load, save as st_save

from squeeze import Subspace, SubspaceConfig
from squeeze import format as fmt, layout as file_layout
from squeeze import loading
from squeeze.errors import FormatError
from squeeze.zoo import ResNet

ARCH = {"ref": "squeeze.zoo:ResNet", "kwargs": {"input_shape": [1, 8, 8]}}


@pytest.fixture
def resnet_file(tmp_path):
    torch.manual_seed(0)
    sub = Subspace(ResNet(input_shape=(1, 8, 8), num_classes=10), SubspaceConfig(dim=64, seed=5))
    with torch.no_grad():
        sub.theta_d.copy_(torch.linspace(-0.5, 0.5, 64))
        for k, b in sub.extra_tensors().items():
            b.copy_(torch.rand(b.shape) + 0.5 if b.dtype.is_floating_point else torch.tensor(7))
    fmt.round_for_storage_(sub, "float16")
    path = tmp_path / "r.sqz"
    fmt.save(sub, path, arch=ARCH)
    return sub, path


def _header(raw: bytes) -> dict:
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n])


def _old_layout(sub: Subspace, path, new_path) -> None:
    """Rewrite a file the way squeeze wrote it before: one tensor per buffer (format version 1, no records check)."""
    raw = path.read_bytes()
    meta = _header(raw)["__metadata__"]
    tensors = {k: v for k, v in st_load(raw).items() if k != "bufs"}
    tensors.update({"buf." + k: v.contiguous() for k, v in sub.extra_tensors().items()})
    meta = {k: v for k, v in meta.items() if k not in ("bufs", "check")} | {"format_version": "1"}
    new_path.write_bytes(fmt.canonical_header(st_save(tensors, metadata=meta)))


def test_buffers_are_one_tensor_and_read_back_exactly(resnet_file, tmp_path):
    sub, path = resnet_file
    raw = path.read_bytes()
    assert sorted(k for k in _header(raw) if k != "__metadata__") == ["bufs", "theta_d"]
    f = fmt.read(path)
    want = sub.extra_tensors()
    assert sorted(f.extras) == sorted(want) and len(want) == 27
    assert all(torch.equal(f.extras[k], v) and f.extras[k].dtype == v.dtype for k, v in want.items())
    assert f.buffers_sha256 == fmt.buffers_digest(want)
    loaded = loading.load_subspace(path)
    assert loaded.digest() == sub.digest() == f.weights_sha256
    assert all(torch.equal(a, b) for a, b in zip(loaded.extra_tensors().values(), want.values()))


def test_the_earlier_layout_reads_the_same_and_is_larger(resnet_file, tmp_path):
    sub, path = resnet_file
    old = tmp_path / "old.sqz"
    _old_layout(sub, path, old)
    f_old, f_new = fmt.read(old), fmt.read(path)
    assert f_old.extras.keys() == f_new.extras.keys() and all(torch.equal(f_old.extras[k], f_new.extras[k]) for k in f_new.extras)
    assert f_old.buffers_sha256 == f_new.buffers_sha256 and f_old.weights_sha256 == f_new.weights_sha256
    assert loading.load_subspace(old).digest() == f_new.weights_sha256
    print(f"ResNet (27 buffers), d = 64: {old.stat().st_size:,} bytes with a tensor per buffer, {path.stat().st_size:,} packed")
    assert path.stat().st_size < old.stat().st_size - 1500


def test_the_manifest_is_packed_only_when_shorter(resnet_file):
    _, path = resnet_file
    meta = _header(path.read_bytes())["__metadata__"]
    assert meta["params"].startswith(fmt.PACKED)
    assert fmt.pack_params("a:1:u1p-3", over=0) == "a:1:u1p-3"  # zlib + base64 would be longer


@pytest.mark.parametrize("damage", ["short", "long", "json", "orphan", "both", "dtype"])
def test_a_damaged_buffer_layout_is_refused_in_one_sentence(resnet_file, tmp_path, damage):
    sub, path = resnet_file
    raw = path.read_bytes()
    meta = dict(_header(raw)["__metadata__"])
    tensors = dict(st_load(raw))
    layout = json.loads(file_layout.unpack_params(meta["bufs"], "x"))
    if damage == "short":
        tensors["bufs"] = tensors["bufs"][:-4].clone()
    elif damage == "long":
        tensors["bufs"] = torch.cat([tensors["bufs"], torch.zeros(8, dtype=torch.uint8)])
    elif damage == "json":
        meta["bufs"] = "[["
    elif damage == "orphan":
        del meta["bufs"]
    elif damage == "both":
        tensors["buf.extra"] = torch.zeros(2)
    else:
        layout[0][1] = "complex128"
        meta["bufs"] = json.dumps(layout)
    bad = tmp_path / "bad.sqz"
    bad.write_bytes(fmt.canonical_header(st_save(tensors, metadata=meta), check=True))  # past the records check, as a deliberate edit
    with pytest.raises(FormatError, match="damaged"):
        fmt.read(bad)


def test_float16_exact_statistics_are_stored_in_half_the_bytes_and_read_back_as_float32(resnet_file, tmp_path):
    sub, path = resnet_file
    before = path.stat().st_size
    want = sub.extra_tensors()
    floats = [k for k, v in want.items() if v.dtype == torch.float32]
    assert floats and all(not torch.equal(want[k].half().float(), want[k]) for k in floats)  # stored as float32 so far
    fmt.round_buffers_for_storage_(sub)
    half = tmp_path / "half.sqz"
    fmt.save(sub, half, arch=ARCH)
    layout = json.loads(file_layout.unpack_params(_header(half.read_bytes())["__metadata__"]["bufs"], "x"))
    assert {name: code for name, code, _ in layout if name in floats} == {k: fmt.HALF_STORED for k in floats}
    n_float = sum(want[k].numel() for k in floats)
    assert before - half.stat().st_size >= 2 * n_float - 16  # 2 bytes saved per statistic (the layout text aside)
    f = fmt.read(half)
    assert all(f.extras[k].dtype == v.dtype and torch.equal(f.extras[k], v) for k, v in want.items())
    assert f.buffers_sha256 == fmt.buffers_digest(want)
    loaded = loading.load_subspace(half)
    assert loaded.digest() == sub.digest() == f.weights_sha256
    assert all(torch.equal(loaded.extra_tensors()[k], v) for k, v in want.items())


def test_a_buffer_that_float16_cannot_hold_exactly_stays_float32(resnet_file, tmp_path):
    sub, _ = resnet_file
    fmt.round_buffers_for_storage_(sub)
    name = next(k for k, v in sub.extra_tensors().items() if v.dtype == torch.float32)
    with torch.no_grad():
        sub.extra_tensors()[name][0] = 1e5  # beyond float16's range: rounding leaves this buffer alone
    fmt.round_buffers_for_storage_(sub)
    path = tmp_path / "mixed.sqz"
    fmt.save(sub, path, arch=ARCH)
    codes = {n: c for n, c, _ in json.loads(file_layout.unpack_params(_header(path.read_bytes())["__metadata__"]["bufs"], "x"))}
    assert codes[name] == "f32" and sum(c == fmt.HALF_STORED for c in codes.values()) >= 10
    f = fmt.read(path)
    assert all(torch.equal(f.extras[k], v) for k, v in sub.extra_tensors().items())


def test_info_shows_what_each_part_costs_and_the_parts_sum_to_the_file(resnet_file, capsys):
    from squeeze_cli.app import main

    _, path = resnet_file
    costs = fmt.byte_costs(path.read_bytes())
    assert sum(costs.values()) == path.stat().st_size
    assert costs["tensor theta_d"] >= 64 * 2 and costs["tensor bufs"] > costs["tensor theta_d"]  # BatchNorm statistics outweigh 64 halves
    assert {"meta weights_sha256", "meta params", "meta spec", "framing"} <= set(costs)
    assert main(["info", str(path), "--json"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out[out.index("{") :])["bytes_by_part"] == costs


def test_a_user_architecture_file_is_recorded_by_name_not_by_path(tmp_path):
    torch.manual_seed(0)
    sub = Subspace(ResNet(input_shape=(1, 8, 8), num_classes=10), SubspaceConfig(dim=8, seed=5))
    where = tmp_path / "deep" / "home" / "mynet.py"
    fmt.save(sub, tmp_path / "u.sqz", arch={"ref": f"{where}:Net", "kwargs": {}})
    f = fmt.read(tmp_path / "u.sqz")
    assert f.arch["ref"] == "mynet.py:Net" and str(tmp_path) not in (tmp_path / "u.sqz").read_bytes().decode("latin-1")
