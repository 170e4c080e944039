#!/usr/bin/env bash
# The GPU measurements the README asks for, as one short script for a machine with an NVIDIA GPU (run from the
# repository root, with ../shared beside it or SHARED=path):
#   bash scripts/gpu_bench.sh [OUT_DIR]
# It installs the requirements when torch is missing, then runs the speed bench on CUDA over the one-person videos,
# the 4-person plaza video and a 12-person crowd (plaza three times side by side), batched as on any CUDA run
# (detection 8 frames, gait 8 tracks), and writes bench.json and bench.md to OUT_DIR (default: output/gpu-bench).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-output/gpu-bench}"
SHARED="${SHARED:-../shared}"
mkdir -p "$OUT"
python3 -c "import torch" 2>/dev/null || python3 -m pip install -q -r requirements.txt
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 main.py bench --device cuda --shared "$SHARED" --seg onnx --crowd 3 --json "$OUT/bench.json" | tee "$OUT/bench.md"
