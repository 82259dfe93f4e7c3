"""Top-k matching: equals brute-force float64 cosine; incremental after taxonomy edits; queries; CLI."""

from __future__ import annotations

import numpy as np
import pytest

from clip_fixtures import make_images, set_config_section, use_tiny_clip
from conftest import run_cli, run_cli_subprocess
from workbench.stages.embed.stage import get_image_embeddings, get_text_embeddings
from workbench.stages.images.register import register_images
from workbench.stages.match.stage import (
    chunk_rows,
    image_matches,
    images_for_task,
    low_score_images,
    match,
    match_counts,
    no_image_line,
    tasks_without_images,
    topk_cosine,
)
from workbench.taxonomy.model import Taxonomy

pytestmark = pytest.mark.timeout(120)


def _unit(rng, n, d):
    x = rng.standard_normal((n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_chunked_topk_equals_bruteforce_float64_cosine():
    rng = np.random.default_rng(0)
    q64, t64 = _unit(rng, 1000, 32), _unit(rng, 300, 32)
    k = 7
    got_idx = np.zeros((1000, k), int)
    got_val = np.zeros((1000, k))
    for start, idx, vals in topk_cosine(q64.astype(np.float32), t64.astype(np.float32), k, chunk=97):
        got_idx[start:start + len(idx)] = idx
        got_val[start:start + len(idx)] = vals
    # brute force: cosine from scratch in float64 (not assuming normalised inputs)
    cos = (q64 @ t64.T) / np.outer(np.linalg.norm(q64, axis=1), np.linalg.norm(t64, axis=1))
    want = np.argsort(-cos, axis=1)[:, :k]
    assert np.array_equal(got_idx, want)
    assert np.allclose(got_val, np.take_along_axis(cos, want, axis=1), atol=1e-5)
    assert chunk_rows(20_000, 512, 4096) == 4096 and chunk_rows(1_000_000, 64, 4096) == 16


@pytest.fixture
def matched_ws(seeded_ws, tmp_path):
    use_tiny_clip(seeded_ws, batch_size=16)
    set_config_section(seeded_ws, "match", k=4, memory_mb=16, chunk_size=7)   # many small chunks
    make_images(tmp_path / "imgs", 40)
    register_images(seeded_ws, [tmp_path / "imgs"])
    return seeded_ws


def _bruteforce(ws, k):
    tids, T = get_text_embeddings(ws)
    iids, X = get_image_embeddings(ws)
    cos = X.astype(np.float64) @ T.astype(np.float64).T
    order = np.argsort(-cos, axis=1)[:, :k]
    return {iid: [(tids[j], cos[a, j]) for j in order[a]] for a, iid in enumerate(iids)}


def _stored(ws):
    out = {}
    for iid in [r["id"] for r in ws.store.query("SELECT id FROM images")]:
        out[iid] = [(m["node_id"], m["score"]) for m in image_matches(ws, iid)]
    return out


def _same(got, want):
    assert got.keys() == want.keys()
    for iid in want:
        assert [n for n, _ in got[iid]] == [n for n, _ in want[iid]], iid
        assert np.allclose([s for _, s in got[iid]], [s for _, s in want[iid]], atol=1e-5)


def test_workspace_match_equals_bruteforce_and_is_incremental(matched_ws, tmp_path):
    ws = matched_ws
    rep = match(ws)
    assert (rep.images, rep.recomputed, rep.merged, rep.k) == (40, 40, 0, 4)
    _same(_stored(ws), _bruteforce(ws, 4))
    ranks = ws.store.query("SELECT rank, count(*) n FROM matches GROUP BY rank ORDER BY rank")
    assert [(r["rank"], r["n"]) for r in ranks] == [(1, 40), (2, 40), (3, 40), (4, 40)]

    again = match(ws)
    assert (again.recomputed, again.merged) == (0, 0)

    # edit the taxonomy: rename a matched task, add one, delete a matched one; add images
    rare = [r["node_id"] for r in ws.store.query(
        "SELECT node_id FROM matches GROUP BY node_id ORDER BY count(*), node_id")]
    Taxonomy.of(ws).rename(rare[0], "Renamed task")
    leaves = [n for n, _ in Taxonomy.of(ws).leaves()]
    Taxonomy.of(ws).add("Freshly added task", leaves[3].parent_id)
    Taxonomy.of(ws).delete(rare[1])
    make_images(tmp_path / "more", 3, seed=9)
    register_images(ws, [tmp_path / "more"])
    inc = match(ws)
    affected = inc.recomputed
    assert 3 <= affected < 43 and inc.merged == 43 - affected and inc.new_targets == 2
    _same(_stored(ws), _bruteforce(ws, 4))

    # merging one task into another is detected through the stale text hash
    leaves = [n for n, _ in Taxonomy.of(ws).leaves()]
    used = [r["node_id"] for r in ws.store.query("SELECT DISTINCT node_id FROM matches")]
    victim = next(n for n in leaves if n.id in used)
    survivor = next(n for n in leaves if n.id != victim.id)
    Taxonomy.of(ws).merge(victim.id, survivor.id)
    match(ws)
    _same(_stored(ws), _bruteforce(ws, 4))

    # a different k is a new match key: all images again
    assert match(ws, k=2).recomputed == 43
    _same(_stored(ws), _bruteforce(ws, 2))


def test_dashboard_queries(matched_ws):
    ws = matched_ws
    match(ws)
    counts = match_counts(ws)
    assert sum(counts.values()) == 40 * 4
    empty = tasks_without_images(ws)
    assert {n for n, _ in empty} == {n for n, c in counts.items() if c == 0}
    # The notebooks' figure: the total is the number of task types, not task types + those without an image.
    tasks = Taxonomy.of(ws).count_leaves()
    assert len(counts) == tasks and no_image_line(ws) == f"{len(empty)} of {tasks} task types have no image"
    some = next(n for n, c in counts.items() if c)
    rows = images_for_task(ws, some)
    assert len(rows) == counts[some] and rows == sorted(rows, key=lambda r: -r["score"])
    assert all(r["rank"] == 1 for r in images_for_task(ws, some, max_rank=1))
    best = {r["image_id"]: r["score"] for r in ws.store.query("SELECT image_id, score FROM matches WHERE rank=1")}
    th = float(np.median(list(best.values())))
    low = low_score_images(ws, th)
    assert {r["image_id"] for r in low} == {i for i, s in best.items() if s < th}
    set_config_section(ws, "match", low_score_threshold=2.0)
    assert len(low_score_images(ws)) == 40


def test_match_with_no_task_types_is_a_clear_error(ws, tmp_path):
    use_tiny_clip(ws)
    make_images(tmp_path / "imgs", 2)
    register_images(ws, [tmp_path / "imgs"])
    r = run_cli("match", ws.root)
    assert r.code == 2 and "no task types to match against" in r.err
    # Only proposals: not task types until accepted, and the error names the command that accepts them.
    Taxonomy.of(ws).add_path("ocr~menus", status="proposed")
    r = run_cli("match", ws.root)
    assert r.code == 2 and "no accepted task types" in r.err and "2 awaiting review" in r.err
    assert f"workbench taxonomy accept {ws.root} --proposed" in r.err


@pytest.mark.timeout(180)
def test_cli_match_in_process_and_subprocess(matched_ws):
    r = run_cli("match", matched_ws.root, "--k", "3")
    assert r.code == 0, r.err
    assert "matched 40 image(s)" in r.out and "k=3" in r.out
    assert matched_ws.store.scalar("SELECT max(rank) FROM matches") == 3
    r = run_cli_subprocess("match", matched_ws.root)
    assert r.code == 0, r.err
    assert "k=4" in r.out and "40 fully scored" in r.out
    r = run_cli("match", matched_ws.root, "--k", "0")
    assert r.code == 2 and "at least 1" in r.err
