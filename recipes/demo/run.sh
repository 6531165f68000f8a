#!/usr/bin/env bash
# Quick start on the embedded demo corpus, on CPU: sets up .venv, generates the corpus into
# data/demo, and runs the paper's study (study.py): the teacher (Original) on clean speech, the
# five systems adapted to 0 dB noise (RH, RM, RM+TL, RM+CL, RM+TL+CL) and the method adapted
# from the demo's field recordings (RM+TL+CL (field)), two at a time, their evaluation on
# clean, 10, 5 and 0 dB test audio, Table 1 with significance tests, Table 2 and the figure.
# About 13 minutes on 2 CPU cores from a fresh clone.
#
#   bash recipes/demo/run.sh [--key value ...]    (extra options go to study.py)
#
# Run it again to resume an interrupted study: finished stages are skipped.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash tools/setup.sh
.venv/bin/python study.py "$@"
