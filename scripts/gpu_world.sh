#!/usr/bin/env bash
# Train the embedded world on the GPU machine (issue #3). Usage (device tool, repo root):
#   bash scripts/gpu_world.sh ATTR_MINUTES GEN_MINUTES
# Checkpoints stay in ckpt/world (ignored; kept while the machine is warm, so a second call resumes);
# the shippable assets and the evaluation land in $OUT.
set -euo pipefail
export PYTHONPATH=$PWD
ATTR_MIN=${1:-1.5}
GEN_MIN=${2:-6.5}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__)"
mkdir -p ckpt/world "${OUT:-out}"
if [ "$ATTR_MIN" != "0" ]; then
  python3 -m bench.world.training attributes --out ckpt/world --minutes "$ATTR_MIN" --workers 14
fi
python3 -m bench.world.training generator --out ckpt/world --minutes "$GEN_MIN" --workers 14
python3 -m bench.world.finalize --work ckpt/world --out "${OUT:-out}"
cp ckpt/world/log.jsonl "${OUT:-out}/train_log.jsonl"
