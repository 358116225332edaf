#!/usr/bin/env python3
"""Writes the fuzzers' seed corpora (fuzz/corpus/<target>/) and dictionaries (fuzz/dict/).

Standard library only; the output is deterministic, so rerunning it after a change to this
script shows the difference in git. Seeds come from three places:

  - the project's fixtures: tests/models/tiny-*/ (config.json, the shard index, the tensor
    names and dtypes of the safetensors files), tests/golden/eval_parity/rows.jsonl, the chat
    templates of tests/unit/chat_template_test.cpp, the pre-tokenizer regexes of
    src/tokenizer/pre_tokenizer.cpp and the press catalog of src/presses/;
  - the default model models/SmolLM2-135M-Instruct.Q4_1.gguf when it has been fetched
    (scripts/fetch-model.sh): its metadata with the vocabulary cut to a few hundred tokens and
    its tensor infos, never its weights (without the model these seeds are skipped);
  - hand-made hostile inputs for the bug classes of llama.cpp's GGUF advisories
    (CVE-2024-21802/21825/21836/23496/23605, CVE-2025-49847/52566/53630,
    CVE-2026-27940/33298): counts and sizes that overflow, tensor data out of bounds, string
    lengths past the end, token ids outside the vocabulary. Each file name says its class.

Usage: python3 fuzz/make_corpus.py   (from anywhere; paths are relative to the repository)
"""

import json
import os
import re
import shutil
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fuzz", "corpus")
DICT = os.path.join(ROOT, "fuzz", "dict")
SEP = b"\n--8<--\n"  # kPartSeparator in fuzz/fuzz_util.h
MODEL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")

U64_MAX = 2**64 - 1


def write(target, name, data):
    if isinstance(data, str):
        data = data.encode("utf-8")
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def parts(*files):
    """A multi-file fuzz input: each element is bytes (or str), joined by the separator."""
    return SEP.join(p.encode("utf-8") if isinstance(p, str) else p for p in files)


def named(name, data):
    """A "file name\\ncontents" part (the safetensors target's model directory)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return name.encode() + b"\n" + data


def floats(n, seed=1, fmt="f"):
    """n deterministic small floats (an LCG), packed as f32 or f16."""
    out = []
    x = seed
    for _ in range(n):
        x = (x * 1103515245 + 12345) % 2**31
        out.append(((x >> 8) % 2001 - 1000) / 4000.0)
    return struct.pack("<%d%s" % (n, fmt), *out)


def bf16(n, seed=1):
    raw = floats(n, seed)
    return b"".join(raw[i + 2:i + 4] for i in range(0, len(raw), 4))


# ---------------------------------------------------------------------------------------
# GGUF
# ---------------------------------------------------------------------------------------

T_U8, T_I8, T_U16, T_I16, T_U32, T_I32, T_F32, T_BOOL, T_STR, T_ARR, T_U64, T_I64, T_F64 = range(13)
SCALAR = {T_U8: "B", T_I8: "b", T_U16: "H", T_I16: "h", T_U32: "I", T_I32: "i", T_F32: "f",
          T_BOOL: "B", T_U64: "Q", T_I64: "q", T_F64: "d"}
G_F32, G_F16, G_Q4_0, G_Q4_1, G_Q8_0, G_BF16 = 0, 1, 2, 3, 8, 30
BLOCK = {G_F32: (1, 4), G_F16: (1, 2), G_BF16: (1, 2), G_Q4_0: (32, 18), G_Q4_1: (32, 20),
         G_Q8_0: (32, 34)}


def gstr(s, length=None):
    if isinstance(s, str):
        s = s.encode("utf-8")
    return struct.pack("<Q", len(s) if length is None else length) + s


def gval(t, v):
    if t == T_STR:
        return gstr(v)
    if t == T_ARR:
        et, items = v[0], v[1]
        count = v[2] if len(v) > 2 else len(items)
        return struct.pack("<IQ", et, count) + b"".join(gval(et, x) for x in items)
    return struct.pack("<" + SCALAR[t], v)


def kv(key, t, v):
    return gstr(key) + struct.pack("<I", t) + gval(t, v)


def tinfo(name, ne, gtype, offset):
    return gstr(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d) for d in ne) + \
        struct.pack("<IQ", gtype, offset)


def nbytes(ne, gtype):
    be, bb = BLOCK[gtype]
    n = bb * (ne[0] // be)
    for d in ne[1:]:
        n *= d
    return n


def gguf(kvs, tensors, version=3, align=32, n_tensors=None, n_kv=None):
    """kvs: encoded kv() entries; tensors: (name, ne, type, data or None, offset or None)."""
    infos, data = [], b""
    for name, ne, gtype, blob, offset in tensors:
        # An explicit offset (hostile files) is written as given, its blob appended as is.
        if offset is None:
            data += b"\0" * ((-len(data)) % align)
            offset = len(data)
            if blob is None:
                blob = floats(nbytes(ne, gtype) // 4 + 1)[:nbytes(ne, gtype)]
        data += blob or b""
        infos.append(tinfo(name, ne, gtype, offset))
    head = b"GGUF" + struct.pack("<IQQ", version, len(tensors) if n_tensors is None else n_tensors,
                                 len(kvs) if n_kv is None else n_kv)
    head += b"".join(kvs) + b"".join(infos)
    return head + b"\0" * ((-len(head)) % align) + data


def byte_level(b):
    """GPT-2's byte-level alphabet: the character byte b stands for."""
    printable = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    if b in printable:
        return chr(b)
    return chr(256 + [c for c in range(256) if c not in printable].index(b))


def tiny_vocab():
    """3 specials, the 256 bytes, 4 merged tokens; ids, types and merges."""
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + [byte_level(b) for b in range(256)]
    types = [3, 3, 3] + [1] * 256
    merges = [(byte_level(32), "t"), ("h", "e"), (byte_level(32) + "t", "he"), ("i", "n")]
    for a, b in merges:
        tokens.append(a + b)
        types.append(1)
    return tokens, types, [a + " " + b for a, b in merges]


SMOL_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}")


def tokenizer_kvs(tokens=None, types=None, merges=None, bos=1, eos=2, extra=(), template=SMOL_TEMPLATE,
                  pre="smollm"):
    t, ty, m = tiny_vocab()
    tokens = t if tokens is None else tokens
    types = ty if types is None else types
    merges = m if merges is None else merges
    out = [kv("tokenizer.ggml.model", T_STR, "gpt2"), kv("tokenizer.ggml.pre", T_STR, pre),
           kv("tokenizer.ggml.tokens", T_ARR, (T_STR, tokens))]
    if types is not False:
        out.append(kv("tokenizer.ggml.token_type", T_ARR, (T_I32, types)))
    out.append(kv("tokenizer.ggml.merges", T_ARR, (T_STR, merges)))
    if bos is not None:
        out.append(kv("tokenizer.ggml.bos_token_id", T_U32, bos))
    if eos is not None:
        out.append(kv("tokenizer.ggml.eos_token_id", T_U32, eos))
    out += list(extra)
    if template is not None:
        out.append(kv("tokenizer.chat_template", T_STR, template))
    return out


def model_kvs(arch="llama", hidden=8, heads=2, kv_heads=1, ffn=16, layers=1, vocab=None, ctx=64,
              overrides=None):
    o = overrides or {}
    a = arch + "."
    entries = [("general.architecture", T_STR, arch), (a + "block_count", T_U32, layers),
               (a + "context_length", T_U32, ctx), (a + "embedding_length", T_U32, hidden),
               (a + "feed_forward_length", T_U32, ffn), (a + "attention.head_count", T_U32, heads),
               (a + "attention.head_count_kv", T_U32, kv_heads),
               (a + "rope.freq_base", T_F32, 10000.0),
               (a + "attention.layer_norm_rms_epsilon", T_F32, 1e-5)]
    if vocab is not None:
        entries.append((a + "vocab_size", T_U32, vocab))
    out = []
    for key, t, v in entries:
        if key in o:
            t, v = o.pop(key)
            if t is None:
                continue  # removed
        out.append(kv(key, t, v))
    for key, (t, v) in o.items():
        out.append(kv(key, t, v))
    return out


