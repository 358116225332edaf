#!/usr/bin/env python3
"""llama.cpp (through llama-cpp-python) speed baseline on the default GGUF, for kvpress.cpp's
`kvpress bench` to be compared against.

Measures, for each thread count:
  prefill_512, prefill_2048   tokens/s of one llm.eval() over the whole prompt after llm.reset()
                              (prompt = deterministic filler text, tokenized, cut to the length)
  decode                      tokens/s of 128 greedy steps (one llm.eval([token]) per step)
                              after a short prompt; the argmax is read from llama.cpp's logits
Each figure is the median of --reps repetitions, after one unmeasured warm-up.

    python tools/reference/bench_llamacpp.py                 # table
    python tools/reference/bench_llamacpp.py --json          # table on stderr, one JSON object on stdout
    python tools/reference/bench_llamacpp.py --threads 1,2 --reps 3 --model PATH

JSON: {"threads": {"1": {"prefill_512": tok_s, "prefill_2048": tok_s, "decode": tok_s}, "2": {...}},
       "llama_cpp_python": version, "ids_fnv1a": checksum of the prompt + decode-prompt ids, ...}
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_GGUF = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
PREFILL_LENGTHS = (512, 2048)
DECODE_STEPS = 128
DECODE_PROMPT = "The history of the printing press begins"


def filler_text(min_chars: int) -> str:
    """Deterministic, varied English-like text (numbered sentences, so no long exact repeats)."""
    subjects = ["The engineer", "A small model", "The cache", "Every attention head", "The compiler",
                "A long document", "The scheduler", "Our benchmark"]
    verbs = ["reads", "compresses", "keeps", "discards", "measures", "rewrites", "streams", "scores"]
    objects = ["the oldest tokens", "a sorted list of rows", "the key and value vectors",
               "one segment per head", "the quantised weights", "a question about the context",
               "the memory bandwidth", "every layer in turn"]
    parts, i = [], 0
    while sum(len(p) for p in parts) < min_chars:
        parts.append(f"{subjects[i % 8]} {verbs[(i * 3) % 8]} {objects[(i * 5 + i // 8) % 8]} "
                     f"in step {i}, and nothing else changes. ")
        if i % 7 == 6:
            parts.append("\n\n")
        i += 1
    return "".join(parts)


def ids_fnv1a(ids: list[int]) -> str:
    """FNV-1a (32-bit) over the ids: bench/model_bench.cpp prints the same for its own ids, so a
    tokenizer mismatch between the two engines shows up (scripts/bench.sh compares them)."""
    h = 2166136261
    for i in ids:
        h = ((h ^ (i & 0xFFFFFFFF)) * 16777619) & 0xFFFFFFFF
    return f"{h:08x}"


def last_logits(llm, n_vocab: int) -> np.ndarray:
    import llama_cpp

    ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
    return np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(n_vocab,))


def bench_threads(model: Path, threads: int, reps: int, prompt_ids: list[int]) -> dict[str, float]:
    import llama_cpp

    n_ctx = max(PREFILL_LENGTHS) + 64
    llm = llama_cpp.Llama(model_path=str(model), n_ctx=n_ctx, n_batch=max(PREFILL_LENGTHS),
                          n_threads=threads, n_threads_batch=threads, logits_all=False, verbose=False)
    n_vocab = llm.n_vocab()
    res: dict[str, float] = {}
    cpu0, wall0 = time.process_time(), time.perf_counter()

    llm.reset()
    llm.eval(prompt_ids[:64])  # warm-up: allocations, graph reservation

    for n in PREFILL_LENGTHS:
        ids = prompt_ids[:n]
        rates = []
        for _ in range(reps):
            llm.reset()
            t0 = time.perf_counter()
            llm.eval(ids)
            rates.append(n / (time.perf_counter() - t0))
        res[f"prefill_{n}"] = statistics.median(rates)

    short = list(llm.tokenize(DECODE_PROMPT.encode("utf-8"), add_bos=False, special=True))
    rates = []
    for _ in range(reps):
        llm.reset()
        llm.eval(short)
        tok = int(np.argmax(last_logits(llm, n_vocab)))
        t0 = time.perf_counter()
        for _ in range(DECODE_STEPS):
            llm.eval([tok])
            tok = int(np.argmax(last_logits(llm, n_vocab)))
        rates.append(DECODE_STEPS / (time.perf_counter() - t0))
    res["decode"] = statistics.median(rates)
    # CPU seconds used per wall second over the whole measurement: about `threads` on an idle
    # machine; much less means other processes took the cores and the figures are pessimistic.
    res["cpu_share"] = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
    llm.close()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=DEFAULT_GGUF)
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout (table on stderr)")
    args = ap.parse_args()

    import llama_cpp

    threads = [int(t) for t in args.threads.split(",") if t.strip()]
    vocab = llama_cpp.Llama(model_path=str(args.model), vocab_only=True, verbose=False)
    prompt_ids = list(vocab.tokenize(filler_text(4 * max(PREFILL_LENGTHS) * 2).encode("utf-8"),
                                     add_bos=False, special=False))
    assert len(prompt_ids) >= max(PREFILL_LENGTHS), len(prompt_ids)
    short_ids = list(vocab.tokenize(DECODE_PROMPT.encode("utf-8"), add_bos=False, special=True))
    checksum = ids_fnv1a(prompt_ids[:max(PREFILL_LENGTHS)] + short_ids)
    del vocab

    load = os.getloadavg()[0]
    results = {str(t): bench_threads(args.model, t, args.reps, prompt_ids) for t in threads}

    out = sys.stderr if args.json else sys.stdout
    cols = [f"prefill_{n}" for n in PREFILL_LENGTHS] + ["decode"]
    print(f"llama-cpp-python {llama_cpp.__version__}, {args.model.name}, median of {args.reps}, tokens/s"
          f" (decode: {DECODE_STEPS} greedy steps)", file=out)
    print(f"{'threads':>8}" + "".join(f"{c:>15}" for c in cols) + f"{'cpu_share':>11}", file=out)
    for t, r in results.items():
        print(f"{t:>8}" + "".join(f"{r[c]:>15.1f}" for c in cols) + f"{r['cpu_share']:>11.2f}", file=out)
    print(f"load average before the run: {load:.2f} on {os.cpu_count()} CPUs", file=out)
    if args.json:
        print(json.dumps({
            "threads": {t: {c: round(r[c], 2) for c in cols} for t, r in results.items()},
            "llama_cpp_python": llama_cpp.__version__,
            "model": args.model.name,
            "reps": args.reps,
            "decode_steps": DECODE_STEPS,
            "cpu_count": os.cpu_count(),
            "loadavg_1min_before": round(load, 2),
            "cpu_share": {t: round(r["cpu_share"], 2) for t, r in results.items()},
            "ids_fnv1a": checksum,
        }))


if __name__ == "__main__":
    main()
