#!/usr/bin/env bash
# Second world call (issues #3/#4): resume the GAN from INIT (gan_g, gan_d, generator, attributes
# safetensors), re-finalize, then P-norm+ statistics and the F/W+ base-code encoders on the final generator.
#   bash scripts/gpu_world2.sh INIT GAN_MINUTES ENCODER_MINUTES
set -euo pipefail
export PYTHONPATH=$PWD
INIT=$1; GAN_MIN=$2; ENC_MIN=$3; OUTDIR=${OUT:-out}
pip install --quiet --no-deps --no-index .wheels/*.whl
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
mkdir -p ckpt/world "$OUTDIR"
cp "$INIT/attributes.safetensors" ckpt/world/
python3 -m bench.world.training generator --out ckpt/world --minutes "$GAN_MIN" --workers 14 --profile \
  --init "$INIT" > ckpt/gan_stdout.txt 2>&1 || { tail -40 ckpt/gan_stdout.txt; exit 1; }
python3 -m bench.world.finalize --work ckpt/world --out "$OUTDIR" > ckpt/finalize.txt
rm -f "$OUTDIR/attributes.safetensors"
python3 -m bench.world.train_methods --generator "$OUTDIR/generator.safetensors" \
  --attributes ckpt/world/attributes.safetensors --work ckpt/world --out "$OUTDIR" --minutes "$ENC_MIN"
grep -A 24 "^profile:" ckpt/gan_stdout.txt | cut -c1-150
grep '"net": "generator"' ckpt/world/log.jsonl | tail -2
python3 -c "import json; d=json.load(open('$OUTDIR/world_eval.json')); print(d['generator_kimg'], json.dumps(d['kid']))"
