"""ONNX export: every zoo architecture (trained briefly in a subspace on digits) and a user's own
module export, pass onnxruntime's check and predict exactly what PyTorch predicts; models the
exporter cannot handle, missing input shapes and outputs beyond tolerance fail with one clear
message and leave nothing behind."""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from squeeze import Subspace, SubspaceConfig
from squeeze import arch as arch_mod
from squeeze import format as fmt
from squeeze import loading
from squeeze.data import load_data
from squeeze.export import ExportError, ExportMismatch, export_onnx
from squeeze.fit import TrainConfig, predict, train
from squeeze_cli.app import main

ZOO = ["MLP", "LeNet", "ResNet", "TransformerClassifier"]

# A user's own architecture in its own file: a 1-D convolution net (MNIST-1D style input).
USER_MODULE = '''
import torch
from torch import nn

class Conv1dNet(nn.Module):
    def __init__(self, input_shape=(40,), num_classes=10):
        super().__init__()
        self.length = input_shape[-1]
        self.conv = nn.Conv1d(1, 8, 5, padding=2)
        self.head = nn.Linear(8 * (self.length // 2), num_classes)

    def forward(self, x):
        h = torch.relu(self.conv(x.reshape(x.shape[0], 1, self.length)))
        return self.head(torch.max_pool1d(h, 2).flatten(1))
'''

# Branches in Python on a tensor's value: torch.export cannot capture it.
DATA_DEPENDENT = '''
from torch import nn

class Branchy(nn.Module):
    def __init__(self, input_shape=(64,), num_classes=10):
        super().__init__()
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        h = self.fc(x.flatten(1))
        if h.sum() > 0:
            return h
        return -h
'''

# Keeps Python state across calls: the exporter bakes the value it saw while tracing, so the
# exported graph differs from what the module computes afterwards.
STATEFUL = '''
from torch import nn

class Counter(nn.Module):
    def __init__(self, input_shape=(64,), num_classes=10):
        super().__init__()
        self.fc = nn.Linear(64, num_classes)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.fc(x.flatten(1)) + self.calls
'''


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits():
    return load_data("digits")


@pytest.fixture(scope="module")
def trained(digits, tmp_path_factory) -> dict[str, Path]:
    """Each zoo architecture trained 2 epochs in a 200-dimensional subspace and saved."""
    files = {}
    for name in ZOO:
        ref = f"squeeze.zoo:{name}"
        kwargs = arch_mod.complete_kwargs(ref, {}, digits.input_shape, digits.num_classes)
        sub = Subspace(arch_mod.build(ref, kwargs), SubspaceConfig(dim=200, seed=0))
        train(sub, digits, TrainConfig(epochs=2, lr=0.3, batch_size=32), progress=False)
        fmt.round_for_storage_(sub, "float16")
        files[name] = tmp_path_factory.mktemp(name) / "model.sqz"
        fmt.save(sub, files[name], arch={"ref": ref, "kwargs": kwargs}, data=digits.describe())
    return files


def _save_user_model(tmp_path: Path, source: str, name: str, input_shape, data: dict | None) -> tuple[str, Path]:
    module = tmp_path / "user_arch.py"
    module.write_text(source)
    ref = f"{module}:{name}"
    sub = Subspace(arch_mod.build(ref, {"input_shape": list(input_shape)}), SubspaceConfig(dim=50, seed=3))
    with torch.no_grad():
        sub.theta_d.copy_(torch.linspace(-1, 1, sub.theta_d.numel()))
    out = tmp_path / "user.sqz"
    fmt.save(sub, out, arch={"ref": ref, "kwargs": {"input_shape": list(input_shape)}}, data=data)
    return ref, out


