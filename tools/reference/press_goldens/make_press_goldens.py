#!/usr/bin/env python3
"""Golden files for kvpress.cpp's presses, produced by the real kvpress from PyPI.

Pinned reference versions (checked at start-up; pass --allow-other-versions to override):
    python 3.11, torch==2.9.1 (CPU), transformers==5.2.0, gguf==0.17.1, kvpress==0.5.5
Model: models/SmolLM2-135M-Instruct.Q4_1.gguf, dequantised to float32 by transformers.

For every press cell the script runs kvpress's own KVPressTextGenerationPipeline on a
fixed context (context.txt next to this script) and two questions, and records
  * the kept token indices per layer and kv head, captured from inside kvpress (see
    "Capture" below), sorted ascending,
  * the scores kvpress computed (ratio 0.5 only), as raw little-endian float16
    [layers, kv_heads, T] (identical score tensors are stored once and shared),
  * the pipeline's answers (greedy, max_new_tokens=32) and their token ids.

Capture (nothing in kvpress is re-implemented here):
  * BasePress.forward_hook is wrapped. Every leaf press that really compresses the
    cache goes through it (ComposedPress and PerLayerCompressionPress delegate to
    their sub-press's forward_hook). While the wrapped hook runs, torch.Tensor.gather
    is wrapped too; the gather that kvpress applies to this layer's value tensor along
    the sequence dimension is exactly the selection it keeps. Stages (ComposedPress)
    are chained: kept = previous_kept[stage_indices].
  * Head-wise presses (AdaKVPress, CriticalAdaKVPress) do not gather; they set
    module.masked_key_indices. kept = complement of that set, per head.
  * Scores: the `score` method of the press whose scores kvpress ranks is wrapped on
    the instance and its return value saved (ChunkPress: the per-chunk scores,
    concatenated; CriticalKVPress: its final two-stage scores).

Determinism: torch.set_num_threads(1), fixed seeds (RandomPress seed=42, synthetic
Q-filters seed=1234); everything else is deterministic by construction.

Usage:
    /work/venvs/ref/bin/python tools/reference/press_goldens/make_press_goldens.py \
        [--out tests/golden/presses] [--only snapkv,adakv_snapkv] [--quick]
--quick truncates the context to 300 tokens (max_context_length) and writes to
/tmp/press_goldens_quick unless --out is given: for developing the script only.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS  # noqa: E402

import kvpress  # noqa: E402  (importing kvpress patches the attention functions)
from kvpress import (  # noqa: E402
    AdaKVPress,
    ChunkKVPress,
    ChunkPress,
    ComposedPress,
    CriticalAdaKVPress,
    CriticalKVPress,
    ExpectedAttentionPress,
    KeyDiffPress,
    KeyRerotationPress,
    KnormPress,
    KVPressTextGenerationPipeline,
    ObservedAttentionPress,
    PerLayerCompressionPress,
    PyramidKVPress,
    QFilterPress,
    RandomPress,
    SnapKVPress,
    StreamingLLMPress,
    TOVAPress,
)
from kvpress.presses.base_press import BasePress, is_prefilling  # noqa: E402

PINNED = {"torch": "2.9.1", "transformers": "5.2.0", "kvpress": "0.5.5", "gguf": "0.17.1"}

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
MODEL_DIR = REPO / "models"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

QUESTIONS = [
    "Who was appointed chief executive officer of Marrowfield Instruments in February 2033?",
    "What was the revenue of Marrowfield Instruments in 2034?",
]
MAX_NEW_TOKENS = 32
RANDOM_SEED = 42
QFILTER_SEED = 1234
CHUNK_LENGTH = 300  # ChunkPress; the default 1024 is not usable here (see docs/kvpress-semantics.md)


# --------------------------------------------------------------------------------------
# Capture machinery
# --------------------------------------------------------------------------------------
class Recorder:
    def __init__(self):
        self.reset()

    def reset(self):
        self.active = False
        self.stages: dict[int, list[dict]] = {}  # layer -> stages in call order
        self.scores: dict[int, list[torch.Tensor]] = {}  # layer -> score tensors (chunks)
        self.cur_values = None
        self.cur_gathers: list[torch.Tensor] = []
        self.cur_layer = None
        self.masked_mass_max = 0.0
        self.masked_calls = 0
        self.mask_fixups = 0  # attention calls whose mask was rebuilt (flash-attention emulation)  # AdaKV diagnostic: attention mass left on masked keys
        self.prefill_ids = None
        self.question_calls: list[dict] = []
        self.decoded: list[list[int]] = []


REC = Recorder()

_orig_forward_hook = BasePress.forward_hook
_orig_gather = torch.Tensor.gather


def _patched_gather(self, dim, index, *args, **kwargs):
    if REC.cur_values is not None and self is REC.cur_values and dim == 2:
        REC.cur_gathers.append(index[..., 0].detach().clone())
    return _orig_gather(self, dim, index, *args, **kwargs)


def _patched_forward_hook(self, module, input, kwargs, output):
    q_len = kwargs["hidden_states"].shape[1]
    if not REC.active or not is_prefilling(kwargs["cache_position"], q_len):
        return _orig_forward_hook(self, module, input, kwargs, output)
    layer = module.layer_idx
    cache = kwargs["past_key_values"]
    values = cache.layers[layer].values
    t_in = values.shape[2]
    module.masked_key_indices = None
    REC.cur_values, REC.cur_gathers, REC.cur_layer = values, [], layer
    try:
        out = _orig_forward_hook(self, module, input, kwargs, output)
    finally:
        REC.cur_values = None
    stage = {"press": type(self).__name__, "t_in": t_in, "idx": None, "masked": None}
    if len(REC.cur_gathers) > 1:
        raise RuntimeError(f"layer {layer}: {len(REC.cur_gathers)} gathers on values, expected <= 1")
    if REC.cur_gathers:
        stage["idx"] = REC.cur_gathers[0][0].cpu().numpy()  # [H, n_kept], batch 0, kvpress order
    mki = getattr(module, "masked_key_indices", None)
    if mki is not None:
        b, h, s = (x.cpu().numpy() for x in mki)
        assert (b == 0).all()
        stage["masked"] = (h, s)
    stage["t_out"] = cache.layers[layer].values.shape[2]
    REC.stages.setdefault(layer, []).append(stage)
    return out


BasePress.forward_hook = _patched_forward_hook
torch.Tensor.gather = _patched_gather


def record_scores(obj):
    """Wrap obj.score on the instance so each call's result is saved per layer."""
    inner = obj.score

    def score(module, *args, **kwargs):
        s = inner(module, *args, **kwargs)
        if REC.active:
            REC.scores.setdefault(module.layer_idx, []).append(s[0].detach().float().cpu().clone())
        return s

    obj.score = score


