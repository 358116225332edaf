#!/usr/bin/env bash
# Starts `kvpress serve` from the given build (the sanitizer build in scripts/test.sh), sends it
# tools/server/hostile_client.py's malformed and hostile requests (10,000 by default), then
# stops it with SIGTERM. The server answers at most 4 tokens (--max-tokens-limit 4), so that
# the valid requests among the hostile ones stay quick under the sanitizers. Fails when the
# client finds a bad response, when the server does not shut down cleanly, or when its log
# holds a sanitizer report.
#   scripts/server-fuzz.sh BUILD_DIR [COUNT]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:?usage: server-fuzz.sh BUILD_DIR [COUNT]}
count=${2:-10000}
log=$(mktemp)
out=$(mktemp)
trap 'rm -f "$log" "$out"' EXIT
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  "$build/kvpress" serve --model "$root/models/SmolLM2-135M-Instruct.Q4_1.gguf" --port 0 \
  --read-timeout-s 3 --max-body-kib 64 --max-queue 256 --max-tokens-limit 4 >"$out" 2>"$log" &
pid=$!
for _ in $(seq 600); do
  grep -q "listening on" "$out" && break
  kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; echo "server-fuzz: the server died at start" >&2; exit 1; }
  sleep 0.1
done
url=$(sed -n 's/.*listening on \(http[^ ]*\).*/\1/p' "$out")
[ -n "$url" ] || { echo "server-fuzz: the server did not start" >&2; kill "$pid"; exit 1; }
status=0
python3 "$root/tools/server/hostile_client.py" --url "$url" --count "$count" --max-body-kib 64 \
  --read-timeout-s 3 || status=$?
kill -TERM "$pid"
wait "$pid" || { echo "server-fuzz: the server exited with status $? after SIGTERM" >&2; status=1; }
if grep -qE "ERROR: (Address|Leak)Sanitizer|runtime error:" "$log"; then
  echo "server-fuzz: sanitizer report in the server's log:" >&2
  cat "$log" >&2
  status=1
fi
exit "$status"
