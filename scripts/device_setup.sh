# Sourced by the scripts/gpu_session*.sh device scripts: installs the carried wheels (.wheels/, from
# scripts/fetch_wheels.sh) when the GPU image lacks them, and prints the card and torch version.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
python3 -c "import kornia, lpips" 2>/dev/null ||
  python3 -m pip install --quiet --no-deps --no-index .wheels/*.whl 2>&1 | grep -v WARNING
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__)"
