# Sourced by the device scripts: the build this machine made (carried as .dev/bins.tar.xz)
# unpacked to /tmp/kvp, the CUDA libraries on the path, and the source tree at the path the
# tests were compiled with (KVP_SOURCE_DIR), so goldens and models/ resolve.
set -u
src_dir=${KVP_SOURCE_DIR:-/work/main}
if [ ! -e "$src_dir" ]; then mkdir -p "$(dirname "$src_dir")" && ln -s "$PWD" "$src_dir"; fi
if [ -f .dev/bins.tar.xz ]; then mkdir -p /tmp/kvp && tar xJf .dev/bins.tar.xz -C /tmp/kvp; fi
for d in /usr/local/cuda/lib64 /usr/local/cuda/lib $(python3 -c 'import nvidia, os; print(os.path.dirname(nvidia.__file__))' 2>/dev/null)/cu13/lib; do
  [ -d "$d" ] && export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
done
export OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
# Last, so that the device's own libraries come first for everything else (python).
export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}:/tmp/kvp/lib"
