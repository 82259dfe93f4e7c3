"""A referee that is a local transformers VLM (random-weight tiny LLaVA built by the test) behind the same seam."""

import pytest

from tiny_models import make_tiny_vlm
from workbench.core.workspace import Workspace
from workbench.taxonomy.model import Taxonomy


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory):
    return make_tiny_vlm(tmp_path_factory.mktemp("tiny_vlm"))


def _workspace_with_samples(tmp_path, model_dir, max_tokens):
    from PIL import Image

    ws = Workspace.init(tmp_path / "ws")
    leaf = Taxonomy.of(ws).add_path("ocr~sign reading")
    (tmp_path / "im.png").parent.mkdir(exist_ok=True)
    Image.new("RGB", (48, 36), (200, 30, 30)).save(tmp_path / "im.png")
    with ws.store.write() as c:
        c.execute("INSERT INTO images(id, path, root, source, width, height, format, added_at) "
                  "VALUES ('img', 'im.png', ?, 't', 48, 36, 'PNG', 'now')", (str(tmp_path),))
        for i in range(2):
            c.execute("INSERT INTO samples(id, image_id, node_id, question, answer, status, created_at) "
                      "VALUES (?, 'img', ?, ?, 'STOP', 'ok', 'now')", (f"s{i}", leaf.id, f"What does sign {i} say?"))
    cfg = (ws.root / "workbench.toml").read_text() + f"""
[endpoints.tiny]
kind = "transformers"
local_path = "{model_dir}"
model = "tiny-llava"

[[referees]]
name = "tiny"
endpoint = "tiny"
max_tokens = {max_tokens}
"""
    (ws.root / "workbench.toml").write_text(cfg)
    return Workspace.open(ws.root)


@pytest.mark.timeout(180)
def test_local_transformers_referee_votes_through_the_seam(tmp_path, tiny_vlm):
    from workbench.llm.local import load_local_model
    from workbench.stages.referee.stage import run_referees

    ws = _workspace_with_samples(tmp_path, tiny_vlm, max_tokens=2)
    # Random weights: bias the tiny model towards "1" and force EOS at the end, so its vote is deterministic.
    proc, model, _ = load_local_model(tiny_vlm)
    tok = proc.tokenizer
    model.generation_config.sequence_bias = {(tok.convert_tokens_to_ids("1"),): 100.0}
    model.generation_config.forced_eos_token_id = tok.eos_token_id
    (rep,) = run_referees(ws, progress=False)
    assert rep.called == 2 and rep.ok == 2, rep.errors
    rows = ws.store.query("SELECT vote, valid, raw_text FROM votes ORDER BY sample_id")
    assert [(r[0], r[1], r[2].strip()) for r in rows] == [(1, 1, "1"), (1, 1, "1")]
    calls = ws.store.query("SELECT model, prompt_tokens, completion_tokens, cost_usd, raw_response FROM llm_calls")
    assert all(c["model"] == "tiny-llava" and c["prompt_tokens"] > 5 and c["cost_usd"] == 0 for c in calls)
    assert '"backend": "transformers"' in calls[0]["raw_response"]
    # Cached: a second run generates nothing.
    (rep2,) = run_referees(ws, progress=False)
    assert rep2.called == 0 and rep2.cached == 2


@pytest.mark.timeout(180)
def test_local_model_cut_at_max_tokens_is_a_recorded_failure(tmp_path, tiny_vlm):
    from workbench.llm.local import load_local_model
    from workbench.stages.referee.stage import run_referees

    ws = _workspace_with_samples(tmp_path, tiny_vlm, max_tokens=3)
    proc, model, _ = load_local_model(tiny_vlm)
    model.generation_config.sequence_bias = {(proc.tokenizer.convert_tokens_to_ids("1"),): 100.0}
    model.generation_config.forced_eos_token_id = None
    (rep,) = run_referees(ws, progress=False)
    assert rep.call_failed == 2 and "finish_reason=length" in rep.errors[0]
    assert ws.store.scalar("SELECT count(*) FROM votes") == 0
    assert ws.store.scalar("SELECT count(*) FROM llm_calls WHERE status='error' AND raw_text IS NOT NULL") == 2


def test_missing_local_model_is_a_clear_error(tmp_path):
    from workbench.core.errors import ConfigError
    from workbench.llm.local import load_local_model

    with pytest.raises(ConfigError, match="not found.*nothing is downloaded"):
        load_local_model(tmp_path / "no-such-model")
