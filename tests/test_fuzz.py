"""Hostile input: every reader of untrusted bytes (the .sqz reader, the data and checkpoint
loaders) ends in squeeze's own error type with a clear message, allocates nothing the file does
not justify, and never runs code a file names; the digest catches any change that changes the
regenerated weights. The long fuzz run is tests/fuzz/fuzz_reader.py; a short one runs here."""

from __future__ import annotations

import io
import json
import math
import struct
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save as st_save

from squeeze import Subspace, SubspaceConfig
from squeeze import format as fmt
from squeeze import loading
from squeeze.checkpoint import load_state_dict
from squeeze.data import load_data
from squeeze.errors import ArchError, DataError, DigestMismatch, FormatError, RecordsDamaged, SqueezeError
from squeeze.zoo import MLP

sys.path.insert(0, str(Path(__file__).parent / "fuzz"))
import fuzz_reader  # noqa: E402

FUZZ = settings(max_examples=100, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
ARCH = {"ref": "squeeze.zoo:MLP", "kwargs": {"input_shape": [1, 8, 8], "num_classes": 10, "hidden": [16]}}


def _make_file(path: Path, **config) -> Path:
    sub = Subspace(MLP(**ARCH["kwargs"]), SubspaceConfig(**{"dim": 20, "seed": 3, **config}))
    with torch.no_grad():
        sub.theta_d.copy_(torch.linspace(-1, 1, sub.theta_d.numel()))
    fmt.save(sub, path, arch=ARCH, metrics={"test_accuracy": 0.5}, data={"name": "digits", "input_shape": [1, 8, 8], "classes": 10, "pre": {}})
    return path


@pytest.fixture(scope="module")
def sqz(tmp_path_factory) -> bytes:
    return _make_file(tmp_path_factory.mktemp("fuzz") / "m.sqz").read_bytes()


def split(raw: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def join(header: dict, body: bytes) -> bytes:
    """The file of ``header`` and ``body``, its records check recomputed (as a deliberate edit
    would): these tests reach the checks behind it; tests/test_records.py tests the check."""
    text = json.dumps(header).encode()
    raw = struct.pack("<Q", len(text)) + text + body
    meta = header.get("__metadata__")
    return fmt.canonical_header(raw, check=True) if isinstance(meta, dict) and "check" in meta else raw


def with_meta(raw: bytes, **changes) -> bytes:
    """``raw`` with metadata values replaced (None removes the key); dicts/lists become JSON."""
    header, body = split(raw)
    meta = header["__metadata__"]
    for key, value in changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value if isinstance(value, str) else json.dumps(value)
    return join(header, body)


def with_spec(raw: bytes, **changes) -> bytes:
    spec = json.loads(split(raw)[0]["__metadata__"]["spec"])
    spec.update(changes)
    return with_meta(raw, spec=spec)


def with_entry(raw: bytes, i: int, entry) -> bytes:
    """``raw`` with manifest entry ``i`` (``name:dims:init``) replaced; non-strings become JSON text."""
    params = split(raw)[0]["__metadata__"]["params"].split(";")
    params[i] = entry if isinstance(entry, str) else json.dumps(entry)
    return with_meta(raw, params=";".join(params))


def theta_span(raw: bytes) -> tuple[int, int]:
    header, _ = split(raw)
    start = 8 + struct.unpack("<Q", raw[:8])[0]
    a, b = header["theta_d"]["data_offsets"]
    return start + a, start + b


def outcome(data: bytes) -> str:
    """'ok', or the SqueezeError subclass name; any other exception propagates (a bug)."""
    try:
        f = fmt.parse(data, "t.sqz")
        loading.load_subspace(f)
        return "ok"
    except SqueezeError as e:
        assert str(e) and "\n" not in str(e)
        return type(e).__name__


# --------------------------------------------------------------------------- the .sqz reader


def test_the_file_itself_loads(sqz):
    assert outcome(sqz) == "ok"


def test_truncation_at_every_byte_is_a_format_error(sqz):
    for i in range(len(sqz)):
        with pytest.raises(FormatError):
            fmt.parse(sqz[:i], "t.sqz")


def test_a_flipped_bit_in_any_byte_ends_in_a_squeeze_error_or_changes_nothing_that_matters(sqz):
    rng = np.random.default_rng(0)
    lo, hi = theta_span(sqz)
    meta = split(sqz)[0]["__metadata__"]
    informational = []  # byte spans of the records outside the check: '"key":"value"'
    for key in ("metrics", "created_by"):
        text = (json.dumps(key) + ":" + json.dumps(meta[key], ensure_ascii=False)).encode()
        at = sqz.index(text)
        informational.append((at, at + len(text)))
    for i in range(len(sqz)):
        bad = bytearray(sqz)
        bad[i] ^= 1 << int(rng.integers(8))
        result = outcome(bytes(bad))
        if lo <= i < hi:  # theta_d's bytes: always caught, by the records check
            assert result == "RecordsDamaged", i
        if not any(a <= i < b for a, b in informational):  # every byte outside metrics and created_by is checked
            assert result != "ok", (i, sqz[max(0, i - 20) : i + 20])


@FUZZ
@given(st.binary(max_size=3000))
def test_random_bytes_are_format_errors(data):
    with pytest.raises(FormatError):
        fmt.parse(data, "t.sqz")


@FUZZ
@given(st.data())
def test_random_bytes_after_a_valid_header_are_format_errors(sqz, data):
    header, body = split(sqz)
    tail = data.draw(st.binary(max_size=2 * len(body)))
    if tail != body:
        assert outcome(join(header, tail)) in ("FormatError", "DigestMismatch")


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=12,
)


@FUZZ
@given(key=st.sampled_from(sorted(fmt.KNOWN_KEYS)), value=JSON, as_text=st.booleans())
def test_any_metadata_value_of_any_type_is_handled(sqz, key, value, as_text):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        outcome(with_meta(sqz, **{key: json.dumps(value) if as_text else value}))


@FUZZ
@given(key=st.sampled_from(["kind", "seed", "d", "D", "gen", "p", "lw", "inc"]), value=JSON)
def test_any_spec_field_of_any_type_is_handled(sqz, key, value):
    outcome(with_spec(sqz, **{key: value}))


@FUZZ
@given(i=st.integers(0, 3), entry=JSON | st.tuples(st.text(max_size=4), st.lists(st.integers(-5, 2**40), max_size=3), JSON).map(list))
def test_any_manifest_entry_is_handled(sqz, i, entry):
    outcome(with_entry(sqz, i, entry))


@pytest.mark.parametrize(
    "change, error, words",
    [
        (dict(spec=[1, 2]), FormatError, "'spec' should be a JSON dict"),
        (dict(format_version="4"), FormatError, "newer than the version 3 this squeeze reads; upgrade squeeze"),
        (dict(format_version="²"), FormatError, "is not a version number"),
        (dict(format_version="9" * 5000), FormatError, "is not a version number"),
        (dict(format="safetensors"), FormatError, "is not a .sqz file"),
        (dict(weights_sha256="B" * 64), FormatError, "weights_sha256 is not a SHA-256"),
        (dict(theta={"enc": "zstd"}), FormatError, "cannot read"),
        (dict(theta={"enc": "f32"}), FormatError, "'theta_d' must be a torch.float32 vector"),
        (dict(params=None), FormatError, "lacks required metadata ['params']"),
        (dict(arch={"kwargs": {}}), FormatError, "metadata 'arch' must be"),
        (dict(arch={"ref": "squeeze.zoo:MLP", "kwargs": [1]}), FormatError, "metadata 'arch' must be"),
        (dict(data={"pre": [1]}), FormatError, "metadata 'data' must hold"),
        (dict(metrics=[1]), FormatError, "'metrics' should be a JSON dict"),
        (dict(base="x"), FormatError, "base is not a SHA-256"),
        (dict(base="a" * 64), FormatError, "disagree about whether the file is a fine-tune"),
    ],
)
def test_malformed_metadata(sqz, change, error, words):
    with pytest.raises(error) as e:
        fmt.parse(with_meta(sqz, **change), "t.sqz")
    assert words in str(e.value)


@pytest.mark.parametrize(
    "change, words",
    [
        (dict(D=float("inf")), "D must be an integer"),
        (dict(D=1210.0), "D must be an integer"),
        (dict(D=1211), "disagrees with its manifest"),
        (dict(d="20"), "d must be an integer in [1, 1210]"),
        (dict(d=True), "d must be an integer"),
        (dict(d=1211), "d must be an integer in [1, 1210]"),
        (dict(d=19), "'theta_d' must be a torch.float16 vector of 19 values"),
        (dict(seed=3.5), "the seed (a decimal string) must be an integer"),
        (dict(seed=str(2**64)), "the seed (a decimal string) must be an integer"),
        (dict(seed="-3"), "the seed (a decimal string) must be an integer"),
        (dict(kind="kron"), "uses projection 'kron', which this squeeze does not know"),
        (dict(gen="philox"), "uses generator 'philox'"),
        (dict(p={}), "the sorf projection parameters {} are malformed"),
        (dict(p={"e": -10, "x": 1}), "are malformed"),
        (dict(p={"e": 10**6}), "scale exponent 'e' must be an integer in [-149, 127]"),
        (dict(p={"e": "x"}), "'p' must be integers"),
        (dict(kind="sparse", p={"e": -5, "k": 10**7}), "nonzeros per row 'k' must be an integer in [1, 20]"),
        (dict(inc=5), "'inc' must be a list of strings"),
        (dict(lw=1), "expected 4 layerwise scales"),
    ],
)
def test_malformed_spec(sqz, change, words):
    with pytest.raises(FormatError) as e:
        fmt.parse(with_spec(sqz, **change), "t.sqz")
    assert words in str(e.value)


@pytest.mark.parametrize(
    "entry, words",
    [
        ("layers.0.weight:16x64:", "manifest entry 0"),
        ("layers.0.weight:16x64:u", "manifest entry 0"),
        ("layers.0.weight:16x64:u0.125", "manifest entry 0"),
        ("layers.0.weight:16x64:unan", "manifest entry 0"),
        ("layers.0.weight:16x64:u1p2000", "manifest entry 0"),
        ("layers.0.weight:16x64:u1p-99999", "manifest entry 0"),
        ("layers.0.weight:16x64:z1p0", "manifest entry 0"),
        ("layers.0.weight:16x-64:u1p-3", "manifest entry 0"),
        ("layers.0.weight:16xx64:u1p-3", "manifest entry 0"),
        ("layers.0.weight:ab:u1p-3", "manifest entry 0"),
        ("layers.0.bias:16x64:u1p-3", "is a duplicate"),
        (":16x64:u1p-3", "manifest entry 0"),
        ("layers.0.weight:16x64:u1p-3:extra", "manifest entry 0"),
        ({"a": 1, "b": 2, "c": 3}, "manifest entry 0"),
        ("abc", "manifest entry 0"),
        ("layers.0.weight:16x64", "manifest entry 0"),
        ("layers.0.weight:16x65:u1p-3", "disagrees with its manifest"),
    ],
)
def test_malformed_manifest(sqz, entry, words):
    with pytest.raises(FormatError) as e:
        fmt.parse(with_entry(sqz, 0, entry), "t.sqz")
    assert words in str(e.value)


def test_header_sizes_huge_negative_or_inconsistent(sqz):
    header, body = split(sqz)
    for n in (2**64 - 1, 2**63, len(sqz), 0):  # 2**64 - 1 is -1 as a signed size
        with pytest.raises(FormatError):
            fmt.parse(struct.pack("<Q", n) + sqz[8:], "t.sqz")
    cases = {
        "overlapping": [0, 20],
        "reversed": [40, 0],
        "past the end": [0, 10**15],
        "negative": [-8, 32],
        "too short": [0, 38],
        "gap": [2, 42],
    }
    for what, offsets in cases.items():
        h = json.loads(json.dumps(header))
        h["theta_d"]["data_offsets"] = offsets
        with pytest.raises(FormatError):
            fmt.parse(join(h, body), "t.sqz")
    h = json.loads(json.dumps(header))
    h["theta_d"]["shape"] = [10**12]
    with pytest.raises(FormatError):
        fmt.parse(join(h, body), "t.sqz")
    for dtype in ("F32", "I16", "BF16", "U8", "BOOL", "F64"):
        h = json.loads(json.dumps(header))
        h["theta_d"]["dtype"] = dtype
        with pytest.raises(FormatError):
            fmt.parse(join(h, body), "t.sqz")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_nan_and_inf_in_theta_d(sqz, value):
    lo, hi = theta_span(sqz)
    bad = bytearray(sqz)
    bad[lo + 6 : lo + 8] = np.array([value], dtype="<f2").tobytes()
    with pytest.raises(RecordsDamaged, match="theta_d damaged"):
        fmt.parse(bytes(bad), "t.sqz")
    with pytest.raises(FormatError, match="NaN or infinite"):  # the check recomputed, as a deliberate edit would
        fmt.parse(fmt.canonical_header(bytes(bad), check=True), "t.sqz")


def test_unknown_keys_warn_but_load(sqz):
    header, body = split(sqz)
    header["__metadata__"]["from_the_future"] = "1"
    with pytest.warns(UserWarning, match="from_the_future"):
        fmt.parse(join(header, body), "t.sqz")


def test_a_huge_manifest_is_refused_by_the_memory_check_before_allocating(sqz):
    entry = "layers.0.weight:10000000x10000000:u1p-3"
    D = 10**14 + 1210 - 1024
    f = fmt.parse(with_spec(with_entry(sqz, 0, entry), D=D), "t.sqz")
    assert f.D == D
    with pytest.raises(FormatError, match=r"describes 100,000,000,000,186 parameters, which need about [\d,.]+ GiB; this machine has"):
        loading.load_subspace(f)


def test_a_huge_architecture_from_the_file_is_refused_before_allocating(sqz):
    arch = {"ref": "squeeze.zoo:MLP", "kwargs": {**ARCH["kwargs"], "hidden": [3 * 10**9]}}  # 768 GB of weights
    with pytest.raises(ArchError, match=r"does not match the file's tensors .*\[3000000000, 64\]"):
        loading.load_subspace(fmt.parse(with_meta(sqz, arch=arch), "t.sqz"))


def test_arguments_from_the_file_that_break_the_architecture_are_arch_errors(sqz):
    arch = {"ref": "squeeze.zoo:MLP", "kwargs": {**ARCH["kwargs"], "hidden": [-5]}}
    with pytest.raises(ArchError, match="building squeeze.zoo:MLP with arguments"):
        loading.load_subspace(fmt.parse(with_meta(sqz, arch=arch), "t.sqz"))


@pytest.mark.parametrize(
    "ref, kwargs, words",
    [
        ("os:system", {"command": "touch {flag}"}, "is not a torch.nn.Module class; squeeze does not run code a file names"),
        ("subprocess:getoutput", {"cmd": "touch {flag}"}, "is not a torch.nn.Module class"),
        ("{py}:Net", {}, "from the Python file evil.py, and squeeze does not run code a file names; give it yourself if you trust it: arch='PATH/TO/evil.py:Net'"),
        (".x:Y", {}, "cannot import module"),
        (":Y", {}, "cannot import module"),
    ],
)
def test_the_file_never_makes_squeeze_run_code(sqz, tmp_path, ref, kwargs, words):
    flag = tmp_path / "pwned"
    py = tmp_path / "evil.py"
    py.write_text(f"open({str(flag)!r}, 'w').close()\nimport torch\nclass Net(torch.nn.Module):\n    pass\n")
    kwargs = {k: v.format(flag=flag) for k, v in kwargs.items()}
    f = fmt.parse(with_meta(sqz, arch={"ref": ref.format(py=py), "kwargs": kwargs}), "t.sqz")
    with pytest.raises(ArchError) as e:
        loading.load_subspace(f)
    assert words in str(e.value)
    assert not flag.exists()


def test_an_architecture_file_named_by_the_user_is_used(sqz, tmp_path):
    py = tmp_path / "net.py"
    py.write_text("from squeeze.zoo import MLP as Net\n")
    sub = loading.load_subspace(fmt.parse(with_meta(sqz, arch={"ref": f"{py}:Net", "kwargs": ARCH["kwargs"]}), "t.sqz"), f"{py}:Net")
    assert sub.digest() == fmt.parse(sqz).weights_sha256


# --------------------------------------------------------------------------- the digest


def test_any_change_to_theta_d_is_a_digest_mismatch(sqz):
    """Caught by the records check at parse; and with the check recomputed (a deliberate edit),
    by the weights digest at load."""
    lo, hi = theta_span(sqz)
    for i in (lo, lo + 1, hi - 2, hi - 1):  # every bit of the first and the last value
        for bit in range(8):
            bad = bytearray(sqz)
            bad[i] ^= 1 << bit
            with pytest.raises(RecordsDamaged, match="theta_d damaged"):
                fmt.parse(bytes(bad), "t.sqz")
            resealed = fmt.canonical_header(bytes(bad), check=True)
            f = fmt.parse(resealed, "t.sqz") if not _nonfinite(resealed) else None
            if f is None:
                continue  # a NaN/Inf: a FormatError at parse (test_nan_and_inf_in_theta_d)
            with pytest.raises(DigestMismatch):
                loading.load_subspace(f)


def _nonfinite(raw: bytes) -> bool:
    lo, hi = theta_span(raw)
    return not np.isfinite(np.frombuffer(raw[lo:hi], dtype="<f2")).all()


@pytest.mark.parametrize(
    "mutate",
    [
        lambda raw: with_spec(raw, seed="4"),
        lambda raw: with_spec(raw, p={"e": -9}),
        lambda raw: with_entry(raw, 0, "layers.0.weight:16x64:u1p-2"),
        lambda raw: with_entry(raw, 1, "layers.0.bias:16:c0p0"),
        lambda raw: with_entry(raw, 3, "head.bias:10:u33p-7"),
        lambda raw: with_spec(raw, kind="dense"),
    ],
    ids=["seed", "scale", "init-bound", "init-kind", "last-bound", "projection"],
)
def test_metadata_changes_that_change_the_weights_are_digest_mismatches(sqz, mutate):
    with pytest.raises(DigestMismatch, match="the file is damaged"):
        loading.load_subspace(fmt.parse(mutate(sqz), "t.sqz"))


# --------------------------------------------------------------------------- data and checkpoints


def _suffix_file(tmp_path: Path, suffix: str, data: bytes) -> Path:
    path = tmp_path / f"input{suffix}"
    path.write_bytes(data)
    return path


@FUZZ
@given(suffix=st.sampled_from([".npz", ".pt", ".csv"]), data=st.binary(max_size=2000))
def test_random_bytes_as_data_are_data_errors(tmp_path_factory, suffix, data):
    path = _suffix_file(tmp_path_factory.mktemp("d"), suffix, data)
    with pytest.raises(DataError):
        load_data(str(path))


@FUZZ
@given(suffix=st.sampled_from([".safetensors", ".pt", ".bin"]), data=st.binary(max_size=2000))
def test_random_bytes_as_checkpoints_are_squeeze_errors(tmp_path_factory, suffix, data):
    path = _suffix_file(tmp_path_factory.mktemp("c"), suffix, data)
    with pytest.raises(SqueezeError):
        load_state_dict(path)


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _npy(shape, descr="<f4", payload=b"\0" * 64) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue() + payload


X = np.random.default_rng(0).random((20, 1, 8, 8)).astype(np.float32)
Y = np.arange(20) % 3


@pytest.mark.parametrize(
    "arrays, words",
    [
        (dict(x=X), "must hold arrays named 'x' and 'y'"),
        (dict(x=X, y=Y[:5]), "x has 20 examples but y has 5 labels"),
        (dict(x=X, y=Y - 1), "labels must be integers 0..K-1"),
        (dict(x=X, y=Y + 0.5), "labels must be integers 0..K-1"),
        (dict(x=X, y=Y * 10**9), "the largest label is 2,000,000,000, which makes 2,000,000,001 classes for 20 examples"),
        (dict(x=X, y=np.where(Y == 0, np.nan, Y)), "labels must be integers 0..K-1"),
        (dict(x=np.where(X > 0.5, np.inf, X), y=Y), "contains NaN or infinite values"),
        (dict(x=X.astype("U8"), y=Y), "x must be numeric"),
        (dict(x=X, y=Y, x_test=X), "has only one of 'x_test' and 'y_test'"),
        (dict(x=X, y=Y, x_test=X[:, :, :4], y_test=Y), "train inputs have shape [1, 8, 8] but test inputs [1, 4, 8]"),
        (dict(x=X[:, 0, 0, 0], y=Y), "x must have shape (N, features...)"),
    ],
)
def test_malformed_data_files(tmp_path, arrays, words):
    with pytest.raises(DataError) as e:
        load_data(str(_suffix_file(tmp_path, ".npz", _npz(**arrays))))
    assert words in str(e.value)


def test_data_with_huge_declared_arrays_is_refused_without_allocating(tmp_path):
    import resource

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("x.npy", _npy((10**6, 2500)))  # 10 GB declared, 64 bytes present
        z.writestr("y.npy", _npy((10,), "<i8", b"\0" * 80))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(DataError, match="could not read input.npz"):
        load_data(str(_suffix_file(tmp_path, ".npz", buf.getvalue())))
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024  # KiB


def test_pickled_data_is_refused(tmp_path):
    with pytest.raises(DataError, match="could not read"):
        load_data(str(_suffix_file(tmp_path, ".npz", _npz(x=np.array([object()] * 3, dtype=object), y=Y[:3]))))
    path = tmp_path / "data.pt"
    torch.save({"x": torch.from_numpy(X), "y": torch.from_numpy(Y), "model": MLP(**ARCH["kwargs"])}, path)
    with pytest.raises(DataError, match="could not read data.pt"):
        load_data(str(path))


def test_a_pickled_module_checkpoint_needs_trust_pickle(tmp_path):
    model = MLP(**ARCH["kwargs"])
    path = tmp_path / "model.pt"
    torch.save(model, path)  # the whole module: pickle
    with pytest.raises(SqueezeError) as e:
        load_state_dict(path)
    assert "holds a pickled squeeze.zoo.MLP object" in str(e.value) and "trust_pickle=True" in str(e.value)
    state = load_state_dict(path, trust_pickle=True)
    assert state.keys() == model.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    path.write_bytes(path.read_bytes()[:-100])  # damaged: a clear error even when trusted
    for trust in (False, True):
        with pytest.raises(SqueezeError, match="is not a readable PyTorch checkpoint"):
            load_state_dict(path, trust_pickle=trust)


def test_checkpoints_that_are_not_state_dicts(tmp_path):
    path = tmp_path / "c.pt"
    torch.save({"a": 1}, path)
    with pytest.raises(SqueezeError, match="does not hold a state_dict"):
        load_state_dict(path)
    torch.save({1: torch.zeros(2)}, path)
    with pytest.raises(SqueezeError, match="does not hold a state_dict"):
        load_state_dict(path)
    state = MLP(**ARCH["kwargs"]).state_dict()
    raw = st_save({k: v.contiguous() for k, v in state.items()})
    for i in range(0, len(raw), 97):
        with pytest.raises(SqueezeError, match="is not a readable safetensors file"):
            load_state_dict(_suffix_file(tmp_path, ".safetensors", raw[:i]))


# --------------------------------------------------------------------------- the short fuzz run


def test_short_fuzz_run_over_every_reader(tmp_path):
    """The harness of tests/fuzz/fuzz_reader.py with a small budget (a fixed seed)."""
    seeds, base = fuzz_reader.make_seeds(tmp_path)
    runner = fuzz_reader.Runner(tmp_path, base)
    for kind, files in seeds.items():  # the real files themselves load
        for data in files:
            runner.target(kind, data)
    for data in fuzz_reader.truncations(seeds["sqz"][-1]):
        runner.run("sqz", data)
    fuzz_reader.run_random(runner, seeds, runs=1500, seed=0, report_every=math.inf)
    assert runner.counts["inputs"] >= 1500
    assert runner.counts["ok"] + runner.counts["squeeze_error"] == runner.counts["inputs"], {k: (n, msg, tb) for k, (n, msg, _, tb) in runner.unexpected.items()}
