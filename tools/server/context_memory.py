#!/usr/bin/env python3
"""Stored-context memory of `kvpress serve`, as the server itself reports it.

Starts two servers in turn on loopback ports. Each stores N contexts of about T tokens (cut
from src/eval/default_haystack.txt, a different slice each), the first pressed at a ratio,
the second uncompressed, and reads back /v1/contexts and /metrics. Then a third server
with a budget that holds only part of the compressed set stores them all again and checks
that eviction kept the store under its budget all along.

    python3 tools/server/context_memory.py --kvpress build/kvpress [--contexts 20]
        [--tokens 4096] [--press knorm] [--ratio 0.5] [--json]

Exit 1 when the compressed store is not near (1 - ratio) of the uncompressed one (within
5 points), when /metrics and /v1/contexts disagree, or when the budget is exceeded.
Standard library only.
"""
import argparse
import json
import pathlib
import re
import subprocess
import sys
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def start(kvpress, extra):
    proc = subprocess.Popen([kvpress, "serve", "--model", str(MODEL), "--port", "0", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    m = re.search(r"listening on (http://\S+)", line)
    if not m:
        proc.kill()
        sys.exit(f"context_memory: the server did not start: {line!r}")
    return proc, m.group(1)


def call(url, path, body=None, method=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=900) as r:
        text = r.read().decode()
    return json.loads(text) if path != "/metrics" else text


def metric(text, name):
    m = re.search(rf"^{name} (\d+)$", text, re.M)
    return int(m.group(1)) if m else None


def texts(n, tokens):
    words = (ROOT / "src" / "eval" / "default_haystack.txt").read_text().split()
    # ~1.13 tokens per word of this filler (measured), so a context lands near `tokens`
    # (the chat template adds a few); each context starts at another word.
    per = int(tokens / 1.13)
    return [" ".join((words * 4)[i * 997 % len(words):][:per]) for i in range(n)]


def fill(kvpress, n, tokens, press, budget_mib, log):
    extra = ["--context-budget-mib", str(budget_mib)]
    proc, url = start(kvpress, extra)
    peak, created = 0, []
    try:
        for i, text in enumerate(texts(n, tokens)):
            body = {"text": text}
            if press:
                body["kv_press"] = press
            t0 = time.time()
            c = call(url, "/v1/contexts", body)
            created.append(c)
            listing = call(url, "/v1/contexts")
            peak = max(peak, listing["kv_bytes"])
            log(f"  context {i + 1}/{n}: {c['context_tokens']} tokens, {c['kv_bytes'] / 2**20:.1f} MiB"
                f" ({time.time() - t0:.1f} s); store {listing['kv_bytes'] / 2**20:.1f} MiB,"
                f" {len(listing['data'])} held")
        listing = call(url, "/v1/contexts")
        metrics = call(url, "/metrics")
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return {"contexts": created, "listing": listing, "metrics": metrics, "peak": peak,
            "budget": budget_mib << 20}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kvpress", default=str(ROOT / "build" / "kvpress"))
    ap.add_argument("--contexts", type=int, default=20)
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--press", default="knorm")
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    log = (lambda s: print(s, file=sys.stderr, flush=True))
    press = {"press": a.press, "ratio": a.ratio}
    log(f"compressed ({a.press} {a.ratio}):")
    comp = fill(a.kvpress, a.contexts, a.tokens, press, 1 << 16, log)
    log("uncompressed:")
    full = fill(a.kvpress, a.contexts, a.tokens, None, 1 << 16, log)
    # A budget for about a third of the compressed set: eviction must hold it.
    per = comp["listing"]["kv_bytes"] / max(1, len(comp["listing"]["data"]))
    small_mib = max(1, int(per * a.contexts / 3) >> 20)
    log(f"compressed again with a {small_mib} MiB budget:")
    evict = fill(a.kvpress, a.contexts, a.tokens, press, small_mib, log)

    failures = []
    for name, run in (("compressed", comp), ("uncompressed", full), ("budget", evict)):
        m = run["metrics"]
        if metric(m, "kvpress_context_kv_bytes") != run["listing"]["kv_bytes"]:
            failures.append(f"{name}: /metrics and /v1/contexts disagree on kv_bytes")
        if metric(m, "kvpress_contexts_stored") != len(run["listing"]["data"]):
            failures.append(f"{name}: /metrics and /v1/contexts disagree on the count")
    share = comp["listing"]["kv_bytes"] / full["listing"]["kv_bytes"]
    if abs(share - (1 - a.ratio)) > 0.05:
        failures.append(f"compressed/uncompressed = {share:.3f}, expected about {1 - a.ratio:.2f}")
    if evict["peak"] > evict["budget"]:
        failures.append(f"store peaked at {evict['peak']} bytes over its budget {evict['budget']}")
    evictions = metric(evict["metrics"], "kvpress_context_evictions_total")
    if not evictions:
        failures.append("the small budget evicted nothing")
    result = {
        "contexts": a.contexts,
        "tokens_per_context": [c["context_tokens"] for c in comp["contexts"]][:3],
        "press": press,
        "compressed_kv_bytes": comp["listing"]["kv_bytes"],
        "uncompressed_kv_bytes": full["listing"]["kv_bytes"],
        "compressed_share": round(share, 4),
        "budget_run": {"budget_bytes": evict["budget"], "peak_kv_bytes": evict["peak"],
                       "held": len(evict["listing"]["data"]), "evictions": evictions},
        "failures": failures,
    }
    if a.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{a.contexts} contexts of ~{a.tokens} tokens: compressed {result['compressed_kv_bytes'] / 2**20:.1f} MiB,"
              f" uncompressed {result['uncompressed_kv_bytes'] / 2**20:.1f} MiB, share {share:.3f}")
        print(f"budget {evict['budget'] / 2**20:.0f} MiB: peak {evict['peak'] / 2**20:.1f} MiB,"
              f" {result['budget_run']['held']} held, {evictions} evicted")
        for f in failures:
            print("FAIL:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
