#!/usr/bin/env bash
# Create the reference virtual environment at <repo>/.venv-ref (git-ignored via /.venv*/)
# and install the pinned reference stack.
#
#   tools/reference/setup.sh                 # torch from PyPI
#   TORCH_CPU=1 tools/reference/setup.sh     # torch CPU wheel (much smaller download)
#   PYTHON=python3.11 tools/reference/setup.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="$root/.venv-ref"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --upgrade pip

extra=()
if [ "${TORCH_CPU:-0}" = "1" ]; then
    extra+=(--extra-index-url https://download.pytorch.org/whl/cpu)
fi
# llama-cpp-python compiles llama.cpp; GGML_NATIVE tunes it for this CPU (bench_llamacpp.py).
CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=ON}" \
    "$venv/bin/python" -m pip install "${extra[@]}" -r "$root/tools/reference/requirements.txt"

echo "reference venv ready: $venv"
echo "  $venv/bin/python tools/reference/make_goldens.py"
