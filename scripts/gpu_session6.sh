#!/usr/bin/env bash
# Session 6 on the GPU machine (device run, carry [".wheels"]), issue #16:
#   bash scripts/gpu_session6.sh world256 SR_MIN ENC_MIN   # train the 256 px world's detail blocks and its F/W+ 4x4
#                                                          # encoder, install both, capacity probe, speed probe
#   bash scripts/gpu_session6.sh protocol256 LIMIT_S N     # bdinvert-table1 on the 256 px world at paper steps
# Everything written goes to $OUT (assets, logs, probe JSON, run tables).
set -uo pipefail
WHAT=$1; OUTDIR=${OUT:-out}; mkdir -p "$OUTDIR"
source scripts/device_setup.sh


if [ "$WHAT" = world256 ]; then
  SR_MIN=$2; ENC_MIN=$3
  python3 -m bench.world.world256 train --out "$OUTDIR" --minutes "$SR_MIN" --batch 32 --workers 14 \
    > "$OUTDIR/sr_log.txt" 2>&1 || { tail -30 "$OUTDIR/sr_log.txt"; exit 1; }
  tail -3 "$OUTDIR/sr_log.txt"
  install_assets generator256_sr "python -m bench.world.world256 train --out OUT --minutes $SR_MIN --batch 32 --workers 14"
  python3 -m bench train-encoder fwplus4 --generator world256 --out "$OUTDIR/encoder4_world256.safetensors" \
    --minutes "$ENC_MIN" --width 8 --head-width 32 --work /tmp/enc4 --quiet 2>&1 | tail -2 | cut -c1-400
  install_assets fwplus4_encoder_world256 "bench train-encoder fwplus4 --generator world256 --out OUT --minutes $ENC_MIN --width 8 --head-width 32"
  python3 scripts/capacity_probe.py --generator world256 --methods fwplus4,w --n 10 \
    --out "$OUTDIR/probe_world256.json" 2>&1 | tail -4
elif [ "$WHAT" = probes ]; then  # the 64 px world, then the 256 px world (fwplus16 runs 4x4 there)
  N=$2
  python3 scripts/capacity_probe.py --methods fwplus16,fwplus8,w --n "$N" \
    --out "$OUTDIR/probe_world64.json" 2>&1 | grep '^{'
  python3 scripts/capacity_probe.py --generator world256 --methods fwplus16,w --n "$N" \
    --out "$OUTDIR/probe_world256.json" 2>&1 | grep '^{'
elif [ "$WHAT" = protocol256 ]; then
  LIMIT=$2; N=$3
  start=$(date +%s)
  timeout "$LIMIT" python3 -m bench run --generator world256 --methods fwplus4,im2s,pnorm,w \
    --protocol bdinvert-table1 --n "$N" --profile paper --max-samples 4 --no-save-latents --quiet \
    --run-dir runs/table1_world256 2>&1 | tee "$OUTDIR/protocol256_log.txt" | tail -25
  echo "bench run exit: ${PIPESTATUS[0]}; wall $(( $(date +%s) - start )) s (set-up included)" | tee -a "$OUTDIR/protocol256_log.txt"
  python3 -m bench report runs/table1_world256 --no-html > /dev/null 2>&1
  tar czf "$OUTDIR/protocol256_run.tgz" -C runs --exclude samples --exclude latents table1_world256
fi
