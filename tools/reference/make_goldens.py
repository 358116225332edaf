#!/usr/bin/env python3
"""Produce the golden files that the C++ tests of kvpress.cpp compare against.

The C++ tests never run Python: this script is run by hand (pinned versions in
requirements.txt), and its outputs under tests/golden/ and tests/models/ are committed.

    python tools/reference/make_goldens.py                 # everything
    python tools/reference/make_goldens.py --only tokenizer,quant

Steps (see tools/reference/README.md for the file formats):
  tokenizer  tests/golden/smollm2_tokenizer.json      (llama.cpp ids, cross-checked with transformers)
  quant      tests/golden/quant.json + quant_<T>.bin/.f32   (gguf.quants.dequantize)
  tiny       tests/models/tiny-{llama,qwen2,qwen3}/ + tests/golden/tiny_<arch>.json
  logits     tests/golden/smollm2_logits.json + smollm2_logits_<i>.f32  (transformers, GGUF dequantised)

Everything is deterministic: fixed seeds, CPU, float32, eager attention, one thread.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"
TINY_MODELS = ROOT / "tests" / "models"
DEFAULT_GGUF = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"

N_GREEDY = 32


# --------------------------------------------------------------------------- helpers

def f9(x: float) -> float:
    """Round to 9 significant digits: enough to round-trip any float32 exactly,
    and json.dumps then prints at most 9 digits."""
    return float(f"{float(x):.9g}")


def floats9(a) -> list[float]:
    return [f9(v) for v in np.asarray(a, dtype=np.float32).reshape(-1).tolist()]


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    path.write_text(text + "\n", encoding="utf-8")
    print(f"  wrote {path.relative_to(ROOT)} ({path.stat().st_size} bytes)")


def write_f32(path: Path, a) -> None:
    arr = np.ascontiguousarray(np.asarray(a, dtype="<f4"))
    path.write_bytes(arr.tobytes())
    print(f"  wrote {path.relative_to(ROOT)} ({path.stat().st_size} bytes)")


def rel(p: Path) -> str:
    return p.resolve().relative_to(ROOT).as_posix()


def setup_torch():
    import torch
    import transformers

    transformers.utils.logging.disable_progress_bar()

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    return torch


# --------------------------------------------------------------------------- 2a tokenizer

TOKENIZER_CASES: list[str] = [
    # plain ASCII
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "Compression of the key-value cache lets long contexts fit in memory; "
    "SnapKV, AdaKV and friends decide which tokens each head keeps.",
    # spaces, tabs, newlines
    " leading space",
    "trailing space ",
    "multiple   spaces   between    words",
    "   ",
    "tab\tseparated\tvalues\t\tdouble tab",
    "line one\n\n\nline four",
    "windows\r\nline\r\nendings\r\n",
    "\n",
    "   \n\n  indented\n\t\tmixed  \n end",
    # digits (SmolLM2 splits every digit before the byte-level regex)
    "4719",
    "3.14159",
    "2024-11-28",
    "1234567890",
    "Call 555-0199 or pay $1,234.56 by 9:30am, room 42B.",
    # non-ASCII numbers (\p{N}): superscripts, fractions, Arabic-Indic and full-width digits
    "x² + y³ = z½ and ⅓ of ٣٤٥ or １２３",
    # contractions (the GPT-2 regex is case sensitive)
    "It's, don't, they're, we'll, I've, I'd, I'm",
    "IT'S DON'T THEY'RE",
    # code
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "#include <stdio.h>\n\nint main(void) {\n\tprintf(\"%d\\n\", 42);\n\treturn 0;\n}\n",
    # Unicode
    "Café naïve résumé façade Ångström Øresund",
    "你好，世界！日本語のテキスト。한국어 문장",
    "I love 🦙 and 🤗! 👩‍💻 🏳️‍🌈",
    "مرحبا بالعالم",
    "e\u0301 n\u0303 a\u030a vs \u00e9 \u00f1 \u00e5",
    # special tokens written inside the text (parsed as special tokens)
    "<|im_start|>user\nhi<|im_end|>",
    "<|endoftext|>",
    "text<|endoftext|>more text <|im_end|>\n",
    "<|im_start|><|im_end|><|im_start|",
    "hello<repo_name>world<file_sep>",
    # empty
    "",
]

CHAT_CASES: list[tuple[list[dict], bool]] = [
    ([{"role": "user", "content": "What is the capital of France?"}], True),
    ([{"role": "user", "content": "What is the capital of France?"}], False),
    ([{"role": "system", "content": "You are a terse assistant."},
      {"role": "user", "content": "Name three primes."}], True),
    ([{"role": "user", "content": "Hi!"},
      {"role": "assistant", "content": "Hello! How can I help?"},
      {"role": "user", "content": "Count to 12."}], True),
]


def gguf_chat_template(gguf_path: Path) -> str:
    import gguf

    r = gguf.GGUFReader(str(gguf_path))
    return r.fields["tokenizer.chat_template"].contents()


def render_jinja(template: str, messages, add_generation_prompt: bool) -> str:
    import jinja2

    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(messages=messages, add_generation_prompt=add_generation_prompt)


def smollm2_original_style_tokenizer(gguf_path: Path):
    """A third, independent reference: the `tokenizers` library with the GGUF's vocab and merges
    and the pre-tokenizer of SmolLM2's original tokenizer.json (digits split one by one, then the
    GPT-2 byte-level regex), special tokens (GGUF token type 3 = control) added as special."""
    import gguf
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    r = gguf.GGUFReader(str(gguf_path))
    tokens = r.fields["tokenizer.ggml.tokens"].contents()
    types = r.fields["tokenizer.ggml.token_type"].contents()
    merges = [tuple(m.split(" ", 1)) for m in r.fields["tokenizer.ggml.merges"].contents()]
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, ty in zip(tokens, types) if ty == 3])
    return tok


def step_tokenizer(gguf_path: Path) -> None:
    import transformers
    from transformers import AutoTokenizer
    import llama_cpp

    print("[tokenizer]")
    hf = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    llm = llama_cpp.Llama(model_path=str(gguf_path), vocab_only=True, verbose=False)

    def ids_llama(text: str) -> list[int]:
        if text == "":
            return []
        return list(llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def ids_hf(text: str) -> list[int]:
        return list(hf(text, add_special_tokens=False)["input_ids"])

    orig = smollm2_original_style_tokenizer(gguf_path)

    def ids_orig(text: str) -> list[int]:
        return list(orig.encode(text, add_special_tokens=False).ids)

    template = gguf_chat_template(gguf_path)
    differ: list[dict] = []
    cases = []
    for text in TOKENIZER_CASES:
        a, b = ids_llama(text), ids_hf(text)
        if a != b:
            differ.append({"text": text, "llama_cpp": a, "transformers": b})
        if ids_orig(text) != a:
            raise SystemExit(f"llama.cpp and the rebuilt original pre-tokenizer disagree on {text!r}")
        # round trip through llama.cpp's detokenizer as a sanity check
        back = llm.detokenize(a, special=True).decode("utf-8") if a else ""
        if back != text:
            print(f"  note: llama.cpp detokenize does not round-trip {text!r} -> {back!r}")
        cases.append({"text": text, "ids": a})

    chats = []
    for messages, agp in CHAT_CASES:
        text = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=agp)
        text_j = render_jinja(template, messages, agp)
        if text != text_j:
            raise SystemExit(f"chat template rendering differs: {text!r} vs {text_j!r}")
        a, b = ids_llama(text), ids_hf(text)
        if a != b:
            differ.append({"text": text, "llama_cpp": a, "transformers": b})
        if ids_orig(text) != a:
            raise SystemExit(f"llama.cpp and the rebuilt original pre-tokenizer disagree on {text!r}")
        chats.append({"messages": messages, "add_generation_prompt": agp, "text": text, "ids": a})

    n = len(cases) + len(chats)
    source = (
        f"llama.cpp tokenizer via llama-cpp-python {llama_cpp.__version__} "
        f"(Llama(vocab_only=True).tokenize(utf8, add_bos=False, special=True), GGUF pre-tokenizer 'smollm'); "
        f"chat texts rendered by transformers {transformers.__version__} apply_chat_template with the GGUF's "
        f"tokenizer.chat_template (checked equal to a plain jinja2 render). Cross-check against transformers "
        f"{transformers.__version__} AutoTokenizer.from_pretrained(gguf_file=...) with add_special_tokens=False: "
        f"{n - len(differ)}/{n} cases identical"
    )
    if differ:
        source += ("; differing cases (llama.cpp ids kept): " + "; ".join(repr(d["text"]) for d in differ)
                   + ". Cause: transformers' GGUF converter builds a plain GPT-2 ByteLevel pre-tokenizer and "
                   "ignores tokenizer.ggml.pre='smollm', so it does not isolate Unicode numbers (\\p{N}) before "
                   "the regex and merges a space with the first byte of a non-ASCII number (e.g. ' \u2153', "
                   "' \u0663'); ASCII digits agree only because the vocab has no merge containing one")
    source += (f". All cases also equal a tokenizers {_pkg_version('tokenizers')} BPE rebuilt from the GGUF vocab/merges "
               "with SmolLM2's original pre-tokenizer Sequence[Digits(individual_digits=True), ByteLevel]")
    print("  " + source)
    for d in differ:
        print(f"  DIFF {d['text']!r}\n    llama.cpp    {d['llama_cpp']}\n    transformers {d['transformers']}")
    write_json(GOLDEN / "smollm2_tokenizer.json", {"source": source, "cases": cases, "chat": chats})


# --------------------------------------------------------------------------- 2d quant

QUANT_TYPES = ["F16", "BF16", "Q4_0", "Q4_1", "Q8_0", "Q4_K", "Q6_K"]
QUANT_ROWS, QUANT_COLS = 2, 512


def _f16_bytes(x) -> np.ndarray:
    return np.asarray(x, dtype="<f2").reshape(-1, 1).view(np.uint8)


def _scales(rng, n, lo, hi, signed):
    d = rng.uniform(lo, hi, n)
    if signed:
        d *= rng.choice([-1.0, 1.0], n)
    return d


def make_quant_raw(name: str, rng: np.random.Generator) -> np.ndarray:
    """Raw bytes [rows, bytes_per_row] for one type: random payload, sane finite f16 scales
    (a few of them subnormal f16, to exercise the half->float conversion of the decoders)."""
    import gguf

    qt = gguf.GGMLQuantizationType[name]
    block, type_size = gguf.GGML_QUANT_SIZES[qt]
    nb = QUANT_ROWS * QUANT_COLS // block  # blocks in total, row-major
    if name == "F16":
        v = rng.normal(0.0, 2.0, nb).astype(np.float16)
        special = [0.0, -0.0, 65504.0, -65504.0, 2.0**-24, -(2.0**-24), 1023 * 2.0**-24, 2.0**-14,
                   1.0 / 3.0, -1.0, 0.5, 1e-3]
        v[QUANT_COLS:QUANT_COLS + len(special)] = np.array(special, dtype=np.float16)
        raw = v.view(np.uint8)
    elif name == "BF16":
        x = (rng.normal(0.0, 1.0, nb) * 10.0 ** rng.uniform(-4, 4, nb)).astype(np.float32)
        bits = (x.view(np.uint32) >> 16).astype(np.uint16)  # truncation: any bit pattern is a valid input
        special = [0x0000, 0x8000, 0x0001, 0x8001, 0x007F, 0x0080, 0x7F7F, 0xFF7F, 0x3F80, 0xBF80, 0x3EAB]
        bits[QUANT_COLS:QUANT_COLS + len(special)] = np.array(special, dtype=np.uint16)
        raw = bits.astype("<u2").view(np.uint8)
    else:
        payload = lambda n: rng.integers(0, 256, (nb, n), dtype=np.uint8)  # noqa: E731
        if name == "Q4_0":      # d f16, 16 bytes of nibbles
            d = _scales(rng, nb, 0.005, 0.1, True)
            d[1] = 3e-5  # subnormal f16
            parts = [_f16_bytes(d), payload(16)]
        elif name == "Q4_1":    # d f16, m f16, 16 bytes of nibbles
            d = _scales(rng, nb, 0.005, 0.1, False)
            m = rng.uniform(-1.0, 0.5, nb)
            d[2] = 4e-5
            parts = [_f16_bytes(d), _f16_bytes(m), payload(16)]
        elif name == "Q8_0":    # d f16, 32 int8
            d = _scales(rng, nb, 0.0005, 0.01, True)
            d[3] = 2e-6
            parts = [_f16_bytes(d), payload(32)]
        elif name == "Q4_K":    # d f16, dmin f16, 12 bytes of 6-bit scales/mins, 128 bytes of nibbles
            d = _scales(rng, nb, 0.001, 0.05, False)
            dmin = _scales(rng, nb, 0.001, 0.05, False)
            parts = [_f16_bytes(d), _f16_bytes(dmin), payload(12), payload(128)]
        elif name == "Q6_K":    # 128 ql, 64 qh, 16 int8 scales, d f16
            d = _scales(rng, nb, 0.0005, 0.01, True)
            parts = [payload(128), payload(64), payload(16), _f16_bytes(d)]
        else:
            raise ValueError(name)
        raw = np.concatenate(parts, axis=1)
        assert raw.shape == (nb, type_size), (name, raw.shape)
    raw = np.ascontiguousarray(raw).reshape(QUANT_ROWS, -1)
    assert raw.shape[1] == QUANT_COLS // block * type_size
    return raw


def _scalar_dequant(name: str, raw_row: bytes) -> list[float]:
    """Independent scalar decoder written from the ggml block layouts, used only to check
    gguf-py's vectorised dequantize (so the goldens do not inherit a bug of one library)."""
    import struct

    h = lambda b, o: float(np.frombuffer(b[o:o + 2], dtype="<f2")[0])  # noqa: E731
    out: list[float] = []
    if name == "F16":
        return np.frombuffer(raw_row, dtype="<f2").astype(np.float32).tolist()
    if name == "BF16":
        u = np.frombuffer(raw_row, dtype="<u2").astype(np.uint32) << 16
        return u.view(np.float32).tolist()
    if name == "Q4_0":
        for o in range(0, len(raw_row), 18):
            d, qs = h(raw_row, o), raw_row[o + 2:o + 18]
            out += [((b & 15) - 8) * d for b in qs] + [((b >> 4) - 8) * d for b in qs]
    elif name == "Q4_1":
        for o in range(0, len(raw_row), 20):
            d, m, qs = h(raw_row, o), h(raw_row, o + 2), raw_row[o + 4:o + 20]
            out += [(b & 15) * d + m for b in qs] + [(b >> 4) * d + m for b in qs]
    elif name == "Q8_0":
        for o in range(0, len(raw_row), 34):
            d = h(raw_row, o)
            out += [q * d for q in struct.unpack("<32b", raw_row[o + 2:o + 34])]
    elif name == "Q4_K":
        for o in range(0, len(raw_row), 144):
            d, dmin = h(raw_row, o), h(raw_row, o + 2)
            sc, qs = raw_row[o + 4:o + 16], raw_row[o + 16:o + 144]

            def scale_min(j):
                if j < 4:
                    return sc[j] & 63, sc[j + 4] & 63
                return (sc[j + 4] & 0xF) | ((sc[j - 4] >> 6) << 4), (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4)

            for j in range(4):
                s1, m1 = scale_min(2 * j)
                s2, m2 = scale_min(2 * j + 1)
                q = qs[32 * j:32 * j + 32]
                out += [d * s1 * (b & 15) - dmin * m1 for b in q]
                out += [d * s2 * (b >> 4) - dmin * m2 for b in q]
    elif name == "Q6_K":
        for o in range(0, len(raw_row), 210):
            ql, qh = raw_row[o:o + 128], raw_row[o + 128:o + 192]
            sc = struct.unpack("<16b", raw_row[o + 192:o + 208])
            d = h(raw_row, o + 208)
            y = [0.0] * 256
            for half in range(2):
                L, H, S, Y = ql[64 * half:], qh[32 * half:], sc[8 * half:], 128 * half
                for l in range(32):
                    i = l // 16
                    q1 = ((L[l] & 15) | (((H[l] >> 0) & 3) << 4)) - 32
                    q2 = ((L[l + 32] & 15) | (((H[l] >> 2) & 3) << 4)) - 32
                    q3 = ((L[l] >> 4) | (((H[l] >> 4) & 3) << 4)) - 32
                    q4 = ((L[l + 32] >> 4) | (((H[l] >> 6) & 3) << 4)) - 32
                    y[Y + l] = d * S[i] * q1
                    y[Y + l + 32] = d * S[i + 2] * q2
                    y[Y + l + 64] = d * S[i + 4] * q3
                    y[Y + l + 96] = d * S[i + 6] * q4
            out += y
    else:
        raise ValueError(name)
    return out


