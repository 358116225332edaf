#!/usr/bin/env python3
"""Eval parity goldens: kvpress's own pipeline answers a small needle-in-a-haystack set.

Pinned reference versions (checked at start-up; pass --allow-other-versions to override):
    python 3.11, torch==2.9.1 (CPU), transformers==5.2.0, gguf==0.17.1, kvpress==0.5.5
Model: models/SmolLM2-135M-Instruct.Q4_1.gguf, dequantised to float32 by transformers.

Writes tests/golden/eval_parity/
  rows.jsonl            20 rows (context, question, answers, task), generated here from a
                        fixed seed: filler sentences from FILLER, shuffled, with one or two
                        "needle" sentences inserted; contexts of about 300-600 tokens.
  kvpress_answers.json  for each cell (snapkv 0.5, ada_snapkv 0.5; baseline with --with-baseline): per-row answer
                        and score (RULER string match: case-insensitive substring, fraction of
                        references found), as produced by KVPressTextGenerationPipeline with
                        SnapKVPress(0.5) and AdaKVPress(SnapKVPress(0.5)), greedy,
                        max_new_tokens=64 (kvpress eval's default for rows without their own).

Each row has its own context and one question, so one pipeline call answers one row, as
kvpress eval does for a context with a single question.

Usage:
    /work/venvs/ref/bin/python tools/reference/eval_parity/make_eval_parity.py [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from kvpress import AdaKVPress, KVPressTextGenerationPipeline, SnapKVPress  # noqa: E402

PINNED = {"torch": "2.9.1", "transformers": "5.2.0", "kvpress": "0.5.5", "gguf": "0.17.1"}

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
MODEL_DIR = REPO / "models"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MAX_NEW_TOKENS = 64  # src/eval/runner.cpp: row_max_new_tokens() default
SEED = 20261128
N_ROWS = 20

FILLER = [
    "The harbour of Lindqvist was quiet in the early morning, and the fishing boats rocked gently at their moorings.",
    "A narrow road climbed from the market square to the old observatory on the hill.",
    "Every spring the town council repainted the wooden benches along the river in a pale shade of green.",
    "The bakery on Tanner Street opened at five and sold rye loaves until the shelves were empty.",
    "Children walked to school past the stone bridge, counting the ducks that gathered beneath it.",
    "In the library, the reading room smelled of paper, dust and the polish used on the long oak tables.",
    "The ferry to the northern islands ran twice a day, weather permitting, and was often late.",
    "A retired schoolteacher kept bees in the orchard behind the church and sold the honey on Saturdays.",
    "Snow rarely settled in the valley, but the peaks above it stayed white well into June.",
    "The railway station had a single platform, a clock that ran two minutes fast, and a kiosk selling newspapers.",
    "Farmers brought their apples to the cooperative press in October, where the cider was bottled by hand.",
    "The museum displayed maps of the coastline drawn by surveyors more than two centuries ago.",
    "On summer evenings the brass band practised in the park, and neighbours listened from their balconies.",
    "A small shipyard at the mouth of the river still built wooden boats to traditional designs.",
    "The post office closed at noon on Wednesdays, a custom nobody could quite explain.",
    "Fog rolled in from the sea most afternoons in autumn and lingered over the salt marshes.",
    "The town's oldest house had a crooked chimney and a garden full of lavender and rosemary.",
    "Cyclists liked the flat path along the canal, which ran for twelve kilometres to the next village.",
    "At the annual fair, stalls sold woollen scarves, smoked fish and carved wooden toys.",
    "The lighthouse keeper wrote a daily log of ships, winds and the state of the lamp.",
    "Rain fell steadily through the night, filling the gutters and the stone basins in the square.",
    "The hospital on the eastern edge of town had been extended twice since it first opened.",
    "Hikers often stopped at the inn by the pass for soup and bread before the long descent.",
    "The river froze only once in living memory, and the photographs of skaters still hang in the town hall.",
]
NAMES = ["Orla", "Bertrand", "Keiko", "Maksim", "Delphine", "Tomasz", "Ingrid", "Rafael",
         "Yusuf", "Celeste", "Hamish", "Priya", "Lorenzo", "Annika", "Mateo", "Sigrid"]
WORDS = ["lantern", "marigold", "copper", "thistle", "harbour", "juniper", "falcon", "saffron",
         "granite", "willow", "cobalt", "meadow", "ember", "quartz", "tundra", "velvet"]


def make_rows(tok) -> list[dict]:
    rng = random.Random(SEED)
    rows = []
    for i in range(N_ROWS):
        kind = ["number", "word", "two_numbers", "city"][i % 4]
        target = rng.randint(300, 560)  # context tokens (raw text, before the chat template)
        sentences = []
        while len(tok.encode(" ".join(sentences), add_special_tokens=False)) < target:
            sentences.append(rng.choice(FILLER))
        name = rng.choice(NAMES)
        if kind == "number":
            v = str(rng.randint(1000000, 9999999))
            needles = [f"The special magic number for {name} is {v}."]
            q = f"What is the special magic number for {name} mentioned in the text?"
            ans = [v]
        elif kind == "word":
            v = rng.choice(WORDS)
            needles = [f"The secret password chosen by {name} is {v}."]
            q = f"What is the secret password chosen by {name}?"
            ans = [v]
        elif kind == "two_numbers":
            v1, v2 = str(rng.randint(100000, 999999)), str(rng.randint(100000, 999999))
            needles = [f"One of the special magic numbers for {name} is {v1}.",
                       f"One of the special magic numbers for {name} is {v2}."]
            q = f"What are all the special magic numbers for {name} mentioned in the text?"
            ans = [v1, v2]
        else:
            city = rng.choice(["Valparaiso", "Tromso", "Ljubljana", "Windhoek", "Hobart", "Quito"])
            needles = [f"{name} was born in the city of {city}."]
            q = f"In which city was {name} born?"
            ans = [city]
        for n in needles:
            sentences.insert(rng.randint(0, len(sentences)), n)
        rows.append({"task": kind, "context": " ".join(sentences), "question": q, "answers": ans})
    return rows


def score(answer: str, refs: list[str]) -> float:
    a = answer.lower()
    return sum(1.0 for r in refs if r.lower() in a) / len(refs)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(REPO / "tests/golden/eval_parity"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--allow-other-versions", action="store_true")
    ap.add_argument("--with-baseline", action="store_true",
                    help="also record the uncompressed pipeline's answers (cell 'baseline')")
    ap.add_argument("--cells", default="snapkv,ada_snapkv", help="comma-separated subset of the cells")
    args = ap.parse_args()

    import importlib.metadata as md

    versions = {"python": sys.version.split()[0], "torch": torch.__version__,
                "transformers": transformers.__version__, "kvpress": md.version("kvpress"),
                "gguf": md.version("gguf")}
    for k, v in PINNED.items():
        if not versions[k].startswith(v) and not args.allow_other_versions:
            sys.exit(f"{k}=={versions[k]} but goldens are pinned to {k}=={v}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    tok = AutoTokenizer.from_pretrained(MODEL_DIR, gguf_file=MODEL_FILE)
    model = AutoModelForCausalLM.from_pretrained(
        MODEL_DIR, gguf_file=MODEL_FILE, dtype=torch.float32, attn_implementation="sdpa").eval()
    pipe = KVPressTextGenerationPipeline(model=model, tokenizer=tok)

    rows = make_rows(tok)
    with open(out / "rows.jsonl", "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")

    cells = {"baseline": lambda: None} if args.with_baseline else {}
    cells |= {"snapkv": lambda: SnapKVPress(compression_ratio=0.5),
              "ada_snapkv": lambda: AdaKVPress(SnapKVPress(compression_ratio=0.5))}
    wanted = args.cells.split(",") + (["baseline"] if args.with_baseline else [])
    cells = {k: v for k, v in cells.items() if k in wanted}
    result = {"versions": versions, "model": MODEL_FILE, "max_new_tokens": MAX_NEW_TOKENS,
              "ratio": 0.5, "cells": {}}
    for name, make in cells.items():
        t = time.time()
        per_row = []
        for i, r in enumerate(rows):
            for layer in model.model.layers:
                layer.self_attn.masked_key_indices = None
            with torch.inference_mode():
                o = pipe(r["context"], question=r["question"], press=make(),
                         max_new_tokens=MAX_NEW_TOKENS)
            a = o["answer"]
            per_row.append({"row": i, "answer": a, "score": score(a, r["answers"])})
            print(f"{name} row {i}: {a!r}", flush=True)
        mean = 100.0 * sum(p["score"] for p in per_row) / len(per_row)
        result["cells"][name] = {"rows": per_row, "mean_score": mean}
        print(f"{name}: mean score {mean:.1f} ({time.time() - t:.0f}s)", flush=True)
    with open(out / "kvpress_answers.json", "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
