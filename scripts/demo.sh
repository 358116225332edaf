#!/usr/bin/env bash
# The main job on a fresh machine: install build dependencies, build, fetch the default model,
# and answer a question about a short context.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/build.sh" --target kvpress
"$root/scripts/fetch-model.sh" >/dev/null
set -x
"$root/build/kvpress" generate \
  --context "The secret code is 4719. Remember it." \
  --question "What is the secret code?" \
  --press snapkv --ratio 0.25
