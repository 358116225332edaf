#!/usr/bin/env bash
# Builds and runs the whole test suite, then the suite again under AddressSanitizer and
# UndefinedBehaviorSanitizer. Fetches the default model first (tests that need it would
# otherwise skip, loudly).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
jobs=$(nproc)
"$root/scripts/install-deps.sh"
"$root/scripts/fetch-model.sh" >/dev/null
cmake -S "$root" -B "$root/build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$root/build" -j"$jobs"
ctest --test-dir "$root/build" --output-on-failure -j"$jobs"
if [ "${KVP_SKIP_SANITIZERS:-0}" != 1 ]; then
  cmake -S "$root" -B "$root/build-asan" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKVP_SANITIZE=ON -DKVP_BENCH=OFF >/dev/null
  cmake --build "$root/build-asan" -j"$jobs"
  ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --test-dir "$root/build-asan" --output-on-failure -j"$jobs" -E "${KVP_ASAN_EXCLUDE:-^$}"
fi
