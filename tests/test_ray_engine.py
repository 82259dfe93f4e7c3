"""The Ray engine gives the local engine's results: embeddings, top-k, samples and votes; resumes; calls nothing twice.

One private Ray (loopback only, 2 CPUs, temp dir under the test's tmp folder) is started per module.
Opt-in (WORKBENCH_TEST_RAY=1): Ray's start-up alone takes ~15-25 s on these machines.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from workbench.taxonomy.model import Taxonomy

pytestmark = [pytest.mark.timeout(240),
              pytest.mark.skipif(os.environ.get("WORKBENCH_TEST_RAY") != "1",
                                 reason="opt-in: Ray start-up costs ~20 s; run with WORKBENCH_TEST_RAY=1")]
ray = pytest.importorskip("ray", reason="Ray is not installed: pip install -c .venv/constraints.txt 'ray[data]'")

from clip_fixtures import make_images, set_config_section, use_tiny_clip
from openai_server import OpenAIServer
from test_vision_stages import make_workspace, script
from workbench.core.errors import WorkbenchError
from workbench.core.workspace import Workspace
from workbench.engine import make_engine, using
from workbench.engine.ray_engine import RayEngine
from workbench.stages.embed.stage import embed_images, embed_texts_clip, get_image_embeddings
from workbench.stages.filter.stage import run_filter
from workbench.stages.images.register import register_images
from workbench.stages.match.stage import match
from workbench.stages.qa.stage import run_qa
from workbench.stages.referee.stage import run_referees
from workbench.taxonomy.io import load_seed

N_IMAGES = 120


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ray")
    eng = RayEngine(num_cpus=2, temp_dir=str(tmp))
    eng.start()
    yield eng
    eng.shutdown()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("imgs")
    make_images(folder, N_IMAGES)
    return folder


def _ws(root, images):
    ws = Workspace.init(root)
    load_seed(Taxonomy.of(ws))
    use_tiny_clip(ws, batch_size=16)
    set_config_section(ws, "match", k=5, memory_mb=16, chunk_size=32)
    register_images(ws, [images])
    embed_texts_clip(ws)
    return ws


def _image_rows(ws):
    return ws.store.scalar("SELECT count(*) FROM embedding_rows e JOIN images i ON i.id = e.item_id")


def _matches(ws):
    return [tuple(r) for r in ws.store.query("SELECT image_id, rank, node_id FROM matches ORDER BY image_id, rank")]


def test_engine_names_are_checked():
    with pytest.raises(WorkbenchError, match="--engine must be one of"):
        make_engine("spark")
    with pytest.raises(WorkbenchError, match="add --engine ray"):
        make_engine("local", "10.0.0.1:6379")


def test_embed_and_match_on_ray_equal_local_and_a_killed_run_resumes(tmp_path, engine, images):
    local, remote = _ws(tmp_path / "local", images), _ws(tmp_path / "ray", images)
    embed_images(local)
    match(local)

    # A Ray run killed after its first committed block keeps that block; the next run does only the rest.
    class Killed(Exception):
        pass

    def kill(done, total):
        raise Killed

    with pytest.raises(Killed):
        embed_images(remote, engine=engine, progress=kill)
    kept = _image_rows(remote)
    assert 0 < kept < N_IMAGES
    rep = embed_images(remote, engine=engine)
    assert rep.computed == N_IMAGES - kept and rep.reused == kept
    assert _image_rows(remote) == N_IMAGES

    a_ids, a = get_image_embeddings(local)
    b_ids, b = get_image_embeddings(remote)
    assert a_ids == b_ids and len(a_ids) == N_IMAGES
    np.testing.assert_allclose(a, b, atol=1e-5)

    with using(engine):     # what `--engine ray` does
        rep = match(remote)
    assert rep.recomputed == N_IMAGES
    assert _matches(remote) == _matches(local) and len(_matches(local)) == 5 * N_IMAGES
    sa = [r[0] for r in local.store.query("SELECT score FROM matches ORDER BY image_id, rank")]
    sb = [r[0] for r in remote.store.query("SELECT score FROM matches ORDER BY image_id, rank")]
    np.testing.assert_allclose(sa, sb, atol=1e-5)
    runs = remote.store.query("SELECT stage, params FROM stage_runs WHERE stage IN ('embed_image', 'match')")
    assert all('"engine": "ray"' in r["params"] for r in runs)


def _vision(ws, engine=None, **kw):
    with using(engine):
        return [run_filter(ws, progress=False, **kw), run_qa(ws, progress=False, **kw),
                *run_referees(ws, progress=False, **kw)]


def _results(ws):
    samples = [tuple(r) for r in ws.store.query(
        "SELECT image_id, label, question, answer, status, reason FROM samples ORDER BY image_id, label, question")]
    votes = [tuple(r) for r in ws.store.query(
        "SELECT s.image_id, s.label, v.referee, v.vote, v.valid FROM votes v JOIN samples s ON s.id = v.sample_id "
        "ORDER BY 1, 2, 3")]
    return samples, votes


def test_vlm_stages_on_ray_equal_local_and_then_local_calls_nothing(tmp_path, engine):
    with OpenAIServer(script, models=("vlm", "judge-a", "judge-b", "judge-c")) as server:
        local = make_workspace(tmp_path / "a", server.base_url)
        _vision(local)
        n_local = len(server.requests)
        remote = make_workspace(tmp_path / "b", server.base_url)
        reps = _vision(remote, engine)
        assert len(server.requests) == 2 * n_local          # the same calls, made by the Ray workers
        assert [r.called for r in reps] == [6, 4, 3, 3, 3]
        assert _results(remote) == _results(local) and _results(local)[1]
        # The replies are in the workspace's cache under the local keys: a local run calls nothing.
        before = len(server.requests)
        again = _vision(remote)
        assert len(server.requests) == before and all(r.called == 0 for r in again)
        assert _results(remote) == _results(local)
        raw = remote.store.scalar("SELECT count(*) FROM llm_calls WHERE raw_text IS NOT NULL AND stage_run_id "
                                  "IN (SELECT id FROM stage_runs WHERE params LIKE '%\"engine\": \"ray\"%')")
        assert raw == 19
