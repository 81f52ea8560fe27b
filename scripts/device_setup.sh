# Sourced by the scripts/gpu_session*.sh device scripts: installs the carried wheels (.wheels/, from
# scripts/fetch_wheels.sh) when the GPU image lacks them, prints the card and torch version, and defines
# install_assets (world assets trained on the device, installed with their provenance; needs OUTDIR).
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
python3 -c "import kornia, lpips" 2>/dev/null ||
  python3 -m pip install --quiet --no-deps --no-index .wheels/*.whl 2>&1 | grep -v WARNING
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__)"

COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
install_assets() {  # NAMES COMMAND: install world assets from $OUTDIR into bench/world/assets, with provenance
  python3 - "$@" <<PY
import sys, datetime, torch
from pathlib import Path
from bench.world import zoo
names, command = sys.argv[1].split(","), sys.argv[2]
zoo.install(Path("$OUTDIR"), names, {"command": command, "commit": "$COMMIT",
            "device": torch.cuda.get_device_name(0), "date": datetime.date.today().isoformat()})
PY
  cp bench/world/assets/manifest.json "$OUTDIR/manifest.json"
}

config_f_1024() {  # write a random-weight 1024 px config-f rosinality checkpoint to /tmp/config-f-1024.pt
  python3 -c "
import torch
from bench.generators.checkpoints import save_rosinality
from bench.speed import build_timing_setup
gen, _, _ = build_timing_setup('config-f-1024', torch.device('cpu'))
save_rosinality(gen, '/tmp/config-f-1024.pt')"
}
quick_encoders() {  # GENERATOR METHODS: 3-iteration encoders (timing only) for those that need one; sets ENC
  local m extra; ENC=()
  for m in ${2//,/ }; do
    case $m in fwplus*|idinvert|psp) ;; *) continue ;; esac
    extra=(); case $m in idinvert|psp) extra=(--data synthetic:16 --n 16) ;; esac
    [ $m = idinvert ] && extra+=(--batch 8)  # its published 128 ran out of an H100's memory at 1024 px
    python3 -m bench train-encoder $m --generator "$1" --out /tmp/enc_$m.safetensors --iterations 3 --width 8 \
      --work /tmp/encw_$m --quiet "${extra[@]}" 2>&1 | tail -1 | cut -c1-160
    ENC+=(--encoder $m=/tmp/enc_$m.safetensors)
  done
}
time_variant() {  # NAME METHOD CONFIGS BATCHES SHARE ENV...: METHOD compiled whole under ENV, SHARE % of left()
  local name=$1 method=$2 configs=$3 batches=$4 share=$5; shift 5
  [ "$(left)" -lt 60 ] && { echo "skipped $name: $(left) s left"; return; }
  env "$@" timeout $(( ($(left) - 10) * share / 100 )) python3 scripts/loss_compile_timing.py --methods "$method" \
    --configs "$configs" --batches "$batches" --variants whole --out "$OUTDIR/variant_$name.json" 2>&1 |
    tee "$OUTDIR/variant_${name}_log.txt" | grep '^| [a-z]' | sed "s/^/$name /"
}
