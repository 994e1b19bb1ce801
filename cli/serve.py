"""The demo page of ``squeeze demo``: a .sqz file's tiny ONNX graph in a web page (onnxruntime-web, offline).

The page lives in ``samples/web`` of the repository (HTML, JavaScript, the vendored
onnxruntime-web files and real test images). The command copies it to a folder, exports the
model next to it as ``model.onnx`` with a ``model.json`` describing its input, and serves the
folder on 127.0.0.1 (or only writes it, with ``--no-serve``). ``samples/web/build_model.py``
uses the same functions to make the page's default model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import shutil
import signal
import tempfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional

from squeeze.errors import SqueezeError

# Installed from a wheel the page is the package folder squeeze_cli/web; in a checkout (and an
# editable install) it is samples/web of the repository.
_INSTALLED_WEB, _CHECKOUT_WEB = Path(__file__).resolve().parent / "web", Path(__file__).resolve().parents[1] / "samples" / "web"
WEB_DIR = _INSTALLED_WEB if (_INSTALLED_WEB / "index.html").exists() else _CHECKOUT_WEB
# What the page needs at run time (the rest of samples/web builds or documents it).
PAGE_FILES = ("index.html", "app.js", "pad.js", "onnxinfo.js", "style.css", "examples", "vendor/onnxruntime-web")
MIME = {".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm", ".json": "application/json", ".onnx": "application/octet-stream", ".css": "text/css"}
# ONNX metadata saying what the graph takes: "x/255", "x*0.5", "x" or "ids" (tiny graphs), and a
# phrase beginning "raw inputs" when the graph applies the recorded preprocessing (full graphs).
PRE_KEY = "squeeze.pre"
INPUT_KEY = "squeeze.input"


def check_page() -> None:
    """Raise SqueezeError when the page's files are missing (a broken installation)."""
    missing = [p for p in PAGE_FILES if not (WEB_DIR / p).exists()]
    if missing:
        raise SqueezeError(f"the demo page's files are missing from {WEB_DIR} ({', '.join(missing)}); reinstall squeeze")


def copy_page(dest: Path) -> None:
    """Copy the page's run-time files from ``samples/web`` into ``dest`` (created if needed).

    Raises:
        SqueezeError: the page's files are missing.
    """
    check_page()
    dest.mkdir(parents=True, exist_ok=True)
    for rel in PAGE_FILES:
        src, dst = WEB_DIR / rel, dest / rel
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True)
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)


def write_model(sqz: Path, dest: Path, *, arch: Optional[str] = None, data: Optional[str] = None) -> dict:
    """Export ``sqz`` as the tiny ONNX graph ``dest/model.onnx`` and describe it in ``dest/model.json``.

    Args:
        sqz: the .sqz file (its recorded input description says what the page draws).
        dest: an existing folder.
        arch: architecture reference instead of the file's own.
        data: a data source whose description stands in for the input description a file made
            with ``--lean`` leaves out (its shape and preprocessing; the weights are the file's).

    Returns:
        The contents of ``model.json``.

    Raises:
        SqueezeError: a fine-tune of a base (its base weights would be a separate data file),
            a file without an input description, or any export failure.
    """
    from squeeze import format as fmt

    from squeeze.export import export_onnx

    f = fmt.read(sqz)
    if f.base is not None:
        raise SqueezeError(f"{sqz} is a fine-tune of a base model, whose weights the tiny graph keeps in a separate data file the page does not load; export it with squeeze export --tiny instead")
    if not f.data or not f.data.get("input_shape"):
        if data is None:
            raise SqueezeError(f"{sqz} records no input description (made with --lean); pass --data with the data it was made for (e.g. --data mnist5k) so the page knows its input")
        from squeeze.data import load_data

        f = dataclasses.replace(f, data=load_data(data).describe())
    onnx_path = dest / "model.onnx"
    report = export_onnx(f, onnx_path, arch=arch, tiny=True)
    info = {
        "model": onnx_path.name,
        "bytes": onnx_path.stat().st_size,
        "tiny": True,
        "input": f.data,
        "graph_input": "raw" if graph_takes_raw(onnx_path) else "preprocessed",
        "weights_sha256": f.weights_sha256,
        "sqz": {
            "file": Path(sqz).name,
            "bytes": f.size_bytes,
            "D": f.D,
            "d": f.d,
            "projection": f.spec["kind"],
            "arch": (f.arch or {}).get("ref", arch or "?"),
            "test_accuracy": (f.metrics or {}).get("test_accuracy"),
        },
        "export_seconds": round(report.seconds, 1),
    }
    (dest / "model.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


def graph_takes_raw(onnx_path: Path) -> bool:
    """Whether the exported graph applies the recorded preprocessing itself (takes raw inputs):
    its metadata says ``squeeze.pre = x/255`` (or ``x*SCALE``; tiny graphs), or ``squeeze.input``
    begins with "raw inputs" (full graphs)."""
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(onnx_path), load_external_data=False).metadata_props}
    return meta.get(PRE_KEY, "").startswith(("x/", "x*")) or meta.get(INPUT_KEY, "").startswith("raw inputs")


class _Handler(SimpleHTTPRequestHandler):
    """Static files with the right types for ES modules and WebAssembly, revalidated on every load (a
    new model replaces the old one; the runtime stays in the browser's cache), no log lines."""

    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, **MIME}

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        pass

    def list_directory(self, path):  # a folder without index.html is not a page: no listings
        self.send_error(404, "File not found")
        return None


def make_server(folder: Path, port: int = 0) -> ThreadingHTTPServer:
    """An HTTP server for ``folder`` on 127.0.0.1 (``port`` 0: a free port; see ``server_address``)."""
    try:
        return ThreadingHTTPServer(("127.0.0.1", port), functools.partial(_Handler, directory=str(folder)))
    except OSError as e:
        raise SqueezeError(f"cannot listen on 127.0.0.1:{port} ({e.strerror}); pass another --port, or 0 for a free one") from None


def serve_in_thread(folder: Path, port: int = 0) -> tuple[ThreadingHTTPServer, threading.Thread]:
    """Start :func:`make_server` in a daemon thread (for tests and scripts); stop it with ``shutdown()``."""
    server = make_server(folder, port)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Inside: SIGTERM stops the process as Ctrl-C does (KeyboardInterrupt), so the temporary
    folder and the server are cleaned up the same way."""
    def stop(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
