"""Audit scale benchmark: items/s of `workbench audit` per text backend, extrapolated to 1 M items, and
the quality cost of each backend as agreement with the reference (MiniLM fp32 in PyTorch).

Writes N synthetic LLaVA JSON items (instructions from templates x objects x attributes x numbers: mostly
distinct texts, a few common ones repeated as in real SFT sets), audits them against the seed taxonomy
(chunked, stored, summarised) with each backend of `analysis/audit_embed.py` and, as the baseline
measured in the same run, times the bare embedding forward pass (`textembed.embed_texts`, batches of 64, in
file order, no dedup) on a sample of the same texts. Printed per backend: items/s, the ratio to the bare
forward pass, the time a 1 M-item audit would take at this rate, one-off set-up (export / distillation,
cached per workspace), and quality: on distinct synthetic instructions plus the hand-written
tests/data/llava_audit_hand.json, the share of items whose top-1 task type equals the reference's, whose
reference top-1 is in the backend's top-5, and whose first-level category equals the reference's.
Also: the share of instructions a shorter token budget would cut (truncation evaluated, not used).

    .venv/bin/python benchmarks/bench_audit.py [--items 20000] [--backends minilm,static] [--baseline 3000]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

from workbench.taxonomy.model import Taxonomy

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np

from workbench.analysis import audit_embed
from workbench.analysis.audit import TASK_TEXT, _tasks, audit
from workbench.analysis.audit_read import first_instruction
from workbench.core.workspace import Workspace
from workbench.models.textembed import embed_texts
from workbench.taxonomy.io import load_seed

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


def quality(ws, texts: list[str], backend: str) -> dict:
    """Agreement of `backend` with the reference (textembed, PyTorch fp32) on `texts`."""
    idx, leaves = _tasks(ws)
    tt = [TASK_TEXT.format(idx.nodes[i].name) for i in leaves]
    ref = embed_texts(texts) @ embed_texts(tt).T
    got = audit_embed.embed(ws, texts, backend, None) @ audit_embed.task_vectors(ws, tt, backend, None).T
    r1, top5 = ref.argmax(1), np.argsort(-got, axis=1)[:, :5]
    cat = np.array([idx.paths[i].split("~")[0] for i in leaves])
    return {"top1": float((top5[:, 0] == r1).mean()), "in_top5": float((top5 == r1[:, None]).any(1).mean()),
            "category": float((cat[top5[:, 0]] == cat[r1]).mean())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--backends", default="minilm,static", help="comma-separated: minilm, static")
    ap.add_argument("--baseline", type=int, default=3000, help="texts for the bare forward-pass baseline")
    ap.add_argument("--quality", type=int, default=1500, help="distinct synthetic texts for the agreement check")
    ap.add_argument("--chunk", type=int, default=8192)
    args = ap.parse_args()
    import os

    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    hand = [first_instruction(r) for r in json.loads((REPO / "tests/data/llava_audit_hand.json").read_text())]
    with tempfile.TemporaryDirectory() as tmp:
        data = synth(args.items)
        f = Path(tmp) / "synthetic.json"
        f.write_text(json.dumps(data))
        texts = [d["conversations"][0]["value"].replace("<image>\n", "") for d in data]
        distinct = len(set(texts))
        ws = Workspace.init(Path(tmp) / "ws")
        load_seed(Taxonomy.of(ws))
        embed_texts(["warm up"])                       # model load is not counted on either side
        sample = texts[: args.baseline]
        t0 = time.perf_counter()
        embed_texts(sample)
        base = len(sample) / (time.perf_counter() - t0)
        print(f"items: {args.items:,} ({distinct:,} distinct instructions, {distinct / args.items:.0%})")
        print(f"bare forward pass (embed_texts, file order, no dedup): {base:,.0f} texts/s on {len(sample):,} texts"
              f"; 1 M at this rate: ~{1_000_000 / base / 60:.1f} min")
        from workbench.models.textembed import _load

        tok, _ = _load(None)
        lens = np.array([len(x) for x in tok(hand + texts[:5000])["input_ids"]])
        print(f"instruction tokens (hand + synthetic): p50 {np.median(lens):.0f}, p99 {np.percentile(lens, 99):.0f}, "
              f"max {lens.max()}; cut at 32: {100 * (lens > 32).mean():.1f}%, at 64: {100 * (lens > 64).mean():.1f}%")
        qtexts = list(dict.fromkeys(synth(args.quality * 2, seed=7)[i]["conversations"][0]["value"]
                                    .replace("<image>\n", "") for i in range(args.quality * 2)))[: args.quality]
        for backend in args.backends.split(","):
            t0 = time.perf_counter()
            audit_embed.embed(ws, ["set up"], backend, None)   # export / distil once (cached per workspace)
            setup = time.perf_counter() - t0
            t0 = time.perf_counter()
            res = audit(ws, f, name=f"bench-{backend}", chunk_size=args.chunk, text_backend=backend)
            secs = time.perf_counter() - t0
            rate = args.items / secs
            q = quality(ws, qtexts, backend)
            qh = quality(ws, hand, backend)
            print(f"[{backend}] {res.text_backend}: {rate:,.0f} items/s ({secs:.1f} s), {rate / base:.2f}x the bare "
                  f"forward pass; 1 M items: ~{1_000_000 / rate / 60:.1f} min; one-off set-up {setup:.0f} s")
            for label, qq, n in (("synthetic", q, len(qtexts)), ("hand-written", qh, len(hand))):
                print(f"    agreement with minilm fp32 on {n} {label}: top-1 {qq['top1']:.1%}, reference in top-5 "
                      f"{qq['in_top5']:.1%}, same category {qq['category']:.1%}")
        # The same distinct texts through every backend and the bare pass, interleaved, 3 rounds: on a shared
        # machine the load drifts between the audits above; the median of interleaved rounds is fairer.
        ab = sorted(set(sample), key=len)[:1500]
        runs = {"bare": [], **{b: [] for b in args.backends.split(",")}}
        for _ in range(3):
            for b in runs:
                t0 = time.perf_counter()
                embed_texts(ab) if b == "bare" else audit_embed.embed(ws, ab, b, None)
                runs[b].append(len(ab) / (time.perf_counter() - t0))
        med = {b: float(np.median(v)) for b, v in runs.items()}
        print(f"interleaved, {len(ab):,} distinct length-sorted texts, median of 3: "
              + ", ".join(f"{b} {v:,.0f}/s ({v / med['bare']:.2f}x)" for b, v in med.items()))
        t0 = time.perf_counter()
        embed_texts(sample)
        after = len(sample) / (time.perf_counter() - t0)
        print(f"bare forward pass again after the backends: {after:,.0f} texts/s (before: {base:,.0f}; the ratios "
              f"above use 'before': on a shared machine read them with this spread in mind)")
        t0 = time.perf_counter()
        again = audit(ws, f, name=f"bench-{backend}", chunk_size=args.chunk, text_backend=backend)
        resumed = time.perf_counter() - t0
        assert again.resumed_from == args.items and res.summary["items"] == args.items
        ws.close()
    print(f"re-run with every chunk stored (resume path: read + summary): {resumed:.1f} s")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
