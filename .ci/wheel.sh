#!/usr/bin/env bash
# CI: squeeze as a release installs it. Build the sdist and, from the sdist, the wheel; install the
# wheel into a new virtual environment outside the checkout; then, from an empty temporary folder
# that holds no checkout, run the README's first command on a copy of the sample and verify,
# export --tiny, demo --no-serve and bench its file. A file the commands read at run time but the
# wheel lacks fails here (an editable install would still find it in the checkout).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
# shellcheck disable=SC1091
. "$work/venv/bin/activate"
python -m pip install -q --upgrade pip build
python -m build -q -o "$work/dist" "$repo" >/dev/null
wheel="$(ls "$work"/dist/squeeze-*.whl)"
echo "wheel: $(basename "$wheel"), $(stat -c %s "$wheel") bytes; sdist: $(stat -c %s "$work"/dist/squeeze-*.tar.gz) bytes"
python -m pip install -q "$wheel"

mkdir -p "$work/run/samples"
cd "$work/run"
cp "$repo/samples/mlp_mnist5k.safetensors" samples/
python - "$repo" <<'EOF'
import sys, squeeze, squeeze_cli
for module in (squeeze, squeeze_cli):
    assert not module.__file__.startswith(sys.argv[1]), f"{module.__name__} imported from the checkout: {module.__file__}"
EOF
main_command="$(awk '/<!-- main-command -->/ {getline; getline; print; exit}' "$repo/README.md")"
[ -n "$main_command" ] || { echo "README.md has no <!-- main-command --> block" >&2; exit 1; }
main_command="${main_command#pip install -e . && }"
echo "+ $main_command"
bash -euo pipefail -c "$main_command"
set -x
squeeze verify mlp.sqz
squeeze export mlp.sqz --tiny --input-shape 1,28,28 -o tiny.onnx
squeeze demo mlp.sqz --data mnist5k --no-serve -o site
test -f site/index.html -a -f site/model.onnx -a -f site/vendor/onnxruntime-web/ort-wasm-simd-threaded.wasm
squeeze bench mlp.sqz
