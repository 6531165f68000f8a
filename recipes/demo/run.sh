#!/usr/bin/env bash
# Quick start on the embedded demo corpus, on CPU: sets up .venv, generates the corpus into
# data/demo, fine-tunes the teacher on clean speech, adapts the CTSL student (RM+TL+CL) to
# 0 dB noise, and prints test CCC per attribute on clean and 0 dB audio for both.
#
#   bash recipes/demo/run.sh [--key value ...]    (extra overrides go to both stages)
set -euo pipefail
cd "$(dirname "$0")/../.."
bash tools/setup.sh

# The paper's settings suit a pretrained wav2vec2-large; a tiny randomly initialised encoder
# learning from scratch in minutes needs a higher learning rate and a lighter head.
DEMO=(
    --corpus demo --data_folder data/demo --results_folder results
    --encoder_hparams hparams/encoders/tiny_wav2vec2.yaml
    --lr 0.0003 --batch_size 16 --num_workers 0
    --head_hidden_size 256 --head_hidden_layers 1 --head_dropout 0.1
)
.venv/bin/python train.py hparams/teacher.yaml "${DEMO[@]}" --number_of_epochs 6 "$@"
.venv/bin/python train.py hparams/student.yaml "${DEMO[@]}" --number_of_epochs 4 "$@"
.venv/bin/python -m ctsl_brain.report \
    Original=results/demo/teacher/1986 RM+TL+CL=results/demo/rm_tl_cl/1986
