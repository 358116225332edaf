#!/usr/bin/env bash
# Packs what the device runs, built here: the GPU test binaries, kvpress and cuda_bench
# (.dev/bins.tar.xz), and the default model in five parts (.dev/model_a..e) that travel over
# three calls: the bins with part a, then b and c, then d and e (the working tree may carry 64 MiB a
# call, the tracked tree itself about 17 MB). Run from the repo root.
set -euo pipefail
mkdir -p .dev
# The shared libraries the binaries need beyond CUDA's and libc's (the device image lacks
# cpp-httplib's), in lib/.
rm -rf build/lib && mkdir -p build/lib
ldd build/tests/cuda_model_test build/kvpress | awk '/=> \//{print $3}' | sort -u |
  grep -E 'httplib|brotli|pcre2' | xargs -r cp -L -t build/lib
(cd build && tar cf - lib tests/cpu_ops_test tests/press_ops_test tests/backend_press_ops_test \
  tests/backend_memory_test tests/top_k_test tests/cuda_model_test kvpress bench/cuda_bench |
  xz -T2 -6 > ../.dev/bins.tar.xz)
if [ "${1:-}" = "--model" ]; then
  rm -f .dev/model_*
  split -n 5 -a 1 models/SmolLM2-135M-Instruct.Q4_1.gguf .dev/model_
fi
ls -la .dev
