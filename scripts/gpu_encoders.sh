#!/usr/bin/env bash
# Train the IDinvert and pSp encoders on the embedded world (issue #5), on the GPU machine.
#   bash scripts/fetch_wheels.sh            # first, on the build machine
#   device run (carry [".wheels"]):  bash scripts/gpu_encoders.sh IDINVERT_MINUTES PSP_MINUTES
# Writes idinvert_encoder.safetensors, psp_encoder.safetensors and their evaluations to $OUT; install them
# with bench.world.zoo.install(OUT, ["idinvert_encoder", "psp_encoder"], provenance).
set -euo pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
IDV_MIN=${1:-4}; PSP_MIN=${2:-4}; OUTDIR=${OUT:-out}
python3 -m pip install --quiet --no-deps --no-index .wheels/*.whl 2>&1 | grep -v WARNING || true
nvidia-smi --query-gpu=name --format=csv,noheader
mkdir -p "$OUTDIR"
python3 -m bench.encoders.idinvert --work ckpt/idinvert --out "$OUTDIR" --minutes "$IDV_MIN" --workers 14
python3 -m bench.encoders.psp --work ckpt/psp --out "$OUTDIR" --minutes "$PSP_MIN" --workers 14
ls -la "$OUTDIR"