def model_tensors(arch="llama", hidden=8, heads=2, kv_heads=1, ffn=16, layers=1, vocab=263,
                  mat=G_F32, embed=G_F32, norm=G_F32, tied=False, layer_names=None):
    hd = hidden // heads
    ts = [("token_embd.weight", [hidden, vocab], embed), ("output_norm.weight", [hidden], norm)]
    if not tied:
        ts.append(("output.weight", [hidden, vocab], embed))
    for l in (range(layers) if layer_names is None else layer_names):
        p = "blk.%d." % l
        ts += [(p + "attn_norm.weight", [hidden], norm), (p + "attn_q.weight", [hidden, heads * hd], mat),
               (p + "attn_k.weight", [hidden, kv_heads * hd], mat),
               (p + "attn_v.weight", [hidden, kv_heads * hd], mat),
               (p + "attn_output.weight", [heads * hd, hidden], mat), (p + "ffn_norm.weight", [hidden], norm),
               (p + "ffn_gate.weight", [hidden, ffn], mat), (p + "ffn_up.weight", [hidden, ffn], mat),
               (p + "ffn_down.weight", [ffn, hidden], mat)]
        if arch == "qwen2":
            ts += [(p + "attn_q.bias", [heads * hd], G_F32), (p + "attn_k.bias", [kv_heads * hd], G_F32),
                   (p + "attn_v.bias", [kv_heads * hd], G_F32)]
        if arch == "qwen3":
            ts += [(p + "attn_q_norm.weight", [hd], G_F32), (p + "attn_k_norm.weight", [hd], G_F32)]
    return [(n, ne, t, None, None) for n, ne, t in ts]


def tiny_gguf(**kw):
    """A complete tiny model with the tiny tokenizer (263 tokens)."""
    arch = kw.pop("arch", "llama")
    mkw = {k: kw.pop(k) for k in list(kw) if k in ("overrides", "layers")}
    tkw = {k: kw.pop(k) for k in list(kw) if k in ("tok",)}
    layers = mkw.get("layers", 1)
    kvs = model_kvs(arch, **mkw) + (tokenizer_kvs(**tkw.get("tok", {})))
    return gguf(kvs, model_tensors(arch, layers=layers, **kw))


def config_gguf(overrides=None, layers=1, layer_names=None, extra_tensors=()):
    """A tiny model without a tokenizer (vocab_size 16): small seeds for the config checks."""
    return gguf(model_kvs(vocab=16, layers=layers, overrides=overrides),
                model_tensors(vocab=16, layers=layers, layer_names=layer_names) + list(extra_tensors))


def meta_only(kvs, version=3):
    return gguf(kvs, [], version=version)


def read_gguf_header(path):
    """(metadata list of (key, type, value)), tensor infos) of a GGUF, from its header only."""
    with open(path, "rb") as f:
        d = f.read(8 << 20)
    pos = 24
    n_tensors, n_kv = struct.unpack_from("<QQ", d, 8)

    def rd(fmt):
        nonlocal pos
        v = struct.unpack_from("<" + fmt, d, pos)[0]
        pos += struct.calcsize("<" + fmt)
        return v

    def rstr():
        nonlocal pos
        n = rd("Q")
        s = d[pos:pos + n]
        pos += n
        return s

    def rval(t):
        if t in SCALAR:
            return rd(SCALAR[t])
        if t == T_STR:
            return rstr()
        et, n = rd("I"), rd("Q")
        return (et, [rval(et) for _ in range(n)])

    meta = []
    for _ in range(n_kv):
        key = rstr().decode()
        t = rd("I")
        meta.append((key, t, rval(t)))
    infos = []
    for _ in range(n_tensors):
        name = rstr().decode()
        nd = rd("I")
        ne = [rd("Q") for _ in range(nd)]
        gtype, off = rd("I"), rd("Q")
        infos.append((name, ne, gtype, off))
    return meta, infos


def smollm2_seeds():
    """The default model's header, vocabulary cut to 400 tokens, no weights."""
    if not os.path.exists(MODEL):
        print("note: %s not fetched; skipping the seeds made from its header" % MODEL, file=sys.stderr)
        return None
    meta, infos = read_gguf_header(MODEL)
    keep = 400
    values = {k: v for k, _, v in meta}
    tokens = values["tokenizer.ggml.tokens"][1][:keep]
    kept = set(tokens)
    out = []
    for key, t, v in meta:
        if key == "tokenizer.ggml.tokens":
            v = (T_STR, tokens)
        elif key == "tokenizer.ggml.token_type":
            v = (v[0], v[1][:keep])
        elif key == "tokenizer.ggml.merges":
            ms = []
            for m in v[1]:
                a, b = m.split(b" ", 1)
                if a in kept and b in kept and a + b in kept:
                    ms.append(m)
            v = (T_STR, ms)
        elif key == "llama.vocab_size":
            v = keep
        out.append(kv(key, t, v))
    return out, infos, values


