#!/usr/bin/env bash
# End-to-end speed of kvpress.cpp against llama.cpp on the same GGUF, threads and token ids.
# Builds model_bench (Release), fetches the default model, then runs bench/model_bench.cpp
# and tools/reference/bench_llamacpp.py alternately (ours, llama.cpp, ours, llama.cpp, ...)
# so slow phases of a busy machine hit both, and prints per thread count our tokens/s,
# llama.cpp's and the ratio ours/llama.cpp for prefill-512, prefill-2048 and decode, with
# the load average at start and end. docs/benchmarks.md describes the method and the figures.
#
#   scripts/bench.sh
#
# Environment:
#   KVP_REF_PYTHON     python with llama-cpp-python (default: .venv-ref/bin/python, then
#                      /work/venvs/ref/bin/python; tools/reference/setup.sh makes .venv-ref)
#   KVP_BENCH_THREADS  thread counts (default 1,2)
#   KVP_BENCH_REPS     repetitions inside each run; each run reports their median (default 3)
#   KVP_BENCH_ROUNDS   alternating rounds; the figure is the median over rounds (default 2)
#   KVP_BENCH_MODEL    GGUF (default: models/SmolLM2-135M-Instruct.Q4_1.gguf, fetched)
#   KVP_BENCH_BUILD    build directory (default: build-bench)
#   KVP_BENCH_COMMIT   commit to report (default: git rev-parse HEAD; set it for an export)
#   KVP_BENCH_WAIT     seconds to wait, at most, for the 1-minute load average to fall to
#                      KVP_BENCH_MAX_LOAD (default 1.5) before starting (default 0: no wait)
# Raw JSON of every run goes to out/bench-<date>/ (git-ignored).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
threads=${KVP_BENCH_THREADS:-1,2}
reps=${KVP_BENCH_REPS:-3}
rounds=${KVP_BENCH_ROUNDS:-2}
build=${KVP_BENCH_BUILD:-$root/build-bench}
max_load=${KVP_BENCH_MAX_LOAD:-1.5}
wait_s=${KVP_BENCH_WAIT:-0}

if [ -n "${KVP_REF_PYTHON:-}" ]; then
  ref_python=$KVP_REF_PYTHON
elif [ -x "$root/.venv-ref/bin/python" ]; then
  ref_python=$root/.venv-ref/bin/python
else
  ref_python=/work/venvs/ref/bin/python
fi
if ! "$ref_python" -c 'import llama_cpp' 2>/dev/null; then
  echo "error: $ref_python cannot import llama_cpp; run tools/reference/setup.sh or set KVP_REF_PYTHON" >&2
  exit 1
fi

if [ -n "${KVP_BENCH_MODEL:-}" ]; then
  model=$KVP_BENCH_MODEL
else
  model=$("$root/scripts/fetch-model.sh")
fi

echo "== building model_bench (Release) in $build" >&2
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j"$(nproc)" --target model_bench >/dev/null

load1() { cut -d' ' -f1 /proc/loadavg; }
above() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a > b) }'; }

if [ "$wait_s" -gt 0 ]; then
  waited=0
  while above "$(load1)" "$max_load" && [ "$waited" -lt "$wait_s" ]; do
    echo "load average $(load1) > $max_load; waiting (${waited}s of ${wait_s}s)" >&2
    sleep 30
    waited=$((waited + 30))
  done
fi

out="$root/out/bench-$(date -u +%Y%m%d-%H%M%S)"
mkdir -p "$out"
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
commit=${KVP_BENCH_COMMIT:-$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)}
dirty=$(git -C "$root" status --porcelain --untracked-files=no 2>/dev/null | head -1 || true)
echo "== $(date -u '+%Y-%m-%d %H:%M UTC'), commit $commit${dirty:+ (+ uncommitted changes)}, $(nproc) CPUs," \
  "load average $load_start" >&2
