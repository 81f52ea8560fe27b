#!/usr/bin/env bash
# Issue #7 on the GPU machine: the fast path's quality parity, `bench speed` at the target configurations,
# and a kernel profile of one step. Device run (carry [".wheels"]): bash scripts/gpu_speed.sh
# Everything is written to $OUT (parity.jsonl, speed_*.md, profile.txt). Environment: PARITY_S (seconds for
# the parity tests, 0 = none), PARITY_K (pytest -k), PARITY_METHODS (comma list), SPEED_SPECS (below; empty =
# none), SPEED_S (seconds per spec), STEPS (LO,HI), BATCH (default auto), PROFILE (profile_step.py arguments).
set -uo pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
OUTDIR=${OUT:-out}; mkdir -p "$OUTDIR"
python3 -c "import kornia, lpips" 2>/dev/null ||
  python3 -m pip install --quiet --no-deps --no-index .wheels/*.whl 2>&1 | grep -v WARNING
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
if [ "${PARITY_S:-200}" != 0 ]; then  # PARITY_S=0: no parity test
  PARITY_OUT="$OUTDIR" timeout "${PARITY_S:-200}" python3 -m pytest -q -m gpu tests/accel -p no:cacheprovider \
    -k "${PARITY_K:-}" 2>&1 | tail -n 15
fi
# a spec is CONFIG:METHODS:PRECISION[:EXTRA_FLAGS[:UPCONV]], EXTRA_FLAGS comma-separated (e.g. --compile,--batch,48),
# UPCONV the generator's up-convolution form (BENCH_UPCONV: polyphase, transposed, two-step)
for spec in ${SPEED_SPECS-config-f-256:im2s,fwplus16:bf16 config-f-1024:im2s,fwplus16:bf16}; do  # SPEED_SPECS= for none
  IFS=: read -r cfg methods prec extra upconv <<< "$spec"
  IFS=, read -ra flags <<< "${extra:-}"
  tag=$(echo "${cfg}_${prec}${extra:+_$extra}${upconv:+_$upconv}" | tr -c 'A-Za-z0-9_.\n-' '_' | tr -s _)
  batch=(--batch "${BATCH:-auto}"); [[ " ${flags[*]} " == *" --batch "* ]] && batch=()
  echo "== ${upconv:+BENCH_UPCONV=$upconv }bench speed --config $cfg --methods $methods --precision $prec ${batch[*]} ${flags[*]}"
  BENCH_UPCONV=${upconv:-auto} timeout "${SPEED_S:-150}" python3 -m bench speed --config "$cfg" --methods "$methods" \
    "${batch[@]}" --precision "$prec" --steps "${STEPS:-3,13}" "${flags[@]}" | tee "$OUTDIR/speed_$tag.md"
done
profile=${PROFILE-config-f-256 im2s bf16 32}  # CONFIG METHOD PRECISION BATCH [compile]; PROFILE= for none
if [ -n "${profile// }" ]; then
  # shellcheck disable=SC2086
  timeout 150 python3 scripts/profile_step.py $profile > "$OUTDIR/profile.txt" 2>&1
  head -n 40 "$OUTDIR/profile.txt"
fi
