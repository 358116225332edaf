#!/usr/bin/env bash
# Runs the command-line hostile cases of issue 16 against a kvpress binary (default
# build/kvpress), one line per case: exit code, seconds, bytes of stderr and its start. Each
# case runs under a 20 s timeout and a 3 GB address-space limit. docs/reliability.md has
# the output for a binary from before the fixes and one from after.
#
#   scripts/hostile-cases.sh [path/to/kvpress]
set -uo pipefail
bin=${1:-$(cd "$(dirname "$0")/.." && pwd)/build/kvpress}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -c "open('$work/long_line.jsonl','w').write('{\"context\": \"' + 'a' * 50_000_000)"
run() {
  local name=$1; shift
  local start=$(date +%s.%N)
  timeout 20 bash -c 'ulimit -v 3000000; "$@"' _ "$@" > $work/out 2> $work/err
  local rc=$?
  local secs=$(python3 -c "print(f'{$(date +%s.%N) - $start:.1f}')")
  printf '%-26s rc=%-3s %5ss  stderr %8s B: %s\n' "$name" "$rc" "$secs" "$(wc -c < $work/err)" "$(head -c 110 $work/err | tr '\n' ' ')"
}
run adakv_wraps_adakv "$bin" generate --context "a b c d e f g" --question q --press adakv --press-arg press=adakv --max-new-tokens 1
run chunk_wraps_adakv "$bin" generate --context "a b c d e f g" --question q --press chunk --press-arg press=adakv --max-new-tokens 1
run adakv_wraps_chunk "$bin" generate --context "a b c d e f g" --question q --press adakv --press-arg press=chunk --max-new-tokens 1
run n_future_2^31-1 "$bin" generate --context "a b c d e f g h i j" --question q --press expected_attention --press-arg n_future_positions=2147483647 --press-arg n_sink=0 --max-new-tokens 1
run epsilon_nan "$bin" generate --context "a b c d e f g h i j" --question q --press expected_attention --press-arg epsilon=nan --press-arg n_sink=0 --max-new-tokens 1
run context_dev_zero "$bin" generate --context @/dev/zero --question q --max-new-tokens 1
run context_directory "$bin" generate --context @/tmp --question q --max-new-tokens 1
run jsonl_50MB_line "$bin" eval --dataset $work/long_line.jsonl --press knorm --ratio 0.5 --out $work/eval_out
run generate_-h "$bin" generate -h
run version "$bin" --version
run stray_positional "$bin" presses snapkv