if above "${load_start%% *}" "$max_load"; then
  cat >&2 <<EOF
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
!! WARNING: load average ${load_start%% *} > $max_load at start. Other processes compete for the
!! cores; llama.cpp busy-waits its threads and collapses when a core is taken, so its
!! multi-thread figures (and the ratios) will be unreliable. Re-run on a quiet machine.
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
EOF
fi

for r in $(seq 1 "$rounds"); do
  echo "== round $r/$rounds: kvpress.cpp (load $(load1))" >&2
  "$build/bench/model_bench" --model "$model" --threads "$threads" --reps "$reps" --json \
    >"$out/ours-$r.json"
  echo "== round $r/$rounds: llama.cpp (load $(load1))" >&2
  "$ref_python" "$root/tools/reference/bench_llamacpp.py" --model "$model" --threads "$threads" \
    --reps "$reps" --json >"$out/llamacpp-$r.json" 2> >(grep -v '^llama_context:' >&2)
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

python3 - "$out" "$rounds" "$load_start" "$load_end" "$commit" "$max_load" <<'EOF'
import json, statistics, sys
out, rounds, load_start, load_end, commit, max_load = sys.argv[1:]
rounds = int(rounds)
ours = [json.load(open(f"{out}/ours-{r}.json")) for r in range(1, rounds + 1)]
ref = [json.load(open(f"{out}/llamacpp-{r}.json")) for r in range(1, rounds + 1)]
cols = ["prefill_512", "prefill_2048", "decode"]
med = lambda runs, t, c: statistics.median(run["threads"][t][c] for run in runs)
summary = {"commit": commit, "rounds": rounds, "reps": ours[0]["reps"], "model": ours[0]["model"],
           "loadavg_start": load_start, "loadavg_end": load_end,
           "llama_cpp_python": ref[0].get("llama_cpp_python"), "threads": {}}
print(f"\nkvpress.cpp {commit} vs llama.cpp (llama-cpp-python {summary['llama_cpp_python']}), "
      f"{summary['model']}, tokens/s, median over {rounds} alternating rounds of per-run medians of "
      f"{summary['reps']}")
print(f"{'threads':>7}  {'figure':<13}{'kvpress.cpp':>12}{'llama.cpp':>12}{'ours/llama':>12}")
for t in ours[0]["threads"]:
    summary["threads"][t] = {}
    for c in cols:
        a, b = med(ours, t, c), med(ref, t, c)
        summary["threads"][t][c] = {"ours": round(a, 1), "llama_cpp": round(b, 1), "ratio": round(a / b, 3)}
        print(f"{t:>7}  {c:<13}{a:>12.1f}{b:>12.1f}{a / b:>11.2f}x")
    gbs = statistics.median(run["threads"][t]["decode_gbs"] for run in ours)
    summary["threads"][t]["decode_gbs_ours"] = round(gbs, 2)
    share_o = statistics.median(run["cpu_share"][t] for run in ours)
    share_r = statistics.median(run["cpu_share"][t] for run in ref)
    print(f"{'':>7}  decode weight reads {gbs:.2f} GB/s (ours); cpu_share ours {share_o:.2f},"
          f" llama.cpp {share_r:.2f} (about {t} when the cores were ours)")
print(f"load average (1, 5, 15 min): start {load_start}, end {load_end}"
      " (the end includes this benchmark's own busy threads)")
ids = {run.get("ids_fnv1a") for run in ours + ref}
if len(ids) != 1:
    print(f"WARNING: token id checksums differ between the engines: {sorted(map(str, ids))}")
if float(load_start.split()[0]) > float(max_load):
    print(f"WARNING: load average {load_start.split()[0]} > {max_load} at start: the figures, above all"
          " llama.cpp's multi-thread ones, are unreliable")
json.dump(summary, open(f"{out}/summary.json", "w"), indent=1)
print(f"raw results: {out}")
EOF