def step_quant() -> None:
    import gguf

    print("[quant]")
    index = []
    for i, name in enumerate(QUANT_TYPES):
        rng = np.random.default_rng(1000 + i)
        raw = make_quant_raw(name, rng)
        qt = gguf.GGMLQuantizationType[name]
        vals = gguf.quants.dequantize(raw, qt).astype(np.float32)
        assert vals.shape == (QUANT_ROWS, QUANT_COLS), vals.shape
        assert np.all(np.isfinite(vals)), name
        for r in range(QUANT_ROWS):  # independent check, in double precision
            ref = np.asarray(_scalar_dequant(name, raw[r].tobytes()), dtype=np.float64)
            err = np.max(np.abs(ref - vals[r]) / np.maximum(np.abs(ref), 1e-30))
            assert err <= 2e-7, (name, r, err)
        (GOLDEN / f"quant_{name}.bin").write_bytes(raw.tobytes())
        write_f32(GOLDEN / f"quant_{name}.f32", vals)
        index.append({"type": name, "rows": QUANT_ROWS, "cols": QUANT_COLS,
                      "raw": f"quant_{name}.bin", "values": f"quant_{name}.f32"})
    write_json(GOLDEN / "quant.json", {
        "source": f"gguf-py {gguf.__version__ if hasattr(gguf, '__version__') else _pkg_version('gguf')} "
                  "gguf.quants.dequantize on random blocks (numpy default_rng(1000 + type index))",
        "types": index})


