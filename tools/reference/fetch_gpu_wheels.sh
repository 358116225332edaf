#!/usr/bin/env bash
# Put the wheels of requirements-gpu.txt in <repo>/.whl (git-ignored through .git/info/exclude)
# for the device machine (x86-64, CPython 3.12): about 15 MB. See README.md "GPU reference figures".
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
whl="$root/.whl"
exclude="$(git -C "$root" rev-parse --git-common-dir)/info/exclude"
mkdir -p "$(dirname "$exclude")" "$whl"
grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >> "$exclude"

python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d "$whl" \
    kvpress==0.5.5 transformers==5.2.0 tokenizers==0.22.2 datasets==4.8.5 dill==0.4.1 \
    multiprocess==0.70.19 cachetools==5.5.2 termcolor==3.3.0
# fire 0.6.0 exists only as an sdist; build its (pure-python) wheel here
if ! ls "$whl"/fire-0.6.0-*.whl >/dev/null 2>&1; then
    python3 -m pip wheel --no-deps -w "$whl" fire==0.6.0
fi
ls -l "$whl"
du -sh "$whl"
