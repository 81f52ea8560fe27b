#!/usr/bin/env bash
# Session 19, second call (device run, carry [".wheels"]):  bash scripts/gpu_session19b.sh LIMIT_S
# Times the compiled-step experiments against the default on the same card, Im2S compiled whole (bf16,
# scripts/loss_compile_timing.py --variants whole), each variant in its own process:
#   base  - the defaults;
#   rgbmm - BENCH_COMPILED_RGB=matmul (the RGB layers as bf16 matrix products with float32 sums);
#   keeprgbmm - both BENCH_SAVE_ACTIVATIONS=1 (the partitioner keeps the leaky ReLUs' outputs) and matmul, world only.
# base and rgbmm run on the 256 px world (batch 550) and config-f 1024² (batch 48); results in
# variant_NAME.json and variant_NAME_log.txt.
set -uo pipefail
LIMIT=$1; start=$(date +%s)
left() { echo $(( LIMIT - ($(date +%s) - start) )); }
OUTDIR=${OUT:-out}; mkdir -p "$OUTDIR"
source scripts/device_setup.sh
variant() {  # NAME CONFIGS BATCHES SHARE_OF_TIME_LEFT_PERCENT ENV...
  local name=$1 configs=$2 batches=$3 share=$4; shift 4
  [ "$(left)" -lt 60 ] && { echo "skipped $name: $(left) s left" | tee -a "$OUTDIR/session9_log.txt"; return; }
  env "$@" timeout $(( ($(left) - 10) * share / 100 )) python3 scripts/loss_compile_timing.py --methods im2s \
    --configs "$configs" --batches "$batches" --variants whole --out "$OUTDIR/variant_$name.json" 2>&1 |
    tee "$OUTDIR/variant_${name}_log.txt" | grep '^| [a-z]' | sed "s/^/$name /"
}
variant base world256,config-f-1024 550,48 40 BENCH_COMPILED_RGB=cudnn
variant rgbmm world256,config-f-1024 550,48 66 BENCH_COMPILED_RGB=matmul
variant keeprgbmm world256 550 100 BENCH_SAVE_ACTIVATIONS=1 BENCH_COMPILED_RGB=matmul
echo "done at $(( $(date +%s) - start )) s" | tee -a "$OUTDIR/session9_log.txt"
