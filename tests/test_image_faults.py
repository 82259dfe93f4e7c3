"""Faults of the image registry and CLIP embedding: the stage contract, extreme aspect ratios, FIFOs,
NUL bytes in manifest paths, files changed after registration, the random-weight warning."""

from __future__ import annotations

import hashlib
import json
import os
import threading

import numpy as np
import pytest

from clip_fixtures import make_images, use_tiny_clip
from conftest import run_cli, run_cli_subprocess
from workbench.stages.embed.stage import embed_images, embed_texts_clip, get_image_embeddings
from workbench.stages.images.register import ImageError, images_report, register_images
from workbench.taxonomy.model import Taxonomy

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def tiny_ws(seeded_ws, tmp_path):
    use_tiny_clip(seeded_ws, batch_size=8)
    make_images(tmp_path / "imgs", 6)
    register_images(seeded_ws, [tmp_path / "imgs"])
    return seeded_ws


def _problems(ws):
    return {r["path"]: r["reason"] for r in ws.store.query("SELECT path, reason FROM image_problems")}


# -- 1. embedding on the stage contract -----------------------------------------------------------
def test_embedding_stages_write_one_run_record_only_when_there_is_work(tiny_ws):
    from workbench.stages.base import Stage
    from workbench.stages.embed.stage import EmbedImageStage, EmbedTextStage

    assert issubclass(EmbedTextStage, Stage) and issubclass(EmbedImageStage, Stage)
    assert (EmbedTextStage.name, EmbedImageStage.name) == ("embed_text", "embed_image")
    t, i = embed_texts_clip(tiny_ws), embed_images(tiny_ws)
    assert i.computed == 6 and t.computed == len(Taxonomy.of(tiny_ws).leaves())
    runs = {r["stage"]: r for r in tiny_ws.runs()}
    assert runs["embed_image"]["status"] == "done" and runs["embed_text"]["status"] == "done"
    summary = json.loads(runs["embed_image"]["summary"])
    assert summary["computed"] == 6 and runs["embed_image"]["model"]
    assert i.run_id == runs["embed_image"]["id"]
    n_runs = len(tiny_ws.runs())
    assert embed_texts_clip(tiny_ws).computed == 0 and embed_images(tiny_ws).computed == 0
    assert len(tiny_ws.runs()) == n_runs            # nothing to do: no run record


