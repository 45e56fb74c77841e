#!/usr/bin/env bash
# The full test suite (what CI runs): installs everything into .venv, then runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
exec .venv/bin/python -m pytest -q "$@"
