#!/usr/bin/env bash
# The CUDA cases of the op suites on a GPU machine, then the same under compute-sanitizer's
# memcheck. Logs go to $OUT; prints a summary line per binary.
# Usage (on the device, repo root): bash tools/gpu/run_gpu_tests.sh [--no-sanitizer]
source "$(dirname "$0")/device_env.sh"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
tests="backend_memory_test cpu_ops_test press_ops_test backend_press_ops_test top_k_test"
filter='*cuda*:TopK*'
status=0
for t in $tests; do
  /tmp/kvp/tests/$t --gtest_filter="$filter" --gtest_brief=1 > "$OUT/$t.log" 2>&1
  rc=$?; [ $rc -ne 0 ] && status=1
  echo "$t: rc=$rc $(grep -E '^\[  (PASSED|FAILED)' "$OUT/$t.log" | tr '\n' ' ')"
  grep -E "Failure|FAILED  \]|error" "$OUT/$t.log" | head -8
done
# The model tests need models/ (the default model) and the goldens of the source tree.
/tmp/kvp/tests/cuda_model_test --gtest_brief=1 > "$OUT/cuda_model_test.log" 2>&1
rc=$?; [ $rc -ne 0 ] && status=1
echo "cuda_model_test: rc=$rc $(grep -E '^\[  (PASSED|FAILED)' "$OUT/cuda_model_test.log" | tr '\n' ' ')"
grep -E "Failure|info \]" "$OUT/cuda_model_test.log" | head -20
if [ "${1:-}" != "--no-sanitizer" ]; then
  for t in $tests; do
    compute-sanitizer --tool memcheck --error-exitcode 3 /tmp/kvp/tests/$t --gtest_filter="$filter" \
      --gtest_brief=1 > "$OUT/memcheck_$t.log" 2>&1
    rc=$?; [ $rc -ne 0 ] && status=1
    echo "memcheck $t: rc=$rc $(grep -E 'ERROR SUMMARY' "$OUT/memcheck_$t.log" | tail -1)"
  done
fi
exit $status