def _left(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _ort_predict(path: Path, x: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


@pytest.mark.parametrize("name", ZOO)
def test_zoo_architecture_exports_and_predicts_like_pytorch(name, trained, digits):
    sqz = trained[name]
    out = sqz.with_name("model.onnx")
    report = export_onnx(sqz, out)

    assert report.ok and report.opset == 18 and report.input_shape == (1, 8, 8)
    (check,) = report.outputs
    assert check.shape == (10,) and check.total == 8 * 10
    assert check.max_abs <= 1e-4, check
    assert report.size_bytes == out.stat().st_size
    assert _left(out.parent) == ["model.onnx", "model.sqz"]  # one file, weights embedded, no temp left
    model = onnx.load(str(out))
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch
    assert {o.domain: o.version for o in model.opset_import}[""] == report.opset
    assert all(i.data_location != onnx.TensorProto.EXTERNAL for i in model.graph.initializer)
    assert {p.key: p.value for p in model.metadata_props}["squeeze.weights_sha256"] == fmt.read(sqz).weights_sha256

    torch_model = loading.load(sqz)
    want = predict(torch_model, digits.x_test).argmax(1).numpy()
    got = _ort_predict(out, digits.x_test * 16).argmax(1)  # raw pixels: the graph divides by 16 itself
    assert (got == want).all()
    torch_acc = float((want == digits.y_test.numpy()).mean())
    assert float((got == digits.y_test.numpy()).mean()) == torch_acc
    assert torch_acc > 0.3, f"{name} learned too little for the comparison to mean anything"


def test_user_module_exports_via_cli_and_input_shape_is_required(tmp_path, capsys):
    ref, sqz = _save_user_model(tmp_path, USER_MODULE, "Conv1dNet", (40,), data=None)
    out = tmp_path / "user.onnx"

    rc = main(["export", str(sqz), "-o", str(out), "--arch", ref])
    err = capsys.readouterr().err
    assert rc == 2 and "--input-shape" in err and "unknown" in err
    assert not out.exists()

    rc = main(["export", str(sqz), "-o", str(out), "--arch", ref, "--input-shape", "40"])
    printed = " ".join(capsys.readouterr().out.split())
    assert rc == 0, printed
    assert "max abs error" in printed and "ok" in printed and f"{out.stat().st_size:,} bytes" in printed
    model = loading.load(sqz, ref)
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((5, 40), dtype=np.float32))
    np.testing.assert_allclose(_ort_predict(out, x), predict(model, x).numpy(), atol=1e-4, rtol=1e-3)
    assert _left(tmp_path) == ["user.onnx", "user.sqz", "user_arch.py"]


def test_architecture_the_exporter_cannot_handle_fails_cleanly(tmp_path, capsys):
    ref, sqz = _save_user_model(tmp_path, DATA_DEPENDENT, "Branchy", (64,), data={"input_shape": [64]})
    out = tmp_path / "branchy.onnx"
    before = _left(tmp_path)

    rc = main(["export", str(sqz), "-o", str(out), "--arch", ref])
    err = " ".join(capsys.readouterr().err.split())
    assert rc == 2
    assert "cannot export" in err and "torch.export" in err and "if h.sum() > 0:" in err
    assert "Traceback" not in err
    assert _left(tmp_path) == before


def test_outputs_beyond_tolerance_fail_and_write_nothing(tmp_path):
    ref, sqz = _save_user_model(tmp_path, STATEFUL, "Counter", (64,), data={"input_shape": [64]})
    out = tmp_path / "counter.onnx"
    before = _left(tmp_path)

    # external_data=True also exercises the two-file write path; neither file may be left.
    with pytest.raises(ExportMismatch) as info:
        export_onnx(sqz, out, arch=ref, external_data=True)
    report = info.value.report
    (check,) = report.outputs
    # The counter differs from the baked value by a whole number on at least one of the two batches.
    assert not report.ok and check.max_abs >= 0.99 and check.mismatched >= 10 and check.total == 8 * 10
    assert "max abs error" in str(info.value) and "nothing was written" in str(info.value)
    assert _left(tmp_path) == before


def test_external_data_is_written_beside_the_model(trained, tmp_path):
    sqz = trained["MLP"]
    out = tmp_path / "mlp.onnx"
    report = export_onnx(sqz, out, external_data=True)
    assert report.ok and report.external_data == tmp_path / "mlp.onnx.data"
    assert _left(tmp_path) == ["mlp.onnx", "mlp.onnx.data"]
    assert report.size_bytes == out.stat().st_size + report.external_data.stat().st_size
    assert report.external_data.stat().st_size > 4 * fmt.read(sqz).D * 0.9  # the weights are there


def test_bad_settings_fail_before_any_work(trained, tmp_path):
    sqz = trained["LeNet"]
    with pytest.raises(ExportError, match="opset 11"):
        export_onnx(sqz, tmp_path / "m.onnx", opset=11)
    with pytest.raises(ExportError, match="input shape"):
        export_onnx(sqz, tmp_path / "m.onnx", input_shape=(0, 8))
    with pytest.raises(ExportError, match="does not accept inputs of shape"):
        export_onnx(sqz, tmp_path / "m.onnx", input_shape=(3, 5))
    assert _left(tmp_path) == []