def gguf_corpus():
    t = "gguf"
    tokens, types, merges = tiny_vocab()
    # Valid files.
    write(t, "tiny-llama-f32.gguf", tiny_gguf())
    write(t, "tiny-llama-2-layers-tied.gguf", tiny_gguf(layers=2, tied=True))
    write(t, "tiny-qwen2-biases.gguf", tiny_gguf(arch="qwen2"))
    write(t, "tiny-qwen3-qk-norm.gguf", tiny_gguf(arch="qwen3"))
    quant = model_kvs(hidden=32, heads=4, kv_heads=2, ffn=32, vocab=8)
    write(t, "tiny-quantised-q8-q4-f16.gguf",
          gguf(quant, model_tensors(hidden=32, heads=4, kv_heads=2, ffn=32, vocab=8, mat=G_Q4_0,
                                    embed=G_Q8_0, norm=G_F16)))
    write(t, "tiny-quantised-q4_1-bf16-v2.gguf",
          gguf(quant, model_tensors(hidden=32, heads=4, kv_heads=2, ffn=32, vocab=8, mat=G_Q4_1,
                                    embed=G_Q4_1, norm=G_BF16), version=2))
    write(t, "tokenizer-only.gguf", meta_only(tokenizer_kvs()))
    write(t, "tokenizer-llama3-pre.gguf", meta_only(tokenizer_kvs(pre="llama-bpe", template=(
        "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}")))
    )
    whole = tiny_gguf()
    for cut in (3, 7, 15, 23, 40, 200, len(whole) // 2, len(whole) - 1):
        write(t, "truncated-at-%d.gguf" % cut, whole[:cut])

    smol = smollm2_seeds()
    if smol:
        kvs, infos, _ = smol
        head = b"GGUF" + struct.pack("<IQQ", 3, len(infos), len(kvs)) + b"".join(kvs) + \
            b"".join(tinfo(n, ne, g, o) for n, ne, g, o in infos)
        head += b"\0" * ((-len(head)) % 32)
        # Every tensor info of the real model, 4 KiB of zero data: tensor data past the end.
        write(t, "smollm2-header-data-truncated.gguf", head + b"\0" * 4096)
        write(t, "smollm2-metadata-no-tensors.gguf", meta_only(kvs))
        write(t, "smollm2-metadata-no-tensors-v2.gguf", meta_only(kvs, version=2))
        # The real shapes with one layer and 1/9 of the widths would not fit a seed; the
        # header with block_count 1 and only blk.0's tensor infos is the closest small copy.
        blk0 = [i for i in infos if not i[0].startswith("blk.") or i[0].startswith("blk.0.")]
        kvs1 = [k if not k.startswith(gstr("llama.block_count")) else kv("llama.block_count", T_U32, 1)
                for k in kvs]
        head1 = b"GGUF" + struct.pack("<IQQ", 3, len(blk0), len(kvs1)) + b"".join(kvs1) + \
            b"".join(tinfo(n, ne, g, o) for n, ne, g, o in blk0)
        write(t, "smollm2-one-layer-header.gguf", head1 + b"\0" * ((-len(head1)) % 32) + b"\0" * 1024)

    hostile_gguf(t)


def hostile_gguf(t):
    tok = tokenizer_kvs()
    small = model_kvs(vocab=8)
    tensor = [("token_embd.weight", [8, 8], G_F32, None, None)]

    def w(name, data):
        write(t, name, data)

    # Counts (CVE-2024-21836 n_tensors, CVE-2024-23605 n_kv: count * sizeof overflows).
    w("count-n-tensors-u64-max.gguf", gguf(small, tensor, n_tensors=U64_MAX))
    w("count-n-tensors-mul-overflow.gguf", gguf(small, tensor, n_tensors=U64_MAX // 40 + 1))
    w("count-n-tensors-one-too-many.gguf", gguf(small, tensor, n_tensors=2))
    w("count-n-kv-u64-max.gguf", gguf(small, tensor, n_kv=U64_MAX))
    w("count-n-kv-mul-overflow.gguf", gguf(small, tensor, n_kv=U64_MAX // 13 + 1))
    w("count-n-kv-and-n-tensors-sum.gguf", gguf(small, tensor, n_kv=20, n_tensors=4))
    w("count-n-kv-one-too-many.gguf", gguf(small, tensor, n_kv=len(small) + 1))
    # String lengths (CVE-2024-23496: length + 1 overflows; lengths past the end).
    w("string-key-length-u64-max.gguf", b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + gstr("k", U64_MAX) + b"k")
    w("string-key-length-2-63.gguf", b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + gstr("k", 2**63) + b"k" * 16)
    w("string-key-length-past-end.gguf", b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + gstr("key", 4) +
      struct.pack("<I", T_U8) + b"\1"[:0])
    w("string-value-length-u64-max.gguf", meta_only([gstr("general.name") + struct.pack("<I", T_STR) +
                                                     gstr("x", U64_MAX) + b"x" * 32]))
    w("string-value-length-past-end.gguf", meta_only([gstr("general.name") + struct.pack("<I", T_STR) +
                                                      gstr("abc", 100) + b"abc"]))
    w("string-tensor-name-u64-max.gguf", b"GGUF" + struct.pack("<IQQ", 3, 1, 0) + gstr("t", U64_MAX) +
      b"t" + b"\0" * 40)
    w("string-key-empty.gguf", meta_only([kv("", T_U8, 1)]))
    w("string-tensor-name-empty.gguf", gguf(small, [("", [8], G_F32, None, None)]))
    # Arrays (CVE-2024-21825: count * element size overflows; strings inside arrays).
    w("array-count-u64-max.gguf", meta_only([kv("a", T_ARR, (T_U8, [1, 2, 3], U64_MAX))]))
    w("array-strings-count-mul-overflow.gguf", meta_only([kv("a", T_ARR, (T_STR, ["x"], 2**61))]))
    w("array-u64-count-mul-overflow.gguf", meta_only([kv("a", T_ARR, (T_U64, [1], 2**61 + 1))]))
    w("array-count-one-too-many.gguf", meta_only([kv("a", T_ARR, (T_U32, [1, 2], 3))]))
    w("array-string-element-length-huge.gguf", meta_only([gstr("a") + struct.pack("<IIQ", T_ARR, T_STR, 2) +
                                                          gstr("ok") + gstr("x", U64_MAX - 1) + b"x"]))
    nested = (T_U8, [7])
    for _ in range(15):
        nested = (T_ARR, [nested])
    w("array-nested-16-deep.gguf", meta_only([kv("a", T_ARR, nested)]))
    w("array-nested-17-deep.gguf", meta_only([kv("a", T_ARR, (T_ARR, [nested]))]))
    w("array-element-type-invalid.gguf", meta_only([gstr("a") + struct.pack("<IIQ", T_ARR, 13, 1) + b"\0" * 8]))
    w("array-element-type-u32-max.gguf", meta_only([gstr("a") + struct.pack("<IIQ", T_ARR, 0xFFFFFFFF, 1) +
                                                    b"\0" * 8]))
    w("array-empty.gguf", meta_only([kv("a", T_ARR, (T_STR, []))]))
    w("value-type-invalid.gguf", meta_only([gstr("a") + struct.pack("<I", 13) + b"\0" * 8]))
    w("value-bool-2.gguf", meta_only([kv("a", T_U8, 2)[:-5] + struct.pack("<IB", T_BOOL, 2)]))
    w("metadata-duplicate-key.gguf", meta_only([kv("a", T_U8, 1), kv("a", T_U8, 2)]))
    # Tensor infos (CVE-2024-21802: n_dims past the dims array; CVE-2026-33298: the dims'
    # product times the row size wraps; CVE-2025-53630 / CVE-2026-27940: sizes and offsets
    # whose sums wrap, so a too-small buffer is allocated or read).
    for nd in (0, 5, 0xFFFFFFFF):
        w("tensor-n-dims-%d.gguf" % nd, b"GGUF" + struct.pack("<IQQ", 3, 1, 0) + gstr("t") +
          struct.pack("<I", nd) + struct.pack("<Q", 8) * 5 + struct.pack("<IQ", 0, 0) + b"\0" * 64)
    def one(ne, gtype=G_F32, offset=0, data=b"\0" * 64, kvs=small):
        return gguf(kvs, [("t", ne, gtype, data, offset)])
    w("tensor-ne-zero.gguf", one([0, 8]))
    w("tensor-ne-2-63.gguf", one([2**63]))
    w("tensor-ne-u64-max.gguf", one([U64_MAX]))
    w("tensor-numel-overflow-2-32-squared.gguf", one([2**32, 2**32]))
    w("tensor-numel-overflow-4-dims.gguf", one([2**16, 2**16, 2**16, 2**16]))
    w("tensor-nbytes-wraps-to-zero-f32.gguf", one([2**62]))
    w("tensor-nbytes-wraps-q8_0.gguf", one([32 * 2**58]))
    w("tensor-nbytes-2-42-rows.gguf", one([32, 2**42 + 1], G_Q8_0))
    w("tensor-row-not-block-multiple.gguf", one([33], G_Q4_0))
    w("tensor-type-unsupported-q5_0.gguf", one([32], 6))
    w("tensor-type-u32-max.gguf", one([8], 0xFFFFFFFF))
    w("tensor-offset-misaligned.gguf", one([8], offset=1))
    w("tensor-offset-huge.gguf", one([8], offset=2**64 - 32))
    w("tensor-offset-plus-size-wraps.gguf", one([2**61], offset=2**63))
    w("tensor-data-one-byte-past-end.gguf", one([17], data=b"\0" * 64))
    w("tensor-data-past-end-v2.gguf", gguf(small, [("t", [8, 8], G_F32, b"\0" * 16, 0)], version=2))
    w("tensor-overlapping-data.gguf", gguf(small, [("a", [8], G_F32, b"\0" * 64, 0), ("b", [8], G_F32, None, 0)]))
    w("tensor-duplicate-name.gguf", gguf(small, [("a", [8], G_F32, None, None), ("a", [8], G_F32, None, None)]))
    w("tensor-sizes-sum-wraps.gguf", gguf(small, [("a", [2**61 - 8], G_F32, b"\0" * 64, 0),
                                                  ("b", [2**61 - 8], G_F32, None, 2**63)]))
    w("tensor-many-small.gguf", gguf(small, [("t%d" % i, [1], G_F32, None, None) for i in range(64)]))
    # Alignment.
    for name, (ty, v) in {"zero": (T_U32, 0), "three": (T_U32, 3), "2-63": (T_U64, 2**63),
                          "negative": (T_I32, -32), "string": (T_STR, "32"), "u8-1": (T_U8, 1),
                          "65536": (T_U32, 65536)}.items():
        w("alignment-%s.gguf" % name, gguf(small + [kv("general.alignment", ty, v)], tensor))
    # Header.
    w("header-version-1.gguf", b"GGUF" + struct.pack("<IQQ", 1, 0, 0))
    w("header-big-endian.gguf", b"GGUF" + struct.pack(">IQQ", 3, 0, 0))
    w("header-bad-magic.gguf", b"GGML" + struct.pack("<IQQ", 3, 0, 0))
    w("header-3-bytes.gguf", b"GGU")
    w("header-only.gguf", b"GGUF" + struct.pack("<IQQ", 3, 0, 0))
    # Token ids outside the vocabulary (263 tokens).
    for key, ty, v in [("bos_token_id", T_U32, 263), ("bos_token_id", T_U32, 0xFFFFFFFF),
                       ("eos_token_id", T_I32, -2), ("eos_token_id", T_I64, 2**40),
                       ("unknown_token_id", T_U64, 2**63 + 1), ("padding_token_id", T_U32, 263),
                       ("eot_token_id", T_I32, 1000), ("eom_token_id", T_U32, 263),
                       ("bos_token_id", T_STR, "1"), ("eos_token_id", T_F32, 2.5)]:
        w("token-id-%s-%s.gguf" % (key.replace("_token_id", ""), str(v).replace("-", "minus")),
          meta_only(tokenizer_kvs(bos=None if key == "bos_token_id" else 1,
                                  eos=None if key == "eos_token_id" else 2,
                                  extra=[kv("tokenizer.ggml." + key, ty, v)])))
    tokens, types, merges = tiny_vocab()
    w("token-types-shorter-than-tokens.gguf", meta_only(tokenizer_kvs(types=types[:-1])))
    w("token-type-7.gguf", meta_only(tokenizer_kvs(types=types[:-1] + [7])))
    w("token-type-minus-1.gguf", meta_only(tokenizer_kvs(types=[-1] + types[1:])))
    w("token-types-absent.gguf", meta_only(tokenizer_kvs(types=False)))
    w("merge-references-missing-token.gguf", meta_only(tokenizer_kvs(merges=merges + ["zz qq"])))
    w("merge-without-space.gguf", meta_only(tokenizer_kvs(merges=merges + ["ab"])))
    w("merge-leading-space.gguf", meta_only(tokenizer_kvs(merges=[" t"])))
    w("merge-invalid-utf8.gguf", meta_only(tokenizer_kvs(merges=[b"\xff \xfe\x1b[31m"])))
    w("merges-empty.gguf", meta_only(tokenizer_kvs(merges=[])))
    w("tokens-empty.gguf", meta_only(tokenizer_kvs(tokens=[], types=[], merges=[], bos=None, eos=None)))
    w("tokens-not-strings.gguf", meta_only([kv("tokenizer.ggml.model", T_STR, "gpt2"),
                                           kv("tokenizer.ggml.tokens", T_ARR, (T_U32, [1, 2, 3])),
                                           kv("tokenizer.ggml.merges", T_ARR, (T_STR, []))]))
    # Byte tokens "<0xAB>" decoded by text (CVE-2025-49847: token text to bytes).
    for text in ("<0x41>", "<0xZZ>", "<0x-1>", "<0x 1>", "<0x>", "<0x4142>"):
        ty2 = list(types)
        ty2[3 + 65] = 6
        tk2 = list(tokens)
        tk2[3 + 65] = text
        w("token-byte-%s.gguf" % text.strip("<>").replace(" ", "_"), meta_only(tokenizer_kvs(
            tokens=tk2, types=ty2, merges=[])))
    w("token-text-8k.gguf", meta_only(tokenizer_kvs(tokens=tokens + ["a" * 8192], types=types + [4])))
    w("token-user-defined-empty.gguf", meta_only(tokenizer_kvs(tokens=tokens + [""], types=types + [4])))
    w("token-control-duplicates.gguf", meta_only(tokenizer_kvs(tokens=tokens + ["<|im_end|>"] * 3,
                                                               types=types + [3] * 3)))
    w("tokenizer-model-llama.gguf", meta_only([kv("tokenizer.ggml.model", T_STR, "llama")] + tok[1:]))
    w("tokenizer-pre-unknown.gguf", meta_only(tokenizer_kvs(pre="falcon")))
    w("tokenizer-add-space-prefix.gguf", meta_only(tokenizer_kvs(extra=[kv("tokenizer.ggml.add_space_prefix",
                                                                         T_BOOL, 1)])))
    # Chat-template special tokens the vocabulary lacks.
    no_specials = [tokens[i] for i in range(3, len(tokens))]
    w("template-chatml-without-special-tokens.gguf", meta_only(tokenizer_kvs(
        tokens=no_specials, types=types[3:], bos=None, eos=None)))
    w("template-llama3-without-special-tokens.gguf", meta_only(tokenizer_kvs(
        template="{{ '<|start_header_id|>' }}Cutting Knowledge Date{% set date_string = \"", pre="llama3")))
    # Model config through GGUF metadata.
    for key, ty, v in [("llama.block_count", T_U32, 0), ("llama.block_count", T_U32, 2**31),
                       ("llama.block_count", T_U64, 2**40), ("llama.block_count", T_STR, "1"),
                       ("llama.attention.head_count", T_U32, 0), ("llama.attention.head_count_kv", T_U32, 0),
                       ("llama.attention.head_count_kv", T_U32, 3), ("llama.attention.key_length", T_U32, 3),
                       ("llama.rope.freq_base", T_F32, float("inf")), ("llama.rope.freq_base", T_F32, float("nan")),
                       ("llama.attention.layer_norm_rms_epsilon", T_F32, float("nan")),
                       ("llama.attention.layer_norm_rms_epsilon", T_F64, -1.0),
                       ("llama.context_length", T_U64, 2**62), ("llama.embedding_length", T_I32, -8),
                       ("llama.vocab_size", T_I64, 2**40), ("llama.vocab_size", T_U32, 17),
                       ("llama.rope.scaling.type", T_STR, "yarn"), ("general.architecture", T_STR, "gpt2"),
                       ("general.architecture", T_U32, 1)]:
        w("config-%s-%s.gguf" % (key.split(".", 1)[1], str(v).replace("-", "minus")),
          config_gguf(overrides={key: (ty, v)}))
    w("config-valid.gguf", config_gguf())
    w("config-block-count-smaller-than-layers.gguf", config_gguf(layer_names=[0, 1]))
    w("config-layer-index-huge.gguf", config_gguf(layer_names=[0, 99999999999999999999]))
    w("config-rope-freqs-tensor.gguf", config_gguf(extra_tensors=[("rope_freqs.weight", [2], G_F32, None, None)]))
    w("config-missing-architecture.gguf", config_gguf(overrides={"general.architecture": (None, None)}))
    w("config-vocab-size-missing-no-tokens.gguf", config_gguf(overrides={"llama.vocab_size": (None, None)}))


# ---------------------------------------------------------------------------------------
# safetensors
# ---------------------------------------------------------------------------------------

ST_SIZE = {"F32": 4, "F16": 2, "BF16": 2}


def st_file(tensors, metadata=None, header_override=None):
    """tensors: (name, dtype, shape[, data]). Returns header length + header JSON + data."""
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for t in tensors:
        name, dtype, shape = t[:3]
        n = ST_SIZE[dtype]
        for d in shape:
            n *= d
        blob = t[3] if len(t) > 3 else (bf16(n // 2) if dtype == "BF16" else
                                        floats(n // 2, fmt="e") if dtype == "F16" else floats(n // 4))
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(blob)]}
        data += blob
    text = header_override if header_override is not None else json.dumps(header, separators=(",", ":"))
    if isinstance(text, str):
        text = text.encode()
    text += b" " * ((-len(text)) % 8)
    return struct.pack("<Q", len(text)) + text + data


def st_raw(header_text, data=b"", length=None):
    if isinstance(header_text, str):
        header_text = header_text.encode()
    return struct.pack("<Q", len(header_text) if length is None else length) + header_text + data


def fixture_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n))


TINY = dict(hidden_size=8, intermediate_size=16, num_attention_heads=2, num_key_value_heads=1,
            head_dim=4, vocab_size=16, max_position_embeddings=64)


def shrunk_shape(name, cfg):
    """The shape a tensor named like the fixture's gets in the shrunk config."""
    h, f, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    q, k = cfg["num_attention_heads"] * cfg["head_dim"], cfg["num_key_value_heads"] * cfg["head_dim"]
    rules = [("embed_tokens", [v, h]), ("lm_head", [v, h]), ("q_proj.weight", [q, h]), ("k_proj.weight", [k, h]),
             ("v_proj.weight", [k, h]), ("o_proj", [h, q]), ("q_proj.bias", [q]), ("k_proj.bias", [k]),
             ("v_proj.bias", [k]), ("q_norm", [cfg["head_dim"]]), ("k_norm", [cfg["head_dim"]]),
             ("gate_proj", [f, h]), ("up_proj", [f, h]), ("down_proj", [h, f]), ("norm", [h])]
    for key, shape in rules:
        if key in name:
            return shape
    raise ValueError(name)


def shrunk_model(fixture):
    """A fixture model with its tensor names and dtypes, every size shrunk: files by name."""
    d = os.path.join(ROOT, "tests", "models", fixture)
    with open(os.path.join(d, "config.json")) as fcfg:
        cfg = json.load(fcfg)
    cfg.update(TINY)
    files = {"config.json": json.dumps(cfg, indent=1)}
    index_path = os.path.join(d, "model.safetensors.index.json")
    if os.path.exists(index_path):
        with open(index_path) as fi:
            index = json.load(fi)
        shards = sorted(set(index["weight_map"].values()))
        for shard in shards:
            hdr = fixture_header(os.path.join(d, shard))
            files[shard] = st_file([(n, e["dtype"], shrunk_shape(n, cfg)) for n, e in sorted(hdr.items())
                                    if n != "__metadata__"], metadata={"format": "pt"})
        index["metadata"]["total_size"] = sum(len(files[s]) for s in shards)
        files["model.safetensors.index.json"] = json.dumps(index, indent=1)
    else:
        hdr = fixture_header(os.path.join(d, "model.safetensors"))
        files["model.safetensors"] = st_file([(n, e["dtype"], shrunk_shape(n, cfg)) for n, e in sorted(hdr.items())
                                              if n != "__metadata__"], metadata={"format": "pt"})
    return files


def model_dir(files):
    return parts(*[named(n, files[n]) for n in files])


def safetensors_corpus():
    t = "safetensors"
    models = {name: shrunk_model(name) for name in ("tiny-llama", "tiny-qwen2", "tiny-qwen3")}
    for name, files in models.items():
        write(t, "dir-%s-shrunk" % name, model_dir(files))
        for fname, blob in files.items():
            if fname.endswith(".safetensors"):
                write(t, "file-%s-%s" % (name, fname), blob)
    # The fixtures' own headers over 256 bytes of data (their data would make large seeds).
    for name in ("tiny-qwen2", "tiny-qwen3"):
        with open(os.path.join(ROOT, "tests", "models", name, "model.safetensors"), "rb") as f:
            raw = f.read()
        n = struct.unpack_from("<Q", raw)[0]
        write(t, "file-%s-fixture-header-data-truncated" % name, raw[:8 + n + 256])
    llama = models["tiny-llama"]
    with open(os.path.join(ROOT, "tests", "models", "tiny-llama", "model.safetensors.index.json")) as f:
        write(t, "dir-tiny-llama-fixture-index-no-shards", parts(named("model.safetensors.index.json", f.read()),
                                                                 named("config.json", llama["config.json"])))
    hostile_safetensors(t, llama)


def hostile_safetensors(t, llama):
    def w(name, data):
        write(t, name, data)

    ok = [("a", "F32", [2, 2])]
    # Header length (counts and sizes: the length itself, and 8 + length wrapping).
    w("header-length-u64-max", st_raw("{}", length=U64_MAX))
    w("header-length-2-63", st_raw("{}", length=2**63))
    w("header-length-over-100m", st_raw("{}", length=100_000_001))
    w("header-length-past-end", st_raw("{}", length=3))
    w("header-length-zero", st_raw(""))
    w("header-7-bytes", b"\x02\0\0\0\0\0\0")
    w("header-not-json", st_raw("{\"a\":"))
    w("header-array", st_raw("[]"))
    w("header-deep-65", st_raw('{"a":' + "[" * 65 + "]" * 65 + "}"))
    w("header-deep-4000", st_raw('{"a":' + "[" * 4000 + "]" * 4000 + "}"))
    w("header-duplicate-tensor", st_raw('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
                                        '"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', b"\0" * 4))
    w("header-invalid-utf8", st_raw(b'{"\xff\xfe":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', b"\0" * 4))
    w("header-metadata-only", st_raw('{"__metadata__":{"format":"pt","x":[1,{"y":null}]}}'))
    w("header-entry-not-object", st_raw('{"a":[1,2]}'))

    def entry(dtype="F32", shape=(1,), offsets=(0, 4), data=b"\0" * 4):
        e = {"dtype": dtype, "shape": shape, "data_offsets": offsets}
        return st_raw(json.dumps({"a": e}), data)

    w("dtype-f64", entry(dtype="F64"))
    w("dtype-number", entry(dtype=1))
    w("dtype-missing", st_raw('{"a":{"shape":[1],"data_offsets":[0,4]}}', b"\0" * 4))
    w("shape-5-dims", entry(shape=[1, 1, 1, 1, 1]))
    w("shape-negative", entry(shape=[-1]))
    w("shape-float", entry(shape=[1.5]))
    w("shape-2-63", entry(shape=[2**63], offsets=[0, 0]))
    w("shape-1e30", st_raw('{"a":{"dtype":"F32","shape":[1e30],"data_offsets":[0,4]}}', b"\0" * 4))
    w("shape-numel-overflow", entry(shape=[2**32, 2**32, 2**32], offsets=[0, 0]))
    w("shape-nbytes-wraps-to-zero", entry(shape=[2**62], offsets=[0, 0], data=b""))
    w("shape-nbytes-wraps-bf16", entry(dtype="BF16", shape=[2**63 - 1], offsets=[0, 2**64 - 2]))
    w("shape-scalar", entry(shape=[]))
    w("shape-zero-size", entry(shape=[0, 4], offsets=[0, 0], data=b""))
    w("shape-missing", st_raw('{"a":{"dtype":"F32","data_offsets":[0,4]}}', b"\0" * 4))
    w("offsets-reversed", entry(offsets=[4, 0]))
    w("offsets-past-end", entry(offsets=[0, 8]))
    w("offsets-u64-max", entry(offsets=[U64_MAX - 3, U64_MAX]))
    w("offsets-float", entry(offsets=[0.0, 4.0]))
    w("offsets-three", entry(offsets=[0, 4, 8]))
    w("offsets-span-mismatch", entry(offsets=[0, 3]))
    w("offsets-misaligned-f32", st_raw(json.dumps({"a": {"dtype": "F32", "shape": [1], "data_offsets": [1, 5]}})
                                       + " " * 3, b"\0" * 8))
    w("offsets-overlapping", st_raw(json.dumps({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                                "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}),
                                    b"\0" * 12))
    w("offsets-one-byte-past-end", entry(shape=[2], offsets=[0, 8], data=b"\0" * 7))
    # Shard index (file names from the index must stay inside the model directory).
    shard = llama["model-00001-of-00002.safetensors"]
    names = list(json.loads(llama["model.safetensors.index.json"])["weight_map"])
    for label, target in [("dotdot", "../escape.safetensors"), ("absolute", "/etc/passwd"),
                          ("subdir", "sub/x.safetensors"), ("empty", ""), ("backslash", "a\\b"),
                          ("dot", "."), ("nul", "a\u0000b")]:
        w("index-shard-name-%s" % label, parts(named("model.safetensors.index.json",
                                                     json.dumps({"weight_map": {names[0]: target}}))))
    w("index-value-not-string", parts(named("model.safetensors.index.json", '{"weight_map":{"a":1}}')))
    w("index-weight-map-empty", parts(named("model.safetensors.index.json", '{"weight_map":{}}')))
    w("index-weight-map-array", parts(named("model.safetensors.index.json", '{"weight_map":[]}')))
    w("index-not-object", parts(named("model.safetensors.index.json", "[1]")))
    w("index-invalid-json", parts(named("model.safetensors.index.json", '{"weight_map":')))
    w("index-deep-nesting", parts(named("model.safetensors.index.json", "[" * 5000 + "]" * 5000)))
    w("index-tensor-missing-from-shard", parts(
        named("model.safetensors.index.json", json.dumps({"weight_map": {"nope": "s.safetensors"}})),
        named("s.safetensors", st_file(ok))))
    w("index-shard-missing", parts(named("model.safetensors.index.json",
                                         json.dumps({"weight_map": {"a": "missing.safetensors"}}))))
    w("index-shard-hostile", parts(named("model.safetensors.index.json", json.dumps({"weight_map": {"a": "s"}})),
                                   named("s", st_raw("{}", length=U64_MAX))))
    w("index-one-shard-many-names", parts(named("model.safetensors.index.json",
                                                json.dumps({"weight_map": {n: "model-00001-of-00002.safetensors"
                                                                           for n in names}})),
                                          named("model-00001-of-00002.safetensors", shard)))
    # The model directory and its config.json disagree.
    cfg = json.loads(llama["config.json"])
    for label, change in [("fewer-layers", {"num_hidden_layers": 1}), ("more-layers", {"num_hidden_layers": 3}),
                          ("vocab-mismatch", {"vocab_size": 17}), ("hidden-mismatch", {"hidden_size": 16}),
                          ("heads-mismatch", {"num_attention_heads": 4})]:
        files = dict(llama)
        c = dict(cfg)
        c.update(change)
        files["config.json"] = json.dumps(c)
        w("dir-config-%s" % label, model_dir(files))
    w("dir-single-file-and-index", model_dir(dict(llama, **{"model.safetensors": st_file(ok)})))
    w("dir-single-file-only", parts(named("model.safetensors", st_file(ok)), named("x", "")))


# ---------------------------------------------------------------------------------------
# tokenizer.json
# ---------------------------------------------------------------------------------------

def pre_tokenizer_patterns():
    with open(os.path.join(ROOT, "src", "tokenizer", "pre_tokenizer.cpp")) as f:
        src = f.read()
    return dict(re.findall(r'constexpr const char\* k(\w+)Pattern =\s*R"\((.*?)\)";', src, re.S))


def tokenizer_json(vocab=None, merges=None, added=None, pre=None, extra=None, model_extra=None):
    if vocab is None:
        tokens, _, m = tiny_vocab()
        vocab = {tok: i for i, tok in enumerate(tokens) if i >= 3}
        merges = m if merges is None else merges
        added = [{"id": i, "content": tokens[i], "special": True} for i in range(3)] if added is None else added
    model = {"type": "BPE", "dropout": None, "unk_token": None, "vocab": vocab, "merges": merges or []}
    model.update(model_extra or {})
    root = {"version": "1.0", "added_tokens": added or [], "normalizer": None,
            "pre_tokenizer": pre or {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True},
            "post_processor": {"type": "ByteLevel"}, "decoder": {"type": "ByteLevel"}, "model": model}
    root.update(extra or {})
    return json.dumps(root, ensure_ascii=False)


def split_pre(regex, digits=False):
    split = {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False}
    byte = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False}
    if digits:
        return {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True},
                                                      dict(byte, use_regex=True)]}
    return {"type": "Sequence", "pretokenizers": [split, byte]}


def smollm2_tokenizer_json(meta):
    tokens = meta["tokenizer.ggml.tokens"][1][:400]
    types = meta["tokenizer.ggml.token_type"][1][:400]
    kept = set(tokens)
    merges = []
    for m in meta["tokenizer.ggml.merges"][1]:
        a, b = m.split(b" ", 1)
        if a in kept and b in kept and a + b in kept:
            merges.append(m.decode())
    vocab = {tok.decode(): i for i, tok in enumerate(tokens)}
    added = [{"id": i, "content": tokens[i].decode(), "special": True} for i in range(400) if types[i] == 3]
    tj = tokenizer_json(vocab, merges, added, pre=split_pre(None, digits=True))
    config = json.dumps({"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "add_bos_token": False,
                         "chat_template": meta["tokenizer.chat_template"].decode()})
    return tj, config


def tokenizer_corpus():
    t = "tokenizer_json"
    pats = pre_tokenizer_patterns()
    write(t, "tiny-bytelevel.json", tokenizer_json())
    write(t, "tiny-bytelevel-with-config.json", parts(tokenizer_json(), json.dumps(
        {"bos_token": {"content": "<|im_start|>"}, "eos_token": "<|im_end|>", "add_bos_token": True,
         "chat_template": SMOL_TEMPLATE})))
    write(t, "tiny-llama3-split.json", tokenizer_json(pre=split_pre(pats["Llama3"]), model_extra={"ignore_merges": True}))
    write(t, "tiny-qwen2-split.json", tokenizer_json(pre=split_pre(pats["Qwen2"]),
                                                     extra={"normalizer": {"type": "NFC"}}))
    write(t, "tiny-gpt2-split.json", tokenizer_json(pre=split_pre(pats["Gpt2"])))
    write(t, "tiny-smollm-digits.json", tokenizer_json(pre=split_pre(None, digits=True)))
    write(t, "tiny-post-processor-bos.json", parts(tokenizer_json(extra={"post_processor": {
        "type": "Sequence", "processors": [{"type": "ByteLevel"}, {"type": "TemplateProcessing", "single": [
            {"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}]}]}}),
        json.dumps({"chat_template": [{"name": "default", "template": SMOL_TEMPLATE}, {"name": "tool_use"}]})))
    smol = smollm2_seeds()
    if smol:
        tj, config = smollm2_tokenizer_json(smol[2])
        write(t, "smollm2-400-tokens.json", parts(tj, config))
    # Token ids outside the vocabulary, and ids that make the vocabulary huge.
    base_vocab = {byte_level(b): b for b in range(256)}

    def w(name, data):
        write(t, name, data)

    for label, ident in [("2-24", 2**24), ("2-24-minus-1", 2**24 - 1), ("minus-1", -1), ("2-63", 2**63),
                         ("u64-max", U64_MAX)]:
        w("vocab-id-%s.json" % label, tokenizer_json(dict(base_vocab, x=ident), [], []))
        w("added-token-id-%s.json" % label, tokenizer_json(base_vocab, [], [{"id": ident, "content": "<x>",
                                                                               "special": True}]))
    w("vocab-id-float.json", tokenizer_json(dict(base_vocab, x=1.5), [], []))
    w("vocab-id-string.json", tokenizer_json(dict(base_vocab, x="3"), [], []))
    w("vocab-id-duplicate.json", tokenizer_json(dict(base_vocab, x=5), [], []))
    w("vocab-empty.json", tokenizer_json({}, [], []))
    w("vocab-holes.json", tokenizer_json({"a": 0, "b": 1000}, [], []))
    w("vocab-not-object.json", tokenizer_json([1], [], []))
    w("added-token-malformed.json", tokenizer_json(base_vocab, [], [{"id": "1", "content": 5}]))
    w("added-tokens-not-array.json", tokenizer_json(base_vocab, [], None, extra={"added_tokens": {"a": 1}}))
    w("added-token-overrides-vocab.json", tokenizer_json(base_vocab, [], [{"id": 65, "content": "<|im_end|>",
                                                                           "special": True}]))
    w("config-bos-not-in-vocab.json", parts(tokenizer_json(), json.dumps({"bos_token": "<s>", "eos_token": "</s>",
                                                                          "pad_token": "<pad>",
                                                                          "unk_token": "<unk>"})))
    w("config-bos-object-bad.json", parts(tokenizer_json(), '{"bos_token":{"content":7},"add_bos_token":"yes"}'))
    w("config-not-json.json", parts(tokenizer_json(), '{"bos_token":'))
    w("config-array.json", parts(tokenizer_json(), "[]"))
    w("post-processor-special-not-in-vocab.json", tokenizer_json(extra={"post_processor": {
        "type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}]}}))
    w("post-processor-nested-sequence.json", tokenizer_json(extra={"post_processor": {
        "type": "Sequence", "processors": [{"type": "Sequence", "processors": [{"type": "Sequence"}]}]}}))
    sp = byte_level(32)
    for label, m in [("missing-token", [sp + " zz"]), ("no-space", ["ab"]), ("three-parts", ["a b c"]),
                     ("leading-space", [" a"]), ("trailing-space", ["a "]), ("pair-one", [["a"]]),
                     ("pair-numbers", [[1, 2]]), ("pair-form", [["h", "e"]]), ("empty-string", [""]),
                     ("control-chars", ["\u001b[31m \u0007"])]:
        w("merge-%s.json" % label, tokenizer_json(merges=m))
    w("merges-not-array.json", tokenizer_json(model_extra={"merges": "h e"}))
    w("merges-repeated.json", tokenizer_json(merges=["h e", "h e", "i n"]))
    w("model-type-wordpiece.json", tokenizer_json(model_extra={"type": "WordPiece"}))
    w("model-type-number.json", tokenizer_json(model_extra={"type": 3}))
    w("model-continuing-subword-prefix.json", tokenizer_json(model_extra={"continuing_subword_prefix": "##"}))
    w("model-missing.json", '{"pre_tokenizer":{"type":"ByteLevel"}}')
    w("root-array.json", "[]")
    w("normalizer-nfkc.json", tokenizer_json(extra={"normalizer": {"type": "NFKC"}}))
    w("pre-tokenizer-missing.json", tokenizer_json(extra={"pre_tokenizer": None}))
    w("pre-tokenizer-whitespace.json", tokenizer_json(pre={"type": "Whitespace"}))
    w("pre-tokenizer-add-prefix-space.json", tokenizer_json(pre={"type": "ByteLevel", "add_prefix_space": True}))
    w("pre-tokenizer-unknown-regex.json", tokenizer_json(pre=split_pre("\\p{L}+")))
    w("pre-tokenizer-split-no-regex.json", tokenizer_json(pre={"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"String": " "}}, {"type": "ByteLevel", "use_regex": False}]}))
    w("pre-tokenizer-split-inverted.json", tokenizer_json(pre=dict(split_pre(pats["Llama3"]), invert=True)))
    # Error messages print a short dump of the pre_tokenizer: deep nesting there.
    deep = "[" * 3000 + "]" * 3000
    w("pre-tokenizer-deep-3000.json", tokenizer_json().replace('"pre_tokenizer": {', '"pre_tokenizer": {"x":' + deep + ",", 1))
    w("pre-tokenizer-deep-array.json", tokenizer_json(pre=[[[[[[[[[[]]]]]]]]]]))


# ---------------------------------------------------------------------------------------
# config.json
# ---------------------------------------------------------------------------------------

def config_corpus():
    t = "config"
    fixtures = {}
    for name in ("tiny-llama", "tiny-qwen2", "tiny-qwen3"):
        with open(os.path.join(ROOT, "tests", "models", name, "config.json")) as f:
            fixtures[name] = f.read()
        write(t, "%s.json" % name, fixtures[name])
    base = json.loads(fixtures["tiny-llama"])

    def w(label, change=None, text=None):
        if text is None:
            c = dict(base)
            for k, v in (change or {}).items():
                if v is KeyError:
                    c.pop(k, None)
                else:
                    c[k] = v
            text = json.dumps(c)
        write(t, label + ".json", text)

    w("hidden-size-64.5", {"hidden_size": 64.5})
    w("vocab-size-2-40", {"vocab_size": 2**40})
    w("vocab-size-minus-1", {"vocab_size": -1})
    w("vocab-size-u64-max", {"vocab_size": U64_MAX})
    w("vocab-size-string", {"vocab_size": "256"})
    w("vocab-size-null", {"vocab_size": None})
    w("vocab-size-true", {"vocab_size": True})
    w("vocab-size-1e300", text=json.dumps(base).replace('"vocab_size": 256', '"vocab_size": 1e300'))
    w("rope-theta-inf", text=json.dumps(base).replace('"rope_theta": 10000.0', '"rope_theta": 1e400'))
    w("rms-norm-eps-inf", text=json.dumps(base).replace('"rms_norm_eps": 1e-05', '"rms_norm_eps": 1e999'))
    w("rms-norm-eps-negative", {"rms_norm_eps": -1e-5})
    w("rms-norm-eps-zero", {"rms_norm_eps": 0})
    w("rope-theta-zero", {"rope_theta": 0})
    w("heads-zero", {"num_attention_heads": 0})
    w("kv-heads-zero", {"num_key_value_heads": 0})
    w("kv-heads-not-divisor", {"num_key_value_heads": 3})
    w("head-dim-odd", {"head_dim": 15})
    w("head-dim-2-31", {"head_dim": 2**31})
    w("head-dim-missing", {"head_dim": KeyError, "hidden_size": 7})
    w("layers-2-31", {"num_hidden_layers": 2**31 - 1})
    w("intermediate-2-31", {"intermediate_size": 2**31})
    w("max-positions-2-40", {"max_position_embeddings": 2**40})
    w("llama3-missing-factor", {"rope_scaling": {"rope_type": "llama3", "low_freq_factor": 1.0}})
    w("llama3-low-above-high", {"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0,
                                                 "high_freq_factor": 1.0, "original_max_position_embeddings": 32}})
    w("llama3-factor-string", {"rope_scaling": {"rope_type": "llama3", "factor": "8"}})
    w("rope-type-yarn", {"rope_scaling": {"rope_type": "yarn", "factor": 4.0}})
    w("rope-parameters", {"rope_scaling": KeyError, "rope_parameters": {"rope_type": "default", "rope_theta": 5e5}})
    w("rope-scaling-not-object", {"rope_scaling": [1, 2]})
    w("model-type-gpt2", {"model_type": "gpt2"})
    w("model-type-number", {"model_type": 5})
    w("model-type-missing", {"model_type": KeyError})
    w("not-object", text="[1, 2, 3]")
    w("empty", text=" ")
    w("truncated", text=fixtures["tiny-llama"][:100])
    w("trailing-garbage", text=fixtures["tiny-llama"] + "}")
    w("bom", text="\ufeff" + fixtures["tiny-llama"])
    w("duplicate-keys", text='{"model_type":"llama","model_type":"qwen2"}')
    w("deep-nesting", text='{"x":' + "[" * 5000 + "]" * 5000 + "}")
    w("invalid-utf8", text=b'{"model_type":"\xff"}'.decode("latin-1"))


# ---------------------------------------------------------------------------------------
# Chat templates
# ---------------------------------------------------------------------------------------

def test_templates():
    """The templates of tests/unit/chat_template_test.cpp (C++ string literals), by name."""
    with open(os.path.join(ROOT, "tests", "unit", "chat_template_test.cpp")) as f:
        src = f.read()
    out = {}
    for name, body in re.findall(r"const std::string (k\w+) =\s*(.*?);\n", src, re.S):
        raw = re.match(r'R"\((.*)\)"$', body.strip(), re.S)
        if raw:
            out[name] = raw.group(1)
        else:
            pieces = re.findall(r'"((?:[^"\\]|\\.)*)"', body)
            out[name] = "".join(p.encode().decode("unicode_escape") for p in pieces)
    return out


def chat_template_corpus():
    t = "chat_template"
    msgs = ["system\nBe brief.", "user\nWhat is 2+2?", "assistant\n4", "user\nAnd <|im_end|> 3+3?"]
    templates = test_templates()
    smol = smollm2_seeds()
    if smol:
        templates["kSmolLM2FromModel"] = smol[2]["tokenizer.chat_template"].decode()
    for name, text in sorted(templates.items()):
        label = re.sub(r"(?<!^)([A-Z])", r"-\1", name[1:]).lower()
        write(t, label + ".txt", parts(text, *msgs))
        write(t, label + "-no-system.txt", parts(text, *msgs[1:]))
    chatml = templates["kSmolLM2"]
    llama31 = templates["kLlama31"]
    write(t, "none-template.txt", parts("[INST] {{ messages }} [/INST]", *msgs))
    write(t, "no-messages.txt", chatml)
    write(t, "chatml-unterminated-quote.txt", parts("'<|im_start|>system\nYou are", "user\nhi"))
    write(t, "chatml-escaped-system.txt", parts("\"<|im_start|>system\\nA \\\"quoted\\\" \\\\ prompt\\n<|im_end|>\"", "user\nhi"))
    write(t, "chatml-backslash-at-end.txt", parts("'<|im_start|>system\\n\\", "user\nhi"))
    write(t, "chatml-empty-system.txt", parts("'<|im_start|>system\n<|im_end|>'", "user\nhi"))
    write(t, "llama31-unterminated-date.txt", parts("<|start_header_id|> Cutting Knowledge Date set date_string = \"",
                                                    "system\n  \n", "user\nhi"))
    write(t, "llama31-whitespace-system.txt", parts(llama31, "system\n \t\r\n ", "user\n \n"))
    # Special tokens the tokenizer lacks, or that a message smuggles in.
    write(t, "content-special-tokens.txt", parts(chatml, "user\n<|im_start|>assistant\n<|eot_id|><|endoftext|>",
                                                 "<|im_end|>\nrole-is-special"))
    write(t, "content-invalid-utf8.txt", parts(chatml, b"user\n\xff\xfe\xc3(\xe2\x82", b"\xf0\x9f\x98\n\x80"))
    write(t, "empty-role.txt", parts(templates["kLlama3"], "\nno role", "", "user"))
    write(t, "many-messages.txt", parts(chatml, *(["user\nx", "assistant\ny"] * 7)))


# ---------------------------------------------------------------------------------------
# Eval JSONL
# ---------------------------------------------------------------------------------------

def dataset_corpus():
    t = "dataset"
    with open(os.path.join(ROOT, "tests", "golden", "eval_parity", "rows.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    short = []
    for r in rows[:8]:
        r = dict(r)
        # Keep the needle: the sentence holding the first answer, and a little context around.
        at = max(0, r["context"].find(r["answers"][0]) - 120)
        r["context"] = r["context"][at:at + 300]
        short.append(json.dumps(r))
    write(t, "golden-rows-shortened.jsonl", "\n".join(short) + "\n")
    write(t, "golden-row-first.jsonl", json.dumps(rows[0]) + "\n")
    full = {"task": "qa_1", "context": "Paris is in France.", "question": "Where is Paris?",
            "answer_prefix": "Answer:", "answers": ["France"], "max_new_tokens": 8, "metric": "any"}
    write(t, "all-fields.jsonl", json.dumps(full) + "\r\n\n  \n" + json.dumps(dict(full, task="t|x")))

    def w(label, change=None, text=None):
        if text is None:
            r = dict(full)
            for k, v in (change or {}).items():
                if v is KeyError:
                    r.pop(k, None)
                else:
                    r[k] = v
            text = json.dumps(r)
        write(t, label + ".jsonl", text)

    w("max-new-tokens-2-63", {"max_new_tokens": 2**63})
    w("max-new-tokens-u64-max", {"max_new_tokens": U64_MAX})
    w("max-new-tokens-minus-1", {"max_new_tokens": -1})
    w("max-new-tokens-2-20-plus-1", {"max_new_tokens": 2**20 + 1})
    w("max-new-tokens-float", {"max_new_tokens": 1.5})
    w("max-new-tokens-1e300", text=json.dumps(full).replace('"max_new_tokens": 8', '"max_new_tokens": 1e300'))
    w("answers-empty", {"answers": []})
    w("answers-empty-string", {"answers": [""]})
    w("answers-not-strings", {"answers": [1, None]})
    w("answers-string", {"answers": "France"})
    w("context-missing", {"context": KeyError})
    w("context-blank", {"context": " \t "})
    w("question-number", {"question": 5})
    w("task-empty", {"task": ""})
    w("metric-bad", {"metric": "most"})
    w("unknown-field", {"extra": 1})
    w("not-object", text="[1,2]\n")
    w("invalid-json", text='{"context": "a"\n')
    w("unterminated-line", text='{"context": "' + "a" * 4000)
    w("invalid-utf8", text=b'{"context":"\xff","question":"q","answers":["a"]}'.decode("latin-1"))
    w("blank-only", text="\n \r\n\t\n")
    w("empty", text="")
    w("nul-bytes", text='{"context":"a\u0000b","question":"q","answers":["a"]}\n\u0000\n')
    w("deep-nesting", text='{"context":' + "[" * 5000 + "]" * 5000 + "}")
    w("many-rows", text="\n".join(json.dumps(dict(full, question="q%d" % i)) for i in range(50)))


# ---------------------------------------------------------------------------------------
# Press arguments
# ---------------------------------------------------------------------------------------

def press_catalog():
    names, params = [], set()
    files = [os.path.join(ROOT, "src", "presses", f) for f in sorted(os.listdir(os.path.join(ROOT, "src", "presses")))]
    files += [os.path.join(ROOT, "examples", f) for f in sorted(os.listdir(os.path.join(ROOT, "examples")))]
    for path in files:
        if not path.endswith(".cpp"):
            continue
        with open(path) as f:
            src = f.read()
        names += re.findall(r'PressRegistration\s+\w+\(\s*\{\s*"(\w+)"', src)
        params |= set(re.findall(r'\{"(\w+)",\s*"(?:float|int|bool|string|press|floats|presses)"', src))
    return sorted(names), sorted(params | {"alpha_safeguard"})


def press_corpus():
    t = "press_args"
    names, params = press_catalog()

    def w(label, name, ratio, *items):
        write(t, label + ".txt", "\n".join([name, ratio] + list(items)))

    for n in names:
        w(n, n, "0.5")
    w("snapkv-window", "snapkv", "0.25", "window_size=8", "kernel_size=3")
    w("adakv-knorm", "adakv", "0.5", "press=knorm", "alpha_safeguard=0.2")
    w("chunk-snapkv", "chunk", "0.5", "press=snapkv", "chunk_length=8")
    w("composed", "composed", "0.5", "presses=knorm,streaming_llm", "ratios=0.25,0.5")
    w("per-layer", "per_layer", "0.5", "press=knorm", "compression_ratios=0.1,0.9")
    w("expected-attention", "expected_attention", "0.5", "n_future_positions=4", "n_sink=2",
      "use_covariance=false", "use_vnorm=0", "epsilon=0.01")
    # Wrappers in wrappers (a self-wrap recursed without end: issue 16, item 1).
    for outer, inner in [("adakv", "adakv"), ("adakv", "critical_adakv"), ("critical_adakv", "adakv"),
                         ("chunk", "adakv"), ("adakv", "chunk"), ("composed", "composed"),
                         ("key_rerotation", "key_rerotation"), ("per_layer", "chunkkv")]:
        key = "presses" if outer == "composed" else "press"
        w("nest-%s-in-%s" % (inner, outer), outer, "0.5", "%s=%s" % (key, inner))
    # Parameters that scale work (issue 16, item 2) and values at the edges.
    for p, v in [("n_future_positions", "2147483647"), ("n_future_positions", "1000000"),
                 ("window_size", "1000000000"), ("kernel_size", "9223372036854775807"),
                 ("chunk_length", "9223372036854775807"), ("chunk_length", "0"), ("chunk_length", "-1"),
                 ("n_sink", "-1"), ("n_sink", "2147483648"), ("beta", "-9223372036854775808"),
                 ("seed", "-1"), ("alpha_safeguard", "nan"), ("alpha_safeguard", "-inf"),
                 ("epsilon", "inf"), ("epsilon", "1e-400"), ("first_stage_ratio", "2"),
                 ("recency", "1e308"), ("kernel_size", "0x10"), ("window_size", " 8")]:
        press = {"n_future_positions": "expected_attention", "window_size": "snapkv", "kernel_size": "pyramidkv",
                 "chunk_length": "chunkkv", "n_sink": "streaming_llm", "beta": "pyramidkv", "seed": "random",
                 "alpha_safeguard": "adakv", "epsilon": "criticalkv", "first_stage_ratio": "critical_adakv",
                 "recency": "recent_norm"}[p]
        w("value-%s-%s" % (p, v.strip().replace("-", "minus")), press, "0.5", "%s=%s" % (p, v))
    for r in ("0", "1", "0.999999", "-0.5", "nan", "inf", "1e-300", "x"):
        w("ratio-%s" % r.replace("-", "minus"), "knorm", r)
    w("composed-ratio-count-mismatch", "composed", "0.5", "presses=knorm,tova", "ratios=0.5")
    w("composed-empty-names", "composed", "0.5", "presses=,,", "ratios=")
    w("per-layer-ratios-bad", "per_layer", "0.5", "press=knorm", "compression_ratios=0.1,x,,1e999")
    w("unknown-press", "snapkvv", "0.5")
    w("unknown-param", "knorm", "0.5", "window=3")
    w("param-twice", "snapkv", "0.5", "window_size=4", "window_size=8")
    w("param-no-equals", "snapkv", "0.5", "window_size")
    w("param-empty-key", "snapkv", "0.5", "=4")
    w("qfilter-missing-file", "qfilter", "0.5", "filters=no-such-file.bin")
    w("bool-bad", "expected_attention", "0.5", "use_covariance=yes")
    return names, params


# ---------------------------------------------------------------------------------------
# Dictionaries (libFuzzer -dict): tokens the mutations insert whole.
# ---------------------------------------------------------------------------------------

def dict_line(s):
    if isinstance(s, str):
        s = s.encode("utf-8")
    return '"' + "".join(chr(c) if 32 <= c < 127 and c not in (34, 92) else "\\x%02x" % c for c in s) + '"'


def write_dict(name, entries):
    os.makedirs(DICT, exist_ok=True)
    seen, lines = set(), []
    for e in entries:
        line = dict_line(e)
        if line not in seen:
            seen.add(line)
            lines.append(line)
    with open(os.path.join(DICT, name + ".dict"), "w") as f:
        f.write("# Written by fuzz/make_corpus.py.\n" + "\n".join(lines) + "\n")


JSON_TOKENS = ["{", "}", "[", "]", ":", ",", '""', "null", "true", "false", "-1", "0", "1e400",
               "18446744073709551615", "9223372036854775808", "\\u0000", "\\ud800"]
SEPARATOR = [SEP]


def dictionaries(press_names, press_params):
    keys = ["GGUF", "general.architecture", "general.alignment", "llama", "qwen2", "qwen3", "llama.block_count",
            "llama.context_length", "llama.embedding_length", "llama.feed_forward_length",
            "llama.attention.head_count", "llama.attention.head_count_kv", "llama.attention.key_length",
            "llama.rope.freq_base", "llama.rope.dimension_count", "llama.rope.scaling.type",
            "llama.attention.layer_norm_rms_epsilon", "llama.vocab_size", "tokenizer.ggml.model", "gpt2",
            "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges",
            "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id",
            "tokenizer.ggml.padding_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.add_bos_token",
            "tokenizer.chat_template", "token_embd.weight", "output.weight", "output_norm.weight",
            "blk.0.attn_q.weight", "blk.0.attn_q.bias", "blk.0.attn_q_norm.weight", "rope_freqs.weight",
            "<0x", "<|im_start|>", "<|im_end|>",
            struct.pack("<Q", U64_MAX), struct.pack("<Q", 2**63), struct.pack("<Q", 2**32),
            struct.pack("<I", 0xFFFFFFFF), struct.pack("<I", T_ARR), struct.pack("<I", T_STR)]
    write_dict("gguf", keys)
    st = ["dtype", "shape", "data_offsets", "__metadata__", "F32", "F16", "BF16", "weight_map",
          "model.safetensors", "model.safetensors.index.json", "config.json", "num_hidden_layers",
          "model.layers.0.self_attn.q_proj.weight", struct.pack("<Q", U64_MAX)]
    write_dict("safetensors", JSON_TOKENS + SEPARATOR + st)
    tk = ["model", "vocab", "merges", "added_tokens", "special", "content", "id", "pre_tokenizer", "ByteLevel",
          "Sequence", "Split", "Digits", "Regex", "Isolated", "post_processor", "TemplateProcessing",
          "SpecialToken", "bos_token", "eos_token", "add_bos_token", "chat_template", "ignore_merges", "NFC",
          "\u0120", "<|im_start|>", "<|endoftext|>"]
    write_dict("tokenizer_json", JSON_TOKENS + SEPARATOR + tk)
    cf = ["model_type", "llama", "qwen2", "qwen3", "mistral", "num_hidden_layers", "hidden_size",
          "num_attention_heads", "num_key_value_heads", "head_dim", "intermediate_size", "vocab_size",
          "max_position_embeddings", "rms_norm_eps", "tie_word_embeddings", "attention_bias", "rope_theta",
          "rope_scaling", "rope_parameters", "rope_type", "llama3", "factor", "low_freq_factor",
          "high_freq_factor", "original_max_position_embeddings"]
    write_dict("config", JSON_TOKENS + cf)
    write_dict("chat_template", SEPARATOR + ["<|im_start|>", "<|im_end|>", "<|start_header_id|>",
                                             "<|end_header_id|>", "<|eot_id|>", "<|begin_of_text|>",
                                             "system", "user", "assistant", "Cutting Knowledge Date",
                                             "set date_string = \"", "\\n", "\\\\", "'", "\""])
    write_dict("dataset", JSON_TOKENS + ["context", "question", "answers", "answer_prefix", "task",
                                         "max_new_tokens", "metric", "all", "any", "qa", "\r\n"])
    write_dict("press_args", press_names + [p + "=" for p in press_params] +
               ["\n", "nan", "inf", "-1", "0", "2147483647", "9223372036854775807", "1e308", ","])


def main():
    for d in (OUT, DICT):
        if os.path.isdir(d):
            shutil.rmtree(d)
    gguf_corpus()
    safetensors_corpus()
    tokenizer_corpus()
    config_corpus()
    chat_template_corpus()
    dataset_corpus()
    names, params = press_corpus()
    dictionaries(names, params)
    total = 0
    for target in sorted(os.listdir(OUT)):
        files = os.listdir(os.path.join(OUT, target))
        size = sum(os.path.getsize(os.path.join(OUT, target, f)) for f in files)
        total += size
        print("%-16s %4d files %8d bytes" % (target, len(files), size))
    print("%-16s %4s       %8d bytes" % ("total", "", total))


if __name__ == "__main__":
    main()
