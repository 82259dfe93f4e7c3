"""CLIP loading and embeddings: tiny random-weight open_clip model, real code path, no download."""

from __future__ import annotations

import time

import numpy as np
import pytest

from clip_fixtures import make_images, set_config_section, use_tiny_clip
from conftest import run_cli, run_cli_subprocess
from workbench.core.errors import WorkbenchError
from workbench.stages.embed.clip import ClipWeightsMissing, load_clip
from workbench.stages.embed.stage import (
    embed_images,
    embed_texts_clip,
    get_image_embeddings,
    get_text_embeddings,
    render_text,
)
from workbench.stages.images.register import register_images
from workbench.taxonomy.model import Taxonomy

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def tiny_ws(seeded_ws, tmp_path):
    use_tiny_clip(seeded_ws, batch_size=8)
    make_images(tmp_path / "imgs", 30)
    register_images(seeded_ws, [tmp_path / "imgs"])
    return seeded_ws


def test_default_hub_weights_fail_fast_with_what_to_set(ws):
    t0 = time.monotonic()
    with pytest.raises(ClipWeightsMissing) as exc:
        load_clip(ws.config.clip, base_dir=ws.root)
    assert time.monotonic() - t0 < 30
    msg = str(exc.value)
    assert "[clip] pretrained" in msg and "local checkpoint file" in msg and 'pretrained = ""' in msg
    r = run_cli("embed", ws.root)
    assert r.code == 2 and "not on this machine" in r.err and "Traceback" not in r.err


def test_missing_checkpoint_file_and_unknown_model_are_clear(ws):
    set_config_section(ws, "clip", model="ViT-B-32", pretrained="/nowhere/ckpt.pt")
    with pytest.raises(ClipWeightsMissing, match="no such checkpoint file"):
        load_clip(ws.config.clip, base_dir=ws.root)
    set_config_section(ws, "clip", model="ViT-Nope", pretrained="")
    r = run_cli("embed", ws.root)
    assert r.code == 2 and "not an open_clip model" in r.err


def test_local_checkpoint_file_loads_those_weights(ws, tmp_path):
    import torch

    use_tiny_clip(ws)
    clip = load_clip(ws.config.clip, base_dir=ws.root)
    sd = {k: v + 0.01 for k, v in clip.model.state_dict().items()}   # different from the seeded random init
    torch.save(sd, tmp_path / "tiny.pt")
    set_config_section(ws, "clip", pretrained=str(tmp_path / "tiny.pt"))
    loaded = load_clip(ws.config.clip, base_dir=ws.root)
    assert loaded.pretrained == str(tmp_path / "tiny.pt")
    k = "text_projection"
    assert torch.allclose(loaded.model.state_dict()[k], sd[k])


def test_text_encoding_uses_only_needed_columns_but_is_exact(ws):
    import torch

    use_tiny_clip(ws)
    clip = load_clip(ws.config.clip, base_dir=ws.root)
    texts = ["Image understanding~Object recognition~count objects", "ocr", "charts~read values off a bar chart"]
    got, truncated = clip.encode_texts(texts)
    with torch.no_grad():
        ref = torch.nn.functional.normalize(clip.model.encode_text(clip.tokenizer(texts)), dim=-1).numpy()
    assert np.abs(got - ref).max() < 1e-5
    assert not truncated.any()
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5) and got.dtype == np.float32


def test_texts_and_images_are_cached_and_reused(tiny_ws, tmp_path):
    t1 = embed_texts_clip(tiny_ws)
    i1 = embed_images(tiny_ws)
    n_leaves = len(Taxonomy.of(tiny_ws).leaves())
    assert (t1.computed, i1.computed) == (n_leaves, 30)
    ids, arr = get_image_embeddings(tiny_ws)
    assert arr.shape == (30, 64) and arr.dtype == np.float32 and np.allclose(np.linalg.norm(arr, axis=1), 1, atol=1e-5)
    t2, i2 = embed_texts_clip(tiny_ws), embed_images(tiny_ws)
    assert (t2.computed, t2.reused, i2.computed, i2.reused) == (0, n_leaves, 0, 30)
    # new items add only their rows; a rename re-embeds only that task type
    make_images(tmp_path / "more", 5, seed=7)
    register_images(tiny_ws, [tmp_path / "more"])
    leaf = Taxonomy.of(tiny_ws).leaves()[0][0]
    Taxonomy.of(tiny_ws).rename(leaf.id, "A renamed task")
    Taxonomy.of(tiny_ws).add("A brand new task", Taxonomy.of(tiny_ws).leaves()[1][0].parent_id)
    t3, i3 = embed_texts_clip(tiny_ws), embed_images(tiny_ws)
    assert (t3.computed, i3.computed) == (2, 5)
    ids2, arr2 = get_image_embeddings(tiny_ws)
    assert len(ids2) == 35
    old = dict(zip(ids, arr))
    assert all(np.array_equal(old[i], a) for i, a in zip(ids2, arr2) if i in old)
    tids, tarr = get_text_embeddings(tiny_ws)
    assert len(tids) == len(Taxonomy.of(tiny_ws).leaves()) and leaf.id in tids
    # a different template is another set: everything is recomputed, the old set stays
    set_config_section(tiny_ws, "clip", template="a photo needing the skill: {path}")
    assert embed_texts_clip(tiny_ws).computed == len(tids)
    assert tiny_ws.store.scalar("SELECT count(*) FROM embedding_sets WHERE kind='text'") == 2


