#!/usr/bin/env bash
# Session 9 on the GPU machine (device run, carry [".wheels"], plus "carry_runs" to resume); writes to $OUT:
#   bash scripts/gpu_session9.sh LIMIT_S ENC_MIN N RUN:METHODS [RUN:METHODS ...]
# Issue 16: with ENC_MIN > 0, first train the 256 px world's F/W+ 4x4 encoder (BDInvert's recipe, 10k
# iterations at most, for ENC_MIN minutes) and install it with its provenance. Then, for each RUN, the
# BDInvert Table 1 protocol on the embedded world (which is now the 256 px world for protocol runs) at paper
# steps, N faces, --precision auto, METHODS (comma list), in runs/RUN, resumed from carry_runs/RUN.tgz when
# that was carried. Each run gets the time left (minus a margin to pack it); a run cut off by its limit is
# packed all the same and resumes in a later call. Reports and the packed runs come back as RUN.tgz.
set -uo pipefail
LIMIT=$1; ENC_MIN=$2; N=$3; shift 3
OUTDIR=${OUT:-out}; mkdir -p "$OUTDIR" runs
source scripts/device_setup.sh
start=$(date +%s)
left() { echo $(( LIMIT - ($(date +%s) - start) )); }
LOG="$OUTDIR/session9_log.txt"

if awk "BEGIN{exit !($ENC_MIN > 0)}"; then
  python3 -m bench train-encoder fwplus4 --generator world256 --out "$OUTDIR/encoder4_world256.safetensors" \
    --minutes "$ENC_MIN" --width 8 --head-width 32 --work /tmp/enc4 --quiet 2>&1 | tail -1 | cut -c1-300 |
    tee -a "$LOG"
  install_assets fwplus4_encoder_world256 \
    "bench train-encoder fwplus4 --generator world256 --out OUT --minutes $ENC_MIN --width 8 --head-width 32"
  echo "encoder trained and installed at $(( $(date +%s) - start )) s" | tee -a "$LOG"
fi

for spec in "$@"; do
  RUN=${spec%%:*}; METHODS=${spec#*:}
  [ -f "carry_runs/$RUN.tgz" ] && tar xzf "carry_runs/$RUN.tgz" -C runs && echo "resuming runs/$RUN" | tee -a "$LOG"
  t0=$(date +%s)
  timeout $(( $(left) - 40 )) python3 -m bench run --methods "$METHODS" --protocol bdinvert-table1 --items "$N" \
    --profile paper --precision auto --max-samples 4 --no-save-latents --quiet --run-dir "runs/$RUN" 2>&1 |
    grep -v "^  " | tee -a "$LOG" | grep -v "units done" | tail -8
  echo "$RUN ($METHODS): bench run exit ${PIPESTATUS[0]}, $(( $(date +%s) - t0 )) s (set-up included)" | tee -a "$LOG"
  timeout 30 python3 -m bench report "runs/$RUN" --no-html > /dev/null 2>&1
  tar czf "$OUTDIR/$RUN.tgz" -C runs --exclude latents "$RUN"
done
echo "done at $(( $(date +%s) - start )) s"