def _wrap_attention_for_diagnostic():
    """AdaKV masks keys by overwriting them with a 'fake key' inside the attention call.
    After the call, measure how much softmax mass is still on the masked keys."""
    inner = ALL_ATTENTION_FUNCTIONS["sdpa"]

    def wrapper(module, query, key, value, attention_mask, dropout=0.0, **kwargs):
        if attention_mask is not None and attention_mask.shape[-1] != key.shape[-2]:
            # Layers hold different numbers of tokens (PerLayerCompressionPress, PyramidKVPress)
            # but transformers built the mask from layer 0's length: sdpa would raise. kvpress
            # says these presses need flash attention, whose causal mask is aligned
            # bottom-right; build exactly that mask for this layer.
            ql, kl = query.shape[2], key.shape[2]
            attention_mask = torch.ones(ql, kl, dtype=torch.bool, device=query.device).tril(diagonal=kl - ql)
            attention_mask = attention_mask[None, None].expand(query.shape[0], 1, ql, kl)
            if REC.active:
                REC.mask_fixups += 1
        out = inner(module, query, key, value, attention_mask, dropout, **kwargs)
        mki = getattr(module, "masked_key_indices", None)
        if REC.active and mki is not None and query.shape[2] != key.shape[2]:
            with torch.no_grad():
                g = query.shape[1] // key.shape[1]
                k = key.repeat_interleave(g, dim=1)
                logits = (query @ k.transpose(-1, -2)).float() * kwargs.get("scaling", query.shape[-1] ** -0.5)
                ql, kl = query.shape[2], key.shape[2]
                causal = torch.ones(ql, kl, dtype=torch.bool).tril(diagonal=kl - ql)
                logits = logits.masked_fill(~causal, float("-inf"))
                p = logits.softmax(-1)
                mask = torch.zeros(key.shape[0], key.shape[1], kl, dtype=torch.bool)
                mask[mki[0], mki[1], mki[2]] = True
                mask = mask.repeat_interleave(g, dim=1)[:, :, None, :]
                mass = (p * mask).sum(-1).max().item()
                REC.masked_mass_max = max(REC.masked_mass_max, mass)
                REC.masked_calls += 1
        return out

    ALL_ATTENTION_FUNCTIONS["sdpa"] = wrapper


