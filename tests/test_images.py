"""Image registry: folders, manifests, bad files, conversions, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clip_fixtures import make_bad_images, make_images
from conftest import run_cli, run_cli_subprocess
from workbench.core.errors import WorkbenchError
from workbench.stages.images.register import ImageError, image_path, load_image_rgb, register_images

pytestmark = pytest.mark.timeout(120)


def _problems(ws):
    return {r["path"]: r["reason"] for r in ws.store.query("SELECT path, reason FROM image_problems")}


def test_folder_with_bad_files_registers_good_ones_and_records_reasons(ws, tmp_path):
    make_images(tmp_path / "imgs", 6)
    expect = make_bad_images(tmp_path / "imgs" / "odd")
    report = register_images(ws, [tmp_path / "imgs"])
    ok = [n for n, e in expect.items() if e == "ok"]
    assert report.added == 6 + len(ok)
    problems = _problems(ws)
    for name, e in expect.items():
        if e == "ok":
            assert f"odd/{name}" not in problems
        else:
            assert e in problems[f"odd/{name}"], (name, problems.get(f"odd/{name}"))
    assert len(report.problems) == len(expect) - len(ok)
    row = ws.store.one("SELECT * FROM images WHERE path='img0000.jpg'")
    assert (row["width"], row["height"], row["format"], row["source"]) == (48, 40, "JPEG", "imgs")
    assert len(row["id"]) == 64


def test_odd_pixel_formats_convert_to_faithful_rgb(ws, tmp_path):
    make_bad_images(tmp_path / "odd")
    register_images(ws, [tmp_path / "odd"])
    ids = {r["path"]: r["id"] for r in ws.store.query("SELECT id, path FROM images")}
    grey = np.asarray(load_image_rgb(ws, ids["grey16.png"]))
    assert grey.shape == (16, 32, 3) and grey.dtype == np.uint8
    assert grey[0, 0, 0] == 0 and grey[-1, -1, 0] == 255 and 100 < grey[8, 0, 0] < 160  # scaled, not clipped
    assert len(np.unique(grey[..., 0])) > 200
    pal = np.asarray(load_image_rgb(ws, ids["palette_transparent.png"]))
    assert tuple(pal[5, 2]) == (255, 0, 0) and tuple(pal[5, 15]) == (255, 255, 255)  # transparent → white
    cmyk = np.asarray(load_image_rgb(ws, ids["cmyk.jpg"]))
    assert cmyk.shape == (24, 32, 3) and cmyk[..., 0].min() > 200 and cmyk[..., 1:].max() < 60


def test_same_content_twice_is_one_image_and_rerun_adds_nothing(ws, tmp_path):
    paths = make_images(tmp_path / "a", 3)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "copy.jpg").write_bytes(paths[0].read_bytes())
    r1 = register_images(ws, [tmp_path / "a", tmp_path / "b"])
    assert (r1.added, r1.already) == (3, 1)
    r2 = register_images(ws, str(tmp_path / "a"))   # one path as a plain string works too
    assert (r2.added, r2.already) == (0, 3)
    assert ws.store.scalar("SELECT count(*) FROM images") == 3
    iid = ws.store.scalar("SELECT id FROM images WHERE path='img0000.jpg'")
    assert image_path(ws, iid) == (tmp_path / "a" / "img0000.jpg").resolve()
    with pytest.raises(ImageError, match="no image with id"):
        load_image_rgb(ws, "nope")


def _llava(tmp_path):
    root = tmp_path / "data"
    make_images(root / "coco", 3)
    (tmp_path / "outside.jpg").write_bytes((root / "coco" / "img0000.jpg").read_bytes())
    entries = [
        {"id": "a1", "image": "coco/img0000.jpg", "task_type": "Counting",
         "conversations": [{"from": "human", "value": "<image>\nHow many?"}, {"from": "gpt", "value": "Three."}]},
        {"id": "a2", "image": "coco/img0001.png",
         "conversations": [{"from": "human", "value": "What colour?"}, {"from": "gpt", "value": "Red."}]},
        {"id": "a3", "image": "../outside.jpg", "conversations": []},
        {"id": "a4", "image": str(tmp_path / "outside.jpg"), "conversations": []},
        {"id": "a5", "image": "coco/missing.jpg", "conversations": []},
        {"id": "t1", "conversations": [{"from": "human", "value": "text only"}]},
    ]
    return root, entries


def test_llava_json_manifest_keeps_items_and_refuses_escaping_paths(ws, tmp_path):
    root, entries = _llava(tmp_path)
    manifest = tmp_path / "llava.json"
    manifest.write_text(json.dumps(entries))
    report = register_images(ws, [manifest], root=root)
    assert report.added == 2 and report.skipped_items == 1 and report.dataset_items == 5
    reasons = [p.reason for p in report.problems]
    assert sum("escapes the declared root" in r for r in reasons) == 2
    assert any("file not found" in r for r in reasons)
    item = ws.store.one("SELECT * FROM dataset_items WHERE item_id='a1'")
    assert (item["source"], item["task_name"], item["question"], item["answer"]) == (
        "llava", "Counting", "How many?", "Three.")
    assert item["image_id"] == ws.store.scalar("SELECT id FROM images WHERE path='coco/img0000.jpg'")
    assert ws.store.scalar("SELECT image_id FROM dataset_items WHERE item_id='a3'") is None
    # the escaping file itself was never registered
    assert ws.store.scalar("SELECT count(*) FROM images WHERE path LIKE '%outside%'") == 0


def test_jsonl_manifest_and_bad_json_line(ws, tmp_path):
    root, entries = _llava(tmp_path)
    good = tmp_path / "set.jsonl"
    good.write_text("\n".join(json.dumps(e) for e in entries[:2]) + "\n")
    rep = register_images(ws, [good], root=root, source="mine")
    assert rep.added == 2 and rep.dataset_items == 2
    assert ws.store.scalar("SELECT count(*) FROM dataset_items WHERE source='mine'") == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(entries[0]) + "\n{not json\n")
    with pytest.raises(WorkbenchError, match=r"bad.jsonl:2: invalid JSON"):
        register_images(ws, [bad], root=root)


def test_a_json_file_that_names_no_image_is_refused_not_registered_as_nothing(ws, tmp_path):
    odd = tmp_path / "data.json"
    odd.write_text(json.dumps({"data": 1}))
    r = run_cli("images", "add", ws.root, odd)
    assert r.code == 2 and "data.json: no entry names an image" in r.err and "keys data" in r.err
    assert len(r.err.strip().splitlines()) == 1
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(WorkbenchError, match=r"empty.jsonl: no entry names an image \(0 entr"):
        register_images(ws, [empty])
    assert ws.store.scalar("SELECT count(*) FROM images") == 0


def test_cli_images_add_and_report(ws, tmp_path):
    make_images(tmp_path / "imgs", 2)
    (tmp_path / "imgs" / "empty.png").write_bytes(b"")
    r = run_cli("images", "add", ws.root, tmp_path / "imgs", "--source", "demo")
    assert r.code == 0, r.err
    assert "2 image(s) added" in r.out and "empty file" in r.out
    r = run_cli("images", "report", ws.root)
    assert r.code == 0 and "demo: 2 image(s)" in r.out and "empty.png: empty file (0 bytes)" in r.out
    r = run_cli("images", "add", ws.root, tmp_path / "nothing-here")
    assert r.code == 2 and r.err.startswith("error:") and len(r.err.strip().splitlines()) == 1


@pytest.mark.timeout(180)
def test_cli_images_subprocess_refuses_escape(ws, tmp_path):
    root, entries = _llava(tmp_path)
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps(entries[2:3]))
    r = run_cli_subprocess("images", "add", ws.root, manifest, "--root", root)
    assert r.code == 0, r.err
    assert "escapes the declared root" in r.out and "0 image(s) added" in r.out


def test_large_jpeg_may_decode_at_reduced_scale_keeping_min_side(tmp_path):
    from PIL import Image

    from workbench.stages.images.register import open_rgb

    rng = np.random.default_rng(3)
    big = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), "RGB").resize((640, 480))
    big.save(tmp_path / "big.jpg", quality=92)
    big.save(tmp_path / "big.png")
    full, reduced = open_rgb(tmp_path / "big.jpg"), open_rgb(tmp_path / "big.jpg", min_side=224)
    assert full.size == (640, 480) and reduced.size == (320, 240)
    # the reduced decode is an averaging downscale of the same picture
    ref = np.asarray(full.resize((320, 240), Image.BOX), dtype=float)
    assert np.abs(np.asarray(reduced, dtype=float) - ref).mean() < 6
    assert open_rgb(tmp_path / "big.jpg", min_side=300).size == (640, 480)   # 1/2 would go below 300
    assert open_rgb(tmp_path / "big.png", min_side=224).size == (640, 480)   # only JPEG has DCT scaling
