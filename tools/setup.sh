#!/usr/bin/env bash
# Creates .venv with the recipe's requirements (and the test tools with --dev).
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
requirements=requirements.txt
if [ "${1:-}" = "--dev" ]; then
    requirements=requirements-dev.txt
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$requirements"
