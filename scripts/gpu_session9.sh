#!/usr/bin/env bash
# Session 9 on the GPU machine (device run, carry [".wheels"], plus "carry_runs" to resume); writes to $OUT:
#   bash scripts/gpu_session9.sh LIMIT_S ENC_MIN N RUN:METHODS[:ITEMS[:BATCH[:compile]]] [...]
# Issue 16: with ENC_MIN > 0, first train the 256 px world's F/W+ 4x4 encoder (BDInvert's recipe, 10k
# iterations at most, for ENC_MIN minutes) and install it with its provenance. Then, for each RUN, the
# BDInvert Table 1 protocol on the embedded world (which is now the 256 px world for protocol runs) at paper
# steps, ITEMS faces (default N), --precision auto, METHODS (comma list), batch BATCH (default auto), with
# --compile when the fifth field is "compile" (without it bench run's default, compile auto, compiles the long
# methods), in runs/RUN, resumed from carry_runs/RUN.tgz when that was carried.
# PROTO_GEN=world64 runs the protocol on the 64 px world instead (--generator world64). Each run gets the time left (minus a margin
# to pack it); a run cut off by its limit is packed all the same and resumes (batch-granular) in a later call.
# The packed runs (no report, samples or latents) come back as RUN.tgz, split into RUN.tgz.part-aa, -ab, ...
# when over 15 MiB (the device's per-file limit is 16 MiB): cat RUN.tgz.part-* > RUN.tgz.
# Issue 17: a spec r1024:METHODS instead times METHODS inside bench run on a random-weight 1024 px config-f
# rosinality checkpoint (32 synthetic items, 40 steps, --perceptual none; the methods that need an encoder get
# a 3-iteration one, there only to make them run): r1024_log.txt and r1024_timing.csv. A spec speed256:METHODS
# runs bench speed on the 256 px world at the protocol's batch (550), eager then compiled: speed256_log.txt.
# A spec speedf256:METHODS does the same on config-f at 256 px (batch 256, issue 17's item 4): speedf256_log.txt.
# A spec losscompile:METHODS:CONFIGS:BATCHES times METHODS eager, compiled with the perceptual distance eager, and
# compiled whole (scripts/loss_compile_timing.py): losscompile_log.txt and losscompile.json.
# A spec profile256:METHOD prints where one step's GPU time goes on that world (scripts/profile_step.py, bf16,
# batch 550, eager then compiled): profile256_METHOD.txt. A spec autotune:METHODS:CONFIGS:BATCHES times them
# compiled whole with BENCH_COMPILE_MODE=max-autotune-no-cudagraphs (Triton convolution templates, tuned
# pointwise kernels): autotune_log.txt and autotune.json. A spec profile:METHOD:CONFIG:BATCH profiles METHOD
# compiled whole on a bench speed configuration (world256, config-f-256, ...): profile_METHOD_CONFIG.txt.
# A spec rgb:METHODS:CONFIGS:BATCHES times them compiled whole once per compiled RGB form (BENCH_COMPILED_RGB=
# cudnn, upsample, pointwise; each in its own process): rgb_FORM_log.txt and rgb_FORM_CONFIGS.json; upconv:METHODS:CONFIGS:BATCHES
# does the same for the compiled graphs' 2x up-convolution (BENCH_COMPILED_UPCONV; UPCONV_FORMS, default "polyphase stencil"): upconv_FORM_log.txt, upconv_FORM_CONFIGS.json. A spec parity:FILTER
# runs the GPU parity tests (pytest -m gpu tests/accel -k FILTER, "all" for every one) with their records in
# parity/: parity_log.txt.
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

r1024() {  # METHODS: bench run timings on a random-weight 1024 px config-f checkpoint
  local G=/tmp/config-f-1024.pt
  config_f_1024
  quick_encoders $G "$1"
  timeout $(( $(left) - 20 )) python3 -m bench run --generator $G --data synthetic:32 --methods "$1" "${ENC[@]}" \
    --steps 40 --perceptual none --no-save-latents --max-samples 0 --quiet --run-dir runs/r1024 2>&1 |
    tee "$OUTDIR/r1024_log.txt" | grep -v "^  "
  cp runs/r1024/timing.csv "$OUTDIR/r1024_timing.csv"
  echo "r1024 ($1) done at $(( $(date +%s) - start )) s" | tee -a "$LOG"
}

time_forms() {  # VAR "FORMS" NAME: METHODS on CONFIGS at BATCHES compiled whole, one process per form of VAR
  local n form; n=$(wc -w <<< "$2")
  for form in $2; do
    env "$1=$form" timeout $(( ($(left) - 15) / n )) python3 scripts/loss_compile_timing.py --methods "$METHODS" \
      --configs "$ITEMS" --batches "$BATCH" --variants whole --out "$OUTDIR/$3_${form}_${ITEMS//,/_}.json" 2>&1 |
      tee -a "$OUTDIR/$3_${form}_log.txt" | grep '^| [a-z]' | sed "s/^/$form /"
    n=$(( n - 1 ))
  done
}

