"""The demo page (samples/web) and ``squeeze demo``.

Browser tests (``-m browser``) open the page in Debian's headless chromium through
puppeteer-core (tests/web/drive.mjs; `.ci/web.sh` installs both) and skip with the reason when
either is missing (fail instead when ``SQUEEZE_WEB_REQUIRED`` is set, as `.ci/web.sh` does). The page's predictions are compared with onnxruntime's (Python) on the same
graph and the same inputs. Screenshots go to ``$SQUEEZE_WEB_OUT`` (default: a temporary folder).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

import squeeze
from squeeze import format as fmt
from squeeze.data import load_data
from squeeze_cli.app import main
from squeeze_cli.commands import demo

REPO = Path(__file__).resolve().parents[1]
WEB = REPO / "samples" / "web"
DRIVER = REPO / "tests" / "web" / "drive.mjs"
N_IMAGES = 100
TINY_LIMIT = 8 * 1024  # bytes: the README MLP's tiny graph as the page transfers it


def _info() -> dict:
    return json.loads((WEB / "model.json").read_text())


def _feed(raw: np.ndarray, info: dict) -> np.ndarray:
    """The graph's input for raw pixels, computed as the page computes it (float64 product,
    rounded to float32) when the graph takes preprocessed inputs."""
    if info["graph_input"] == "raw":
        return raw.astype(np.float32)
    return (raw.astype(np.float64) * info["input"]["pre"]["scale"]).astype(np.float32)


def _raw_test_images(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first n mnist5k test images as raw pixels 0..255 (flat), and their labels."""
    data = load_data("mnist5k")
    x = data.x_test[:n].numpy().reshape(n, -1).astype(np.float64)
    return np.rint(x / data.preprocessing["scale"]).astype(np.int64), data.y_test[:n].numpy()


