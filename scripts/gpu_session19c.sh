#!/usr/bin/env bash
# Session 19, a call for the next session (device run, carry [".wheels"]):  bash scripts/gpu_session19c.sh LIMIT_S
# 1. Im2S compiled whole on the 256 px world at batch 550, with the defaults and with BENCH_SAVE_ACTIVATIONS=1
#    (the partitioner keeps the leaky ReLUs' outputs), each in its own process on the same card:
#    variant_base.json, variant_keep.json.
# 2. F/W+ 16x16 compiled whole with the defaults on config-f 256² (batch 256) and 1024² (batch 48), item 4:
#    variant_fwbase.json.
# 3. With time left, the bytes of the world's compiled step as Triton fuses it: traffic_cuda_world256.txt.
set -uo pipefail
LIMIT=$1; start=$(date +%s)
left() { echo $(( LIMIT - ($(date +%s) - start) )); }
OUTDIR=${OUT:-out}; mkdir -p "$OUTDIR"
source scripts/device_setup.sh
time_variant base im2s world256 550 22 BENCH_COMPILED_RGB=cudnn
time_variant keep im2s world256 550 30 BENCH_SAVE_ACTIVATIONS=1
time_variant fwbase fwplus16 config-f-256,config-f-1024 256,48 75 BENCH_COMPILED_RGB=cudnn
if [ "$(left)" -ge 90 ]; then
  timeout $(( $(left) - 10 )) python3 scripts/compiled_traffic.py world256 im2s --device cuda --top 16 2>&1 |
    grep -v Warning | tee "$OUTDIR/traffic_cuda_world256.txt" | head -8
fi
echo "done at $(( $(date +%s) - start )) s"
