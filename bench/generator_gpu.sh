#!/usr/bin/env bash
# The GPU fine-tune behind the bundled generator (docs/generator.md): stage 2 with --train-all
# (every weight, not only the sync layers) on 8x8 multi-view grids at 64x64, from the
# CPU-trained checkpoint that bench/generator.py makes (runs/generator/s2_soft/model.safetensors),
# for a fixed time budget. The renderer runs in all but two cores; each sample serves about 8
# steps (--reuse 8) so the GPU need not wait for it.
#
# Usage: bash bench/generator_gpu.sh INIT RUN_FOLDER [MINUTES]
set -euo pipefail
init=${1:?usage: bash bench/generator_gpu.sh INIT RUN_FOLDER [MINUTES]}
run=${2:?usage: bash bench/generator_gpu.sh INIT RUN_FOLDER [MINUTES]}
minutes=${3:-8}
cores=$(nproc)
workers=$((cores > 3 ? cores - 2 : 1))
OMP_NUM_THREADS=2 "${PYTHON:-python3}" -m fourreal train -o "$run" --stage 2 --train-all \
  --sync soft --init "$init" --views 8 --times 8 --height 64 --width 64 \
  --dit-width 192 --dit-depth 4 --dit-heads 3 --dit-patch 8 \
  --batch-size 16 --reuse 8 --workers "$workers" --steps 100000 --max-minutes "$minutes" \
  --lr 5e-4 --warmup 100 --save-every 500 --data-seed 0 --quiet
