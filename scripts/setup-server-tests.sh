#!/usr/bin/env bash
# Creates .venv-server (git-ignored) with the pinned openai SDK for tests/server/test_server.py,
# and prints its python. Does nothing when the venv already holds the pinned set.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv-server"
req="$root/tests/server/requirements.txt"
stamp="$venv/.requirements"
if [ ! -f "$stamp" ] || ! cmp -s "$req" "$stamp"; then
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req" >&2
  cp "$req" "$stamp"
fi
echo "$venv/bin/python"
