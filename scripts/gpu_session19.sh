#!/usr/bin/env bash
# Session 19 on the GPU machine (device run, carry [".wheels"]):  bash scripts/gpu_session19.sh LIMIT_S
# 1. On an H200 (the card issue 17's targets name), first the compiled timings of item 4 and 3a's rate: Im2S and
#    F/W+ 16x16 compiled whole (bf16, polyphase) on config-f 1024² (batch 48) and the 256 px world (batch 550):
#    upconv_polyphase_log.txt and .json.
# 2. The bytes the CUDA graphs' kernels move, as Triton fuses them (scripts/compiled_traffic.py --device cuda):
#    world256 and config-f 1024², Im2S: traffic_cuda_CONFIG.txt. The CPU count (session 18) is an estimate of
#    these, since Triton has fusions the CPU backend lacks.
# 3. With time left, the compiled world step's profile: profile_im2s_world256.txt.
# On an H100 the order is 2, 3, then 1 (its compiled timings are known from sessions 15-18).
set -uo pipefail
LIMIT=$1; start=$(date +%s)
left() { echo $(( LIMIT - ($(date +%s) - start) )); }
OUTDIR=${OUT:-out}; mkdir -p "$OUTDIR"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
card=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
timings() {
  UPCONV_FORMS=polyphase bash scripts/gpu_session9.sh $(( $(left) * ${1} / 100 )) 0 0 \
    upconv:im2s,fwplus16:config-f-1024,world256:48,550
}
traffic() {  # CONFIG
  [ "$(left)" -lt 60 ] && { echo "skipped traffic $1: $(left) s left" | tee -a "$OUTDIR/session9_log.txt"; return; }
  timeout $(( $(left) - 10 )) python3 scripts/compiled_traffic.py "$1" im2s --device cuda \
    --bandwidth "$BW" --top 16 2>&1 | grep -v Warning | tee "$OUTDIR/traffic_cuda_$1.txt" | head -8
}
profile() {
  [ "$(left)" -lt 60 ] && { echo "skipped profile: $(left) s left" | tee -a "$OUTDIR/session9_log.txt"; return; }
  timeout $(( $(left) - 10 )) python3 scripts/profile_step.py world256 im2s bf16 550 compile 2>&1 |
    tee "$OUTDIR/profile_im2s_world256.txt" | head -12
}
case "$card" in
  *H200*) BW=4.8e12; timings 62; traffic world256; traffic config-f-1024; profile ;;
  *) BW=3.35e12; traffic world256; traffic config-f-1024; profile; timings 95 ;;
esac
echo "$card; done at $(( $(date +%s) - start )) s" | tee -a "$OUTDIR/session9_log.txt"
