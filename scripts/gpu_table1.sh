#!/usr/bin/env bash
# The BDInvert Table 1 protocol on the embedded world, on the GPU machine (issues #4, #5, #6).
#   bash scripts/gpu_table1.sh STEPS TIME_LIMIT_SECONDS [RUN_NAME]
# Environment: METHODS (default: all seven), EDITS (default: none; e.g. "--edit age:-2..2/5 --edit smile:-2..2/5"),
# DATA (default: the protocol's 50 held-out procfaces; e.g. synthetic:50 for ground-truth edits).
# Results (whatever finished within the limit: the run directory is written after every batch) are
# packed into $OUT/RUN_NAME_run.tgz.
set -uo pipefail
export PYTHONPATH=$PWD
STEPS=$1; LIMIT=$2; NAME=${3:-table1}; OUTDIR=${OUT:-out}
METHODS=${METHODS:-fwplus8,fwplus16,im2s,pnorm,w,idinvert,psp}
EDITS=${EDITS:-}; DATA=${DATA:+--data $DATA}
python3 -c "import kornia, lpips" 2>/dev/null ||
  python3 -m pip install --quiet --no-deps --no-index .wheels/*.whl 2>&1 | grep -v WARNING
nvidia-smi --query-gpu=name --format=csv,noheader
# shellcheck disable=SC2086  # EDITS is a list of options
timeout "$LIMIT" python3 -m bench run --methods "$METHODS" --protocol bdinvert-table1 $EDITS $DATA \
  --n 50 --steps "$STEPS" --batch-size 50 --run-dir "runs/$NAME" --max-samples 6 --no-save-latents --quiet
echo "bench run exit: $?"
python3 -m bench report "runs/$NAME" > /dev/null
mkdir -p "$OUTDIR"; tar czf "$OUTDIR/${NAME}_run.tgz" -C runs "$NAME"
tail -n 12 "runs/$NAME/timing.csv"
