#!/usr/bin/env bash
# Configures and builds into build/ (Release). `--target NAME` builds only that target (the
# demo builds only the kvpress binary, not every test and benchmark); other arguments go to
# CMake's configure step.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
target=()
if [ "${1:-}" = "--target" ]; then
  target=(--target "$2")
  shift 2
fi
"$root/scripts/install-deps.sh"
cmake -S "$root" -B "$root/build" -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build "$root/build" -j"$(nproc)" "${target[@]}"
