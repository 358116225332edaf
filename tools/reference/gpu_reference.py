#!/usr/bin/env python3
"""GPU reference figures that kvpress.cpp's CUDA backend is compared against (one GPU, one run).

Prints progress and a summary table, and writes every figure as one JSON dict (--out).
Nothing here is a golden file: these are measurements of the machine and of the Python
reference stack (torch, transformers 5.2.0, kvpress 0.5.5; see requirements-gpu.txt and
README.md "GPU reference figures").

Parts (--parts, default all, in this order):
  device   device-to-device copy bandwidth (bytes read + written) and the bf16 matmul rate
  sdpa     torch scaled_dot_product_attention decode micro-benchmark: batch 1, 32 query heads,
           8 kv heads (GQA through enable_gqa=True), head_dim 128, one query token, L cached
           rows per kv head; eager and CUDA-graph replay, per SDPA backend, K/V pre-expanded
  hf       transformers generate on a Llama-3.1-8B-shaped model with random bf16 weights:
           prefill time and TFLOP/s, decode ms/token, peak memory, decode bandwidth
  kvpress  kvpress 0.5.5 (the kv-press-text-generation pipeline's own steps) with no press,
           SnapKVPress and AdaKVPress(SnapKVPress) at compression ratio 0.5 on the same model

    PYTHONUNBUFFERED=1 python3 tools/reference/gpu_reference.py --out gpu_reference.json
    python3 tools/reference/gpu_reference.py --parts sdpa --sdpa-lengths 4096,65536
    python3 tools/reference/gpu_reference.py --device cpu --tiny     # smoke test of every code path

The JSON file is rewritten after every measured item, so a run killed half-way leaves what it
had measured. A size that runs out of GPU memory is recorded as {"status": "oom"}, any other
failure as {"status": "error"}, and the run goes on. --budget-s skips what is left once the
run has lasted that long (recorded as {"status": "skipped"}).
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import random
import statistics
import sys
import time
import traceback
import types
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

T_START = time.perf_counter()

# Llama-3.1-8B shapes
LLAMA8B = dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
               num_attention_heads=32, num_key_value_heads=8, head_dim=128,
               max_position_embeddings=131072, rms_norm_eps=1e-5, bos_token_id=128000,
               eos_token_id=128001, rope_original_max=8192)
# --tiny: same structure (GQA 4:1, llama3 rope), small enough for a CPU
TINY = dict(vocab_size=2048, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
            num_attention_heads=8, num_key_value_heads=2, head_dim=64,
            max_position_embeddings=4096, rms_norm_eps=1e-5, bos_token_id=2000,
            eos_token_id=2001, rope_original_max=256)

SDPA_Q_HEADS, SDPA_KV_HEADS, SDPA_HEAD_DIM = 32, 8, 128
GiB = float(1 << 30)

FORMULAS = {
    "sdpa_bytes": "K+V bytes of the dense cache = 2 * kv_heads * L * head_dim * 2 (bf16), plus q and "
                  "output (2 * q_heads * head_dim * 2); bandwidth = bytes / time (GB = 1e9 bytes)",
    "sdpa_cold": "graph_cold / eager rotate over enough K/V copies (kv_copies) that their total is >= "
                 "4 x L2 and >= --sdpa-cold-mib (256 MiB), so each call reads K/V from HBM, as a "
                 "model's decode does; graph_hot "
                 "calls the same K/V (L2-resident when K+V fit in L2)",
    "copy_bandwidth": "dst.copy_(src) of an N-byte tensor counted as 2*N bytes (read + write)",
    "matmul": "2 * n^3 flop per bf16 n x n x n product (random normal operands, out= preallocated)",
    "prefill_flops": "2 * P_layers * T  (every weight in the 32 decoder layers incl. norms, one "
                     "multiply-add per token)  +  2 * vocab * hidden (lm_head on the last position "
                     "only: logits_to_keep=1)  +  2 * layers * q_heads * T^2 * head_dim (causal "
                     "attention: QK^T and PV, each 2*T^2/2*head_dim per head)",
    "decode_bytes": "per step: weight bytes read = 2 * (P_total - P_embed + hidden) (every weight "
                    "except the embedding table, of which one row) + KV bytes read = layers * 2 * "
                    "kv_heads * head_dim * 2 * rows, rows = mean cache length over the steps; "
                    "bandwidth = bytes / step time. HF's DynamicCache also copies the whole cache "
                    "(torch.cat) every step; that traffic is not counted",
}


# --------------------------------------------------------------------------- helpers

def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T_START:7.1f}s] {msg}", flush=True)


def stats(xs: list[float]) -> dict:
    xs = sorted(float(x) for x in xs)
    if not xs:
        return {}
    q = lambda p: xs[min(len(xs) - 1, max(0, int(round(p * (len(xs) - 1)))))]
    return {"median": statistics.median(xs), "min": xs[0], "p10": q(0.1), "p90": q(0.9),
            "mean": statistics.fmean(xs), "n": len(xs)}


def r4(x):
    """Round floats for the JSON (4 significant digits is more than the timing noise)."""
    if isinstance(x, float):
        return float(f"{x:.4g}") if math.isfinite(x) else str(x)
    if isinstance(x, dict):
        return {k: r4(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [r4(v) for v in x]
    return x


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()


def guarded(what: str, fn, *a, **kw):
    """Run one measured item; an OOM or any other failure is recorded and the run goes on."""
    err = None
    try:
        return fn(*a, **kw)
    except Exception as e:  # noqa: BLE001 - one failed size must not lose the rest of the run
        status = "oom" if is_oom(e) else "error"
        err = {"status": status, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"}
        if status == "error":
            err["traceback"] = traceback.format_exc().splitlines()[-8:]
    # outside the except block: the traceback's frames (and their tensors) are gone
    free_memory()
    log(f"  {what}: {err['status'].upper()} {err['error']}")
    return err


class Budget:
    def __init__(self, seconds: float):
        self.seconds = seconds

    def elapsed(self) -> float:
        return time.perf_counter() - T_START

    def left(self) -> bool:
        return self.elapsed() < self.seconds

    def skipped(self) -> dict:
        return {"status": "skipped", "reason": f"time budget --budget-s {self.seconds:g} reached "
                                               f"({self.elapsed():.0f}s)"}


class Clock:
    """ms per call of fn: CUDA events on a GPU (GPU time between the two events, launch gaps
    included), perf_counter on the CPU."""

    def __init__(self, dev: torch.device):
        self.cuda = dev.type == "cuda"

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def one(self, fn, inner: int = 1) -> float:
        if self.cuda:
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            for _ in range(inner):
                fn()
            e.record()
            e.synchronize()
            return s.elapsed_time(e) / inner
        t = time.perf_counter()
        for _ in range(inner):
            fn()
        return (time.perf_counter() - t) * 1e3 / inner

    def timed(self, fn):
        """(ms, fn's result) of one call."""
        box = []
        ms = self.one(lambda: box.append(fn()))
        return ms, box[0]

    def samples(self, fn, reps: int, inner: int = 1, warmup: int = 2) -> list[float]:
        for _ in range(warmup):
            fn()
        self.sync()
        return [self.one(fn, inner) for _ in range(reps)]


def mem_now() -> dict:
    if not torch.cuda.is_available():
        return {}
    return {"allocated_gib": torch.cuda.memory_allocated() / GiB,
            "peak_allocated_gib": torch.cuda.max_memory_allocated() / GiB,
            "peak_reserved_gib": torch.cuda.max_memory_reserved() / GiB}


def reset_peak(dev) -> None:
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_gib(dev) -> float | None:
    return torch.cuda.max_memory_allocated() / GiB if dev.type == "cuda" else None


def alloc_gib(dev) -> float | None:
    return torch.cuda.memory_allocated() / GiB if dev.type == "cuda" else None


def pkg_version(name: str) -> str | None:
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:  # noqa: BLE001
        return None


class Results:
    def __init__(self, path: Path | None, meta: dict):
        self.path = path
        self.d = {"meta": meta, "formulas": FORMULAS}

    def save(self) -> None:
        self.d["meta"]["elapsed_s"] = time.perf_counter() - T_START
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(r4(self.d), indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, self.path)


# --------------------------------------------------------------------------- device

def part_device(args, dev, clock: Clock, res: Results) -> dict:
    out: dict = {}
    res.d["device"] = out

    def copy_bw():
        n = int(args.copy_gib * GiB) // 2 * 2
        src = torch.empty(n // 2, dtype=torch.bfloat16, device=dev).fill_(1.0)
        dst = torch.empty_like(src)
        ts = clock.samples(lambda: dst.copy_(src), reps=args.copy_reps, warmup=3)
        st = stats(ts)
        src = dst = None
        return {"bytes_per_copy": n, "bytes_counted": 2 * n, "ms": st,
                "gbps": 2 * n / (st["median"] * 1e-3) / 1e9,
                "gbps_best": 2 * n / (st["min"] * 1e-3) / 1e9}

    log(f"device: copy of {args.copy_gib:g} GiB ...")
    out["copy"] = guarded("copy", copy_bw)
    if "gbps" in out["copy"]:
        log(f"  copy: {out['copy']['ms']['median']:.3f} ms, {out['copy']['gbps']:.0f} GB/s (read+write)")
    res.save()

    def matmul():
        n = args.matmul_n
        g = torch.Generator(device=dev).manual_seed(args.seed + 1)
        a = torch.randn(n, n, device=dev, dtype=torch.bfloat16, generator=g)
        b = torch.randn(n, n, device=dev, dtype=torch.bfloat16, generator=g)
        c = torch.empty(n, n, device=dev, dtype=torch.bfloat16)
        ts = clock.samples(lambda: torch.matmul(a, b, out=c), reps=args.matmul_reps, warmup=3)
        st = stats(ts)
        a = b = c = None
        return {"n": n, "ms": st, "tflops": 2 * n ** 3 / (st["median"] * 1e-3) / 1e12,
                "tflops_best": 2 * n ** 3 / (st["min"] * 1e-3) / 1e12}

    log(f"device: bf16 matmul {args.matmul_n}^3 ...")
    out["matmul"] = guarded("matmul", matmul)
    if "tflops" in out["matmul"]:
        log(f"  matmul: {out['matmul']['ms']['median']:.3f} ms, {out['matmul']['tflops']:.0f} TFLOP/s")
    free_memory()
    res.save()
    return out


def copy_gbps(res: Results) -> float | None:
    return (res.d.get("device") or {}).get("copy", {}).get("gbps")


# --------------------------------------------------------------------------- sdpa

SDPA_BACKENDS = ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH")


def sdpa_backend_ctx(name: str | None):
    if name is None:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel
    return sdpa_kernel([getattr(SDPBackend, name)])


def cuda_graph_of(fn):
    """Capture fn (after a side-stream warm-up, as torch.cuda.graphs asks) into a CUDAGraph."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        keep = fn()
    torch.cuda.synchronize()
    return g, keep


def kernel_names(fn, dev) -> list[str] | str:
    if dev.type != "cuda":
        return "n/a on cpu"
    try:
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize()
        names = sorted({e.name for e in prof.events()
                        if e.device_type == torch.autograd.DeviceType.CUDA})
        return [n[:160] for n in names]
    except Exception as e:  # noqa: BLE001
        return f"profiler failed: {type(e).__name__}: {e}"[:300]


def sdpa_one(L: int, args, dev, clock: Clock, l2_bytes: int, copy_bw: float | None) -> dict:
    H, KVH, D = SDPA_Q_HEADS, SDPA_KV_HEADS, SDPA_HEAD_DIM
    groups = H // KVH
    kv_bytes = 2 * KVH * L * D * 2
    io_bytes = kv_bytes + 2 * H * D * 2
    cold_total = max(int(args.sdpa_cold_mib) << 20, 4 * l2_bytes)
    n_sets = max(1, min(64, math.ceil(cold_total / kv_bytes)))
    n_calls = max(n_sets, args.sdpa_min_calls)
    g = torch.Generator(device=dev).manual_seed(args.seed + L)
    sets = [(torch.randn(1, H, 1, D, device=dev, dtype=torch.bfloat16, generator=g),
             torch.randn(1, KVH, L, D, device=dev, dtype=torch.bfloat16, generator=g),
             torch.randn(1, KVH, L, D, device=dev, dtype=torch.bfloat16, generator=g))
            for _ in range(n_sets)]
    entry = {"L": L, "kv_bytes": kv_bytes, "bytes_counted": io_bytes, "kv_copies": n_sets,
             "calls_per_sample": n_calls, "samples": args.sdpa_reps}

    def bw(ms: float) -> dict:
        d = {"gbps": io_bytes / (ms * 1e-3) / 1e9}
        if copy_bw:
            d["frac_of_copy"] = d["gbps"] / copy_bw
        return d

    def calls(sets_, rotate: bool):
        def run_all():
            outs = []
            for i in range(n_calls):
                q, k, v = sets_[i % len(sets_)] if rotate else sets_[0]
                outs.append(F.scaled_dot_product_attention(q, k, v, enable_gqa=(k.shape[1] != H)))
            return outs
        return run_all

    # correctness: default call vs an fp32 reference with explicit repeat_interleave
    # (query head h reads kv head h // 4)
    ref = None
    if L <= args.sdpa_check_max:
        q, k, v = sets[0]
        kr = k.float().repeat_interleave(groups, dim=1)
        vr = v.float().repeat_interleave(groups, dim=1)
        p = torch.softmax((q.float() @ kr.transpose(-1, -2)) / math.sqrt(D), dim=-1)
        ref = p @ vr
        del kr, vr, p

    def check(out) -> float | None:
        return None if ref is None else float((out.float() - ref).abs().max())

    q0, k0, v0 = sets[0]
    entry["max_abs_err_vs_fp32"] = check(F.scaled_dot_product_attention(q0, k0, v0, enable_gqa=True))

    # eager, default backend choice, rotating K/V copies
    fn = calls(sets, rotate=True)
    st = stats(clock.samples(fn, reps=args.sdpa_reps, inner=1, warmup=2))
    entry["eager"] = {"ms_per_call": {k: v / n_calls for k, v in st.items() if k != "n"}, **bw(st["median"] / n_calls)}

    def graph_ms(run_all) -> dict:
        gr, keep = cuda_graph_of(run_all)
        st_ = stats(clock.samples(gr.replay, reps=args.sdpa_reps, inner=1, warmup=3))
        del gr, keep
        return {k: v / n_calls for k, v in st_.items() if k != "n"}

    def graph_entry(rotate: bool) -> dict:
        ms_ = graph_ms(calls(sets, rotate=rotate))
        return {"ms_per_call": ms_, **bw(ms_["median"])}

    if clock.cuda:
        # each graph variant guarded on its own: a capture failure keeps the eager figures
        entry["graph_cold"] = guarded(f"sdpa L={L} graph", graph_entry, True)
        if kv_bytes < l2_bytes:
            entry["graph_hot"] = guarded(f"sdpa L={L} graph hot", graph_entry, False)
        else:
            entry["graph_hot"] = "same as graph_cold: K+V larger than L2"
    else:
        entry["graph_cold"] = entry["graph_hot"] = "n/a on cpu"

    # each backend forced (graph replay on a GPU, eager on the CPU)
    if args.sdpa_backends:
        per = {}
        for name in SDPA_BACKENDS:
            if name == "MATH" and L > args.sdpa_math_max:
                per[name] = f"skipped: L > --sdpa-math-max {args.sdpa_math_max}"
                continue

            try:
                with warnings.catch_warnings(record=True) as ws, sdpa_backend_ctx(name):
                    warnings.simplefilter("always")
                    o = F.scaled_dot_product_attention(q0, k0, v0, enable_gqa=True)  # raises if unsupported
                    clock.sync()
            except RuntimeError as e:
                if is_oom(e):
                    raise
                per[name] = {"status": "unsupported", "error": str(e).splitlines()[0][:300] if str(e) else "",
                             "why": [str(w.message)[:300] for w in ws][:6]}
                free_memory()
                continue
            d = {"max_abs_err_vs_fp32": check(o)}
            del o

            def timed_backend(name=name):
                with sdpa_backend_ctx(name):
                    if clock.cuda:
                        ms_ = graph_ms(calls(sets, rotate=True))
                        return {"graph_cold": {"ms_per_call": ms_, **bw(ms_["median"])}}
                    st_ = stats(clock.samples(calls(sets, True), reps=args.sdpa_reps))
                    return {"eager": {"ms_per_call": {k: v / n_calls for k, v in st_.items() if k != "n"}}}

            t = guarded(f"sdpa L={L} {name}", timed_backend)
            per[name] = {**d, **t}
        entry["backends"] = per

    # K/V expanded to 32 heads beforehand (repeat_interleave, not timed): 4x the bytes read
    if args.sdpa_expanded and L <= args.sdpa_expanded_max:
        del sets
        free_memory()
        exp_bytes = 2 * H * L * D * 2
        n_exp = max(1, min(64, math.ceil(cold_total / exp_bytes)))
        g2 = torch.Generator(device=dev).manual_seed(args.seed + L + 7)
        sets_e = []
        for _ in range(n_exp):
            k = torch.randn(1, KVH, L, D, device=dev, dtype=torch.bfloat16, generator=g2)
            v = torch.randn(1, KVH, L, D, device=dev, dtype=torch.bfloat16, generator=g2)
            sets_e.append((torch.randn(1, H, 1, D, device=dev, dtype=torch.bfloat16, generator=g2),
                           k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)))
            del k, v
        run = calls(sets_e, rotate=True)

        def expanded() -> dict:
            if clock.cuda:
                ms = graph_ms(run)
            else:
                st_ = stats(clock.samples(run, reps=args.sdpa_reps))
                ms = {k: v / n_calls for k, v in st_.items() if k != "n"}
            return {"ms_per_call": ms, "kv_bytes_read": exp_bytes, "kv_copies": n_exp, **bw(ms["median"]),
                    "physical_gbps": (exp_bytes + 2 * H * D * 2) / (ms["median"] * 1e-3) / 1e9,
                    "note": "gbps on the GQA cache's bytes (what a GQA kernel must read); "
                            "physical_gbps on the 32-head copies actually read"}

        entry["expanded_graph_cold" if clock.cuda else "expanded_eager"] = guarded(
            f"sdpa L={L} expanded", expanded)
        del sets_e, run
    else:
        del sets
    free_memory()
    return entry


def part_sdpa(args, dev, clock: Clock, res: Results, budget: Budget) -> dict:
    out = {"shape": {"batch": 1, "q_heads": SDPA_Q_HEADS, "kv_heads": SDPA_KV_HEADS,
                     "head_dim": SDPA_HEAD_DIM, "q_len": 1, "dtype": "bfloat16",
                     "layout": "q [1, 32, 1, 128], k/v [1, 8, L, 128] contiguous"},
           "gqa": "F.scaled_dot_product_attention(q, k, v, enable_gqa=True): K/V stay at 8 heads, "
                  "query head h reads kv head h // 4 (checked against an fp32 repeat_interleave "
                  "reference, max_abs_err_vs_fp32); 'expanded_*' = K/V repeat_interleave'd to 32 "
                  "heads beforehand and called without enable_gqa",
           "timing": "CUDA events; eager = calls_per_sample back-to-back launches per sample, "
                     "graph = the same calls captured in one torch.cuda.CUDAGraph, replayed; "
                     "ms_per_call = sample time / calls_per_sample, median over samples",
           "lengths": {}}
    res.d["sdpa"] = out
    props = torch.cuda.get_device_properties(dev) if dev.type == "cuda" else None
    l2 = int(getattr(props, "L2_cache_size", 0) or 0) if props else 0
    out["l2_bytes"] = l2
    cbw = copy_gbps(res)
    for i, L in enumerate(args.sdpa_lengths):
        if not budget.left():
            out["lengths"][str(L)] = budget.skipped()
            continue
        log(f"sdpa L={L} ...")
        e = guarded(f"sdpa L={L}", sdpa_one, L, args, dev, clock, l2, cbw)
        out["lengths"][str(L)] = e
        if "eager" in e:
            gc_ = e.get("graph_cold")
            gtxt = (f"graph {gc_['ms_per_call']['median'] * 1e3:.1f} us {gc_['gbps']:.0f} GB/s"
                    if isinstance(gc_, dict) and "ms_per_call" in gc_ else f"graph {gc_}")
            log(f"  eager {e['eager']['ms_per_call']['median'] * 1e3:.1f} us, {gtxt}")
        res.save()
    return out


def part_sdpa_kernels(args, dev, res: Results) -> None:
    """Kernel names (torch.profiler) of the default SDPA call at each L, and of each backend at
    --sdpa-profile-length. Run last: a profiler session can leave CUPTI hooks behind that slow
    later launches, so no timing follows it."""
    sd = res.d.get("sdpa")
    if not isinstance(sd, dict) or dev.type != "cuda" or args.no_profile:
        return
    H, KVH, D = SDPA_Q_HEADS, SDPA_KV_HEADS, SDPA_HEAD_DIM
    out = {}
    sd["kernels"] = out
    log("sdpa: kernel names (torch.profiler) ...")

    def one(L):
        g = torch.Generator(device=dev).manual_seed(args.seed)
        q = torch.randn(1, H, 1, D, device=dev, dtype=torch.bfloat16, generator=g)
        k = torch.randn(1, KVH, L, D, device=dev, dtype=torch.bfloat16, generator=g)
        v = torch.randn(1, KVH, L, D, device=dev, dtype=torch.bfloat16, generator=g)
        call = lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
        call()
        d = {"default": kernel_names(call, dev)}
        if L == args.sdpa_profile_length:
            for name in SDPA_BACKENDS:
                b = (sd["lengths"].get(str(L)) or {}).get("backends", {}).get(name)
                if isinstance(b, dict) and ("graph_cold" in b or "eager" in b):
                    with sdpa_backend_ctx(name):
                        d[name] = kernel_names(call, dev)
        q = k = v = None
        return d

    for L in args.sdpa_lengths:
        e = sd["lengths"].get(str(L))
        if isinstance(e, dict) and "eager" in e:
            out[str(L)] = guarded(f"kernels L={L}", one, L)
    free_memory()
    res.save()


@contextlib.contextmanager
def record_sdpa(log_to: dict):
    """Record how transformers calls torch's SDPA (shapes, mask, is_causal, enable_gqa): the first
    call of each distinct signature."""
    orig = torch.nn.functional.scaled_dot_product_attention

    def wrapper(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                enable_gqa=False, **kw):
        sig = (f"q{tuple(query.shape)} k{tuple(key.shape)} mask={None if attn_mask is None else tuple(attn_mask.shape)} "
               f"is_causal={is_causal} enable_gqa={enable_gqa}")
        log_to[sig] = log_to.get(sig, 0) + 1
        return orig(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                    scale=scale, enable_gqa=enable_gqa, **kw)

    torch.nn.functional.scaled_dot_product_attention = wrapper
    try:
        yield
    finally:
        torch.nn.functional.scaled_dot_product_attention = orig


# --------------------------------------------------------------------------- model

def llama_config(tiny: bool):
    from transformers import LlamaConfig
    s = TINY if tiny else LLAMA8B
    rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": s["rope_original_max"]}
    return LlamaConfig(vocab_size=s["vocab_size"], hidden_size=s["hidden_size"],
                       intermediate_size=s["intermediate_size"],
                       num_hidden_layers=s["num_hidden_layers"],
                       num_attention_heads=s["num_attention_heads"],
                       num_key_value_heads=s["num_key_value_heads"], head_dim=s["head_dim"],
                       max_position_embeddings=s["max_position_embeddings"],
                       rms_norm_eps=s["rms_norm_eps"], rope_parameters=rope,
                       tie_word_embeddings=False, bos_token_id=s["bos_token_id"],
                       eos_token_id=s["eos_token_id"], initializer_range=0.02,
                       attention_bias=False, mlp_bias=False, hidden_act="silu")


class ModelHolder:
    """The random-weight model, built once (on the device, in bf16) for hf and kvpress."""

    def __init__(self, args, dev, clock):
        self.args, self.dev, self.clock = args, dev, clock
        self.model = None
        self.info: dict | None = None

    def get(self):
        if self.model is not None:
            return self.model, self.info
        import transformers
        from transformers import LlamaForCausalLM
        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        cfg = llama_config(self.args.tiny)
        seed_all(self.args.seed)
        log("model: building random-weight Llama on the device ...")
        t = time.perf_counter()
        with torch.device(self.dev):
            model = LlamaForCausalLM._from_config(cfg, dtype=torch.bfloat16, attn_implementation="sdpa")
        model.eval()
        model.requires_grad_(False)
        self.clock.sync()
        init_s = time.perf_counter() - t
        params = dict(model.named_parameters())
        p_total = sum(p.numel() for p in params.values())
        p_embed = model.model.embed_tokens.weight.numel()
        p_head = model.lm_head.weight.numel()
        p_layers = p_total - p_embed - p_head
        devs = sorted({str(p.device) for p in params.values()})
        dtypes = sorted({str(p.dtype) for p in params.values()})
        m = model.model
        kv_bytes_per_token = cfg.num_hidden_layers * 2 * cfg.num_key_value_heads * cfg.head_dim * 2
        self.info = {
            "config": {k: getattr(cfg, k) for k in (
                "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings",
                "rms_norm_eps", "rope_parameters", "tie_word_embeddings", "bos_token_id",
                "eos_token_id")},
            "attn_implementation": model.config._attn_implementation,
            "weights": "random, transformers' own init (normal std 0.02, norms 1), built on the "
                       "device in bfloat16 (LlamaForCausalLM._from_config(dtype=bfloat16) under "
                       "torch.device), seed " + str(self.args.seed),
            "init_s": init_s, "param_devices": devs, "param_dtypes": dtypes,
            "rotary_inv_freq_dtype": str(getattr(m.rotary_emb, "inv_freq", torch.empty(0)).dtype),
            "params_total": p_total, "params_embed": p_embed, "params_lm_head": p_head,
            "params_layers_and_norm": p_layers,
            "weight_bytes": 2 * p_total,
            "weight_bytes_read_per_decode_step": 2 * (p_total - p_embed + cfg.hidden_size),
            "kv_bytes_per_token": kv_bytes_per_token,
            "allocated_after_init_gib": alloc_gib(self.dev),
        }
        log(f"  {p_total / 1e9:.3f} B params in {init_s:.1f}s on {devs} {dtypes}")
        self.model, self.cfg = model, cfg
        return model, self.info

    def drop(self):
        self.model = None
        free_memory()


def prefill_flops(info: dict, T: int) -> float:
    c = info["config"]
    return (2.0 * info["params_layers_and_norm"] * T + 2.0 * info["params_lm_head"]
            + 2.0 * c["num_hidden_layers"] * c["num_attention_heads"] * T * T * c["head_dim"])


def decode_gbps(info: dict, T_mean: float, ms: float) -> float:
    return (info["weight_bytes_read_per_decode_step"] + info["kv_bytes_per_token"] * T_mean) / (ms * 1e-3) / 1e9


def random_ids(vocab: int, n: int, seed: int, dev) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (1, n), generator=g).to(dev)


# --------------------------------------------------------------------------- hf

def hf_one(T: int, args, dev, clock: Clock, holder: ModelHolder, cbw: float | None) -> dict:
    model, info = holder.get()
    N = args.new_tokens
    vocab = info["config"]["vocab_size"]
    eos = info["config"]["eos_token_id"]
    ids = random_ids(vocab, T, args.seed + T, dev)
    e: dict = {"T": T, "new_tokens": N}
    free_memory()
    reset_peak(dev)
    base = alloc_gib(dev)
    with torch.inference_mode():
        # prefill: model forward over T tokens, DynamicCache, logits of the last position only
        fwd = lambda: model(input_ids=ids, use_cache=True, logits_to_keep=1)
        log(f"  hf T={T}: prefill warm-up")
        calls_seen: dict = {}
        with record_sdpa(calls_seen):
            out = fwd()
            o = model(input_ids=out.logits[:, -1].argmax(-1, keepdim=True),
                      past_key_values=out.past_key_values, use_cache=True)
            del o
        e["sdpa_calls_seen"] = {"how": "torch SDPA calls of the warm-up prefill and one decode "
                                       "step (signature: count)", **calls_seen}
        e["logits_finite"] = bool(torch.isfinite(out.logits).all())
        del out
        reps = args.prefill_reps if T < 32768 else max(1, args.prefill_reps - 1)
        times = []
        out = None
        for _ in range(reps):
            out = None  # frees the previous prefill's cache before the next one
            gc.collect()
            ms, out = clock.timed(fwd)
            times.append(ms)
        st = stats(times)
        flops = prefill_flops(info, T)
        e["prefill"] = {"ms": st, "flops": flops, "tflops": flops / (st["median"] * 1e-3) / 1e12,
                        "tokens_per_s": T / (st["median"] * 1e-3),
                        "peak_allocated_gib": peak_gib(dev),
                        "peak_above_start_gib": (peak_gib(dev) - base) if base is not None else None}
        log(f"  hf T={T}: prefill {st['median']:.1f} ms, {e['prefill']['tflops']:.0f} TFLOP/s")

        # decode with the model forward, one token per step, on the prefill's cache
        cache = out.past_key_values
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        del out
        marks = []
        if clock.cuda:
            marks = [torch.cuda.Event(enable_timing=True) for _ in range(N + 1)]
        clock.sync()
        t0 = time.perf_counter()
        wall_marks = [t0]
        for i in range(N):
            if clock.cuda:
                marks[i].record()
            o = model(input_ids=nxt, past_key_values=cache, use_cache=True)
            nxt = o.logits[:, -1].argmax(-1, keepdim=True)
            del o
            if not clock.cuda:
                wall_marks.append(time.perf_counter())
        if clock.cuda:
            marks[N].record()
        clock.sync()
        wall = (time.perf_counter() - t0) * 1e3
        steps = ([marks[i].elapsed_time(marks[i + 1]) for i in range(N)] if clock.cuda else
                 [(wall_marks[i + 1] - wall_marks[i]) * 1e3 for i in range(N)])
        st = stats(steps)
        T_mean = T + (N + 1) / 2
        e["decode_forward"] = {
            "how": "model(input_ids=[[tok]], past_key_values=cache) per step, greedy argmax, "
                   "CUDA events at step boundaries (CPU launch overhead included)",
            "ms_per_token": st, "wall_ms_per_token": wall / N,
            "gbps": decode_gbps(info, T_mean, st["median"]),
            "cache_len_after": int(cache.get_seq_length())}
        del cache, nxt
        log(f"  hf T={T}: decode (forward loop) {st['median']:.2f} ms/token")
        if cbw:
            e["decode_forward"]["frac_of_copy"] = e["decode_forward"]["gbps"] / cbw
        free_memory()

        # generate: greedy, forced length; decode ms/token = (t(1 + N) - t(1)) / N
        reset_peak(dev)
        am = torch.ones_like(ids)

        def gen(n):
            clock.sync()
            t = time.perf_counter()
            o = model.generate(input_ids=ids, attention_mask=am, max_new_tokens=n, min_new_tokens=n,
                               do_sample=False, num_beams=1, use_cache=True, pad_token_id=eos,
                               eos_token_id=eos)
            clock.sync()
            return (time.perf_counter() - t) * 1e3, int(o.shape[1] - T)

        t1, n1 = gen(1)
        tn, nn_ = gen(1 + N)
        ms_tok = (tn - t1) / N
        e["generate"] = {
            "how": "model.generate(max_new_tokens=n, min_new_tokens=n, do_sample=False), wall clock; "
                   "ms_per_token = (t(n=1+N) - t(n=1)) / N",
            "ms_n1": t1, "ms_n": tn, "new_tokens_n1": n1, "new_tokens_n": nn_,
            "ms_per_token": ms_tok, "gbps": decode_gbps(info, T_mean, ms_tok),
            "peak_allocated_gib": peak_gib(dev),
            "peak_above_start_gib": (peak_gib(dev) - base) if base is not None else None}
        log(f"  hf T={T}: generate {ms_tok:.2f} ms/token (n={nn_}), peak {peak_gib(dev) or 0:.1f} GiB")
    free_memory()
    return e


def part_hf(args, dev, clock: Clock, res: Results, budget: Budget, holder: ModelHolder) -> dict:
    out = {"contexts": {}}
    res.d["hf"] = out
    r = guarded("hf model", holder.get)
    if isinstance(r, dict):  # failed
        out["model"] = r
        res.save()
        return out
    out["model"] = holder.info
    res.save()
    for T in args.hf_contexts:
        if not budget.left():
            out["contexts"][str(T)] = budget.skipped()
            continue
        log(f"hf T={T} ...")
        out["contexts"][str(T)] = guarded(f"hf T={T}", hf_one, T, args, dev, clock, holder,
                                           copy_gbps(res))
        res.save()
    return out


# --------------------------------------------------------------------------- kvpress

def import_kvpress(force_stubs: bool) -> tuple[types.ModuleType, dict]:
    """Import kvpress. Its __init__ imports datasets, fire and cachetools (for presses not used
    here). If that import fails on this machine, those three are replaced by inert stubs and the
    import is retried; the JSON says so."""
    note = {"stubbed_modules": []}

    def stub(name):
        m = types.ModuleType(name)
        m.__dict__["__stub__"] = True
        if name == "datasets":
            def load_dataset(*a, **k):
                raise RuntimeError("datasets is stubbed in gpu_reference.py")
            m.load_dataset = load_dataset
        elif name == "fire":
            def Fire(*a, **k):
                raise RuntimeError("fire is stubbed in gpu_reference.py")
            m.Fire = Fire
        elif name == "cachetools":
            class LRUCache(dict):
                def __init__(self, maxsize=128, *a, **k):
                    super().__init__()
            def cached(*a, **k):
                return lambda f: f
            m.LRUCache, m.cached = LRUCache, cached
        return m

    if not force_stubs:
        try:
            import kvpress
            return kvpress, note
        except Exception as e:  # noqa: BLE001
            note["first_import_error"] = f"{type(e).__name__}: {e}"[:300]
            for k in [k for k in sys.modules if k == "kvpress" or k.startswith("kvpress.")]:
                del sys.modules[k]
    for name in ("datasets", "fire", "cachetools"):
        ok = False
        if not force_stubs:
            try:
                __import__(name)
                ok = True
            except Exception:  # noqa: BLE001
                for k in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
                    del sys.modules[k]
        if not ok:
            sys.modules[name] = stub(name)
            note["stubbed_modules"].append(name)
    import kvpress
    return kvpress, note


def word_tokenizer(vocab: int, bos: int, eos: int):
    """A tokenizer for the random model: token id i is the word 't<i>' (whitespace split), so
    the pipeline's own preprocess turns a text of such words back into exactly those ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    tk = Tokenizer(models.WordLevel(vocab={f"t{i}": i for i in range(vocab)}, unk_token="t0"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token=f"t{bos}", eos_token=f"t{eos}",
                                   unk_token="t0")


def make_press(kvpress, name: str, ratio: float):
    if name == "none":
        return None
    if name == "snapkv":
        return kvpress.SnapKVPress(compression_ratio=ratio)
    if name == "adakv":
        return kvpress.AdaKVPress(kvpress.SnapKVPress(compression_ratio=ratio))
    raise ValueError(name)


def kvpress_one(T: int, press_name: str, args, dev, clock: Clock, holder: ModelHolder, kvpress) -> dict:
    """The steps of KVPressTextGenerationPipeline._forward / generate_answer (kvpress 0.5.5),
    timed separately: prefill of the context under `with press(model)` through model.model (no
    lm_head), then the question forward at positions T.., then greedy steps, each followed by
    the pipeline's `new_id.item() in eos_ids` check (which does not stop the loop here)."""
    from transformers import DynamicCache
    model, info = holder.get()
    N = args.new_tokens
    vocab = info["config"]["vocab_size"]
    ctx = random_ids(vocab, T, args.seed + T, dev)
    qids = random_ids(vocab, args.question_tokens, args.seed + 99, dev)
    press = make_press(kvpress, press_name, args.compression_ratio)
    stop_ids = model.generation_config.eos_token_id
    stop_ids = stop_ids if isinstance(stop_ids, list) else [stop_ids]
    e: dict = {"T": T, "press": press_name, "press_repr": repr(press), "question_tokens": qids.shape[1],
               "new_tokens": N}
    attn_modules = [layer.self_attn for layer in model.model.layers]
    for m in attn_modules:
        m.masked_key_indices = None
    free_memory()
    reset_peak(dev)
    base = alloc_gib(dev)
    with torch.inference_mode():
        cache = DynamicCache()
        clock.sync()
        ctxm = press(model) if press is not None else contextlib.nullcontext()

        def prefill():
            with ctxm:
                model.model(input_ids=ctx, past_key_values=cache)

        ms = clock.one(prefill)
        rows = [int(layer.keys.shape[2]) for layer in cache.layers]
        kv_bytes = sum(layer.keys.numel() * layer.keys.element_size()
                       + layer.values.numel() * layer.values.element_size() for layer in cache.layers)
        masked = [len(m.masked_key_indices[0]) if getattr(m, "masked_key_indices", None) is not None else 0
                  for m in attn_modules]
        kvh = info["config"]["num_key_value_heads"]
        e["prefill_compress"] = {
            "ms": ms, "tokens_per_s": T / (ms * 1e-3),
            "kv_rows_stored_per_layer": sorted(set(rows)), "kv_bytes_stored": kv_bytes,
            "kv_gib_stored": kv_bytes / GiB,
            "masked_entries_per_layer_mean": statistics.fmean(masked),
            "masked_fraction": statistics.fmean(masked) / (kvh * rows[0]) if rows[0] else 0.0,
            "allocated_after_gib": alloc_gib(dev),
            "peak_allocated_gib": peak_gib(dev),
            "peak_above_start_gib": (peak_gib(dev) - base) if base is not None else None}
        log(f"  kvpress T={T} {press_name}: prefill+compress {ms:.1f} ms, rows {sorted(set(rows))}, "
            f"masked {e['prefill_compress']['masked_fraction']:.2f}")

        # question (generate_answer's first forward), then greedy steps
        pos = torch.arange(T, T + qids.shape[1], device=dev).unsqueeze(0)
        qms, out = clock.timed(
            lambda: model(input_ids=qids, past_key_values=cache, position_ids=pos, logits_to_keep=1))
        pos = pos[:, -1:] + 1
        gen = [out.logits[0, -1].argmax()]
        del out
        eos_hits = 0
        steps = []
        for i in range(N):
            def step(i=i):
                o = model(input_ids=gen[-1].unsqueeze(0).unsqueeze(0), past_key_values=cache,
                          position_ids=pos + i)
                gen.append(o.logits[0, -1].argmax())

            steps.append(clock.one(step))
            if gen[-1].item() in stop_ids:
                eos_hits += 1
        clock.sync()
        st = stats(steps)
        rows_read = statistics.fmean(rows) + qids.shape[1] + (N + 1) / 2
        e["decode"] = {
            "how": "per step: model(input_ids=[[tok]], past_key_values=cache, position_ids=...) "
                   "+ argmax + .item() eos check, timed with CUDA events around each step",
            "question_ms": qms, "ms_per_token": st,
            "kv_rows_read_per_step_mean": rows_read,
            "gbps": (info["weight_bytes_read_per_decode_step"]
                     + info["kv_bytes_per_token"] * rows_read) / (st["median"] * 1e-3) / 1e9,
            "eos_hits_not_stopped": eos_hits,
            "cache_len_after": int(cache.get_seq_length()),
            "peak_allocated_gib": peak_gib(dev),
            "peak_above_start_gib": (peak_gib(dev) - base) if base is not None else None}
        log(f"  kvpress T={T} {press_name}: decode {st['median']:.2f} ms/token, "
            f"peak {peak_gib(dev) or 0:.1f} GiB")
        cache = gen = None
    for m in attn_modules:
        m.masked_key_indices = None
    free_memory()
    return e


def kvpress_pipeline_e2e(T: int, press_name: str, args, dev, clock: Clock, holder: ModelHolder,
                         kvpress, tok) -> dict:
    """One call of the real pipeline ('kv-press-text-generation', built by transformers.pipeline),
    wall clock, with the word tokenizer; checks its context ids are BOS + our ids."""
    from transformers import pipeline
    model, info = holder.get()
    vocab = info["config"]["vocab_size"]
    ctx = random_ids(vocab, T, args.seed + T, "cpu")[0].tolist()
    q = random_ids(vocab, args.question_tokens, args.seed + 99, "cpu")[0].tolist()
    text = " " + " ".join(f"t{i}" for i in ctx)
    question = " ".join(f"t{i}" for i in q)
    pipe = pipeline("kv-press-text-generation", model=model, tokenizer=tok)
    pre = pipe.preprocess(text, questions=[question], answer_prefix="", max_context_length=int(1e10))
    ids_ok = pre["context_ids"][0].tolist() == [info["config"]["bos_token_id"]] + ctx and \
        pre["questions_ids"][0][0].tolist() == q
    press = make_press(kvpress, press_name, args.compression_ratio)
    reset_peak(dev)
    clock.sync()
    t = time.perf_counter()
    with torch.inference_mode():
        r = pipe(text, question=question, press=press, max_new_tokens=args.new_tokens)
    clock.sync()
    ms = (time.perf_counter() - t) * 1e3
    for layer in model.model.layers:
        layer.self_attn.masked_key_indices = None
    words = len(r["answer"].split())
    del pipe
    free_memory()
    return {"T": T, "press": press_name, "wall_ms": ms, "ids_match": ids_ok,
            "answer_words": words, "peak_allocated_gib": peak_gib(dev),
            "how": "transformers.pipeline('kv-press-text-generation', model, tokenizer)(context, "
                   "question=..., press=..., max_new_tokens=N): tokenize + prefill/compress + "
                   "question + greedy decode (stops at EOS) + detokenize"}


def part_kvpress(args, dev, clock: Clock, res: Results, budget: Budget, holder: ModelHolder) -> dict:
    out: dict = {"contexts": {}}
    res.d["kvpress"] = out
    imp = guarded("import kvpress", import_kvpress, args.kvpress_stub_deps)
    if isinstance(imp, dict):
        out["import"] = imp
        res.save()
        return out
    kvpress, note = imp
    out["import"] = {**note, "kvpress": pkg_version("kvpress"), "path": str(Path(kvpress.__file__).parent),
                     "attention_patch": "kvpress patches every ALL_ATTENTION_FUNCTIONS entry on "
                                        "import (AdaKV masking); the hf part runs before this import"}
    out["presses"] = {"none": "no press (same code path, for reference)",
                      "snapkv": f"SnapKVPress(compression_ratio={args.compression_ratio}) "
                                "(window_size 64, kernel_size 5): drops rows, cache shrinks",
                      "adakv": f"AdaKVPress(SnapKVPress(compression_ratio={args.compression_ratio})) "
                               "(alpha_safeguard 0.2): head-wise, by masking: all rows stay in the "
                               "cache, masked keys are overwritten by a fake key at every decode "
                               "step, so memory is NOT freed"}
    r = guarded("kvpress model", holder.get)
    if isinstance(r, dict):
        out["model"] = r
        res.save()
        return out
    model, info = r
    res.save()
    for T in args.kv_contexts:
        per: dict = {}
        out["contexts"][str(T)] = per
        if budget.left():
            log(f"kvpress T={T}: warm-up prefill")
            vocab = info["config"]["vocab_size"]
            w = guarded("warm-up", lambda: (model.model(input_ids=random_ids(vocab, T, 1, dev)), None)[1])
            free_memory()
            if isinstance(w, dict):
                per["warmup"] = w
        for p in args.presses:
            if not budget.left():
                per[p] = budget.skipped()
                continue
            per[p] = guarded(f"kvpress T={T} {p}", kvpress_one, T, p, args, dev, clock, holder, kvpress)
            res.save()
    if args.pipeline_check:
        out["pipeline_e2e"] = {}
        T = min(args.kv_contexts)
        tok = None
        for p in args.presses:
            if not budget.left():
                out["pipeline_e2e"][p] = budget.skipped()
                continue
            if tok is None:
                tok = word_tokenizer(info["config"]["vocab_size"], info["config"]["bos_token_id"],
                                     info["config"]["eos_token_id"])
            log(f"kvpress pipeline end-to-end T={T} {p} ...")
            out["pipeline_e2e"][p] = guarded(f"pipeline {p}", kvpress_pipeline_e2e, T, p, args, dev,
                                             clock, holder, kvpress, tok)
            r_ = out["pipeline_e2e"][p]
            if "wall_ms" in r_:
                log(f"  {r_['wall_ms']:.0f} ms, ids_match {r_['ids_match']}, {r_['answer_words']} words")
            res.save()
    return out


# --------------------------------------------------------------------------- summary

def fmt(x, spec: str, default: str = "-") -> str:
    try:
        return format(x, spec)
    except (TypeError, ValueError):
        return default


def summary(res: Results) -> str:
    d = res.d
    lines = []
    dv = d.get("device") or {}
    if dv:
        c, m = dv.get("copy", {}), dv.get("matmul", {})
        lines.append(f"device: {d['meta'].get('device_name')}  copy {fmt(c.get('gbps'), '.0f')} GB/s "
                     f"(read+write)  bf16 matmul {fmt(m.get('tflops'), '.0f')} TFLOP/s")
    sd = d.get("sdpa")
    if sd:
        lines.append("")
        lines.append("sdpa decode, 32 q heads / 8 kv heads / d 128, enable_gqa=True, bf16  (us per call; GB/s on K+V)")
        lines.append(f"{'L':>8} {'K+V MiB':>8} {'eager':>8} {'graph':>8} {'GB/s':>6} {'%copy':>6} "
                     f"{'hot':>8} {'expanded':>9}  backends (graph us)")
        if sd.get("status"):
            lines.append(f"  {sd['status']}")
        for L, e in (sd.get("lengths") or {}).items():
            if "eager" not in e:
                lines.append(f"{L:>8} {e.get('status')}")
                continue
            gc_ = e.get("graph_cold") if isinstance(e.get("graph_cold"), dict) else {}
            gh = e.get("graph_hot") if isinstance(e.get("graph_hot"), dict) else {}
            ex = e.get("expanded_graph_cold") or e.get("expanded_eager") or {}
            be = []
            for name, b in (e.get("backends") or {}).items():
                if isinstance(b, dict) and "graph_cold" in b:
                    be.append(f"{name.split('_')[0].lower()} {b['graph_cold']['ms_per_call']['median'] * 1e3:.1f}")
                elif isinstance(b, dict) and "eager" in b:
                    be.append(f"{name.split('_')[0].lower()} {b['eager']['ms_per_call']['median'] * 1e3:.1f}")
                elif isinstance(b, dict):
                    be.append(f"{name.split('_')[0].lower()} {b.get('status')}")
            us = lambda x: (fmt(x["ms_per_call"]["median"] * 1e3, ".1f") if "ms_per_call" in x
                            else str(x.get("status", "-")))
            pct = 100 * gc_["frac_of_copy"] if "frac_of_copy" in gc_ else None
            lines.append(f"{L:>8} {e['kv_bytes'] / 2**20:8.1f} {us(e['eager']):>8} {us(gc_):>8} "
                         f"{fmt(gc_.get('gbps'), '.0f'):>6} {fmt(pct, '.0f'):>6} "
                         f"{us(gh):>8} {us(ex):>9}  {', '.join(be)}")
    hf = d.get("hf")
    if hf:
        lines.append("")
        lines.append(f"hf transformers {d['meta'].get('transformers')}, random "
                     f"{'tiny Llama' if d['meta']['args'].get('tiny') else 'Llama-3.1-8B shapes'}, bf16, sdpa")
        if hf.get("status"):
            lines.append(f"  {hf['status']}")
        lines.append(f"{'T':>7} {'prefill ms':>10} {'TFLOP/s':>8} {'tok/s':>8} {'dec ms/tok':>10} "
                     f"{'gen ms/tok':>10} {'dec GB/s':>8} {'peak GiB':>8}")
        for T, e in (hf.get("contexts") or {}).items():
            if "prefill" not in e:
                lines.append(f"{T:>7} {e.get('status')}")
                continue
            p, df, g = e["prefill"], e.get("decode_forward", {}), e.get("generate", {})
            peaks = [x for x in (p.get("peak_allocated_gib"), g.get("peak_allocated_gib")) if x is not None]
            lines.append(f"{T:>7} {p['ms']['median']:10.1f} {p['tflops']:8.0f} {p['tokens_per_s']:8.0f} "
                         f"{fmt(df.get('ms_per_token', {}).get('median'), '.2f'):>10} "
                         f"{fmt(g.get('ms_per_token'), '.2f'):>10} {fmt(df.get('gbps'), '.0f'):>8} "
                         f"{fmt(max(peaks, default=None), '.1f'):>8}")
    kv = d.get("kvpress")
    if kv and kv.get("status"):
        lines.append("")
        lines.append(f"kvpress: {kv['status']}")
    if kv and kv.get("contexts"):
        lines.append("")
        lines.append(f"kvpress {kv.get('import', {}).get('kvpress')}, compression ratio "
                     f"{d['meta']['args'].get('compression_ratio')}")
        lines.append(f"{'T':>7} {'press':>7} {'prefill+press ms':>16} {'dec ms/tok':>10} {'kv rows':>8} "
                     f"{'masked':>6} {'kv GiB':>7} {'peak GiB':>8}")
        for T, per in kv["contexts"].items():
            for p, e in per.items():
                if p == "warmup":
                    continue
                if "prefill_compress" not in e:
                    lines.append(f"{T:>7} {p:>7} {e.get('status')}")
                    continue
                pc, dc = e["prefill_compress"], e.get("decode", {})
                lines.append(f"{T:>7} {p:>7} {pc['ms']:16.1f} "
                             f"{fmt(dc.get('ms_per_token', {}).get('median'), '.2f'):>10} "
                             f"{'/'.join(map(str, pc['kv_rows_stored_per_layer'])):>8} "
                             f"{pc['masked_fraction']:6.2f} {pc['kv_gib_stored']:7.2f} "
                             f"{fmt(dc.get('peak_allocated_gib'), '.1f'):>8}")
        for p, e in (kv.get("pipeline_e2e") or {}).items():
            if "wall_ms" in e:
                lines.append(f"  pipeline end-to-end T={e['T']} {p}: {e['wall_ms']:.0f} ms, "
                             f"ids_match {e['ids_match']}, answer {e['answer_words']} tokens")
            else:
                lines.append(f"  pipeline end-to-end {p}: {e.get('status')}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main

def ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x.strip()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="device,sdpa,hf,kvpress",
                    help="comma list of device,sdpa,hf,kvpress (default all)")
    ap.add_argument("--out", default="gpu_reference.json", help="JSON output path ('' for none)")
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu (smoke test)")
    ap.add_argument("--tiny", action="store_true",
                    help="small sizes everywhere (tiny Llama, short contexts): a smoke test of the code paths")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget-s", type=float, default=400.0,
                    help="skip the remaining items once the run has lasted this long (default 400)")
    ap.add_argument("--copy-gib", type=float, default=None, help="copy size (default 4 GiB)")
    ap.add_argument("--copy-reps", type=int, default=20)
    ap.add_argument("--matmul-n", type=int, default=None, help="default 8192")
    ap.add_argument("--matmul-reps", type=int, default=10)
    ap.add_argument("--sdpa-lengths", type=ints, default=None,
                    help="default 4096,8192,...,1048576 (powers of two)")
    ap.add_argument("--sdpa-reps", type=int, default=30, help="timed samples per variant")
    ap.add_argument("--sdpa-min-calls", type=int, default=8, help="calls per timed sample (at least)")
    ap.add_argument("--sdpa-cold-mib", type=int, default=None,
                    help="K/V copies rotated per sample total at least this many MiB and 4 x L2 "
                         "(default 256; 4 with --tiny)")
    ap.add_argument("--sdpa-backends", action=argparse.BooleanOptionalAction, default=True,
                    help="also time each SDPA backend forced (default on)")
    ap.add_argument("--sdpa-math-max", type=int, default=131072, help="largest L for the MATH backend")
    ap.add_argument("--sdpa-expanded", action=argparse.BooleanOptionalAction, default=True,
                    help="also time K/V pre-expanded to 32 heads (default on)")
    ap.add_argument("--sdpa-expanded-max", type=int, default=262144)
    ap.add_argument("--sdpa-check-max", type=int, default=131072,
                    help="largest L checked against an fp32 reference")
    ap.add_argument("--sdpa-profile-length", type=int, default=16384,
                    help="L at which each backend's kernel names are recorded")
    ap.add_argument("--no-profile", action="store_true", help="do not record kernel names (torch.profiler)")
    ap.add_argument("--hf-contexts", type=ints, default=None, help="default 8192,32768")
    ap.add_argument("--new-tokens", type=int, default=None, help="decode steps measured (default 32)")
    ap.add_argument("--prefill-reps", type=int, default=3,
                    help="timed prefills per context (one fewer from 32768 on), after one warm-up")
    ap.add_argument("--kv-contexts", type=ints, default=None, help="default 8192,32768")
    ap.add_argument("--presses", default="none,snapkv,adakv", help="comma list of none,snapkv,adakv")
    ap.add_argument("--compression-ratio", type=float, default=0.5)
    ap.add_argument("--question-tokens", type=int, default=None,
                    help="question length (default 16; 8 with --tiny). AdaKV's decode searches a "
                         "key with a negative dot product with all 4 x question queries of a kv head "
                         "(kvpress raises otherwise); for random-weight queries that is reliable "
                         "while 4 x question tokens <= head_dim")
    ap.add_argument("--pipeline-check", action=argparse.BooleanOptionalAction, default=True,
                    help="also run the real kv-press-text-generation pipeline once per press at the "
                         "smallest context (default on)")
    ap.add_argument("--kvpress-stub-deps", action="store_true",
                    help="replace datasets/fire/cachetools by stubs before importing kvpress")
    args = ap.parse_args()

    tiny = args.tiny
    if args.copy_gib is None:
        args.copy_gib = 0.0625 if tiny else 4.0
    if args.matmul_n is None:
        args.matmul_n = 256 if tiny else 8192
    if args.sdpa_lengths is None:
        args.sdpa_lengths = [256, 1024] if tiny else [4096 << i for i in range(9)]
    if args.hf_contexts is None:
        args.hf_contexts = [256, 512] if tiny else [8192, 32768]
    if args.kv_contexts is None:
        args.kv_contexts = [256, 512] if tiny else [8192, 32768]
    if args.sdpa_cold_mib is None:
        args.sdpa_cold_mib = 4 if tiny else 256
    if args.new_tokens is None:
        args.new_tokens = 6 if tiny else 32
    if args.question_tokens is None:
        args.question_tokens = 8 if tiny else 16
    if tiny:
        args.sdpa_reps = min(args.sdpa_reps, 3)
        args.sdpa_min_calls = min(args.sdpa_min_calls, 2)
        args.copy_reps = min(args.copy_reps, 3)
        args.matmul_reps = min(args.matmul_reps, 3)
        args.sdpa_profile_length = min(args.sdpa_lengths)
    args.presses = [p for p in args.presses.split(",") if p]
    parts = [p for p in args.parts.split(",") if p]
    for p in parts:
        if p not in ("device", "sdpa", "hf", "kvpress"):
            ap.error(f"unknown part {p}")

    dev = torch.device(args.device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            print("CUDA is not available (use --device cpu --tiny for a smoke test)", file=sys.stderr)
            return 2
        dev = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(dev)
    clock = Clock(dev)
    seed_all(args.seed)

    meta = {"script": "tools/reference/gpu_reference.py", "argv": sys.argv[1:],
            "args": {k: v for k, v in vars(args).items()},
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "python": platform.python_version(),
            "torch": torch.__version__, "cuda_runtime": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if dev.type == "cuda" else None,
            "numpy": np.__version__,
            "transformers": pkg_version("transformers"), "tokenizers": pkg_version("tokenizers"),
            "huggingface_hub": pkg_version("huggingface_hub"), "accelerate": pkg_version("accelerate"),
            "kvpress": pkg_version("kvpress"), "host": platform.node(), "dtype": "bfloat16"}
    if dev.type == "cuda":
        pr = torch.cuda.get_device_properties(dev)
        meta.update({"device_name": pr.name, "sm_count": pr.multi_processor_count,
                     "capability": f"{pr.major}.{pr.minor}", "total_memory_gib": pr.total_memory / GiB,
                     "l2_bytes": int(getattr(pr, "L2_cache_size", 0) or 0),
                     "device_count": torch.cuda.device_count()})
    else:
        meta.update({"device_name": "cpu", "threads": torch.get_num_threads()})
    res = Results(Path(args.out) if args.out else None, meta)
    log(f"gpu_reference: {meta['device_name']}, torch {torch.__version__}, transformers "
        f"{meta['transformers']}, kvpress {meta['kvpress']}, parts {parts}")
    res.save()
    budget = Budget(args.budget_s)
    holder = ModelHolder(args, dev, clock)

    if "device" in parts:
        part_device(args, dev, clock, res)
    if "sdpa" in parts:
        if budget.left():
            part_sdpa(args, dev, clock, res, budget)
        else:
            res.d["sdpa"] = budget.skipped()
    if "hf" in parts:
        if budget.left():
            part_hf(args, dev, clock, res, budget, holder)
        else:
            res.d["hf"] = budget.skipped()
    if "kvpress" in parts:
        if budget.left():
            part_kvpress(args, dev, clock, res, budget, holder)
        else:
            res.d["kvpress"] = budget.skipped()
    holder.drop()
    if "sdpa" in parts and budget.left():
        part_sdpa_kernels(args, dev, res)
    res.save()
    try:
        print("\n" + summary(res), flush=True)
    except Exception:  # noqa: BLE001 - the JSON is written already
        traceback.print_exc()
    if res.path:
        log(f"wrote {res.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