def test_interrupted_embedding_is_recorded_as_interrupted_and_failed(tiny_ws):
    def ctrl_c(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        embed_images(tiny_ws, progress=ctrl_c)
    assert tiny_ws.runs("embed_image")[0]["status"] == "interrupted"
    assert tiny_ws.store.scalar("SELECT count(*) FROM embedding_rows") == 6   # the batch was committed first

    def boom(done, total):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        embed_texts_clip(tiny_ws, progress=boom)
    run = tiny_ws.runs("embed_text")[0]
    assert run["status"] == "failed" and "boom" in run["summary"]


# -- 2. extreme aspect ratios ----------------------------------------------------------------------
def _sliver(path, size):
    from PIL import Image

    rng = np.random.default_rng(0)
    w, h = size
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB").save(path)
    return path


def test_extreme_aspect_ratio_is_a_registration_problem(ws, tmp_path):
    folder = tmp_path / "odd"
    folder.mkdir()
    _sliver(folder / "tall.png", (1, 40000))
    _sliver(folder / "wide.png", (40000, 1))
    _sliver(folder / "banner.png", (400, 20))     # 20:1 is still accepted
    report = register_images(ws, [folder])
    assert report.added == 1
    problems = _problems(ws)
    for name in ("tall.png", "wide.png"):
        assert "aspect ratio" in problems[name] and "40000:1" in problems[name], problems[name]


def test_embedding_preprocessing_of_a_sliver_stays_bounded(ws, tmp_path):
    """A 1x40000 image registered before the check (or any image) must not reach the model's resize whole:
    resizing its short side to the input size would make a 64 x 2,560,000 image here (224 x 8,960,000 at
    224 px: 9.4 GB). The preprocessing is spied on: the test fails before any large allocation."""
    from workbench.stages.embed.clip import load_clip
    from workbench.stages.embed.stage import ImageDataset
    from workbench.stages.images.register import MAX_ASPECT_RATIO

    use_tiny_clip(ws)
    clip = load_clip(ws.config.clip, base_dir=ws.root)
    side = 64
    seen = []

    def spy(img):
        w, h = img.size
        seen.append((w, h))
        assert max(w, h) <= MAX_ASPECT_RATIO * min(w, h), f"{w}x{h} reached the model's transform"
        # after the model's shortest-side resize: at most MAX_ASPECT_RATIO * side^2 pixels
        assert side * side * max(w, h) / min(w, h) <= MAX_ASPECT_RATIO * side * side
        return clip.preprocess(img)

    items = []
    for name, size in (("tall.png", (1, 40000)), ("wide.png", (40000, 1)), ("ok.png", (60, 40))):
        p = _sliver(tmp_path / name, size)
        items.append((hashlib.sha256(p.read_bytes()).hexdigest(), str(p)))
    ds = ImageDataset(items, spy)
    for i in range(len(items)):
        image_id, pixels, err = ds[i]
        assert err is None, err
        assert tuple(pixels.shape) == (3, side, side)
    assert seen[2] == (60, 40)                     # ordinary images are untouched
    assert seen[0] == (1, 20) and seen[1] == (20, 1)


# -- 3. FIFOs and other non-regular files ----------------------------------------------------------
def _call_releasing_fifos(fn, fifos, timeout=20.0):
    """Run fn in a thread; if it blocks (opened a FIFO), release it by opening the FIFOs for writing, then fail."""
    out: dict = {}

    def target():
        try:
            out["value"] = fn()
        except BaseException as exc:
            out["error"] = exc

    th = threading.Thread(target=target, daemon=True)
    th.start()
    th.join(timeout)
    if th.is_alive():
        for f in fifos:
            try:
                os.close(os.open(f, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
        th.join(10)
        pytest.fail(f"blocked for {timeout}s on a FIFO")
    if "error" in out:
        raise out["error"]
    return out.get("value")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_fifo_is_a_problem_and_never_opened(ws, tmp_path):
    folder = tmp_path / "imgs"
    make_images(folder, 2)
    os.mkfifo(folder / "x.jpg")
    report = _call_releasing_fifos(lambda: register_images(ws, [folder]), [folder / "x.jpg"])
    assert report.added == 2
    assert "not a regular file" in _problems(ws)["x.jpg"]
    # a FIFO given by name, with or without an image extension, or as a manifest
    os.mkfifo(tmp_path / "pipe")
    rep = _call_releasing_fifos(lambda: register_images(ws, [tmp_path / "pipe"]), [tmp_path / "pipe"])
    assert rep.added == 0 and "not a regular file" in rep.problems[0].reason
    os.mkfifo(tmp_path / "m.jsonl")
    with pytest.raises(Exception, match="not a regular file"):
        _call_releasing_fifos(lambda: register_images(ws, [tmp_path / "m.jsonl"]), [tmp_path / "m.jsonl"])


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_fifo_in_place_of_a_registered_image_does_not_hang_reading(tiny_ws, tmp_path):
    from workbench.stages.images.register import image_path, load_image_rgb

    victim = tiny_ws.store.scalar("SELECT id FROM images ORDER BY id LIMIT 1")
    path = image_path(tiny_ws, victim)
    path.unlink()
    os.mkfifo(path)
    with pytest.raises(ImageError, match="not a regular file"):
        _call_releasing_fifos(lambda: load_image_rgb(tiny_ws, victim), [path])
    rep = _call_releasing_fifos(lambda: embed_images(tiny_ws), [path])
    assert rep.computed == 5 and [p[0] for p in rep.problems] == [victim]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
@pytest.mark.timeout(180)
def test_cli_images_add_with_fifo_subprocess_does_not_hang(ws, tmp_path):
    folder = tmp_path / "imgs"
    make_images(folder, 1)
    os.mkfifo(folder / "x.jpg")
    r = run_cli_subprocess("images", "add", ws.root, folder, timeout=120)
    assert r.code == 0, r.err
    assert "1 image(s) added" in r.out and "not a regular file" in r.out


# -- 4. NUL bytes in manifest paths ----------------------------------------------------------------
def test_nul_byte_in_a_manifest_path_is_a_problem_naming_file_and_line(ws, tmp_path):
    make_images(tmp_path / "coco", 2)
    lines = [{"id": "a", "image": "coco/img0000.jpg"}, {"id": "b", "image": "coco/img0001.png\u0000.jpg"}]
    jsonl = tmp_path / "set.jsonl"
    jsonl.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    report = register_images(ws, [jsonl])
    assert report.added == 1 and report.dataset_items == 2
    [p] = report.problems
    assert "set.jsonl:2" in p.reason and "NUL" in p.reason and "\x00" not in p.path
    arr = tmp_path / "set.json"
    arr.write_text(json.dumps([lines[1], {"id": "c", "image": ["coco/img0000.jpg", "\u0000"]}]))
    report = register_images(ws, [arr])
    assert sorted(p.reason.split(":")[0] + ":" + p.reason.split(":")[1] for p in report.problems) == [
        "set.json:1", "set.json:2"]
    r = run_cli("images", "add", ws.root, jsonl)
    assert r.code == 0 and "Traceback" not in r.err and "set.jsonl:2" in r.out and "\x00" not in r.out
    assert all("\x00" not in p for p in _problems(ws))


# -- 5. files changed after registration -----------------------------------------------------------
def _rewrite(path, seed):
    from PIL import Image

    st = path.stat()
    img = Image.fromarray(np.random.default_rng(seed).integers(0, 256, (40, 48, 3), dtype=np.uint8), "RGB")
    img.save(path, format="PNG" if path.suffix == ".png" else "JPEG")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))


def test_registration_records_size_and_mtime(ws, tmp_path):
    [p] = make_images(tmp_path / "imgs", 1)
    register_images(ws, [tmp_path / "imgs"])
    row = ws.store.one("SELECT bytes, mtime_ns FROM images")
    assert row["bytes"] == p.stat().st_size and row["mtime_ns"] == p.stat().st_mtime_ns
    # a touch (same content, new mtime) is not a change: the new mtime is recorded
    os.utime(p, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns + 10**9))
    rep = register_images(ws, [tmp_path / "imgs"])
    assert (rep.added, rep.already, rep.changed, rep.problems) == (0, 1, 0, [])
    assert ws.store.scalar("SELECT mtime_ns FROM images") == p.stat().st_mtime_ns


