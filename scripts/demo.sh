#!/usr/bin/env bash
# Quick start, command 1: install the edge runtime into .venv (no torch) and recognize the example
# recording streamed live through a virtual serial device. Extra flags go to `har-edge demo`
# (e.g. --speed 1 for real time, --faults to inject line faults, --backend onnx).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh edge
exec .venv/bin/har-edge demo "$@"
