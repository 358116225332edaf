#!/usr/bin/env bash
# Packs what the device runs, built here: the GPU test binaries, kvpress and cuda_bench
# (.dev/bins.tar.xz), and the default model in three parts that travel in three calls
# (.dev/model_a..c; the working tree may carry 64 MiB a call). Run from the repo root.
set -euo pipefail
mkdir -p .dev
(cd build && tar cf - tests/cpu_ops_test tests/press_ops_test tests/backend_press_ops_test \
  tests/backend_memory_test tests/top_k_test tests/cuda_model_test kvpress bench/cuda_bench |
  xz -T2 -6 > ../.dev/bins.tar.xz)
if [ "${1:-}" = "--model" ]; then
  rm -f .dev/model_*
  split -n 3 -a 1 models/SmolLM2-135M-Instruct.Q4_1.gguf .dev/model_
fi
ls -la .dev
