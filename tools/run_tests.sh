#!/usr/bin/env bash
# Sets up .venv (with the test tools) and runs the test suite, lint included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh --dev
.venv/bin/python -m pytest "$@"