# --------------------------------------------------------------------------------------
# Press grid
# --------------------------------------------------------------------------------------
def per_layer_ratios(r: float, n_layers: int) -> list[float]:
    # linear from r-0.2 (layer 0) to r+0.2 (last layer); mean is r
    return [round(r - 0.2 + 0.4 * i / (n_layers - 1), 4) for i in range(n_layers)]


def make_qfilters(n_layers, n_kv, head_dim):
    g = torch.Generator().manual_seed(QFILTER_SEED)
    return torch.randn(n_layers, n_kv, head_dim, generator=g, dtype=torch.float32)


def build_press(name: str, r: float, cfg, qfilters):
    """Return (press, scored_object_or_None, attn_impl, extra_params)."""
    L = cfg.num_hidden_layers
    extra = {}
    if name == "random":
        p = RandomPress(compression_ratio=r, seed=RANDOM_SEED)
        return p, p, "sdpa", extra
    simple = {
        "knorm": KnormPress,
        "streaming_llm": StreamingLLMPress,
        "snapkv": SnapKVPress,
        "expected_attention": ExpectedAttentionPress,
        "tova": TOVAPress,
        "keydiff": KeyDiffPress,
        "pyramidkv": PyramidKVPress,
    }
    if name in simple:
        p = simple[name](compression_ratio=r)
        return p, p, "sdpa", extra
    if name == "pyramidkv_beta4":
        p = PyramidKVPress(compression_ratio=r, beta=4)
        return p, p, "sdpa", extra
    if name == "observed_attention":
        p = ObservedAttentionPress(compression_ratio=r)
        return p, p, "eager", extra
    if name == "qfilter_synthetic":
        p = QFilterPress(compression_ratio=r)
        p.q_filters = qfilters.clone()
        p.post_init_from_model = lambda model: None  # no Hub download: synthetic filters
        extra["q_filters_file"] = "qfilter_synthetic.filters.f32"
        extra["q_filters_seed"] = QFILTER_SEED
        return p, p, "sdpa", extra
    if name == "composed_knorm_streaming_llm":
        a, b = KnormPress(compression_ratio=r), StreamingLLMPress(compression_ratio=r)
        p = ComposedPress([a, b])
        extra["effective_ratio"] = 1 - (1 - r) * (1 - r)
        extra["scores_note"] = "scores are the first stage's (knorm) only"
        return p, a, "sdpa", extra
    if name == "per_layer_snapkv":
        inner = SnapKVPress(compression_ratio=r)
        p = PerLayerCompressionPress(press=inner, compression_ratios=per_layer_ratios(r, L))
        return p, inner, "sdpa", extra
    if name == "chunk_snapkv":
        inner = SnapKVPress(compression_ratio=r)
        p = ChunkPress(press=inner, chunk_length=CHUNK_LENGTH)
        return p, inner, "sdpa", extra
    if name == "chunkkv_snapkv":
        inner = SnapKVPress(compression_ratio=r)
        return ChunkKVPress(press=inner), inner, "sdpa", extra
    if name == "key_rerotation_snapkv":
        inner = SnapKVPress(compression_ratio=r)
        return KeyRerotationPress(press=inner), inner, "sdpa", extra
    if name == "criticalkv_snapkv":
        p = CriticalKVPress(press=SnapKVPress(compression_ratio=r))
        return p, p, "sdpa", extra
    if name == "adakv_snapkv":
        inner = SnapKVPress(compression_ratio=r)
        return AdaKVPress(press=inner), inner, "sdpa", extra
    if name == "adakv_expected_attention":
        inner = ExpectedAttentionPress(compression_ratio=r)
        return AdaKVPress(press=inner), inner, "sdpa", extra
    if name == "critical_adakv_snapkv":
        inner = SnapKVPress(compression_ratio=r)
        return CriticalAdaKVPress(press=inner), inner, "sdpa", extra
    raise KeyError(name)


