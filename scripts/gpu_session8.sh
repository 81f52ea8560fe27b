#!/usr/bin/env bash
# Session 8 on the GPU machine (device run, carry [".wheels"]); everything written goes to $OUT:
#   bash scripts/gpu_session8.sh world256 LIMIT_S SR_MIN ENC_MIN N
#       issue 16: train the 256 px world's detail blocks (the loader's workers now use one thread each, so it
#       keeps up) and its F/W+ 4x4 encoder, install both (and keep a copy in /tmp/world256_assets, which the
#       later modes install again on the same machine), then the capacity probe (N faces, a 16x16-cell
#       random field) of F/W+ 4x4 with its base-code regulariser at 10 (published) and at 0, and of W
#   bash scripts/gpu_session8.sh memory LIMIT_S
#       issue 17: what autograd keeps per image at 1024 px with the lean backward and without
#       (scripts/saved_memory.py); all seven methods in bench run on a random-weight 1024 px config-f
#       rosinality checkpoint (quick encoders for the four that need one: timing only); bench speed of Im2S
#       and F/W+ on the 64 px world at the protocol's batch (550), eager and compiled; the compile test
#   bash scripts/gpu_session8.sh protocol64 LIMIT_S RANKS
#       issue 17 (3a): the whole bdinvert-table1 on the 64 px world, 50 faces, paper steps, all seven methods,
#       --precision auto, as RANKS torchrun processes sharing the one GPU (each rank's host dispatch overlaps
#       the others' GPU work: at 64 px a step's fixed host cost, not the arithmetic, sets the time)
#   bash scripts/gpu_session8.sh combo LIMIT_S RANKS
#       issue 17 in one call: saved-for-backward MiB at 1024 px (lean on/off), Im2S, W, P-norm+ and F/W+ 16x16
#       (quick encoder) in bench run on a random-weight 1024 px config-f checkpoint, then protocol64 with the
#       time left
#   bash scripts/gpu_session8.sh protocol256 LIMIT_S N
#       issue 16: bdinvert-table1 on the 256 px world at paper steps (N faces; F/W+ 4x4, P-norm+, W, Im2S),
#       then F/W+ 4x4 again with its base-code regulariser off
set -uo pipefail
WHAT=$1; LIMIT=$2; OUTDIR=${OUT:-out}; mkdir -p "$OUTDIR"
source scripts/device_setup.sh
start=$(date +%s)
left() { echo $(( LIMIT - ($(date +%s) - start) )); }
SAVED=/tmp/world256_assets

memory1024() {  # saved-for-backward MiB per image at 1024 px, lean and plain; a random config-f checkpoint
  for lean in 1 0; do
    BENCH_LEAN_BACKWARD=$lean python3 scripts/saved_memory.py --resolution 1024 --batch 4 --device cuda |
      tee -a "$OUTDIR/saved_memory.jsonl" | cut -c1-300
  done
  config_f_1024
}

