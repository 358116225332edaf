#!/usr/bin/env bash
# Builds and runs the whole test suite, then the suite again under AddressSanitizer and
# UndefinedBehaviorSanitizer, then every fuzz target for about 30 s (KVP_SKIP_SANITIZERS=1 and
# KVP_SKIP_FUZZ=1 leave those passes out). Fetches the default model first (tests that need it would
# otherwise skip, loudly).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
jobs=$(nproc)
"$root/scripts/install-deps.sh"
"$root/scripts/fetch-model.sh" >/dev/null
python3 "$root/scripts/check-layers.py"
"$root/scripts/check-format.sh"
# The CUDA backend is built wherever nvcc is (CMakeLists.txt); its GPU tests skip, each with
# a message, on a machine without a GPU.
cmake -S "$root" -B "$root/build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$root/build" -j"$jobs"
if grep -q '^KVP_CUDA:BOOL=ON' "$root/build/CMakeCache.txt"; then
  if nvidia-smi >/dev/null 2>&1; then
    echo "==== CUDA backend built; a GPU is present: its tests run ===="
  else
    echo "==== CUDA backend built; no GPU here: its tests skip (tools/gpu/ runs them on one) ===="
  fi
fi
# The model was fetched above: a test that would skip for want of it fails instead.
export KVP_REQUIRE_MODEL=1
ctest --test-dir "$root/build" --output-on-failure -j"$jobs"
# The server end to end: real clients (the pinned openai SDK, curl) against `kvpress serve`.
echo "==== kvpress serve end to end: the openai SDK and curl on a loopback port ===="
server_python=$("$root/scripts/setup-server-tests.sh")
"$server_python" "$root/tests/server/test_server.py" --kvpress "$root/build/kvpress" \
  --model "$root/models/SmolLM2-135M-Instruct.Q4_1.gguf"
# The instrumented build leaves the CUDA backend out (the first pass compiled it; without a GPU
# its code does not run). Under the sanitizers the suite runs without the press-golden cells: each is a full
# 1071-token prefill of the model (10x slower instrumented). The short-context press tests,
# the model goldens and every parser and op test still run instrumented (the sampler too:
# sampler_test and model_batch_test; its eight-answer CLI test runs in the first pass).
slow_under_sanitizers='EvalParity|PressGolden|PressWrappers|EvalGrid|EvalCli.Tiny|ExamplePress|HeadwiseCli|PressFramework.UniformBudget|Cli.SeveralQuestions|Cli.Sampling'
if [ "${KVP_SKIP_SANITIZERS:-0}" != 1 ]; then
  echo "==== second pass: the suite again under AddressSanitizer + UndefinedBehaviorSanitizer (build-asan/) ===="
  cmake -S "$root" -B "$root/build-asan" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKVP_SANITIZE=ON -DKVP_BENCH=OFF -DKVP_CUDA=OFF >/dev/null
  cmake --build "$root/build-asan" -j"$jobs"
  ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --test-dir "$root/build-asan" --output-on-failure -j"$jobs" -E "${KVP_ASAN_EXCLUDE:-$slow_under_sanitizers}"
  echo "==== the instrumented server against 10,000 malformed and hostile requests ===="
  "$root/scripts/server-fuzz.sh" "$root/build-asan" 10000
fi
# Third pass: every libFuzzer target for a bounded time on its committed corpus (scripts/fuzz.sh).
if [ "${KVP_SKIP_FUZZ:-0}" != 1 ]; then
  echo "==== third pass: coverage-guided fuzzing of every parser (build-fuzz/, clang 14) ===="
  "$root/scripts/fuzz.sh"
fi
