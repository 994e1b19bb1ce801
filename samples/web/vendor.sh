#!/usr/bin/env bash
# Refresh vendor/onnxruntime-web/ from the npm package pinned in package.json / package-lock.json.
# The page loads only these three files (the WebAssembly CPU build, single bundle); they are
# committed so that `squeeze demo` and a static copy of this folder need no npm at run time.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund --ignore-scripts
dist=node_modules/onnxruntime-web/dist
mkdir -p vendor/onnxruntime-web
for f in ort.wasm.min.mjs ort-wasm-simd-threaded.mjs ort-wasm-simd-threaded.wasm; do
  cp "$dist/$f" vendor/onnxruntime-web/
done
version=$(node -p "require('./node_modules/onnxruntime-web/package.json').version")
echo "onnxruntime-web $version: $(du -cb vendor/onnxruntime-web/* | tail -1 | cut -f1) bytes in vendor/onnxruntime-web/"
