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