def _pkg_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


# --------------------------------------------------------------------------- 2c tiny models

TINY_VOCAB = 256
TINY_PROMPT_LENGTHS = (1, 7, 40)

# rope keys as Hugging Face Hub Llama 3.x checkpoints spell them (transformers < 5); see step_tiny
LLAMA3_ROPE_SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                       "high_freq_factor": 4.0, "original_max_position_embeddings": 32}


def tiny_specs():
    """name -> (model class name, config kwargs, save dtype, save kwargs)."""
    common = dict(vocab_size=TINY_VOCAB, hidden_size=64, num_hidden_layers=2, intermediate_size=128,
                  max_position_embeddings=256, bos_token_id=1, eos_token_id=2)
    return {
        "llama": ("LlamaForCausalLM", dict(
            common, num_attention_heads=4, num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-5,
            rope_theta=10000.0, rope_scaling=dict(LLAMA3_ROPE_SCALING), tie_word_embeddings=False),
            "float32", dict(max_shard_size="300KB")),
        "qwen2": ("Qwen2ForCausalLM", dict(
            common, num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6,
            rope_theta=1000000.0, tie_word_embeddings=True, use_sliding_window=False),
            "float16", {}),
        # head_dim 16 with 8 query heads: q_proj is 64 -> 128, so head_dim != hidden / heads
        "qwen3": ("Qwen3ForCausalLM", dict(
            common, num_attention_heads=8, num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-6,
            rope_theta=1000000.0, tie_word_embeddings=True, attention_bias=False,
            use_sliding_window=False),
            "bfloat16", {}),
    }


