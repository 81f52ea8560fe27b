#!/usr/bin/env bash
# Session 5 on the GPU machine (device run, carry [".wheels"]):
#   bash scripts/gpu_session5.sh protocol LIMIT_S   # issue 17 (3a): the whole bdinvert-table1 at paper steps,
#                                                   # 50 faces, 7 methods, one batched job per method
#   bash scripts/gpu_session5.sh real1024 LIMIT_S   # issue 17 (3b): bench run rates on a random 1024 px config-f
#                                                   # rosinality checkpoint; issue 15: train-encoder rates at 256 px
# Logs and the run tables go to $OUT.
set -uo pipefail
WHAT=$1; LIMIT=$2; OUTDIR=${OUT:-out}; mkdir -p "$OUTDIR"
source scripts/device_setup.sh

pack() {  # the run's tables (no images) into $OUT
  local dir=$1 name=$2
  tar czf "$OUTDIR/${name}.tgz" -C "$(dirname "$dir")" --exclude samples --exclude latents --exclude journal \
    "$(basename "$dir")"
}

if [ "$WHAT" = protocol ]; then
  start=$(date +%s)
  timeout "$LIMIT" python3 -m bench run --methods fwplus8,fwplus16,im2s,pnorm,w,idinvert,psp \
    --protocol bdinvert-table1 --n 50 --profile paper --max-samples 4 --no-save-latents --quiet \
    --run-dir runs/table1 2>&1 | tee "$OUTDIR/protocol_log.txt"
  echo "bench run exit: ${PIPESTATUS[0]}; wall $(( $(date +%s) - start )) s (set-up included)" | tee -a "$OUTDIR/protocol_log.txt"
  python3 -m bench report runs/table1 --no-html > /dev/null
  pack runs/table1 protocol_run
elif [ "$WHAT" = real1024 ]; then
  python3 - <<'EOF'
import torch
from bench.generators.checkpoints import save_rosinality
from bench.speed import build_timing_setup
for name in ("config-f-1024", "config-f-256"):
    gen, _, _ = build_timing_setup(name, torch.device("cpu"))
    save_rosinality(gen, f"/tmp/{name}.pt")
EOF
  start=$(date +%s)
  # W under auto is strict float32 (6.8 image-steps/s at batch 1 in session 4): timed here at tf32
  for spec in "im2s,pnorm auto" "w tf32"; do
    set -- $spec
    timeout $(( LIMIT / 3 )) python3 -m bench run --generator /tmp/config-f-1024.pt --data synthetic:64 \
      --methods "$1" --precision "$2" --steps 60 --perceptual none --no-save-latents --max-samples 0 --quiet \
      --run-dir "runs/r1024_$1" 2>&1 | tee -a "$OUTDIR/r1024_log.txt"
    echo "bench run $1 $2 exit: ${PIPESTATUS[0]}; wall $(( $(date +%s) - start )) s" | tee -a "$OUTDIR/r1024_log.txt"
    cat "runs/r1024_$1/timing.csv" >> "$OUTDIR/r1024_timing.csv" 2>/dev/null
  done
  for m in fwplus16 fwplus8 idinvert; do
    timeout 90 python3 -m bench train-encoder "$m" --generator /tmp/config-f-256.pt --out "/tmp/enc_$m.safetensors" \
      --data synthetic:256 --n 256 --iterations 40 --perceptual none 2>&1 | tail -n 4 | tee -a "$OUTDIR/train_log.txt"
  done
fi