def _onnxruntime_scores(model: Path, raw: np.ndarray, info: dict) -> np.ndarray:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    x = _feed(raw, info).reshape(len(raw), *info["input"]["input_shape"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


# ----------------------------------------------------------------------------- default model


def test_default_model_is_the_readme_mlp_and_agrees_with_its_sqz():
    info = _info()
    f = fmt.read(WEB / "mlp.sqz")
    meta = {p.key: p.value for p in onnx.load(str(WEB / info["model"])).metadata_props}
    assert info["weights_sha256"] == f.weights_sha256 == meta["squeeze.weights_sha256"]
    assert info["bytes"] == (WEB / info["model"]).stat().st_size
    data = load_data("mnist5k")
    assert info["input"] == (f.data or data.describe()) and (info["sqz"]["d"], info["sqz"]["bytes"]) == (f.d, f.size_bytes)
    n = len(data.y_test)
    raw = np.rint(data.x_test.numpy().reshape(n, -1).astype(np.float64) * 255).astype(np.int64)
    got = _onnxruntime_scores(WEB / info["model"], raw, info).argmax(1)
    with torch.no_grad():
        want = squeeze.load(WEB / "mlp.sqz")(data.x_test).argmax(1).numpy()
    assert (got == want).mean() >= 0.998  # the same model (a near tie may flip between runtimes)


def test_default_model_is_tiny():
    info = _info()
    assert info["tiny"] is True, "model.json was built from the full export; rebuild with python samples/web/build_model.py"
    assert info["bytes"] <= TINY_LIMIT


def test_vendored_runtime_is_the_pinned_onnxruntime_web():
    pinned = json.loads((WEB / "package.json").read_text())["dependencies"]["onnxruntime-web"]
    locked = json.loads((WEB / "package-lock.json").read_text())["packages"]["node_modules/onnxruntime-web"]["version"]
    vendor = WEB / "vendor" / "onnxruntime-web"
    header = (vendor / "ort.wasm.min.mjs").read_text()[:200]
    assert pinned == locked and f"ONNX Runtime Web v{pinned}" in header
    assert (vendor / "ort-wasm-simd-threaded.wasm").read_bytes()[:4] == b"\0asm"


@pytest.mark.parametrize("name", ["mnist5k", "digits"])
def test_example_images_are_real_test_images(name):
    ex = json.loads((WEB / "examples" / f"{name}.json").read_text())
    data = load_data(name)
    x = data.x_test.numpy().reshape(len(data.y_test), -1).astype(np.float64) * ex["raw_max"]
    assert sorted(ex["labels"]) == list(range(data.num_classes))
    for label, img in zip(ex["labels"], ex["images"]):
        i = int(np.flatnonzero(data.y_test.numpy() == label)[0])
        assert np.array_equal(np.rint(x[i]).astype(int), np.array(img))


# ----------------------------------------------------------------------------- squeeze demo


def test_demo_refuses_bad_options_before_exporting(tmp_path, capsys):
    assert main(["demo", str(WEB / "mlp.sqz"), "--no-serve"]) == 2
    assert "-o FOLDER" in capsys.readouterr().err
    (tmp_path / "taken.txt").write_text("x")
    assert main(["demo", str(WEB / "mlp.sqz"), "--no-serve", "-o", str(tmp_path)]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert main(["demo", str(tmp_path / "taken.txt"), "--no-serve", "-o", str(tmp_path / "site")]) == 2
    assert "taken.txt" in capsys.readouterr().err
    assert not (tmp_path / "site").exists()  # a failed export leaves no folder behind


def _check_site(site: Path) -> dict:
    """A folder written by squeeze demo: the page's files and the README MLP's graph, which
    predicts as the committed default model does."""
    for rel in demo.PAGE_FILES:
        assert (site / rel).exists(), rel
    info = json.loads((site / "model.json").read_text())
    assert info["weights_sha256"] == _info()["weights_sha256"]
    assert info["bytes"] == (site / "model.onnx").stat().st_size
    raw, _ = _raw_test_images(20)
    assert np.array_equal(_onnxruntime_scores(site / "model.onnx", raw, info).argmax(1), _onnxruntime_scores(WEB / "model.onnx", raw, _info()).argmax(1))
    return info


@pytest.mark.slow
def test_demo_no_serve_writes_a_static_site(tmp_path, capsys):
    site = tmp_path / "site"
    assert main(["demo", str(WEB / "mlp.sqz"), "--data", "mnist5k", "--no-serve", "-o", str(site)]) == 0  # the README's file is --lean
    _check_site(site)
    assert "model.onnx" in capsys.readouterr().out


@pytest.mark.slow
def test_demo_of_a_lean_file_takes_the_input_description_from_data(tmp_path, capsys):
    lean, site = tmp_path / "lean.sqz", tmp_path / "site"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "squeeze_cli", "train", "--arch", "squeeze.zoo:MLP", "--data", "digits", "--dim", "200", "--epochs", "2", "--lean", "-o", str(lean)], check=True, env=env, capture_output=True)
    assert main(["demo", str(lean), "--no-serve", "-o", str(site)]) == 2
    assert "--data" in capsys.readouterr().err and not site.exists()
    assert main(["demo", str(lean), "--no-serve", "-o", str(site), "--data", "digits"]) == 0
    info = json.loads((site / "model.json").read_text())
    data = load_data("digits")
    assert info["input"] == data.describe() and info["graph_input"] == "raw"
    raw = np.rint(data.x_test.numpy().reshape(len(data.y_test), -1).astype(np.float64) * 16).astype(np.int64)
    with torch.no_grad():
        want = squeeze.load(lean)(data.x_test).argmax(1).numpy()
    assert np.array_equal(_onnxruntime_scores(site / "model.onnx", raw, info).argmax(1), want)


def test_demo_writes_and_serves_on_loopback_and_stops_on_ctrl_c(tmp_path):
    site = tmp_path / "site"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    proc = subprocess.Popen([sys.executable, "-m", "squeeze_cli", "demo", str(WEB / "mlp.sqz"), "--data", "mnist5k", "-o", str(site)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        url = None
        for line in proc.stdout:
            if line.startswith("serving "):
                url = line.split()[1]
                break
        assert url is not None and url.startswith("http://127.0.0.1:"), proc.stderr.read() if proc.poll() is not None else url
        info = _check_site(site)
        with urllib.request.urlopen(url + "model.onnx", timeout=30) as r:
            assert r.read() == (site / "model.onnx").read_bytes() and info["bytes"] > 0
        with urllib.request.urlopen(url + "vendor/onnxruntime-web/ort-wasm-simd-threaded.wasm", timeout=30) as r:
            assert r.headers["Content-Type"] == "application/wasm" and r.read(4) == b"\0asm"
        with urllib.request.urlopen(url + "app.js", timeout=30) as r:
            assert r.headers["Content-Type"].startswith("text/javascript")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "stopped" in out


# ----------------------------------------------------------------------------- in chromium


def _browser_missing() -> str | None:
    if not shutil.which("node"):
        return "node is not installed (run .ci/web.sh)"
    if _chromium() is None:
        return "chromium is not installed (apt-get install chromium, or run .ci/web.sh)"
    if not (DRIVER.parent / "node_modules" / "puppeteer-core").is_dir():
        return "puppeteer-core is not installed in tests/web (run .ci/web.sh)"
    return None


def _chromium() -> str | None:
    return os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def _bad_files(folder: Path) -> dict[str, str]:
    """Files a user might choose, and a phrase the page's message must hold for each."""
    (folder / "notes.onnx").write_bytes(b"these are my notes, not a model\n" * 4)
    good = (WEB / "model.onnx").read_bytes()
    (folder / "truncated.onnx").write_bytes(good[: len(good) // 2])
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", 16])
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 16])
    tokens = helper.make_model(helper.make_graph([helper.make_node("Cast", ["input_ids"], ["output"], to=TensorProto.FLOAT)], "tokens", [ids], [out]), opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    onnx.save(tokens, folder / "tokens.onnx")
    big_in = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 224, 224])
    big_out = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 3, 224, 224])
    big = helper.make_model(helper.make_graph([helper.make_node("Identity", ["input"], ["output"])], "big", [big_in], [big_out]), opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    onnx.save(big, folder / "photo.onnx")
    broken = helper.make_model(helper.make_graph([helper.make_node("NoSuchOperator", ["input"], ["output"])], "broken", [big_in], [big_out]), opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    onnx.save(broken, folder / "broken.onnx")
    return {
        "notes.onnx": "is not an ONNX model",
        "truncated.onnx": "is not an ONNX model",
        "tokens.onnx": "takes int64 input input_ids",
        "photo.onnx": "150,528 values per example",
        "broken.onnx": "onnxruntime-web could not open broken.onnx",
    }


def _digits_model(folder: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """A small MLP trained on the 8x8 digits and exported tiny, its first 50 raw test images and
    their labels."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    sqz, model = folder / "digits.sqz", folder / "digits.onnx"
    for args in (["train", "--arch", "squeeze.zoo:MLP", "--data", "digits", "--dim", "200", "--epochs", "5", "-o", str(sqz)], ["export", str(sqz), "--tiny", "-o", str(model)]):
        proc = subprocess.run([sys.executable, "-m", "squeeze_cli", *args], capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
    data = load_data("digits")
    x = data.x_test[:50].numpy().reshape(50, -1).astype(np.float64)
    return model, np.rint(x / data.preprocessing["scale"]).astype(np.int64), data.y_test[:50].numpy()


def _generic_model(folder: Path) -> tuple[Path, list[float], int]:
    """A hand-made ONNX model (no squeeze metadata) taking 5 numbers: the page's generic input.
    Returns the file, the numbers to type and the class onnxruntime (Python) predicts for them."""
    w = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 5])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "five", [x], [y], [onnx.numpy_helper.from_array(w, "w")])
    path = folder / "five.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8), path)
    values = [0.5, -1.25, 2.0, 0.0, 3.5]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return path, values, int(session.run(None, {"x": np.array([values], np.float32)})[0].argmax())


@pytest.fixture(scope="module")
def page_run(tmp_path_factory) -> dict:
    """One chromium session over the served samples/web: the hook on 100 test images, a drawn
    digit, the bad files, then a digits model opened with the file button. Returns the driver's
    result with what onnxruntime (Python) computes for the same inputs."""
    reason = _browser_missing()
    if reason and os.environ.get("SQUEEZE_WEB_REQUIRED"):
        pytest.fail(f"SQUEEZE_WEB_REQUIRED is set but {reason}")
    if reason:
        pytest.skip(reason)
    out = Path(os.environ.get("SQUEEZE_WEB_OUT") or tmp_path_factory.mktemp("web"))
    out.mkdir(parents=True, exist_ok=True)
    work = tmp_path_factory.mktemp("web-job")
    bad = _bad_files(work)
    digits, digits_raw, digits_labels = _digits_model(work)
    generic, generic_values, generic_class = _generic_model(work)
    raw, _ = _raw_test_images(N_IMAGES)
    server, _thread = demo.serve_in_thread(WEB)
    try:
        job = {
            "url": f"http://127.0.0.1:{server.server_address[1]}/",
            "chromium": _chromium(),
            "images": raw.tolist(),
            "out": str(out),
            "bad": [str(work / n) for n in bad],
            "other": {"file": str(digits), "images": digits_raw.tolist()},
            "generic": {"file": str(generic), "values": generic_values},
        }
        (work / "job.json").write_text(json.dumps(job))
        proc = subprocess.run(["node", str(DRIVER), str(work / "job.json")], capture_output=True, text=True, timeout=300)
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "error" not in result, result.get("error")
    info = _info()
    digits_info = {"graph_input": "raw" if demo.graph_takes_raw(digits) else "preprocessed", "input": {"input_shape": [1, 8, 8], "pre": {"scale": 1 / 16}}}
    return {
        **result,
        "want": _onnxruntime_scores(WEB / info["model"], raw, info),
        "want_other": _onnxruntime_scores(digits, digits_raw, digits_info).argmax(1),
        "want_generic": generic_class,
        "labels": _raw_test_images(N_IMAGES)[1],
        "labels_other": digits_labels,
        "info": info,
        "out": out,
        "bad_files": bad,
    }


@pytest.mark.browser
def test_page_predictions_equal_onnxruntime_python(page_run):
    state, want, info = page_run["state"], page_run["want"], page_run["info"]
    assert state["status"] == "ready" and state["model"] == info["model"] and state["tiny"] is info["tiny"]
    got = np.array(page_run["predictions"])
    agree = int((got == want.argmax(1)).sum())
    diff = float(np.abs(np.array(page_run["scores"], dtype=np.float64) - want.astype(np.float64)).max())
    print(f"\n[web] {agree}/{N_IMAGES} predictions equal onnxruntime (Python); max |score difference| {diff:.3g}")
    print(f"[web] in-page session start {state['sessionMs']:.1f} ms, first run {state['firstRunMs']:.1f} ms, runtime start {state['runtimeMs']:.0f} ms; model {state['bytes']:,} bytes (tiny: {state['tiny']})")
    assert agree == N_IMAGES
    assert (got == page_run["labels"]).mean() >= 0.8  # the README MLP's test accuracy is 0.87: inputs fed right
    assert page_run["consoleErrors"] == []


@pytest.mark.browser
def test_page_transfers_the_model_as_it_is_on_disk_and_nothing_from_outside(page_run):
    responses, info = page_run["responses"], page_run["info"]
    assert responses["/" + info["model"]]["bytes"] == info["bytes"] == page_run["state"]["bytes"]
    assert all(r["status"] == 200 for r in responses.values()), responses
    print(f"\n[web] model transferred: {info['bytes']:,} bytes; page total {sum(r['bytes'] for r in responses.values()):,} bytes")
    assert info["bytes"] <= TINY_LIMIT


@pytest.mark.browser
def test_drawn_digit_is_classified_and_screenshot_saved(page_run):
    drawn = page_run["drawn"]
    assert drawn["prediction"] is not None and drawn["shown"] == str(drawn["prediction"]["class"])
    assert drawn["bars"] == 10 and "your drawing" in drawn["note"]
    shot = page_run["out"] / "drawn.png"
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"\n[web] drew a 7, the page predicts {drawn['prediction']['class']} ({100 * drawn['prediction']['probability']:.1f}%); screenshot {shot}")


@pytest.mark.browser
def test_bad_files_get_a_clear_message_and_the_model_stays(page_run):
    bad = page_run["bad_files"]
    assert [b["file"] for b in page_run["bad"]] == list(bad)
    for b in page_run["bad"]:
        assert b["visible"] and bad[b["file"]] in b["message"], b
        assert b["model"] == page_run["info"]["model"], b
        print(f"\n[web] {b['file']}: {b['message']}")


@pytest.mark.browser
def test_page_opens_a_digits_model_from_its_onnx_metadata(page_run):
    other = page_run["other"]
    spec = other["state"]["input"]
    assert other["state"]["model"] == "digits.onnx" and other["state"]["message"] == ""
    assert (spec["kind"], spec["h"], spec["w"], spec["rawMax"], spec["feedScale"]) == ("image", 8, 8, 16, 1)  # raw pixels: the tiny graph divides by 16
    assert other["predictions"] == page_run["want_other"].tolist()
    assert (np.array(other["predictions"]) == page_run["labels_other"]).mean() >= 0.6  # about 0.8 when fed right
    assert other["examples"] == [[8, 8]] * 10
    assert other["clicked"]["prediction"] is not None and "test image labelled 0" in other["clicked"]["note"]
    print(f"\n[web] digits.onnx ({other['state']['bytes']:,} bytes, opened with the file button): {len(other['predictions'])}/{len(other['predictions'])} predictions equal onnxruntime (Python); session start {other['state']['sessionMs']:.1f} ms")


@pytest.mark.browser
def test_page_takes_typed_numbers_for_another_input_shape(page_run):
    generic = page_run["generic"]
    assert generic["state"]["model"] == "five.onnx" and generic["state"]["input"]["kind"] == "generic"
    assert generic["visible"] == {"generic": True, "image": False}
    assert generic["prediction"]["class"] == page_run["want_generic"]
