#!/usr/bin/env bash
# One decode step of the 8B config under Nsight Compute: every kernel's duration (kernels
# run one at a time under ncu, so the sum has no overlap and no launch gaps), summed per
# kernel family, against the step's own time. On the device, repo root, after device_env.sh:
#   bash tools/gpu/step_profile.sh [CONTEXT] [RATIO]      (default 32768 0.5)
set -euo pipefail
ctx=${1:-32768}
ratio=${2:-0.5}
KVP_PROFILE_STEP=1 ncu --profile-from-start off --clock-control none \
  --metrics gpu__time_duration.sum --csv --page raw \
  /tmp/kvp/bench/cuda_bench --config configs/llama-3.1-8b-instruct.json --what decode \
  --contexts "$ctx" --ratios "$ratio" --steps 4 > "$OUT/step_profile_$ctx.csv" 2> "$OUT/step_profile_$ctx.err"
python3 tools/gpu/step_profile.py "$OUT/step_profile_$ctx.csv"