if [ -d "$SAVED" ] && [ "$WHAT" != world256 ]; then  # this machine trained them in an earlier call
  cp "$SAVED"/* bench/world/assets/ && echo "installed the 256 px world assets trained earlier on this machine"
fi

if [ "$WHAT" = world256 ]; then
  SR_MIN=$3; ENC_MIN=$4; N=$5
  python3 -m bench.world.world256 train --out "$OUTDIR" --minutes "$SR_MIN" --batch 32 --workers 14 \
    > "$OUTDIR/sr_log.txt" 2>&1 || { tail -30 "$OUTDIR/sr_log.txt"; exit 1; }
  tail -3 "$OUTDIR/sr_log.txt"
  install_assets generator256_sr "python -m bench.world.world256 train --out OUT --minutes $SR_MIN --batch 32 --workers 14"
  python3 -m bench train-encoder fwplus4 --generator world256 --out "$OUTDIR/encoder4_world256.safetensors" \
    --minutes "$ENC_MIN" --width 8 --head-width 32 --work /tmp/enc4 --quiet 2>&1 | tail -2 | cut -c1-400 |
    tee "$OUTDIR/enc_log.txt"
  install_assets fwplus4_encoder_world256 "bench train-encoder fwplus4 --generator world256 --out OUT --minutes $ENC_MIN --width 8 --head-width 32"
  mkdir -p "$SAVED" && cp bench/world/assets/{generator256_sr,encoder4_world256}.safetensors \
    bench/world/assets/manifest.json "$SAVED/"
  echo "trained and installed at $(( $(date +%s) - start )) s"
  timeout $(( $(left) * 3 / 5 )) python3 scripts/capacity_probe.py --generator world256 --methods fwplus16,w \
    --n "$N" --out "$OUTDIR/probe_world256.json" 2>&1 | grep '^{'
  timeout $(( $(left) - 10 )) python3 scripts/capacity_probe.py --generator world256 --methods fwplus16 --n "$N" \
    --param fwplus16.basecode_weight=0 --out "$OUTDIR/probe_world256_reg0.json" 2>&1 | grep '^{'
elif [ "$WHAT" = memory ]; then
  memory1024
  G=/tmp/config-f-1024.pt
  quick_encoders $G fwplus8,fwplus16,idinvert,psp  # these encoders only make the timing possible
  echo "encoders at $(( $(date +%s) - start )) s"
  timeout $(( $(left) / 2 )) python3 -m bench run --generator $G --data synthetic:32 \
    --methods im2s,pnorm,w,fwplus8,fwplus16,idinvert,psp "${ENC[@]}" --steps 40 --perceptual none \
    --no-save-latents --max-samples 0 --quiet --run-dir runs/r1024 2>&1 | tee "$OUTDIR/r1024_log.txt" | grep -v "^  "
  cp runs/r1024/timing.csv "$OUTDIR/r1024_timing.csv"
  echo "bench run done at $(( $(date +%s) - start )) s"
  for c in "" --compile; do  # the protocol's shape: Im2S on the 64 px world at batch 550
    timeout $(( $(left) / 3 )) python3 -m bench speed --config world --methods im2s,fwplus16 --batch 550 \
      --steps 20,120 --no-single $c 2>&1 | tee -a "$OUTDIR/speed_world550_log.txt" | grep '^|'
  done
  timeout $(( $(left) - 5 )) python3 -m pytest -q -m gpu tests/accel/test_compile.py -p no:cacheprovider 2>&1 |
    tail -3 | tee "$OUTDIR/compile_gpu_test.txt"
elif [ "$WHAT" = combo ]; then
  memory1024
  G=/tmp/config-f-1024.pt
  python3 -m bench train-encoder fwplus16 --generator $G --out /tmp/enc16.safetensors --iterations 3 --width 8 \
    --work /tmp/encw16 --quiet 2>&1 | tail -1 | cut -c1-120
  timeout 200 python3 -m bench run --generator $G --data synthetic:32 --methods im2s,w,pnorm,fwplus16 \
    --encoder fwplus16=/tmp/enc16.safetensors --steps 40 --perceptual none --no-save-latents --max-samples 0 \
    --quiet --run-dir runs/r1024 2>&1 | tee "$OUTDIR/r1024_log.txt" | grep -v "^  "
  cp runs/r1024/timing.csv "$OUTDIR/r1024_timing.csv"
  echo "1024 done at $(( $(date +%s) - start )) s"
  LIMIT=$(( LIMIT - ($(date +%s) - start) )); start=$(date +%s); WHAT=protocol64
fi
if [ "$WHAT" = protocol64 ]; then
  RANKS=$3  # --items, not --n: torchrun's own parser takes --n for an abbreviation of its --nnodes
  timeout $(( $(left) - 15 )) python3 -m torch.distributed.run --standalone --nproc-per-node "$RANKS" -m bench run \
    --methods fwplus8,fwplus16,im2s,pnorm,w,idinvert,psp --protocol bdinvert-table1 --items 50 --profile paper \
    --precision auto --max-samples 4 --no-save-latents --quiet --run-dir runs/table1 2>&1 |
    tee "$OUTDIR/protocol64_log.txt" | grep -v "^  " | tail -25
  echo "torchrun bench run exit: ${PIPESTATUS[0]}; wall $(( $(date +%s) - start )) s (set-up included)" |
    tee -a "$OUTDIR/protocol64_log.txt"
  python3 -m bench report runs/table1 --no-html > /dev/null 2>&1
  tar czf "$OUTDIR/protocol64_run.tgz" -C runs --exclude latents --exclude samples table1
elif [ "$WHAT" = protocol256 ]; then
  N=$3
  timeout $(( $(left) * 4 / 5 )) python3 -m bench run --generator world256 --methods fwplus16,pnorm,w,im2s \
    --protocol bdinvert-table1 --n "$N" --profile paper --max-samples 4 --no-save-latents \
    --quiet --run-dir runs/table1_world256 2>&1 | tee "$OUTDIR/protocol256_log.txt" | grep -v "^  " | tail -12
  echo "bench run exit: ${PIPESTATUS[0]}; wall $(( $(date +%s) - start )) s (set-up included)" | tee -a "$OUTDIR/protocol256_log.txt"
  timeout $(( $(left) - 10 )) python3 -m bench run --generator world256 --methods fwplus16 \
    --param fwplus16.basecode_weight=0 --protocol bdinvert-table1 --n "$N" --profile paper --max-samples 0 \
    --no-save-latents --quiet --run-dir runs/table1_world256_reg0 2>&1 | tee "$OUTDIR/protocol256_reg0_log.txt" |
    grep -v "^  " | tail -3
  for r in table1_world256 table1_world256_reg0; do
    python3 -m bench report runs/$r --no-html > /dev/null 2>&1
    tar czf "$OUTDIR/$r.tgz" -C runs --exclude latents $r
  done
fi
echo "done at $(( $(date +%s) - start )) s"