def test_changed_file_is_reported_and_never_embedded_under_its_old_id(tiny_ws, tmp_path):
    from workbench.stages.images.register import image_path

    old = tiny_ws.store.one("SELECT id, path FROM images ORDER BY path LIMIT 1")
    target = image_path(tiny_ws, old["id"])
    _rewrite(target, seed=99)
    new_id = hashlib.sha256(target.read_bytes()).hexdigest()

    # before embedding: the changed file is refused, the other five are embedded
    rep = embed_images(tiny_ws)
    assert rep.computed == 5 and [p[0] for p in rep.problems] == [old["id"]]
    assert "changed since registration" in _problems(tiny_ws)[old["path"]]
    ids, _ = get_image_embeddings(tiny_ws)
    assert old["id"] not in ids and new_id not in ids

    # `images report` finds it without anything else having run
    report = images_report(tiny_ws)
    assert [c["path"] for c in report["changed"]] == [old["path"]]
    r = run_cli("images", "report", tiny_ws.root)
    assert r.code == 0 and "changed since registration" in r.out and "--refresh" in r.out

    # `images add` again: reported, not registered under a second id, the old row untouched
    again = register_images(tiny_ws, [tmp_path / "imgs"])
    assert (again.added, again.already, again.changed) == (0, 5, 1)
    assert "changed since registration" in again.problems[0].reason and "--refresh" in again.problems[0].reason
    assert tiny_ws.store.scalar("SELECT count(*) FROM images") == 6
    assert tiny_ws.store.scalar("SELECT count(*) FROM images WHERE id=?", (new_id,)) == 0

    # --refresh: the new content is a new image (content-hashed id); the old id is gone
    r = run_cli("images", "add", tiny_ws.root, tmp_path / "imgs", "--refresh")
    assert r.code == 0, r.err
    assert "1 image(s) added" in r.out and "1 changed file(s) re-registered" in r.out
    assert tiny_ws.store.scalar("SELECT count(*) FROM images") == 6
    assert tiny_ws.store.scalar("SELECT path FROM images WHERE id=?", (new_id,)) == old["path"]
    assert tiny_ws.store.scalar("SELECT count(*) FROM images WHERE id=?", (old["id"],)) == 0
    assert old["path"] not in _problems(tiny_ws)
    assert images_report(tiny_ws)["changed"] == []
    rep = embed_images(tiny_ws)
    assert rep.computed == 1 and rep.problems == []
    ids, _ = get_image_embeddings(tiny_ws)
    assert new_id in ids and len(ids) == 6


def test_refresh_keeps_dataset_items_and_an_old_id_whose_content_moved(ws, tmp_path):
    root = tmp_path / "data"
    a, b = make_images(root, 2)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "q1", "image": a.name}) + "\n")
    register_images(ws, [manifest], root=root)
    old_id = ws.store.scalar("SELECT id FROM images")
    keep = tmp_path / "data" / "kept.jpg"
    keep.write_bytes(a.read_bytes())     # the old content still exists under another name
    _rewrite(a, seed=5)
    rep = register_images(ws, [manifest, root], root=root, refresh=True)
    assert rep.refreshed == 1
    new_id = hashlib.sha256(a.read_bytes()).hexdigest()
    assert ws.store.scalar("SELECT image_id FROM dataset_items WHERE item_id='q1'") == new_id
    assert ws.store.scalar("SELECT path FROM images WHERE id=?", (old_id,)) == "kept.jpg"


# -- 6. the random-weight warning ------------------------------------------------------------------
@pytest.mark.timeout(240)
def test_random_weight_warning_prints_once_per_command(tiny_ws):
    r = run_cli_subprocess("match", tiny_ws.root, timeout=200)
    assert r.code == 0, r.err
    assert r.err.count("CLIP weights: random") == 1, r.err
    assert "initialized randomly" not in r.err


def test_random_weight_warning_once_per_process_and_config(ws, caplog):
    import logging

    from workbench.stages.embed import clip as C

    use_tiny_clip(ws)
    C._WARNED.clear()
    with caplog.at_level(logging.WARNING):
        C.load_clip(ws.config.clip, base_dir=ws.root)
        C.load_clip(ws.config.clip, base_dir=ws.root)
    msgs = [r.getMessage() for r in caplog.records]
    assert sum("CLIP weights: random" in m for m in msgs) == 1, msgs
    assert not any("initialized randomly" in m for m in msgs)
