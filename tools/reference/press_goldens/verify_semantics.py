#!/usr/bin/env python3
"""Check docs/kvpress-semantics.md against the goldens, without kvpress's press code.

Re-implements every press's scoring and selection from the written spec, with plain
torch ops, on the model's own per-layer tensors (one uncompressed transformers prefill:
post-norm hidden states, post-RoPE keys, values, RoPE tables, q_proj / o_proj weights),
then compares with tests/golden/presses/: scores (against the stored float16) and kept
sets (exact). A port can follow the same recipe. Same pinned versions as
make_press_goldens.py.

    /work/venvs/ref/bin/python tools/reference/press_goldens/verify_semantics.py
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForCausalLM, DynamicCache  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
GOLD = REPO / "tests/golden/presses"
F32MAX = torch.finfo(torch.float32).max


def rotate_half(x):
    d = x.shape[-1] // 2
    return torch.cat((-x[..., d:], x[..., :d]), dim=-1)


def rope(x, cos, sin):
    return x * cos + rotate_half(x) * sin


def n_kept(T, r):
    return 0 if r >= 1 else max(1, int(T * (1.0 - r)))


def topk_set(s, n):
    return set(s.topk(n).indices.tolist())


class Layer:
    """What the press hook sees for one layer (batch row 0)."""

    def __init__(self, attn, h, cos, sin, k, v, cfg):
        self.attn, self.h, self.cos, self.sin, self.k, self.v = attn, h, cos, sin, k, v
        self.Hq, self.H, self.d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.G = self.Hq // self.H
        self.T = h.shape[0]

    def q_prerope(self, rows):
        q = self.h[rows] @ self.attn.q_proj.weight.T
        if self.attn.q_proj.bias is not None:
            q = q + self.attn.q_proj.bias
        return q.view(-1, self.Hq, self.d).transpose(0, 1)  # [Hq, n, d]

    def k_rep(self, k=None):
        k = self.k if k is None else k
        return k.repeat_interleave(self.G, dim=0)  # [Hq, T, d]


# ---------------------------------------------------------------- spec re-implementation
def snapkv(L: Layer, W=64, ks=5, h=None, k=None, cos=None, sin=None):
    h = L.h if h is None else h
    k = L.k if k is None else k
    cos = L.cos if cos is None else cos
    sin = L.sin if sin is None else sin
    T = k.shape[1]
    assert T > W
    q = (h[-W:] @ L.attn.q_proj.weight.T).view(W, L.Hq, L.d).transpose(0, 1)
    q = rope(q, cos[-W:], sin[-W:])
    logits = q @ L.k_rep(k).transpose(1, 2) / math.sqrt(L.d)  # [Hq, W, T]
    a = torch.arange(W)[:, None]
    j = torch.arange(T)[None, :]
    logits = logits.masked_fill(j > T - W + a, float("-inf"))
    p = logits.float().softmax(-1)[..., : T - W]
    s = p.mean(1)  # [Hq, T-W]
    s = torch.nn.functional.pad(s, (ks // 2, ks // 2)).unfold(-1, ks, 1).sum(-1) / ks  # zero pad counted
    s = s.view(L.H, L.G, T - W).mean(1)
    return torch.cat([s, torch.full((L.H, W), s.max().item() + 1)], dim=-1)


def expected_attention(L: Layer, rotary, n_future=512, n_sink=4, eps=0.0):
    T = L.T
    q = L.q_prerope(slice(n_sink, None))  # [Hq, N, d], model dtype
    N = q.shape[1]
    mu = q.mean(1)
    c = q - mu[:, None]
    cov = c.transpose(1, 2) @ c / N
    pos = torch.arange(T, T + n_future)[None]
    cos, sin = rotary(torch.zeros(1, dtype=torch.float32), pos)
    cos, sin = cos[0], sin[0]
    d = L.d
    P = torch.zeros(d, d)
    P[d // 2 :, : d // 2] = torch.eye(d // 2)
    P[: d // 2, d // 2 :] = -torch.eye(d // 2)
    R = (cos[:, :, None] * torch.eye(d) + sin[:, :, None] * P).mean(0)
    mu2 = mu @ R.T
    cov2 = R @ cov @ R.T
    k = L.k_rep()[:, n_sink:]
    z = k @ mu2[:, :, None] / math.sqrt(d)
    z = z[..., 0] + torch.einsum("hnd,hde,hne->hn", k, cov2, k) / d / 2
    s = z.softmax(-1).view(L.H, L.G, -1).mean(1)
    s = (s + eps) * L.v[:, n_sink:].norm(dim=-1)
    s = s.float()
    return torch.cat([torch.full((L.H, n_sink), s.max().item() + 1), s], dim=-1)


def tova(L: Layer):
    q = rope(L.q_prerope(slice(-1, None)), L.cos[-1:], L.sin[-1:])
    p = (q @ L.k_rep().transpose(1, 2) / math.sqrt(L.d)).float().softmax(-1)[:, 0, :-1]
    s = p.mean(0, keepdim=True).repeat(L.H, 1)
    return torch.cat([s, torch.full((L.H, 1), s.max().item() + 1)], dim=-1)


def observed(L: Layer):
    q = rope(L.q_prerope(slice(None)), L.cos, L.sin)
    logits = q @ L.k_rep().transpose(1, 2) / math.sqrt(L.d)
    T = L.T
    logits = logits.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    A = logits.float().softmax(-1)
    s = A.sum(1) / torch.arange(T, 0, -1)
    return s.view(L.H, L.G, T).mean(1)


def knorm(L: Layer):
    return -L.k.norm(dim=-1)


def keydiff(L: Layer):
    kn = L.k / L.k.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    a = kn.mean(1, keepdim=True)
    return -(L.k * a).sum(-1) / (L.k.norm(dim=-1).clamp_min(1e-8) * a.norm(dim=-1).clamp_min(1e-8))


def vnorm(L: Layer):
    Wo = L.attn.o_proj.weight  # [hidden, Hq*d]
    out = []
    for q in range(L.Hq):
        out.append((L.v[q // L.G] @ Wo[:, q * L.d : (q + 1) * L.d].T).abs().sum(-1))
    return torch.stack(out).view(L.H, L.G, -1).mean(1)


def criticalkv(L: Layer, s, r, eps=1e-4, fsr=0.5):
    b1 = max(1, int((1 - r) * L.T * fsr))
    idx1 = s.topk(b1).indices
    s2 = (s + eps) * vnorm(L)
    s2.scatter_(-1, idx1, F32MAX)
    return s2


def pyramid_budget(T, r, layer, L, W=64, beta=20):
    cap = W + T * (1 - r)
    mn = (cap - W) / beta
    mx = (cap - W) * 2 - mn
    if mx >= T - W:
        mx = T - W
        mn = (cap - W) * 2 - mx
    if not (T >= mx >= mn >= W):
        return max(1, round(T * (1 - r)))
    steps = (mx - mn) / (L - 1) if L > 1 else 0.0
    return round(mx - layer * steps)


def adakv_keep(s, r, alpha=0.2):
    H, T = s.shape
    n = n_kept(T, r)
    ns = max(1, int(n * alpha))
    s = s.clone()
    s.scatter_(-1, s.topk(ns).indices, F32MAX)
    top = s.reshape(-1).topk(H * n).indices
    return [set((top[top // T == h] % T).tolist()) for h in range(H)]


def critical_adakv_keep(L: Layer, s, r, alpha=0.2, eps=1e-4, fsr=0.5):
    H, T = s.shape
    n = n_kept(T, r)
    ns = max(1, int(n * alpha))
    s = s.clone()
    s.scatter_(-1, s.topk(ns).indices, F32MAX)
    top = s.reshape(-1).topk(H * n).indices
    B = torch.bincount(top // T, minlength=H)
    for h in range(H):
        b1 = int(B[h].item() * fsr)
        s[h, s[h].topk(b1).indices] = F32MAX
    s2 = (s + eps) * vnorm(L)
    return [set(s2[h].topk(int(B[h])).indices.tolist()) for h in range(H)]


def chunkkv_keep(s, r, C=20):
    T = s.shape[-1]
    tot = s.sum(0)
    nf, rem = T // C, T % C
    cs = tot[: nf * C].view(nf, C).mean(-1)
    if rem:
        cs = torch.cat([cs, tot[-rem:].mean(-1, keepdim=True)])
    nc = max(1, int((nf + (rem > 0)) * (1 - r)))
    keep = set()
    for c in cs.topk(nc).indices.tolist():
        keep |= set(range(c * C, min(c * C + C, T)))
    return keep


# ---------------------------------------------------------------- main
def main():
    torch.set_num_threads(1)
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    ctx = json.loads((GOLD / "context.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(
        REPO / "models", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf", dtype=torch.float32, attn_implementation="sdpa"
    ).eval()
    cfg = model.config
    NL = cfg.num_hidden_layers
    seen = {}

    def pre(mod, args, kwargs):
        cos, sin = kwargs["position_embeddings"]
        seen[mod.layer_idx] = (kwargs["hidden_states"][0].clone(), cos[0].clone(), sin[0].clone())

    hooks = [l.self_attn.register_forward_pre_hook(pre, with_kwargs=True) for l in model.model.layers]
    ids = torch.tensor([ctx["context_ids"]])
    cache = DynamicCache()
    with torch.inference_mode():
        model.model(input_ids=ids, past_key_values=cache)
    for hk in hooks:
        hk.remove()
    T = ids.shape[1]
    layers = []
    for l in range(NL):
        h, cos, sin = seen[l]
        layers.append(
            Layer(model.model.layers[l].self_attn, h, cos, sin, cache.layers[l].keys[0], cache.layers[l].values[0], cfg)
        )
    rotary = model.model.rotary_emb

    def gold(name, r):
        return json.loads((GOLD / f"{name}_{r}.json").read_text())

    def gold_scores(fname):
        return torch.from_numpy(
            np.frombuffer((GOLD / fname).read_bytes(), dtype="<f2").astype(np.float32).reshape(NL, cfg.num_key_value_heads, T)
        )

    failures = 0

    def report(label, mine_sets, gold_cell, scores=None, gfile=None):
        nonlocal failures
        diff = 0
        for l in range(NL):
            for h in range(cfg.num_key_value_heads):
                diff += len(mine_sets[l][h] ^ set(gold_cell["kept"][l][h]))
        msg = f"{label:40s} kept-set differences: {diff:5d}"
        if scores is not None and gfile:
            g = gold_scores(gfile)
            m = torch.stack(scores).float()
            fin = torch.isfinite(g) & (g.abs() < 6e4) & (m.abs() < 6e4)
            scale = torch.where(fin, g.abs(), torch.zeros_like(g)).amax(-1, keepdim=True)
            rel = ((m - g).abs() / (g.abs() + 1e-3 * scale + 1e-12))[fin].max().item()
            msg += f"  max rel score error vs f16 gold: {rel:.2e}"
            if rel > 2e-3:
                failures += 1
        if diff:
            failures += 1
        print(msg, flush=True)

    with torch.inference_mode():
        base = {
            "knorm": [knorm(L) for L in layers],
            "snapkv": [snapkv(L) for L in layers],
            "expected_attention": [expected_attention(L, rotary) for L in layers],
            "tova": [tova(L) for L in layers],
            "observed_attention": [observed(L) for L in layers],
            "keydiff": [keydiff(L) for L in layers],
        }
        qf = torch.from_numpy(
            np.frombuffer((GOLD / "qfilter_synthetic.filters.f32").read_bytes(), dtype="<f4").reshape(NL, cfg.num_key_value_heads, cfg.head_dim).copy()
        )
        base["qfilter_synthetic"] = [-(L.k * qf[l][:, None]).sum(-1) for l, L in enumerate(layers)]
        for r in (0.25, 0.5):
            for name, sc in base.items():
                g = gold(name, r)
                report(f"{name} r={r}", [[topk_set(s[h], n_kept(T, r)) for h in range(3)] for s in sc], g, sc if r == 0.5 else None, g["scores_file"])
            # streaming_llm
            npr = T - int(T * (1 - r))
            keep = set(range(4)) | set(range(4 + npr, T))
            report(f"streaming_llm r={r}", [[keep] * 3 for _ in range(NL)], gold("streaming_llm", r))
            # random: same scores in every layer (seeded generator re-created per call)
            g = gold("random", r)
            same = all(g["kept"][l] == g["kept"][0] for l in range(NL))
            print(f"{'random r=' + str(r):40s} identical kept sets in all layers: {same}")
            failures += not same
            # pyramidkv (default beta 20, and beta 4)
            for nm, beta in (("pyramidkv", 20), ("pyramidkv_beta4", 4)):
                mine = [[topk_set(base["snapkv"][l][h], pyramid_budget(T, r, l, NL, beta=beta)) for h in range(3)] for l in range(NL)]
                report(f"{nm} r={r}", mine, gold(nm, r))
            # per_layer
            g = gold("per_layer_snapkv", r)
            ratios = g["params"]["compression_ratios"]
            report(f"per_layer_snapkv r={r}", [[topk_set(base["snapkv"][l][h], n_kept(T, ratios[l])) for h in range(3)] for l in range(NL)], g)
            # key_rerotation: same selection as snapkv
            report(f"key_rerotation_snapkv r={r}", [[topk_set(base["snapkv"][l][h], n_kept(T, r)) for h in range(3)] for l in range(NL)], gold("key_rerotation_snapkv", r))
            # chunkkv
            report(f"chunkkv_snapkv r={r}", [[chunkkv_keep(base["snapkv"][l], r)] * 3 for l in range(NL)], gold("chunkkv_snapkv", r))
            # chunk(snapkv), C = 300, full-context RoPE tables passed to every chunk
            g = gold("chunk_snapkv", r)
            C = g["params"]["chunk_length"]
            mine, scs = [], []
            for L in layers:
                parts, keep = [], [set() for _ in range(3)]
                for i in range(0, T, C):
                    s = snapkv(L, h=L.h[i : i + C], k=L.k[:, i : i + C])  # cos/sin: whole context
                    parts.append(s)
                    n = max(1, int(s.shape[-1] * (1 - r)))
                    for h in range(3):
                        keep[h] |= {i + x for x in s[h].topk(n).indices.tolist()}
                mine.append(keep)
                scs.append(torch.cat(parts, -1))
            report(f"chunk_snapkv r={r}", mine, g, scs if r == 0.5 else None, g["scores_file"])
            # counter-check: chunk-local RoPE positions would NOT reproduce kvpress
            local = []
            for L in layers:
                keep = [set() for _ in range(3)]
                for i in range(0, T, C):
                    s = snapkv(L, h=L.h[i : i + C], k=L.k[:, i : i + C], cos=L.cos[i : i + C], sin=L.sin[i : i + C])
                    n = max(1, int(s.shape[-1] * (1 - r)))
                    for h in range(3):
                        keep[h] |= {i + x for x in s[h].topk(n).indices.tolist()}
                local.append(keep)
            nd = sum(len(local[l][h] ^ set(g["kept"][l][h])) for l in range(NL) for h in range(3))
            print(f"{'  (chunk-local RoPE instead)':40s} kept-set differences: {nd:5d}  (expected > 0)")
            # criticalkv(snapkv)
            sc = [criticalkv(L, base["snapkv"][l], r) for l, L in enumerate(layers)]
            g = gold("criticalkv_snapkv", r)
            report(f"criticalkv_snapkv r={r}", [[topk_set(s[h], n_kept(T, r)) for h in range(3)] for s in sc], g, sc if r == 0.5 else None, g["scores_file"])
            # composed(knorm, streaming_llm): streaming acts on knorm's top-k row order
            mine = []
            for s in base["knorm"]:
                hk = []
                for h in range(3):
                    order = s[h].topk(n_kept(T, r)).indices  # kvpress cache row order
                    n1 = len(order)
                    npr2 = n1 - int(n1 * (1 - r))
                    rows = list(range(4)) + list(range(4 + npr2, n1))
                    hk.append(set(order[rows].tolist()))
                mine.append(hk)
            report(f"composed_knorm_streaming_llm r={r}", mine, gold("composed_knorm_streaming_llm", r))
        for r in (0.25, 0.5, 0.75):
            report(f"adakv_snapkv r={r}", [adakv_keep(s, r) for s in base["snapkv"]], gold("adakv_snapkv", r))
            report(f"adakv_expected_attention r={r}", [adakv_keep(s, r) for s in base["expected_attention"]], gold("adakv_expected_attention", r))
            report(
                f"critical_adakv_snapkv r={r}",
                [critical_adakv_keep(L, base["snapkv"][l], r) for l, L in enumerate(layers)],
                gold("critical_adakv_snapkv", r),
            )
    print("FAILURES:", failures)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
