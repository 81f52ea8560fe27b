#!/usr/bin/env bash
# Session 20, a call for the next session (device run, carry [".wheels"]):  bash scripts/gpu_session20.sh LIMIT_S
# The fused Triton styled convolution (BENCH_FUSED_STYLED=1, bench/generators/fused_styled.py), first time on a GPU:
# 1. its CUDA tests: parity of each layer shape with the unfused path against float64, and a compiled generator
#    (pytest -m gpu tests/generators/test_fused_styled.py): fused_tests_log.txt;
# 2. one layer at a time, eager / compiled / fused, microseconds per image (scripts/fused_styled_timing.py):
#    fused_layers.json;
# 3. Im2S compiled whole on the 256 px world at batch 550, defaults then fused, each in its own process on the
#    same card: variant_base.json, variant_fused.json;
# 4. the same at config-f 1024², batch 48 (item 4): variant_base1024.json, variant_fused1024.json.
set -uo pipefail
LIMIT=$1; start=$(date +%s)
left() { echo $(( LIMIT - ($(date +%s) - start) )); }
OUTDIR=${OUT:-out}; mkdir -p "$OUTDIR"
source scripts/device_setup.sh
BENCH_FUSED_STYLED=1 timeout 150 python3 -m pytest -q -p no:cacheprovider -m gpu tests/generators/test_fused_styled.py \
  2>&1 | tail -25 | tee "$OUTDIR/fused_tests_log.txt" | tail -3
timeout $(( $(left) * 25 / 100 )) python3 scripts/fused_styled_timing.py --out "$OUTDIR/fused_layers.json" 2>&1 |
  grep -v Warning | tee "$OUTDIR/fused_layers_log.txt" | cut -c1-400
time_variant base im2s world256 550 22
time_variant fused im2s world256 550 30 BENCH_FUSED_STYLED=1
time_variant base1024 im2s config-f-1024 48 45
time_variant fused1024 im2s config-f-1024 48 90 BENCH_FUSED_STYLED=1
echo "done at $(( $(date +%s) - start )) s"
