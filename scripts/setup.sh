#!/usr/bin/env bash
# Create (or update) the project's virtual environment .venv with one extra installed:
#   edge   - the runtime only (what a Raspberry Pi needs; no torch)
#   dev    - everything: training (torch==2.13.0), export (onnx, tensorflow-cpu, onnx2tf), tests
# Usage: scripts/setup.sh [edge|train|export|dev]
set -euo pipefail
cd "$(dirname "$0")/.."
extra="${1:-edge}"
venv="${HAR_VENV:-.venv}"

python=""
for candidate in python3.11 python3.12 python3.13 python3; do
  if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    python="$candidate"; break
  fi
done
if [ -z "$python" ]; then
  echo "setup: Python 3.11 or newer is needed (found: $(python3 --version 2>&1 || echo none))." >&2
  echo "       On Debian/Ubuntu/Raspberry Pi OS: sudo apt install python3 python3-venv" >&2
  exit 2
fi
if [ ! -x "$venv/bin/python" ]; then
  if ! "$python" -m venv "$venv" 2>/dev/null; then
    rm -rf "$venv"
    echo "setup: '$python -m venv' failed: install the venv module (sudo apt install python3-venv) and run again." >&2
    exit 2
  fi
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)

# Skip the install when this extra was already installed from the same pyproject.toml.
stamp="$venv/.installed-$extra"
want="$(sha256sum pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "setup: installing the '$extra' extra into $venv (first time: a few minutes)..." >&2
"${pip[@]}" install --upgrade pip >/dev/null
"${pip[@]}" install -e ".[$extra]"
case "$extra" in
  export|dev)
    # onnx2tf pins an old numpy/tensorflow; its own code works on the stack above (see
    # ../shared/docs/toolchain.md), so it is installed without its pinned dependencies.
    "${pip[@]}" install --no-deps -r requirements-onnx2tf.txt ;;
esac
echo "$want" > "$stamp"
