#!/usr/bin/env bash
# Builds the libFuzzer targets of fuzz/ (clang 14, ASan + UBSan, into build-fuzz/) and runs
# each for a bounded time on its committed seed corpus. Fails on any crash, leak, sanitizer
# report, timeout or out-of-memory, and prints the input that caused it.
#
#   scripts/fuzz.sh                 every target, KVP_FUZZ_SECONDS (default 30) each
#   scripts/fuzz.sh gguf config     only these targets
#   KVP_FUZZ_RUNS=1000000 scripts/fuzz.sh gguf    a fixed number of executions instead
#
# New inputs go to a temporary directory, so the committed corpus does not change; to grow it,
# run a target by hand with fuzz/corpus/NAME as its first directory (docs/reliability.md).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
jobs=$(nproc)
seconds=${KVP_FUZZ_SECONDS:-30}
all=(gguf safetensors tokenizer_json config chat_template dataset press_args)
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${all[@]}")
for t in "${targets[@]}"; do
  if [ ! -d "$root/fuzz/corpus/$t" ]; then
    echo "fuzz.sh: no target '$t' (targets: ${all[*]})" >&2
    exit 2
  fi
done

"$root/scripts/install-deps.sh"
cmake -S "$root" -B "$root/build-fuzz" -DKVP_FUZZ=ON -DKVP_BENCH=OFF -DKVP_CUDA=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14 >/dev/null
cmake --build "$root/build-fuzz" -j"$jobs" --target fuzzers

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
limit=(-max_total_time="$seconds")
[ -n "${KVP_FUZZ_RUNS:-}" ] && limit=(-runs="$KVP_FUZZ_RUNS")

# One target: new inputs into $work/NAME.new, the committed corpus read only; its log and any
# crashing input in $work. Prints one summary line; the exit status is the fuzzer's.
run_one() {
  local t=$1
  mkdir -p "$work/$t.new"
  local rc=0
  ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "$root/build-fuzz/fuzz/${t}_fuzz" "${limit[@]}" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -dict="$root/fuzz/dict/$t.dict" -artifact_prefix="$work/$t-" \
    "$work/$t.new" "$root/fuzz/corpus/$t" >"$work/$t.log" 2>&1 || rc=$?
  local stats execs
  stats=$(grep -E '^#[0-9]+' "$work/$t.log" | tail -1 | grep -oE 'cov: [0-9]+ ft: [0-9]+' || true)
  execs=$(grep -oE 'stat::number_of_executed_units: [0-9]+' "$work/$t.log" | grep -oE '[0-9]+$' || true)
  if [ "$rc" -eq 0 ]; then
    printf '  %-15s ok      %9s executions  %s\n' "$t" "${execs:-?}" "$stats"
  else
    printf '  %-15s FAILED  (exit %d); the fuzzer says:\n' "$t" "$rc"
    grep -E 'ERROR|SUMMARY|runtime error|Test unit written|==[0-9]+==' "$work/$t.log" | head -20 | sed 's/^/      /'
    for a in "$work/$t-"*; do
      [ -e "$a" ] || continue
      cp "$a" "$root/build-fuzz/" && echo "      input kept as build-fuzz/$(basename "$a")"
    done
  fi
  return "$rc"
}
export -f run_one
export root work
export limit_str="${limit[*]}"

echo "==== fuzzing: ${targets[*]} (${limit[*]} each, $jobs at a time; ASan + UBSan) ===="
failed=0
# xargs runs the targets $jobs at a time; bash -c re-reads the limit from the environment.
printf '%s\n' "${targets[@]}" |
  xargs -P "$jobs" -I{} bash -c 'limit=($limit_str); run_one "$1"' _ {} || failed=1
if [ "$failed" -ne 0 ]; then
  echo "fuzz.sh: a fuzz target failed (see above); rerun it alone with: scripts/fuzz.sh NAME" >&2
  exit 1
fi
echo "fuzz.sh: every target ran clean"
