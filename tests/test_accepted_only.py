"""Proposals are not task types until accepted (`[taxonomy] use_proposed = false`, the default): expand + match
on a fresh workspace scores only accepted task types and says how many await review; `use_proposed = true`
scores the proposals too; select and export leave out samples of never-accepted nodes; an existing workspace is
told once what changed."""

from __future__ import annotations

import json

import pytest

from clip_fixtures import make_images, set_config_section, use_tiny_clip
from conftest import run_cli
from openai_server import OpenAIServer, Reply
from workbench.core.workspace import PROPOSALS_NOTICE_KEY
from workbench.stages.expand.stage import expand
from workbench.stages.export.stage import export
from workbench.stages.images.register import register_images
from workbench.stages.select.stage import NOT_TASK, select
from workbench.taxonomy.model import ACCEPTED, LIVE, Taxonomy, first_open_notice, task_type_counts

pytestmark = pytest.mark.timeout(180)


def _children(req):
    parent = req.text.split("Category: ", 1)[1].splitlines()[0].split("~")[-1]
    return Reply(f"1. {parent} close-up\n2. {parent} at night\n")


@pytest.fixture
def expanded(seeded_ws, tmp_path, monkeypatch):
    """The seed, four leaves expanded (8 proposals, one expand run), 12 registered images, tiny CLIP."""
    ws = seeded_ws
    with OpenAIServer(_children) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.base_url)
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
        parents = [n.id for n, _ in Taxonomy.of(ws).leaves()][:4]
        rep = expand(ws, nodes=parents, progress=False)
    assert rep.added == 8
    use_tiny_clip(ws)
    set_config_section(ws, "match", k=30)
    make_images(tmp_path / "imgs", 12)
    register_images(ws, [tmp_path / "imgs"])
    return ws, rep.run.run_id


def _matched_statuses(ws) -> set[str]:
    return {r[0] for r in ws.store.query("SELECT DISTINCT n.status FROM matches m JOIN nodes n ON n.id = m.node_id")}


def test_match_scores_accepted_task_types_and_says_how_many_await_review(expanded):
    ws, run_id = expanded
    res = run_cli("match", ws.root)
    assert res.code == 0, res.err
    accepted = Taxonomy.of(ws).count_leaves(ACCEPTED)
    assert f"against {accepted} task type(s)" in res.out
    assert f"task types: {accepted} accepted, 8 awaiting review (not used until accepted)" in res.out
    assert f"`workbench taxonomy accept {ws.root} --proposed --run {run_id}`" in res.out
    assert _matched_statuses(ws) == {"accepted"}
    # The four expanded seed leaves are still task types (their children are proposals, not task types).
    assert Taxonomy.of(ws).count_leaves() == accepted == Taxonomy.of(ws).count_leaves(LIVE) - 4

    set_config_section(ws, "taxonomy", use_proposed=True)   # the paper's behaviour: every proposal is a task type
    res = run_cli("match", ws.root)
    assert res.code == 0, res.err
    assert f"against {Taxonomy.of(ws).count_leaves(LIVE)} task type(s)" in res.out
    assert "used because [taxonomy] use_proposed = true" in res.out
    assert _matched_statuses(ws) == {"accepted", "proposed"}

    set_config_section(ws, "taxonomy", use_proposed=False)
    res = run_cli("taxonomy", "accept", ws.root, "--proposed", "--run", str(run_id))   # the command it named
    assert res.code == 0 and "accepted 8 node(s)" in res.out
    res = run_cli("match", ws.root)
    assert "task types: " + str(accepted + 4) + " accepted, none awaiting review" in res.out
    assert _matched_statuses(ws) == {"accepted"} and Taxonomy.of(ws).count_leaves() == accepted + 4


def _sample(ws, sid, image_id, node_id, votes=(1, 1)):
    ws.store.conn.execute("INSERT INTO samples(id, image_id, node_id, question, answer, status, created_at) "
                          "VALUES (?,?,?,?,?,'ok','now')", (sid, image_id, node_id, f"q {sid}?", f"a {sid}"))
    for i, v in enumerate(votes):
        ws.store.conn.execute("INSERT INTO votes(sample_id, referee, vote, valid) VALUES (?,?,?,1)",
                              (sid, f"r{i}", v))


