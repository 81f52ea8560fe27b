#!/usr/bin/env bash
# Session 19, a short call (device run, carry [".wheels"]):  bash scripts/gpu_session19d.sh LIMIT_S
# On an H200: Im2S compiled whole with the defaults on config-f 1024² (batch 48) and the 256 px world (batch 550),
# the check of session 18's prediction (variant_h200base.json); then F/W+ 16x16 on config-f 256² (batch 256).
# On an H100: F/W+ 16x16 on config-f 256² (item 4, not timed since session 15; variant_fwbase.json; it needs
# more than 150 s, compilation included).
set -uo pipefail
LIMIT=$1; start=$(date +%s)
left() { echo $(( LIMIT - ($(date +%s) - start) )); }
OUTDIR=${OUT:-out}; mkdir -p "$OUTDIR"
source scripts/device_setup.sh
case "$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)" in
  *H200*) time_variant h200base im2s config-f-1024,world256 48,550 70 BENCH_COMPILED_RGB=cudnn
          time_variant fwbase fwplus16 config-f-256 256 100 BENCH_COMPILED_RGB=cudnn ;;
  *) time_variant fwbase fwplus16 config-f-256 256 100 BENCH_COMPILED_RGB=cudnn ;;
esac
echo "done at $(( $(date +%s) - start )) s"
