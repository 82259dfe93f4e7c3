"""Build a synthetic workspace at the paper's scale for the dashboard benchmark (and, small, for tests).

    python benchmarks/make_paper_scale_workspace.py DIR            # 19,227 task types, 100k images, ~413k samples
    python benchmarks/make_paper_scale_workspace.py DIR --small    # a few dozen of each (what the tests use)

Rows are inserted directly into the contract tables (ARCHITECTURE.md "Tables"): a 4-level
taxonomy, images (rows point to a few dozen generated PNGs, reused), a CLIP image and text
embedding set (random vectors clustered per first-level category), top-5 matches, filter
decisions, samples, three referees' votes, selections, LLM calls with tokens and cost, stage
runs, two prompt versions of the expansion, and (paper scale) 3,000 task types a last expansion
run proposed, pending review (the dashboard counts proposed nodes as task types, as the pipeline
does: it shows 22,227, of which 3,000 have no images yet; the benchmark is the stricter for it).
The embedding map's projection is stored under the key the dashboard asks for, with *synthetic* coordinates
(category blobs), because a real 100k-point UMAP takes minutes; the benchmark measures the dashboard, not UMAP.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

WORDS = ("scene text recognition counting spatial relation chart reading table parsing document layout "
         "emotion action attribute color shape material medical radiology remote sensing satellite map "
         "geometry diagram reasoning commonsense humor meme art style painting landmark food plant animal "
         "vehicle traffic sign sports fashion product logo handwriting math formula code screenshot GUI "
         "navigation weather astronomy microscopy anomaly defect inspection crowd pose gesture face age "
         "depth motion temporal event caption grounding referring expression comparison similarity").split()
SOURCES = ("coco", "textvqa", "chartqa", "docvqa", "ai2d", "sharegpt4v", "ocrvqa", "gqa")
REFEREES = ("glm4v", "internvl-chat-v1.5", "internvl2-26b")
STAGES_MODELS = (("expand", "gpt-4o-2024-05-13"), ("filter", "gpt-4o-2024-05-13"), ("qa", "gpt-4o-2024-05-13"))


@dataclass
class Scale:
    l1: int
    l2: int            # children per first-level node
    l3: int
    leaves: int        # total task types (level 4), spread over the level-3 nodes
    images: int
    keep: float        # share of (image, candidate) pairs the filter keeps
    k: int = 5
    dim: int = 32
    pngs: int = 48
    llm_calls_per_stage: int = 2000
    proposals: int = 0   # level-4 nodes a last expand run proposed, pending review (PROPOSALS_PER_PARENT each)


PAPER = Scale(l1=40, l2=10, l3=6, leaves=19_227, images=100_000, keep=0.826, proposals=3_000)
PROPOSALS_PER_PARENT = 6
SMALL = Scale(l1=3, l2=2, l3=2, leaves=24, images=40, keep=0.8, k=3, dim=16, pngs=12, llm_calls_per_stage=6)


def _id(prefix: str, *parts) -> str:
    return prefix + hashlib.blake2b("\x00".join(map(str, parts)).encode(), digest_size=6).hexdigest()


def _name(rng: np.random.Generator, i: int, long: bool = False) -> str:
    n = int(rng.integers(8, 14)) if long else int(rng.integers(1, 4))
    return " ".join(rng.choice(WORDS, n)).capitalize() + f" {i}"


def _write_pngs(folder: Path, n: int, rng: np.random.Generator) -> list[str]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        arr = np.zeros((96, 128, 3), dtype=np.uint8)
        arr[..., 0] = np.linspace(0, 255, 128, dtype=np.uint8)[None, :]
        arr[..., 1] = (i * 37) % 256
        arr[..., 2] = np.linspace(255, 0, 96, dtype=np.uint8)[:, None]
        y, x = rng.integers(10, 60), rng.integers(10, 90)
        arr[y:y + 25, x:x + 30] = rng.integers(0, 255, 3)
        name = f"img_{i:04d}.png"
        Image.fromarray(arr).save(folder / name)
        names.append(name)
    return names


def build(root: Path | str, scale: Scale = PAPER, seed: int = 0, log=print) -> dict:
    """Create the workspace at `root` (must not exist) and fill it. Returns a summary dict."""
    from workbench.analysis import projection
    from workbench.core.clock import utcnow
    from workbench.core.workspace import Workspace

    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    ws = Workspace.init(root)
    now = utcnow()
    conn = ws.store.conn

    # -- stage runs and two expansion prompt versions -------------------------------------------
    runs = {}
    prompt_a, prompt_b = "3f6c1b2a9d8e7f01", "a1b2c3d4e5f60718"
    for stage, model in (("expand", "gpt-4o-2024-05-13"), ("expand", "gpt-4o-2024-05-13"), ("clip_embed", "ViT-L-14"),
                         ("match", "ViT-L-14"), ("filter", "gpt-4o-2024-05-13"), ("qa", "gpt-4o-2024-05-13"),
                         ("referee", None), ("select", None)):
        ph = (prompt_a if "expand" not in runs else prompt_b) if stage == "expand" else None
        with ws.stage_run(stage, {"synthetic": True}, prompt_file=f"prompts/{stage}.j2" if ph else None,
                          prompt_hash=ph, model=model, lock_key=None) as run:
            run.summary["synthetic"] = True
        rid = run.id
        runs.setdefault(stage, rid)
        if stage == "expand" and ph == prompt_b:
            runs["expand_b"] = rid

    # -- taxonomy: 4 levels ------------------------------------------------------------------------
    node_rows, leaf_ids, cat_of_leaf, level3 = [], [], [], []
    l1_ids = []
    for a in range(scale.l1):
        a_id = _id("t", a)
        l1_ids.append(a_id)
        node_rows.append((a_id, None, _name(rng, a), 1, a, "seed", None, None))
        for b in range(scale.l2):
            b_id = _id("t", a, b)
            node_rows.append((b_id, a_id, _name(rng, b), 2, b, "generated", runs["expand"], prompt_a))
            for c in range(scale.l3):
                c_id = _id("t", a, b, c)
                node_rows.append((c_id, b_id, _name(rng, c), 3, c, "generated", runs["expand"], prompt_a))
                level3.append((c_id, a))
    per = np.full(len(level3), scale.leaves // len(level3))
    per[: scale.leaves - per.sum()] += 1
    for j3, ((c_id, a), n) in enumerate(zip(level3, per)):
        both = j3 == 0 or rng.random() < 0.1   # some parents were expanded by both prompt versions
        for d in range(int(n)):
            d_id = _id("t", c_id, d)
            hb = both and d % 2 == 1
            node_rows.append((d_id, c_id, _name(rng, d, long=rng.random() < 0.01), 4, d, "generated",
                              runs["expand_b"] if hb else runs["expand"], prompt_b if hb else prompt_a))
            leaf_ids.append(d_id)
            cat_of_leaf.append(a)
    with ws.store.write():
        conn.executemany(
            "INSERT INTO nodes(id, parent_id, name, name_key, level, position, origin, status, created_at, updated_at,"
            " stage_run_id, prompt_hash, model) VALUES (?, ?, ?, lower(?), ?, ?, ?, 'accepted', ?, ?, ?, ?, ?)",
            [(i, p, n, n, lv, pos, o, now, now, r, h, "gpt-4o-2024-05-13" if r else None)
             for i, p, n, lv, pos, o, r, h in node_rows])
    leaf_ids_a = np.array(leaf_ids, dtype=object)
    cat_of_leaf = np.array(cat_of_leaf)
    log(f"taxonomy: {len(node_rows):,} nodes, {len(leaf_ids):,} task types ({time.perf_counter() - t0:.1f}s)")

    # -- images (rows cycle over a few real PNGs) -------------------------------------------------
    img_dir = Path(root) / "images_src"
    pngs = _write_pngs(img_dir, scale.pngs, rng)
    n_img = scale.images
    img_ids = np.array([hashlib.sha256(f"image {i}".encode()).hexdigest() for i in range(n_img)], dtype=object)
    img_cat = rng.integers(0, scale.l1, n_img)
    sources = rng.choice(SOURCES, n_img)
    with ws.store.write():
        conn.executemany(
            "INSERT INTO images(id, path, root, source, width, height, format, added_at) "
            "VALUES (?, ?, ?, ?, 128, 96, 'PNG', ?)",
            ((img_ids[i], pngs[i % len(pngs)], str(img_dir), sources[i], now) for i in range(n_img)))

    # -- embeddings: clustered per first-level category ------------------------------------------
    centres = rng.normal(size=(scale.l1, scale.dim)).astype(np.float32) * 3
    img_emb = centres[img_cat] + rng.normal(size=(n_img, scale.dim)).astype(np.float32)
    txt_emb = centres[cat_of_leaf] + rng.normal(size=(len(leaf_ids), scale.dim)).astype(np.float32)
    sets = []
    for kind, arr, items in (("image", img_emb, img_ids), ("text", txt_emb, leaf_ids_a)):
        key = _id("e", kind, scale.dim, seed)
        fname = f"emb-{kind}-{key}.npy"
        np.save(ws.arrays_dir / fname, arr / np.linalg.norm(arr, axis=1, keepdims=True))
        with ws.store.write():
            conn.execute("INSERT INTO embedding_sets(key, kind, model, pretrained, template, dim, array_file, "
                         "created_at, updated_at) VALUES (?, ?, 'ViT-L-14', 'synthetic', '{path}', ?, ?, ?, ?)",
                         (key, kind, scale.dim, fname, now, now))
            conn.executemany("INSERT INTO embedding_rows(set_key, row, item_id) VALUES (?, ?, ?)",
                             ((key, i, items[i]) for i in range(len(items))))
        sets.append(key)

    # -- matches: top-k task types of the image's category ----------------------------------------
    leaves_by_cat = [np.flatnonzero(cat_of_leaf == a) for a in range(scale.l1)]
    # A long tail: within a category, task types are drawn with Zipf-like weights.
    weights = []
    for idx in leaves_by_cat:
        w = 1.0 / np.arange(1, len(idx) + 1) ** 0.8
        rng.shuffle(w)
        weights.append(w / w.sum())
    match_rows, cand = [], []
    for i in range(n_img):
        a = img_cat[i]
        k = min(scale.k, len(leaves_by_cat[a]))
        picks = rng.choice(leaves_by_cat[a], k, replace=False, p=weights[a])
        scores = np.sort(rng.uniform(0.18, 0.36, k))[::-1]
        for r, (leaf, sc) in enumerate(zip(picks, scores), start=1):
            match_rows.append((img_ids[i], leaf_ids[leaf], r, float(sc), "synthetic"))
            cand.append((i, leaf))
    with ws.store.write():
        conn.executemany("INSERT INTO matches(image_id, node_id, rank, score, match_key) VALUES (?, ?, ?, ?, ?)",
                         match_rows)
    log(f"images, embeddings, matches: {n_img:,} / {len(match_rows):,} ({time.perf_counter() - t0:.1f}s)")

    # -- filter, samples, votes, selections -------------------------------------------------------
    kept = rng.random(len(cand)) < scale.keep
    fd, samples, votes, sel = [], [], [], []
    quality = rng.random(len(cand))
    for j, (i, leaf) in enumerate(cand):
        nid = leaf_ids[leaf]
        fd.append((img_ids[i], nid, nid, int(kept[j]), None if kept[j] else "not chosen", runs["filter"]))
        if not kept[j]:
            continue
        sid = _id("s", img_ids[i], nid)
        q = quality[j]
        samples.append((sid, img_ids[i], nid, f"What does image {i} show about task {leaf}?",
                        f"It shows example {i} of task {leaf}.", runs["qa"], now))
        total = 0
        for r_i, ref in enumerate(REFEREES):
            p_yes = 0.25 + 0.7 * q + (0.05 * r_i)
            v = int(rng.random() < min(p_yes, 0.98))
            invalid = rng.random() < 0.005
            votes.append((sid, ref, None if invalid else v, 0 if invalid else 1,
                          "maybe" if invalid else str(v), runs["referee"]))
            total += 0 if invalid else v
        sel.append((sid, int(total >= 2), "votes>=2" if total >= 2 else "votes<2", runs["select"]))
    with ws.store.write():
        conn.executemany("INSERT INTO filter_decisions(image_id, node_id, label, kept, reason, stage_run_id) "
                         "VALUES (?, ?, ?, ?, ?, ?)", fd)
        conn.executemany("INSERT INTO samples(id, image_id, node_id, question, answer, status, stage_run_id, "
                         "created_at) VALUES (?, ?, ?, ?, ?, 'ok', ?, ?)", samples)
        conn.executemany("INSERT INTO votes(sample_id, referee, vote, valid, raw_text, stage_run_id) "
                         "VALUES (?, ?, ?, ?, ?, ?)", votes)
        conn.executemany("INSERT INTO selections(sample_id, selected, reason, stage_run_id) VALUES (?, ?, ?, ?)", sel)
    log(f"samples {len(samples):,}, votes {len(votes):,} ({time.perf_counter() - t0:.1f}s)")

    # -- LLM calls: tokens and cost per stage and model ------------------------------------------
    calls = []
    for stage, model in STAGES_MODELS:
        for j in range(scale.llm_calls_per_stage):
            ph = (prompt_b if j % 2 else prompt_a) if stage == "expand" else None
            run = runs["expand_b"] if (stage == "expand" and j % 2) else runs[stage]
            pt, ct = int(rng.integers(200, 1500)), int(rng.integers(20, 400))
            parent = node_rows[j % len(node_rows)][2]
            calls.append((_id("k", stage, j), stage, "default", model, run, ph,
                          json.dumps({"messages": [{"role": "user", "content": f"Expand: {parent}"}]}),
                          f"{parent}~child {j}", pt, ct, (pt * 5 + ct * 15) / 1e6, float(rng.uniform(0.5, 4)), now))
    with ws.store.write():
        conn.executemany(
            "INSERT INTO llm_calls(key, stage, endpoint, model, stage_run_id, prompt_hash, request, status, raw_text, "
            "finish_reason, prompt_tokens, completion_tokens, cost_usd, latency_s, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, 'ok', ?, 'stop', ?, ?, ?, ?, ?)", calls)

    # -- a last expand run's proposals, pending review (their own generator: the figures above do not change) --
    n_prop = 0
    if scale.proposals:
        prng = np.random.default_rng(seed + 1)
        with ws.stage_run("expand", {"synthetic": True, "level": 4}, prompt_file="prompts/expand.j2",
                          prompt_hash=prompt_b, model="gpt-4o-2024-05-13", lock_key=None) as run:
            run.summary["synthetic"] = True
        parents = prng.choice(len(level3), -(-scale.proposals // PROPOSALS_PER_PARENT), replace=False)
        # Positions (and name suffixes) from 100: no accepted sibling has the name.
        prop = [(_id("p", j, pos), level3[j][0], _name(prng, pos), pos)
                for j in parents for pos in range(100, 100 + PROPOSALS_PER_PARENT)][: scale.proposals]
        with ws.store.write():
            conn.executemany(
                "INSERT INTO nodes(id, parent_id, name, name_key, level, position, origin, status, created_at, "
                "updated_at, stage_run_id, prompt_hash, model) VALUES (?, ?, ?, lower(?), 4, ?, 'generated', "
                "'proposed', ?, ?, ?, ?, 'gpt-4o-2024-05-13')",
                [(i, p, n, n, pos, now, now, run.id, prompt_b) for i, p, n, pos in prop])
        n_prop = len(prop)

    # -- the stored projection (synthetic coordinates: category blobs) ---------------------------
    params = dict(projection.DEFAULT_PARAMS)
    key = projection.projection_key(ws.store, sets, "umap", params)
    angle = 2 * np.pi * np.arange(scale.l1) / scale.l1
    blob = np.stack([np.cos(angle), np.sin(angle)], axis=1) * 10
    img_xy = blob[img_cat] + rng.normal(size=(n_img, 2)) * 1.2
    txt_xy = blob[cat_of_leaf] * 0.8 + rng.normal(size=(len(leaf_ids), 2))
    items = [("image", i) for i in img_ids] + [("task", t) for t in leaf_ids]
    # `sets` is in insertion order (image, text) == the sorted order the key uses? Keep items in set order.
    projection.save(ws, key, "umap", params, np.concatenate([img_xy, txt_xy]), items)
    summary = {"nodes": len(node_rows), "task_types": len(leaf_ids), "images": n_img, "matches": len(match_rows),
               "samples": len(samples), "votes": len(votes), "llm_calls": len(calls), "proposals": n_prop,
               "projection": key, "embedding_sets": sets, "seconds": round(time.perf_counter() - t0, 1)}
    ws.close()
    log(f"done in {summary['seconds']}s: {summary}")
    return summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("directory", type=Path, help="folder for the new workspace (must not be a workspace yet)")
    ap.add_argument("--small", action="store_true", help="a tiny workspace (what the tests use)")
    ap.add_argument("--seed", type=int, default=0, help="random seed")
    args = ap.parse_args(argv)
    build(args.directory, SMALL if args.small else PAPER, seed=args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