def init_random_(model, seed: int, std: float = 0.2) -> None:
    """Deterministic init, independent of transformers' own init order: every parameter in name
    order from one generator. Norm weights ~ 1 + 0.1 N (so a decoder that ignores them fails),
    biases ~ 0.2 N, everything else ~ std N."""
    torch = setup_torch()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            r = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * r)
            elif name.endswith(".bias"):
                p.copy_(0.2 * r)
            else:
                p.copy_(std * r)


def last_logits_and_greedy(model, ids: list[int], n: int = N_GREEDY):
    """Logits of the last position for `ids`, and n greedy tokens: an explicit argmax loop that
    recomputes the whole sequence each step (no KV cache) and never stops at EOS.
    Also returns the smallest gap between the best and second-best logit over the steps: a C++
    implementation can only be expected to reproduce the tokens exactly when that gap is not tiny."""
    torch = setup_torch()
    seq = list(ids)
    first = None
    margin = float("inf")
    with torch.no_grad():
        for _ in range(n):
            out = model(input_ids=torch.tensor([seq]), use_cache=False)
            logits = out.logits[0, -1].float()
            if first is None:
                first = logits.clone()
            top2 = torch.topk(logits, 2).values
            margin = min(margin, float(top2[0] - top2[1]))
            seq.append(int(torch.argmax(logits)))
    return first.numpy(), seq[len(ids):], margin