def test_interrupted_image_embedding_resumes_without_recomputing(tiny_ws, tmp_path):
    class Stop(Exception):
        pass

    def stop_after_two_batches(done, total):
        if done >= 16:
            raise Stop

    with pytest.raises(Stop):
        embed_images(tiny_ws, progress=stop_after_two_batches)
    assert tiny_ws.store.scalar("SELECT count(*) FROM embedding_rows") == 16
    run = tiny_ws.runs("embed_image")[0]
    # an exception ends the stage run as 'failed' (Ctrl-C: 'interrupted'); the committed rows are kept and counted
    assert run["status"] == "failed" and '"computed": 16' in run["summary"]
    # a chunk file written but never committed (a crash between file and commit) must not be trusted
    from workbench.stages.embed.stage import image_set_key, row_store

    key = image_set_key(tiny_ws)
    row_store(tiny_ws, key).append(16, np.full((8, 64), 9.0, np.float32))
    resumed = embed_images(tiny_ws)
    assert (resumed.computed, resumed.reused) == (14, 16)
    ids, arr = get_image_embeddings(tiny_ws)

    # the same result as one uninterrupted run in a fresh workspace
    from workbench.core.workspace import Workspace

    fresh = Workspace.init(tmp_path / "fresh")
    use_tiny_clip(fresh, batch_size=8)
    register_images(fresh, [tmp_path / "imgs"])
    embed_images(fresh)
    ids_f, arr_f = get_image_embeddings(fresh)
    assert ids == ids_f and np.allclose(arr, arr_f, atol=1e-6)


def test_long_task_paths_are_counted_as_truncated(tiny_ws):
    levels = [" ".join(f"word{i}x{j}" for j in range(12)) for i in range(4)]   # ~150 tokens in all
    Taxonomy.of(tiny_ws).add_path("~".join(levels))
    rep = embed_texts_clip(tiny_ws)
    assert rep.truncated == 1 and levels[-1] in rep.truncated_examples[0] and rep.context_length == 77
    assert "truncated" in rep.summary()
    assert embed_texts_clip(tiny_ws).truncated == 1   # still reported when reused


def test_unreadable_image_at_embed_time_is_recorded_not_fatal(tiny_ws):
    from workbench.stages.images.register import image_path

    victim, other = [r["id"] for r in tiny_ws.store.query("SELECT id FROM images ORDER BY id LIMIT 2")]
    image_path(tiny_ws, victim).unlink()
    image_path(tiny_ws, other).write_bytes(b"gone")      # other bytes than registered: a changed file
    rep = embed_images(tiny_ws)
    assert rep.computed == 28 and sorted(p[0] for p in rep.problems) == sorted([victim, other])
    reasons = {r["path"]: r["reason"] for r in tiny_ws.store.query("SELECT path, reason FROM image_problems")}
    assert "unreadable when embedding" in reasons[image_path(tiny_ws, victim).name]
    assert "changed since registration" in reasons[image_path(tiny_ws, other).name]


@pytest.mark.timeout(180)
def test_cli_embed_with_dataloader_workers_subprocess(tiny_ws):
    set_config_section(tiny_ws, "clip", num_workers=2)
    r = run_cli_subprocess("embed", tiny_ws.root, timeout=170)
    assert r.code == 0, r.err
    assert "image embeddings: 30 image(s), 30 computed" in r.out
    ids, arr = get_image_embeddings(tiny_ws)
    assert arr.shape == (30, 64)


@pytest.mark.parametrize("template", ["{path.__class__.__mro__}", "{leaf[0]}", "{}", "{x}"])
def test_clip_template_takes_bare_path_and_leaf_fields_only(template):
    # A config file's template reaches two strings, never their attributes or items.
    with pytest.raises(WorkbenchError, match=r"names a field other than \{path\} or \{leaf\}"):
        render_text(template, "ocr~signs")


def test_clip_template_fills_path_and_leaf():
    assert render_text("a photo for {leaf} ({path}), {{x}}", "ocr~signs") == "a photo for signs (ocr~signs), {x}"
