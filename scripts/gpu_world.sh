#!/usr/bin/env bash
# Train the embedded world on the GPU machine (issue #3). Usage (device tool, repo root):
#   bash scripts/gpu_world.sh ATTR_MINUTES GEN_MINUTES [INIT_DIR]
# ATTR_MINUTES=0 skips the attribute net and takes INIT_DIR/attributes.safetensors instead. INIT_DIR may
# also hold gan_{g,g_ema,d}.safetensors from an earlier call (--export) to resume the GAN.
# The shippable assets, the evaluation and resumable float16 GAN weights land in $OUT.
set -euo pipefail
export PYTHONPATH=$PWD
ATTR_MIN=${1:-1.5}
GEN_MIN=${2:-6.5}
INIT=${3:-}
OUTDIR=${OUT:-out}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__)"
mkdir -p ckpt/world "$OUTDIR"
if [ "$ATTR_MIN" != "0" ]; then
  python3 -m bench.world.training attributes --out ckpt/world --minutes "$ATTR_MIN" --workers 14
else
  cp "$INIT/attributes.safetensors" ckpt/world/
fi
python3 -m bench.world.training generator --out ckpt/world --minutes "$GEN_MIN" --workers 14 --profile \
  --export "$OUTDIR" ${INIT:+--init "$INIT"}
python3 -m bench.world.finalize --work ckpt/world --out "$OUTDIR"
cp ckpt/world/log.jsonl "$OUTDIR/train_log.jsonl"
rm -f "$OUTDIR/attributes.safetensors" "$OUTDIR/gan_g_ema.safetensors"  # 8-file limit; g_ema = generator