def step_tiny() -> None:
    import shutil

    import transformers

    torch = setup_torch()
    print("[tiny]")
    for k, (name, (cls_name, cfg_kw, dtype, save_kw)) in enumerate(tiny_specs().items()):
        cls = getattr(transformers, cls_name)
        cfg_cls = getattr(transformers, cls_name.replace("ForCausalLM", "Config"))
        cfg = cfg_cls(**cfg_kw)
        torch.manual_seed(0)
        model = cls(cfg).eval()
        init_random_(model, seed=1234 + k)
        model = model.to(getattr(torch, dtype))
        out_dir = TINY_MODELS / f"tiny-{name}"
        if out_dir.exists():
            shutil.rmtree(out_dir)
        model.save_pretrained(out_dir, safe_serialization=True, **save_kw)
        (out_dir / "generation_config.json").unlink(missing_ok=True)  # not needed; keeps the dir minimal
        if name == "llama":
            # transformers 5 writes {"rope_parameters": {"rope_theta", "rope_type", ...}}; Hub
            # checkpoints (and transformers 4) use top-level "rope_theta" + "rope_scaling". Store this
            # model in the Hub spelling, the Qwen ones in the transformers-5 spelling, so the C++
            # config reader is tested on both; the reload below proves transformers reads it the same.
            cfg_path = out_dir / "config.json"
            c = json.loads(cfg_path.read_text())
            rp = c.pop("rope_parameters")
            c["rope_theta"] = rp.pop("rope_theta")
            c["rope_scaling"] = rp
            cfg_path.write_text(json.dumps(c, indent=2, sort_keys=True) + "\n")

        # reference: the SAVED (rounded) weights, reloaded and widened to float32
        ref = transformers.AutoModelForCausalLM.from_pretrained(
            out_dir, dtype=torch.float32, attn_implementation="eager").eval()
        assert next(ref.parameters()).dtype == torch.float32
        if name == "llama":
            assert ref.config.rope_parameters == model.config.rope_parameters, (
                ref.config.rope_parameters, model.config.rope_parameters)
        rng = np.random.default_rng(4321 + k)
        prompts = []
        for L in TINY_PROMPT_LENGTHS:
            ids = rng.integers(0, TINY_VOCAB, L).tolist()
            logits, greedy, margin = last_logits_and_greedy(ref, ids)
            assert float(logits.std()) > 0.5, (name, L, float(logits.std()))
            assert len(set(greedy)) > 3, (name, L, greedy)
            assert margin > 1e-3, (name, L, margin)
            prompts.append({"ids": ids, "logits": floats9(logits), "greedy": greedy,
                            "greedy_min_margin": f9(margin)})
            print(f"  {name} L={L}: logits std {logits.std():.3f}, min top1-top2 margin {margin:.4f}, "
                  f"greedy {greedy[:10]}...")
        files = sorted(p.name for p in out_dir.iterdir())
        size = sum(p.stat().st_size for p in out_dir.iterdir())
        print(f"  tiny-{name}: {files}, {size} bytes")
        assert size < 1 << 20
        write_json(GOLDEN / f"tiny_{name}.json", {
            "model_dir": rel(out_dir),
            "source": f"transformers {transformers.__version__}, torch {torch.__version__}: {cls_name} reloaded "
                      f"from model_dir (weights saved as {dtype}) in float32, eager attention; logits of the "
                      f"last position; greedy = {N_GREEDY} argmax steps recomputing the full sequence, no EOS stop",
            "prompts": prompts})


