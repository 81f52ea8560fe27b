#!/usr/bin/env bash
# Session 7 on the GPU machine (device run, carry [".wheels"]); everything written goes to $OUT:
#   bash scripts/gpu_session7.sh checks LIMIT_S
#       issue 17 (2): the W projector's parity at 200 and 1000 steps (the noise probe now takes three draws),
#       then W at 1024 px under --precision auto and bf16 in bench run (a CUDNN_CONV_WSCAP_DBG cap of 1024 MiB,
#       tried first, left strict float32 at batch 1 and was dropped);
#   bash scripts/gpu_session7.sh dist LIMIT_S   # issue 20: a plain run twice against torchrun with 2 ranks sharing
#       the one GPU (gloo), all at --batch-size auto, tables compared; and the precision-policy GPU test
#   bash scripts/gpu_session7.sh batchsize LIMIT_S   # issue 20: plain at --batch-size 6 and 3, 2 ranks at 6, and
#       plain fp32 at 6 and 3: which differences come from sharding and which from the batch size
#   bash scripts/gpu_session7.sh protocol LIMIT_S PRECISION     # issue 17 (3a): bdinvert-table1, 50 faces,
#       paper steps, all seven methods on the 64 px world (PRECISION: auto, or one for every method)
#   bash scripts/gpu_session7.sh protocol256 LIMIT_S N PRECISION  # issue 16 (5): bdinvert-table1 on the 256 px
#       world, paper steps, N faces, the methods that have the 256 px world's resources
set -uo pipefail
WHAT=$1; LIMIT=$2; OUTDIR=${OUT:-out}; mkdir -p "$OUTDIR"
source scripts/device_setup.sh
start=$(date +%s)
left() { echo $(( LIMIT - ($(date +%s) - start) )); }

pack() {  # a run's tables (no images) into $OUT
  tar czf "$OUTDIR/$2.tgz" -C "$(dirname "$1")" --exclude samples --exclude latents "$(basename "$1")"
}

if [ "$WHAT" = checks ]; then
  for steps in 200 1000; do
    PARITY_METHODS=w PARITY_STEPS=$steps PARITY_OUT="$OUTDIR/parity_w_$steps" timeout $(( $(left) / 3 )) \
      python3 -m pytest -q -m gpu tests/accel/test_parity.py -k fast_batched -p no:cacheprovider 2>&1 |
      grep -E '^\{|passed|failed|xpass|xfail' | cut -c1-400 | tee -a "$OUTDIR/parity_log.txt"
  done
  python3 - <<'EOF'
import torch
from bench.generators.checkpoints import save_rosinality
from bench.speed import build_timing_setup
gen, _, _ = build_timing_setup("config-f-1024", torch.device("cpu"))
save_rosinality(gen, "/tmp/config-f-1024.pt")
EOF
  for prec in auto bf16; do
    timeout $(( $(left) / 3 )) python3 -m bench run --generator /tmp/config-f-1024.pt --data synthetic:32 \
      --methods w --precision $prec --steps 40 --perceptual none --no-save-latents --max-samples 0 --quiet \
      --run-dir "runs/r1024_w_$prec" 2>&1 | tee -a "$OUTDIR/r1024_log.txt"
    echo "bench run w $prec exit: ${PIPESTATUS[0]}; at $(( $(date +%s) - start )) s" | tee -a "$OUTDIR/r1024_log.txt"
    cp "runs/r1024_w_$prec/timing.csv" "$OUTDIR/r1024_w_${prec}_timing.csv" 2>/dev/null
    cp "runs/r1024_w_$prec/versions.json" "$OUTDIR/r1024_w_${prec}_versions.json" 2>/dev/null
  done
fi
if [ "$WHAT" = dist ]; then
  python3 -m pytest -q -m gpu tests/accel/test_precision_policy.py -p no:cacheprovider 2>&1 | tail -2 |
    tee "$OUTDIR/policy_gpu_test.txt"
  ARGS="--methods im2s,w --transform rotate:20 --items 6 --steps 100 --no-save-latents --max-samples 0 --quiet"
  for name in plain_a plain_b; do
    python3 -m bench run $ARGS --run-dir "runs/$name" > "$OUTDIR/dist_$name.txt" 2>&1
  done
  timeout $(( $(left) - 20 )) python3 -m torch.distributed.run --standalone --nproc-per-node 2 -m bench run $ARGS --run-dir runs/ranks2 \
    > "$OUTDIR/dist_ranks2.txt" 2>&1
  echo "torchrun exit: $?" | tee -a "$OUTDIR/dist_ranks2.txt"
  grep -h "ranks\|shares" "$OUTDIR/dist_ranks2.txt" runs/ranks2/versions.json 2>/dev/null | head -5
  python3 scripts/compare_runs.py "$OUTDIR/dist_compare.json" runs/plain_a runs/plain_b runs/ranks2
elif [ "$WHAT" = batchsize ]; then
  ARGS="--methods im2s,w --transform rotate:20 --items 6 --steps 100 --no-save-latents --max-samples 0 --quiet"
  for b in 6 3; do
    python3 -m bench run $ARGS --batch-size $b --run-dir runs/b$b > /dev/null 2>&1
    python3 -m bench run $ARGS --batch-size $b --precision fp32 --run-dir runs/f$b > /dev/null 2>&1
  done
  timeout $(( $(left) - 20 )) python3 -m torch.distributed.run --standalone --nproc-per-node 2 -m bench run $ARGS \
    --batch-size 6 --run-dir runs/r2 > "$OUTDIR/r2.txt" 2>&1
  python3 scripts/compare_runs.py "$OUTDIR/batch_compare.json" runs/b6 runs/r2 runs/b3
  python3 scripts/compare_runs.py "$OUTDIR/batch_compare_fp32.json" runs/f6 runs/f3
elif [ "$WHAT" = protocol ]; then
  PREC=$3
  timeout $(( $(left) - 15 )) python3 -m bench run --methods fwplus8,fwplus16,im2s,pnorm,w,idinvert,psp \
    --protocol bdinvert-table1 --n 50 --profile paper --precision "$PREC" --max-samples 4 --no-save-latents \
    --quiet --run-dir runs/table1 2>&1 | tee "$OUTDIR/protocol_log.txt" | grep -v "^  " | tail -40
  echo "bench run exit: ${PIPESTATUS[0]}; wall $(( $(date +%s) - start )) s (set-up included)" | tee -a "$OUTDIR/protocol_log.txt"
  python3 -m bench report runs/table1 --no-html > /dev/null 2>&1
  pack runs/table1 protocol_run
elif [ "$WHAT" = protocol256 ]; then
  N=$3; PREC=$4
  timeout $(( $(left) - 15 )) python3 -m bench run --generator world256 --methods fwplus16,pnorm,w,im2s \
    --protocol bdinvert-table1 --n "$N" --profile paper --precision "$PREC" --max-samples 4 --no-save-latents \
    --quiet --run-dir runs/table1_world256 2>&1 | tee -a "$OUTDIR/protocol256_log.txt" | grep -v "^  " | tail -30
  echo "bench run exit: ${PIPESTATUS[0]}; wall $(( $(date +%s) - start )) s (set-up included)" | tee -a "$OUTDIR/protocol256_log.txt"
  python3 -m bench report runs/table1_world256 --no-html > /dev/null 2>&1
  pack runs/table1_world256 protocol256_run
fi
