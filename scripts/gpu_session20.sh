#!/usr/bin/env bash
# Session 20, a call for the next session (device run, carry [".wheels"]):  bash scripts/gpu_session20.sh LIMIT_S
# The fused Triton styled and RGB layers (BENCH_FUSED_STYLED=1, bench/generators/fused_styled.py), first time on a GPU:
# 1. their CUDA tests: each layer shape against the unfused path and float64, and a compiled generator
#    (pytest -m gpu tests/generators/test_fused_styled.py): fused_tests_log.txt;
# 2. Im2S compiled whole on the 256 px world at batch 550, defaults then fused, each in its own process on the
#    same card: variant_base.json, variant_fused.json;
# 3. the fused path at config-f 1024², batch 48 (item 4): variant_fused1024.json; then the default there:
#    variant_base1024.json (278.3 on an H100 in session 19);
# 4. with time left, one layer at a time, eager / compiled / fused (scripts/fused_styled_timing.py): fused_layers.json.
set -uo pipefail
LIMIT=$1; start=$(date +%s)
left() { echo $(( LIMIT - ($(date +%s) - start) )); }
OUTDIR=${OUT:-out}; mkdir -p "$OUTDIR"
source scripts/device_setup.sh
BENCH_FUSED_STYLED=1 timeout 120 python3 -m pytest -q -p no:cacheprovider -m gpu tests/generators/test_fused_styled.py \
  2>&1 | tail -25 | tee "$OUTDIR/fused_tests_log.txt" | tail -3
time_variant base im2s world256 550 25
time_variant fused im2s world256 550 35 BENCH_FUSED_STYLED=1
time_variant fused1024 im2s config-f-1024 48 50 BENCH_FUSED_STYLED=1
time_variant base1024 im2s config-f-1024 48 60
if [ "$(left)" -ge 60 ]; then
  timeout $(( $(left) - 10 )) python3 scripts/fused_styled_timing.py --out "$OUTDIR/fused_layers.json" 2>&1 |
    grep -v Warning | tee "$OUTDIR/fused_layers_log.txt" | cut -c1-400
fi
echo "done at $(( $(date +%s) - start )) s"
