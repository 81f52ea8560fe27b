#!/usr/bin/env bash
# Session 7 on the GPU machine (device run, carry [".wheels"]); everything written goes to $OUT:
#   bash scripts/gpu_session7.sh checks LIMIT_S
#       issue 17 (2): the W projector's parity at 200 and 1000 steps (the noise probe now takes three draws),
#       then W at 1024 px under --precision auto and bf16 in bench run (a CUDNN_CONV_WSCAP_DBG cap of 1024 MiB,
#       tried first, left strict float32 at batch 1 and was dropped);
#       issue 20: a plain run twice against torchrun with 2 ranks sharing the one GPU (gloo), tables compared
#       (the last part is also mode dist)
#   bash scripts/gpu_session7.sh dist LIMIT_S   # issue 20: the torchrun check alone (and the precision-policy GPU test)
#   bash scripts/gpu_session7.sh protocol LIMIT_S PRECISION     # issue 17 (3a): bdinvert-table1, 50 faces,
#       paper steps, all seven methods on the 64 px world (PRECISION bf16 = auto with W at bf16 as well)
#   bash scripts/gpu_session7.sh protocol256 LIMIT_S N PRECISION  # issue 16 (5): bdinvert-table1 on the 256 px
#       world, paper steps, N faces, the methods that have the 256 px world's resources
set -uo pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
WHAT=$1; LIMIT=$2; OUTDIR=${OUT:-out}; mkdir -p "$OUTDIR"
python3 -c "import kornia, lpips" 2>/dev/null ||
  python3 -m pip install --quiet --no-deps --no-index .wheels/*.whl 2>&1 | grep -v WARNING
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__)"
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
  python3 - "$OUTDIR" <<'EOF'
import sys, json
import pandas as pd
key = ["method", "transform", "item", "seed", "metric"]
def load(name):
    df = pd.read_csv(f"runs/{name}/results.csv")
    return df.set_index(key)["value"].sort_index()
a, b, r = load("plain_a"), load("plain_b"), load("ranks2")
out = {"rows": [len(a), len(b), len(r)], "same_keys": [a.index.equals(b.index), a.index.equals(r.index)]}
for other, label in ((b, "plain_vs_plain"), (r, "plain_vs_ranks2")):
    d = (a - other.reindex(a.index)).abs().groupby(level="metric").max()
    out[label] = {m: round(float(v), 5) for m, v in d.items() if v == v}
print(json.dumps(out, indent=1))
json.dump(out, open(f"{sys.argv[1]}/dist_compare.json", "w"), indent=1)
EOF
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
