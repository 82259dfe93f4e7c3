"""Audit scale benchmark: items/s of `workbench audit` on synthetic LLaVA data, extrapolated to 1 M items.

Writes N synthetic LLaVA JSON items (instructions from templates x objects x attributes x numbers: mostly
distinct texts, a few common ones repeated as in real SFT sets), audits them against the seed taxonomy
(chunked, stored, summarised) and, as the baseline measured in the same run, times the bare embedding
forward pass (`textembed.embed_texts`, batches of 64, in file order, no dedup) on a sample of the same
texts. Printed: items/s of both, their ratio, the time a 1 M-item audit would take at this rate, and the
time of a resumed run (all chunks stored: read + summary only).

    .venv/bin/python benchmarks/bench_audit.py [--items 100000] [--baseline 5000] [--chunk 8192]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from workbench.analysis.audit import audit  # noqa: E402
from workbench.taxonomy.io import load_seed  # noqa: E402
from workbench.textembed import embed_texts  # noqa: E402
from workbench.workspace import Workspace  # noqa: E402

TEMPLATES = ["What color is the {a} {o} near the {o2}?", "How many {o}s are there in the {p}?",
             "Read the text written on the {a} {o}.", "Describe the {p} in detail, focusing on the {o}.",
             "Is the {o} to the left of the {o2}? Answer with {n} words.", "What is the value of bar {n} in the chart?",
             "Which {o} in the {p} looks {a}?", "What might happen next to the {o} in this {p}?",
             "Identify the species of the {a} {o}.", "Summarise the slide about {o}s in {n} sentences."]
COMMON = ["Describe the image.", "What is in this picture?", "Provide a brief caption for this image."]
OBJECTS = ["car", "dog", "cat", "bird", "sign", "bottle", "chair", "tree", "bus", "person", "cup", "laptop", "house",
           "boat", "horse", "bicycle", "phone", "book", "clock", "flower", "pizza", "train", "kite", "umbrella"]
ATTRS = ["red", "small", "wooden", "old", "shiny", "striped", "broken", "tall", "blue", "round", "metal", "green"]
PLACES = ["kitchen", "street", "park", "office", "beach", "market", "classroom", "garden", "stadium", "forest"]


def synth(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if rng.random() < 0.1:
            q = rng.choice(COMMON)
        else:
            q = rng.choice(TEMPLATES).format(a=rng.choice(ATTRS), o=rng.choice(OBJECTS), o2=rng.choice(OBJECTS),
                                             p=rng.choice(PLACES), n=rng.randint(1, 60))
        out.append({"id": str(i), "image": f"{i}.jpg",
                    "conversations": [{"from": "human", "value": f"<image>\n{q}"}, {"from": "gpt", "value": "x"}]})
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--baseline", type=int, default=5000, help="texts for the bare forward-pass baseline")
    ap.add_argument("--chunk", type=int, default=8192)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = synth(args.items)
        f = Path(tmp) / "synthetic.json"
        f.write_text(json.dumps(data))
        texts = [d["conversations"][0]["value"].replace("<image>\n", "") for d in data]
        distinct = len(set(texts))
        ws = Workspace.init(Path(tmp) / "ws")
        load_seed(ws.taxonomy)
        embed_texts(["warm up"])                       # model load is not counted on either side
        sample = texts[: args.baseline]
        t0 = time.perf_counter()
        embed_texts(sample)
        base = len(sample) / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        res = audit(ws, f, name="bench", chunk_size=args.chunk)
        secs = time.perf_counter() - t0
        rate = args.items / secs
        t0 = time.perf_counter()
        again = audit(ws, f, name="bench", chunk_size=args.chunk)
        resumed = time.perf_counter() - t0
        assert again.resumed_from == args.items and res.summary["items"] == args.items
        ws.close()
    print(f"items: {args.items:,} ({distinct:,} distinct instructions, {distinct / args.items:.0%})")
    print(f"bare forward pass (embed_texts, file order, no dedup): {base:,.0f} texts/s on {len(sample):,} texts")
    print(f"audit (read, dedup, length-sorted embed, top-{res.summary and 5}, store, summary): {rate:,.0f} items/s "
          f"({secs:.1f} s); ratio to the bare forward pass: {rate / base:.2f}x")
    print(f"1 M items at this rate: ~{1_000_000 / rate / 60:.1f} min (same distinct share); at the bare forward "
          f"pass rate (all distinct): ~{1_000_000 / base / 60:.1f} min")
    print(f"re-run with every chunk stored (resume path: read + summary): {resumed:.1f} s")


if __name__ == "__main__":
    main()
