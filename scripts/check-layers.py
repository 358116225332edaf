#!/usr/bin/env python3
"""Checks the layer order of src/ from its #include lines, and where raw tensor data is read.

1. Each folder of src/ may include only the folders below it (LAYERS). backend/ headers
   (the interface) are open to every layer above the CPU backend; a concrete backend
   (backend/cpu/...) may be included only by backend/factory.cpp and by the backend itself.
2. Outside src/backend, src/io and the tests, no file takes a raw data pointer of an
   activation, query or cache tensor: presses are op programs (Backend ops), and the only
   host reads are downloads of small results (src/presses/scores.cpp). The example presses
   (examples/) are held to the press layer's rules. HOST_READERS would list exceptions; it
   is empty, and the check fails when a listed file stops reading (so it only shrinks).

Prints every violation with its file and line; exit 1 if any. Run by scripts/test.sh.
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
SRC = ROOT / "src"

# folder -> folders it may include (besides itself)
LAYERS = {
    "core": set(),
    "io": {"core"},
    "tokenizer": {"core", "io"},
    "backend": {"core"},  # the interface headers and the factory
    "backend/cpu": {"core", "backend"},
    # The CUDA backend dequantises GGUF weights at load with the CPU reference's routine.
    "backend/cuda": {"core", "backend", "backend/cpu"},
    "cache": {"core", "backend"},
    "model": {"core", "io", "backend", "cache"},
    "presses": {"core", "io", "backend", "cache", "model"},
    "pipeline": {"core", "io", "backend", "cache", "model", "presses", "tokenizer"},
    "eval": {"core", "io", "backend", "cache", "model", "presses", "tokenizer", "pipeline"},
    "server": {"core", "io", "backend", "cache", "model", "presses", "tokenizer", "pipeline"},
    "cli": {"core", "io", "backend", "cache", "model", "presses", "tokenizer", "pipeline", "eval",
            "server"},
}
# Files that may include a concrete backend (besides the backends themselves and a backend
# whose LAYERS entry names another).
FACTORY = {"backend/factory.cpp"}
# Layers above the model that must not open model files themselves.
NO_MODEL_FILES = {"presses", "pipeline", "eval", "server"}
MODEL_FILE_HEADERS = {"io/gguf.h", "io/safetensors.h", "io/mapped_file.h"}

# Raw data access: a Tensor's typed pointers (.ptr<T>(), .row_ptr()) or a KvSegments
# view's row pointers (.k_row(), .k_rows(), ...). (Tensor::data() is not matched: the name is
# shared with std::vector; the typed accessors are what code that reads values uses.)
RAW = re.compile(r"\.(ptr<[^>]*>|row_ptr|k_row|v_row|k_rows|v_rows)\(")
# Weight loading reads the mapped file's tensors (un-permuting Q and K rows), and random
# weights are written into fresh host tensors before the backend loads them: allowed.
LOADERS = {"model/weights.cpp", "model/random_weights.cpp"}
# Files above the backend that still read tensor data on the host, and why.
HOST_READERS: set[str] = set()


def folder_of(path: pathlib.Path) -> str:
    rel = path.relative_to(SRC).as_posix()
    parts = rel.split("/")
    if len(parts) == 1:  # src/main.cpp: the command line's entry point
        return "cli"
    if parts[0] == "backend" and len(parts) > 2:
        return "backend/" + parts[1]
    return parts[0]


def included_folder(include: str) -> str:
    parts = include.split("/")
    if parts[0] == "backend" and len(parts) > 2:
        return "backend/" + parts[1]
    return parts[0]


def main() -> int:
    errors = []
    readers = set()
    files = [(p, p.relative_to(SRC).as_posix(), folder_of(p)) for p in sorted(SRC.rglob("*"))]
    # The example presses live outside src/ but are presses: the same rules.
    files += [(p, "../examples/" + p.name, "presses") for p in sorted((ROOT / "examples").glob("*"))]
    for path, rel, layer in files:
        if path.suffix not in (".h", ".cpp", ".cu", ".cuh"):
            continue
        if layer not in LAYERS:
            errors.append(f"src/{rel}: folder '{layer}' is not in scripts/check-layers.py's LAYERS")
            continue
        allowed = LAYERS[layer] | {layer}
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            m = re.match(r'\s*#\s*include\s+"([^"]+)"', line)
            if m and "/" in m.group(1):
                inc = m.group(1)
                target = included_folder(inc)
                concrete = target.startswith("backend/")
                if concrete and target != layer and rel not in FACTORY and target not in LAYERS[layer]:
                    errors.append(f"src/{rel}:{n}: includes the concrete backend {inc} "
                                  "(only backend/factory.cpp may)")
                elif not concrete and target not in allowed:
                    errors.append(f"src/{rel}:{n}: layer '{layer}' includes {inc} from the "
                                  f"higher or unrelated layer '{target}'")
                if layer in NO_MODEL_FILES and inc in MODEL_FILE_HEADERS:
                    errors.append(f"src/{rel}:{n}: '{layer}' opens model files itself ({inc}); "
                                  "the model and tokenizer layers do that")
            exempt = layer in ("backend", "io") or layer.startswith("backend/") or rel in LOADERS
            if not exempt and RAW.search(line):
                if rel in HOST_READERS:
                    readers.add(rel)
                else:
                    errors.append(f"src/{rel}:{n}: reads tensor data on the host: {line.strip()}")
    for rel in sorted(HOST_READERS - readers):
        errors.append(f"src/{rel}: no longer reads tensor data on the host; remove it from "
                      "HOST_READERS in scripts/check-layers.py")
    for e in errors:
        print(e, file=sys.stderr)
    if errors:
        print(f"check-layers: {len(errors)} violation(s)", file=sys.stderr)
        return 1
    print(f"check-layers: layer order and host data access ok "
          f"({len(HOST_READERS)} files still score on the host)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