def test_select_and_export_leave_out_samples_of_never_accepted_task_types(expanded, tmp_path):
    ws, run_id = expanded
    proposal = Taxonomy.of(ws).nodes(("proposed",))[0]
    task = Taxonomy.of(ws).leaves()[0][0]
    image = ws.store.scalar("SELECT id FROM images ORDER BY id LIMIT 1")
    with ws.store.write():
        _sample(ws, "s-task", image, task.id)
        _sample(ws, "s-proposal", image, proposal.id)
    rep = select(ws)
    assert rep.selected == 1 and rep.reasons == {NOT_TASK: 1}
    out = tmp_path / "out.json"
    res = run_cli("export", ws.root, "--out", out)
    assert res.code == 0, res.err
    assert [r["id"] for r in json.loads(out.read_text())] == ["s-task"]
    assert "8 awaiting review" in res.out and "their samples are left out until then" in res.out
    # --all-ok too: a sample of a proposal is never exported under the default, and export says so.
    res = run_cli("export", ws.root, "--out", tmp_path / "all.json", "--all-ok")
    assert res.code == 0 and "left out 1 sample(s) of nodes that are not task types" in res.out
    assert [r["id"] for r in json.loads((tmp_path / "all.json").read_text())] == ["s-task"]
    # Nothing was deleted: once accepted, the same sample is selected and exported.
    assert ws.store.scalar("SELECT count(*) FROM samples") == 2
    Taxonomy.of(ws).accept([proposal.id])
    assert select(ws).selected == 2
    assert export(ws, out)[1] == 2


def test_an_existing_workspace_is_told_once_what_changed(expanded):
    ws, run_id = expanded
    assert first_open_notice(ws) is None            # made since the change: nothing to tell
    with ws.store.write() as conn:                  # as a workspace made before it
        conn.execute("DELETE FROM meta WHERE key=?", (PROPOSALS_NOTICE_KEY,))
    res = run_cli("taxonomy", "stats", ws.root)
    assert res.code == 0
    assert "8 node(s) of this workspace are proposals awaiting review" in res.err
    assert "nothing computed was deleted" in res.err and f"--proposed --run {run_id}" in res.err
    assert task_type_counts(ws).line() in res.out
    again = run_cli("taxonomy", "stats", ws.root)
    assert again.code == 0 and "proposals awaiting review" not in again.err
    assert Taxonomy.of(ws).count(("proposed",)) == 8    # nothing was changed by the notice


def test_stats_and_show_count_task_types_the_stages_use(expanded):
    ws, _ = expanded
    res = run_cli("taxonomy", "stats", ws.root, "--json")
    got = json.loads(res.out)
    assert got["awaiting_review"] == 8
    assert got["leaves"] == got["task_types_in_use"] == Taxonomy.of(ws).count_leaves(ACCEPTED)
    live = json.loads(run_cli("taxonomy", "stats", ws.root, "--json", "--status", "live").out)
    assert live["leaves"] == got["leaves"] + 4
    res = run_cli("taxonomy", "show", ws.root, "--status", "proposed")
    assert res.code == 0 and "[proposed]" in res.out and "8 awaiting review" in res.err


def test_overview_and_coverage_pages_say_how_many_await_review(expanded):
    """The dashboard counts accepted task types, says how many proposals wait, and names the accept command."""
    from test_dashboard_app import metrics, run

    ws, run_id = expanded
    accepted = Taxonomy.of(ws).count_leaves(ACCEPTED)
    for page in ("overview", "coverage"):
        at = run(ws.root, page)
        notes = [x.value for x in at.info]
        assert any("8 awaiting review" in n and f"--proposed --run {run_id}" in n for n in notes), notes
        assert metrics(at)["task types"] == f"{accepted:,}"