UNIFORM = [
    "random",
    "knorm",
    "streaming_llm",
    "snapkv",
    "expected_attention",
    "tova",
    "observed_attention",
    "keydiff",
    "pyramidkv",
    "pyramidkv_beta4",
    "qfilter_synthetic",
    "composed_knorm_streaming_llm",
    "per_layer_snapkv",
    "chunk_snapkv",
    "chunkkv_snapkv",
    "key_rerotation_snapkv",
    "criticalkv_snapkv",
]
SELF_CHECK = {"random", "knorm", "streaming_llm", "snapkv", "expected_attention", "tova",
              "observed_attention", "keydiff", "pyramidkv", "pyramidkv_beta4", "qfilter_synthetic",
              "per_layer_snapkv", "key_rerotation_snapkv", "criticalkv_snapkv"}
HEADWISE = ["adakv_snapkv", "adakv_expected_attention", "critical_adakv_snapkv"]


def describe(obj):
    """Parameters of a press (nested for wrappers), for the JSON 'params' field."""
    if isinstance(obj, BasePress) or isinstance(obj, CriticalKVPress):
        d = {"class": type(obj).__name__}
        if dataclasses.is_dataclass(obj):
            names = [f.name for f in dataclasses.fields(obj) if f.init]
        else:  # CriticalKVPress is a plain class
            names = ["press", "epsilon", "first_stage_ratio"]
        for n in names:
            if n == "q_filters":
                continue
            d[n] = describe(getattr(obj, n))
        if "compression_ratio" not in d and hasattr(obj, "compression_ratio"):
            try:
                d["compression_ratio"] = obj.compression_ratio
            except Exception:
                pass
        return d
    if isinstance(obj, (list, tuple)):
        return [describe(x) for x in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj


# --------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------
def set_attn(model, impl):
    if model.config._attn_implementation != impl:
        model.set_attn_implementation(impl)
    assert model.config._attn_implementation == impl


def install_io_recorders(model, tokenizer):
    def pre_hook(mod, args, kwargs):
        if not REC.active:
            return
        ids = kwargs.get("input_ids")
        if REC.prefill_ids is None:
            REC.prefill_ids = ids[0].tolist()
        elif ids.shape[1] > 1 or len(REC.question_calls) == 0:
            pos = kwargs.get("position_ids")
            REC.question_calls.append({"ids": ids[0].tolist(), "pos": pos[0].tolist() if pos is not None else None})

    model.model.register_forward_pre_hook(pre_hook, with_kwargs=True)
    inner_decode = tokenizer.decode

    def decode(ids, *a, **k):
        if REC.active:
            REC.decoded.append([int(x) for x in ids])
        return inner_decode(ids, *a, **k)

    tokenizer.decode = decode


def run_cell(pipe, context, press, max_context_length, scored=None):
    REC.reset()
    if scored is not None:
        record_scores(scored)
    for layer in pipe.model.model.layers:
        layer.self_attn.masked_key_indices = None
    torch.manual_seed(0)
    REC.active = True
    try:
        with torch.inference_mode():
            out = pipe(
                context,
                questions=QUESTIONS,
                press=press,
                max_new_tokens=MAX_NEW_TOKENS,
                max_context_length=max_context_length,
            )
    finally:
        REC.active = False
    return out["answers"]


def kept_from_stages(stages, T, H):
    kept = [np.arange(T) for _ in range(H)]
    for st in stages:
        assert all(len(k) == st["t_in"] for k in kept), "stage input length mismatch"
        if st["idx"] is not None:
            kept = [kept[h][st["idx"][h]] for h in range(H)]
        if st["masked"] is not None:
            hh, ss = st["masked"]
            new = []
            for h in range(H):
                m = np.zeros(len(kept[h]), dtype=bool)
                m[ss[hh == h]] = True
                new.append(kept[h][~m])
            kept = new
    return [sorted(int(x) for x in k) for k in kept]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None)
    ap.add_argument("--only", default=None, help="comma-separated press names")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--allow-other-versions", action="store_true")
    args = ap.parse_args()

    versions = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "kvpress": __import__("importlib.metadata").metadata.version("kvpress"),
        "gguf": __import__("importlib.metadata").metadata.version("gguf"),
        "numpy": np.__version__,
    }
    for k, v in PINNED.items():
        if not versions[k].startswith(v) and not args.allow_other_versions:
            sys.exit(f"{k}=={versions[k]} but goldens are pinned to {k}=={v}")

    out_dir = Path(args.out) if args.out else (Path("/tmp/press_goldens_quick") if args.quick else REPO / "tests/golden/presses")
    out_dir.mkdir(parents=True, exist_ok=True)
    max_context_length = 300 if args.quick else None

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    import logging

    logging.getLogger("kvpress").setLevel(logging.ERROR)

    t0 = time.time()
    tokenizer = AutoTokenizer.from_pretrained(MODEL_DIR, gguf_file=MODEL_FILE)
    model = AutoModelForCausalLM.from_pretrained(
        MODEL_DIR, gguf_file=MODEL_FILE, dtype=torch.float32, attn_implementation="sdpa"
    ).eval()
    cfg = model.config
    L, H, D = cfg.num_hidden_layers, cfg.num_key_value_heads, cfg.head_dim
    print(f"model loaded in {time.time() - t0:.1f}s: L={L} H_kv={H} d={D}", flush=True)
    _wrap_attention_for_diagnostic()
    pipe = KVPressTextGenerationPipeline(model=model, tokenizer=tokenizer)
    install_io_recorders(model, tokenizer)

    context = (HERE / "context.txt").read_text(encoding="utf-8")
    qfilters = make_qfilters(L, H, D)

    # ---- uncompressed reference run -------------------------------------------------
    only = set(args.only.split(",")) if args.only else None
    manifest = {"cells": [], "score_files": {}}
    score_hashes: dict[str, str] = {}

    t = time.time()
    answers0 = run_cell(pipe, context, None, max_context_length)
    context_ids = REC.prefill_ids
    T = len(context_ids)
    question_ids = [c["ids"] for c in REC.question_calls]
    for c in REC.question_calls:
        assert c["pos"] == list(range(T, T + len(c["ids"]))), "question positions do not continue from T"
    pre = pipe.preprocess(context, QUESTIONS, "", max_context_length or 10**10)
    assert pre["context_ids"][0].tolist() == context_ids
    assert [q[0].tolist() for q in pre["questions_ids"]] == question_ids
    print(f"uncompressed: T={T} {time.time() - t:.1f}s {answers0}", flush=True)
    ctx_json = {
        "context": context,
        "questions": QUESTIONS,
        "answer_prefix": "",
        "max_new_tokens": MAX_NEW_TOKENS,
        "context_ids": context_ids,
        "question_ids": question_ids,
        "answers_uncompressed": answers0,
        "answer_ids_uncompressed": REC.decoded,
        "n_layers": L,
        "n_kv_heads": H,
        "n_heads": cfg.num_attention_heads,
        "head_dim": D,
        "eos_token_ids": [model.generation_config.eos_token_id],
        "model": MODEL_FILE + " (dequantised to float32 by transformers)",
        "attn_implementation": "sdpa (eager for observed_attention)",
        "torch_threads": args.threads,
        "versions": versions,
        "generator": "tools/reference/press_goldens/make_press_goldens.py",
    }
    if not only:
        (out_dir / "context.json").write_text(json.dumps(ctx_json, ensure_ascii=False, indent=1) + "\n")
    if only is None or "qfilter_synthetic" in only:
        (out_dir / "qfilter_synthetic.filters.f32").write_bytes(qfilters.numpy().astype("<f4").tobytes())

    # ---- press grid -----------------------------------------------------------------
    grid = [(n, r) for n in UNIFORM for r in (0.25, 0.5)] + [(n, r) for n in HEADWISE for r in (0.25, 0.5, 0.75)]
    for name, r in grid:
        if only and name not in only:
            continue
        t = time.time()
        press, scored, impl, extra = build_press(name, r, cfg, qfilters)
        set_attn(model, impl)
        try:
            answers = run_cell(pipe, context, press, max_context_length, scored=scored if r == 0.5 else None)
        finally:
            set_attn(model, "sdpa")
        assert REC.prefill_ids == context_ids
        assert sorted(REC.stages) == list(range(L)), f"{name}: hooks ran on layers {sorted(REC.stages)}"
        kept = [kept_from_stages(REC.stages[l], T, H) for l in range(L)]

        scores_file = None
        if r == 0.5 and scored is not None:
            arr = np.stack(
                [torch.cat(REC.scores[l], dim=-1).numpy() for l in range(L)]
            )  # [L, H, T]
            assert arr.shape == (L, H, T), arr.shape
            data = arr.astype("<f2").tobytes()
            h = hashlib.sha256(arr.astype("<f4").tobytes()).hexdigest()
            if h in score_hashes:
                scores_file = score_hashes[h]
            else:
                scores_file = f"{name}.scores.f16"
                (out_dir / scores_file).write_bytes(data)
                score_hashes[h] = scores_file
                manifest["score_files"][scores_file] = {"sha256_of_float32": h, "shape": [L, H, T]}

        # self-check for plain scorers: kept == top-n_kept of the recorded scores
        if r == 0.5 and name in SELF_CHECK and scored is not None:
            bad = 0
            for l in range(L):
                sc = torch.cat(REC.scores[l], dim=-1)
                for h in range(H):
                    n = len(kept[l][h])
                    top = set(sc[h].topk(n).indices.tolist())
                    bad += len(top ^ set(kept[l][h]))
            print(f"  self-check {name}: {bad} index differences between recorded scores' top-k and captured kept")
            assert bad == 0
        cell = {
            "press": name,
            "ratio": r,
            "params": {**describe(press), **extra},
            "n_layers": L,
            "n_kv_heads": H,
            "n_tokens": T,
            "headwise": name in HEADWISE,
            "kept_lengths": [[len(k) for k in kl] for kl in kept],
            "kept": kept,
            "answers": answers,
            "answer_ids": REC.decoded,
            "scores_file": scores_file,
            "scores_dtype": "float16" if scores_file else None,
        }
        if REC.mask_fixups:
            cell["attention_note"] = (
                "layers hold different token counts; sdpa masks were rebuilt per layer with "
                "flash-attention's bottom-right causal alignment (kvpress: 'only works with flash attention')"
            )
        if name in HEADWISE:
            cell["masked_attention_mass_max"] = REC.masked_mass_max
            cell["masked_attention_calls"] = REC.masked_calls
        # kvpress keeps ScorerPress selections in top-k order; record layer 0, head 0 as an example
        st0 = REC.stages[0][0]
        if st0["idx"] is not None and name in ("snapkv", "composed_knorm_streaming_llm", "knorm"):
            cell["cache_order_layer0_head0_stage0"] = [int(x) for x in st0["idx"][0]]
        fn = f"{name}_{r}.json"
        (out_dir / fn).write_text(json.dumps(cell, separators=(",", ":")) + "\n")
        manifest["cells"].append(fn)
        lens = [sum(len(k) for k in kl) for kl in kept]
        print(
            f"{name:30s} r={r:<5} kept/layer min={min(lens)} max={max(lens)} total={sum(lens)} "
            f"scores={scores_file} {time.time() - t:.1f}s {answers}",
            flush=True,
        )
    if not only:
        (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"done in {time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