for spec in "$@"; do
  [ "$(left)" -lt 60 ] && { echo "skipped $spec: $(left) s left" | tee -a "$LOG"; continue; }
  IFS=: read -r RUN METHODS ITEMS BATCH FLAG <<< "$spec"; ITEMS=${ITEMS:-$N}; BATCH=${BATCH:-auto}
  COMPILE=(); [ "${FLAG:-}" = compile ] && COMPILE=(--compile)
  [ -n "${PROTO_GEN:-}" ] && COMPILE+=(--generator "$PROTO_GEN")
  [ "$RUN" = r1024 ] && { r1024 "$METHODS"; continue; }
  if [ "$RUN" = speed256 ]; then
    for c in "" --compile; do
      timeout $(( $(left) / 2 )) python3 -m bench speed --config world256 --methods "$METHODS" --batch 550 \
        --steps 20,120 --no-single $c 2>&1 | tee -a "$OUTDIR/speed256_log.txt" | grep '^|'
    done
    continue
  fi
  if [ "$RUN" = losscompile ]; then
    timeout $(( $(left) - 15 )) python3 scripts/loss_compile_timing.py --methods "$METHODS" --configs "$ITEMS" \
      --batches "$BATCH" --out "$OUTDIR/losscompile.json" 2>&1 | tee -a "$OUTDIR/losscompile_log.txt" | grep '^|'
    continue
  fi
  if [ "$RUN" = speedf256 ]; then
    for c in "" --compile; do
      t=$(( $(left) - 15 )); [ -z "$c" ] && t=$(( $(left) / 3 ))
      timeout $t python3 -m bench speed --config config-f-256 --methods "$METHODS" --batch 256 \
        --steps 3,13 --no-single $c 2>&1 | tee -a "$OUTDIR/speedf256_log.txt" | grep '^|'
    done
    continue
  fi
  if [ "$RUN" = autotune ]; then  # compiled whole with Inductor's max-autotune (Triton convolution templates)
    BENCH_COMPILE_MODE=max-autotune-no-cudagraphs timeout $(( $(left) - 15 )) python3 scripts/loss_compile_timing.py \
      --methods "$METHODS" --configs "$ITEMS" --batches "$BATCH" --variants whole --out "$OUTDIR/autotune.json" 2>&1 |
      tee -a "$OUTDIR/autotune_log.txt" | grep '^|'
    continue
  fi
  [ "$RUN" = rgb ] && { time_forms BENCH_COMPILED_RGB "cudnn upsample pointwise" rgb; continue; }
  [ "$RUN" = upconv ] && { time_forms BENCH_COMPILED_UPCONV "${UPCONV_FORMS:-polyphase stencil}" upconv; continue; }
  if [ "$RUN" = parity ]; then  # parity:FILTER, the GPU parity tests
    K=(); [ "$METHODS" != all ] && K=(-k "$METHODS")
    PARITY_OUT="$OUTDIR/parity" timeout $(( $(left) - 15 )) python3 -m pytest -m gpu tests/accel "${K[@]}" -q \
      -p no:cacheprovider -p no:logging 2>&1 | tee -a "$OUTDIR/parity_log.txt" | tail -5
    continue
  fi
  if [ "$RUN" = profile ]; then  # profile:METHOD:CONFIG:BATCH, compiled whole (as bench run's default)
    timeout $(( $(left) - 15 )) python3 scripts/profile_step.py "$ITEMS" "$METHODS" bf16 "$BATCH" compile 2>&1 |
      tee -a "$OUTDIR/profile_${METHODS}_$ITEMS.txt" | head -12
    continue
  fi
  if [ "$RUN" = profile256 ]; then
    for c in "" compile; do
      timeout $(( $(left) / 2 )) python3 scripts/profile_step.py world256 "$METHODS" bf16 550 $c 2>&1 |
        tee -a "$OUTDIR/profile256_$METHODS.txt" | head -20
    done
    continue
  fi
  [ -f "carry_runs/$RUN.tgz" ] && tar xzf "carry_runs/$RUN.tgz" -C runs && echo "resuming runs/$RUN" | tee -a "$LOG"
  t0=$(date +%s)
  timeout $(( $(left) - 40 )) python3 -m bench run --methods "$METHODS" --protocol bdinvert-table1 --items "$ITEMS" \
    --batch-size "$BATCH" --profile paper --precision auto "${COMPILE[@]}" --max-samples 0 --no-save-latents --quiet \
    --run-dir "runs/$RUN" 2>&1 |
    grep -v "^  " | tee -a "$LOG" | grep -v "units done" | tail -8
  echo "$RUN ($METHODS): bench run exit ${PIPESTATUS[0]}, $(( $(date +%s) - t0 )) s (set-up included)" | tee -a "$LOG"
  tar czf "/tmp/$RUN.tgz" -C runs --exclude latents --exclude report --exclude samples "$RUN"
  if [ "$(stat -c %s "/tmp/$RUN.tgz")" -gt $(( 15 * 1048576 )) ]; then split -b 15M "/tmp/$RUN.tgz" "$OUTDIR/$RUN.tgz.part-"
  else cp "/tmp/$RUN.tgz" "$OUTDIR/"; fi
  ls -la "$OUTDIR/$RUN".tgz* | tee -a "$LOG"
done
echo "done at $(( $(date +%s) - start )) s"
