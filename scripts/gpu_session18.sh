#!/usr/bin/env bash
# Session 18 on the GPU machine (device run, carry [".wheels"]), one call for what sessions 17-18 could not start:
#   bash scripts/gpu_session18.sh LIMIT_S
# 1. Im2S compiled whole on config-f 1024² at batch 48, once per compiled 2x up-convolution form (stencil, then
#    polyphase as the same card's baseline): upconv_FORM_log.txt, upconv_FORM_config-f-1024.json.
# 2. If the stencil form was faster, the bf16 compiled parity tests with it as the compiled form (what the
#    default would run): parity_log.txt and parity/. Otherwise the 256 px world's timing of both forms.
# Each step gets what is left of LIMIT_S; gpu_session9.sh skips a step with under a minute left.
set -uo pipefail
LIMIT=$1; start=$(date +%s)
left() { echo $(( LIMIT - ($(date +%s) - start) )); }
OUTDIR=${OUT:-out}; mkdir -p "$OUTDIR"
UPCONV_FORMS="stencil polyphase" bash scripts/gpu_session9.sh $(( $(left) * 65 / 100 )) 0 0 upconv:im2s:config-f-1024:48
faster=$(python3 - "$OUTDIR" <<'PYEOF'
import json, sys
from pathlib import Path
rate = {}
for form in ("stencil", "polyphase"):
    p = Path(sys.argv[1]) / f"upconv_{form}_config-f-1024.json"
    rate[form] = json.loads(p.read_text())[0]["image_steps_per_s"] if p.exists() else 0.0
print("stencil" if rate["stencil"] > 1.01 * rate["polyphase"] > 0 else "polyphase")
PYEOF
)
echo "faster at 1024²: $faster, $(left) s left" | tee -a "$OUTDIR/session9_log.txt"
if [ "$faster" = stencil ]; then
  BENCH_COMPILED_UPCONV=stencil bash scripts/gpu_session9.sh $(( $(left) - 10 )) 0 0 "parity:compiled_path and bf16"
else
  UPCONV_FORMS="stencil polyphase" bash scripts/gpu_session9.sh $(( $(left) - 10 )) 0 0 upconv:im2s:world256:550
fi
