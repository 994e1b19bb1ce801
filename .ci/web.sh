#!/usr/bin/env bash
# The demo page's real-browser tests (tests/test_web.py, marker `browser`): Debian's chromium in
# headless mode, driven by puppeteer-core from npm. Installs both by package name, then runs the
# tests with the current python (.ci/run calls this inside its virtual environment).
# Screenshots go to $SQUEEZE_WEB_OUT (default out/web).
set -euo pipefail
cd "$(dirname "$0")/.."
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
missing=()
command -v chromium >/dev/null || missing+=(chromium fonts-dejavu-core)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "+ $(chromium --version 2>/dev/null | head -1), node $(node --version)"
(cd tests/web && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error)
export SQUEEZE_WEB_OUT="${SQUEEZE_WEB_OUT:-out/web}" SQUEEZE_WEB_REQUIRED=1
python -m pytest -q -s -m browser tests/test_web.py
