#!/usr/bin/env python3
"""Markdown tables for docs/benchmarks.md from one GPU session's JSON files:
cuda_bench.json (bench/cuda/cuda_bench --json) and gpu_reference.json
(tools/reference/gpu_reference.py --out), measured on the same kind of GPU.

    python3 tools/gpu/report.py CUDA_BENCH.json GPU_REFERENCE.json
"""
import json
import sys


def attention(ours, ref):
    sdpa = ref.get("sdpa", {}).get("lengths", {})
    print("| rows per kv head | ours, uniform (us) | ours, 16:1 skew (us) | skew / uniform | ours GB/s (% of copy) | SDPA eager / graph (us) |")
    print("| --- | --- | --- | --- | --- | --- |")
    cases = ours["attention"]
    for i in range(0, len(cases), 2):
        u, s = cases[i], cases[i + 1]
        L = u["lens"][0]
        ref_row = sdpa.get(str(L))
        ref_txt = "-"
        if ref_row:
            eager = 1e3 * ref_row["eager"]["ms_per_call"]["median"]
            graph = 1e3 * ref_row["graph_cold"]["ms_per_call"]["median"]
            ref_txt = f"{eager:.1f} / {graph:.1f}"
        print(f"| {L} | {u['us']:.1f} | {s['us']:.1f} | {s['us'] / u['us']:.2f} | "
              f"{u['gbs']:.0f} ({100 * u['of_copy']:.0f}%) | {ref_txt} |")


def decode(ours):
    print("| context | ratio | head lengths | ms/token | GB/s read (weights + kept KV) | % of copy | KV GiB | peak GiB during decode | allocations in decode |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for d in ours["decode"]:
        print(f"| {d['context']} | {d['ratio']} | {'head-wise' if d['headwise'] else 'uniform'} | "
              f"{d['ms_per_token']:.2f} | {d['gbs']:.0f} | {100 * d['of_copy']:.0f}% | "
              f"{d['kv_bytes'] / 2**30:.2f} | {d['peak_bytes'] / 2**30:.2f} | "
              f"{'yes' if d['allocated_during_decode'] else 'none'} |")


def prefill(ours):
    print("| tokens | press (ratio 0.5) | prefill s | TFLOP/s | compression s | share of prefill | peak GiB |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for p in ours["prefill"]:
        print(f"| {p['tokens']} | {p['press']} | {p['seconds']:.3f} | {p['tflops']:.1f} | "
              f"{p['compress_s']:.3f} | {100 * p['compress_s'] / p['seconds']:.1f}% | "
              f"{p['peak_bytes'] / 2**30:.2f} |")


def main():
    ours = json.load(open(sys.argv[1]))
    ref = json.load(open(sys.argv[2])) if len(sys.argv) > 2 else {}
    print(f"device {ours['device']}; copy {ours['copy_gbs']:.0f} GB/s (read + write)\n")
    if "attention" in ours:
        attention(ours, ref)
        print()
    if "decode" in ours:
        decode(ours)
        print()
    if "prefill" in ours:
        prefill(ours)


if __name__ == "__main__":
    main()
