#!/usr/bin/env bash
# The BDInvert Table 1 protocol on the embedded world, on the GPU machine (issue #4).
#   bash scripts/gpu_table1.sh STEPS TIME_LIMIT_SECONDS
# Results (whatever finished within the limit: the run directory is written after every batch) are
# packed into $OUT/table1_run.tgz.
set -uo pipefail
export PYTHONPATH=$PWD
STEPS=$1; LIMIT=$2; OUTDIR=${OUT:-out}
python3 -m pip install --quiet --no-deps --no-index .wheels/*.whl 2>&1 | grep -v WARNING
nvidia-smi --query-gpu=name --format=csv,noheader
timeout "$LIMIT" python3 -m bench run --methods fwplus8,fwplus16,im2s,pnorm,w --protocol bdinvert-table1 \
  --n 50 --steps "$STEPS" --batch-size 50 --run-dir runs/table1 --max-samples 6 --no-save-latents --quiet
echo "bench run exit: $?"
python3 -m bench report runs/table1 > /dev/null
mkdir -p "$OUTDIR"; tar czf "$OUTDIR/table1_run.tgz" -C runs table1
cat runs/table1/timing.csv | tail -12