# --------------------------------------------------------------------------- 2b SmolLM2 logits

LOGIT_PROMPTS: list[dict] = [
    {"kind": "plain",
     "text": "The quick brown fox jumps over the lazy dog. Once upon a time, in a small village "
             "by the sea, there lived an old"},
    {"kind": "chat",
     "messages": [{"role": "user", "content": "What is 12 times 12?"}]},
    {"kind": "code",
     "text": "def add(a, b):\n    return a + b\n\n\nprint(add(1234, 5678))  # prints"},
]


def step_logits(gguf_path: Path) -> None:
    import llama_cpp
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch = setup_torch()
    print("[logits]")
    tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32,
        attn_implementation="eager").eval()
    cfg = model.config
    assert next(model.parameters()).dtype == torch.float32
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr(), "expected tied lm_head"
    print(f"  config: layers {cfg.num_hidden_layers}, hidden {cfg.hidden_size}, heads {cfg.num_attention_heads}/"
          f"{cfg.num_key_value_heads}, rope {cfg.rope_parameters}, eps {cfg.rms_norm_eps}, "
          f"tied {cfg.tie_word_embeddings}")

    # llama.cpp on the same file: ids (the tokenizer golden's implementation) and a logits cross-check
    llm = llama_cpp.Llama(model_path=str(gguf_path), n_ctx=256, n_threads=1, n_batch=256,
                          logits_all=True, verbose=False)

    prompts = []
    for i, spec in enumerate(LOGIT_PROMPTS):
        if spec["kind"] == "chat":
            text = tok.apply_chat_template(spec["messages"], tokenize=False, add_generation_prompt=True)
        else:
            text = spec["text"]
        ids = list(llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))
        assert ids == list(tok(text, add_special_tokens=False)["input_ids"]), text
        assert 10 <= len(ids) <= 40, (text, len(ids))
        logits, greedy, margin = last_logits_and_greedy(model, ids)
        argmax = int(np.argmax(logits))
        assert argmax == greedy[0]

        # llama.cpp: quantised matmuls (activations quantised too), so only close, not equal
        llm.reset()
        llm.eval(ids)
        lc = np.asarray(llm.scores[len(ids) - 1], dtype=np.float32)
        lc_greedy = []
        for _ in range(N_GREEDY):
            t = int(np.argmax(np.asarray(llm.scores[llm.n_tokens - 1])))
            lc_greedy.append(t)
            llm.eval([t])
        agree = next((j for j, (a, b) in enumerate(zip(greedy, lc_greedy)) if a != b), N_GREEDY)
        diff = float(np.max(np.abs(lc - logits)))
        rms = float(np.sqrt(np.mean((lc - logits).astype(np.float64) ** 2)))
        print(f"  prompt {i} ({spec['kind']}, {len(ids)} tokens): argmax {argmax} {tok.decode([argmax])!r}, "
              f"logit std {logits.std():.3f}, min margin {margin:.4f}, llama.cpp max|dlogit| {diff:.4f} rms {rms:.4f}, argmax "
              f"{int(np.argmax(lc))}, greedy agrees for {agree}/{N_GREEDY}")
        print(f"    greedy: {tok.decode(greedy)!r}")

        fname = f"smollm2_logits_{i}.f32"
        write_f32(GOLDEN / fname, logits)
        prompts.append({"text": text, "ids": ids, "logits_file": fname, "argmax": argmax, "greedy": greedy,
                        "greedy_min_margin": f9(margin),
                        "logits_std": f9(logits.std()),
                        "llama_cpp": {"max_abs_logit_diff": f9(diff), "rms_logit_diff": f9(rms), "argmax": int(np.argmax(lc)),
                                      "greedy_agree_prefix": agree}})

    write_json(GOLDEN / "smollm2_logits.json", {
        "model": rel(gguf_path) if gguf_path.is_relative_to(ROOT) else gguf_path.name,
        "source": f"transformers {transformers.__version__}, torch {torch.__version__}: "
                  "AutoModelForCausalLM.from_pretrained(gguf_file=..., dtype=float32, attn_implementation='eager'), "
                  "i.e. every GGUF tensor dequantised to float32 (attn_q/attn_k un-permuted by transformers, "
                  "lm_head tied to the Q8_0 token_embd), float32 compute. logits_file: raw little-endian float32 "
                  f"logits of the last prompt position ({cfg.vocab_size} values). greedy: {N_GREEDY} tokens of an "
                  "explicit argmax loop recomputing the full sequence each step, NOT stopping at EOS. ids: llama.cpp "
                  "tokenizer (same as tests/golden/smollm2_tokenizer.json), equal to transformers' here. llama_cpp: "
                  f"llama-cpp-python {llama_cpp.__version__} on the same file (quantised matmuls) for scale of "
                  "expected differences",
        "prompts": prompts})


# --------------------------------------------------------------------------- main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="tokenizer,quant,tiny,logits",
                    help="comma-separated steps: tokenizer, quant, tiny, logits")
    ap.add_argument("--gguf", type=Path, default=DEFAULT_GGUF)
    args = ap.parse_args()
    steps = [s.strip() for s in args.only.split(",") if s.strip()]
    GOLDEN.mkdir(parents=True, exist_ok=True)
    for s in steps:
        if s == "tokenizer":
            step_tokenizer(args.gguf.resolve())
        elif s == "quant":
            step_quant()
        elif s == "tiny":
            step_tiny()
        elif s == "logits":
            step_logits(args.gguf.resolve())
        else:
            raise SystemExit(f"unknown step {s!r}")


if __name__ == "__main__":
    main()
