#!/usr/bin/env bash
# Issue #7 on the GPU machine: the fast path's quality parity, `bench speed` at the target configurations,
# and a kernel profile of one step. Device run (carry [".wheels"]): bash scripts/gpu_speed.sh
# Everything is written to $OUT (parity.jsonl, speed_*.md, profile_*.txt, log).
set -uo pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
OUTDIR=${OUT:-out}; mkdir -p "$OUTDIR"
python3 -c "import kornia, lpips" 2>/dev/null ||
  python3 -m pip install --quiet --no-deps --no-index .wheels/*.whl 2>&1 | grep -v WARNING
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
PARITY_OUT="$OUTDIR" timeout "${PARITY_S:-200}" python3 -m pytest -q -m gpu tests/accel -p no:cacheprovider \
  -k "${PARITY_K:-}" 2>&1 | tail -n 15
for spec in ${SPEED_SPECS:-config-f-256:im2s,fwplus16:bf16 config-f-1024:im2s,fwplus16:bf16}; do
  IFS=: read -r cfg methods prec <<< "$spec"
  echo "== bench speed --config $cfg --methods $methods --precision $prec --batch auto"
  timeout "${SPEED_S:-150}" python3 -m bench speed --config "$cfg" --methods "$methods" --batch "${BATCH:-auto}" \
    --precision "$prec" --steps "${STEPS:-3,13}" | tee "$OUTDIR/speed_${cfg}_${prec}.md"
done
if [ -n "${PROFILE:-config-f-256 im2s bf16 32}" ]; then
  # shellcheck disable=SC2086
  timeout 120 python3 scripts/profile_step.py ${PROFILE:-config-f-256 im2s bf16 32} > "$OUTDIR/profile.txt" 2>&1
  head -n 40 "$OUTDIR/profile.txt"
fi
