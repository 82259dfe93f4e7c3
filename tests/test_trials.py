"""Prompt trials (analysis/trials/): versions x a stored test set for every stage, with no side effect on the
workspace's data, stored and reopened, figures per version, the CLI (non-zero when every call failed), promote and
the expand skip rule that compares the template each result used."""

from __future__ import annotations

import hashlib
import json
import re

import pytest

from conftest import run_cli
from openai_server import OpenAIServer, Reply
from test_vision_stages import make_workspace
from test_vision_stages import script as vision_script
from workbench.analysis.trials import TestSet, Trial, diff_versions, list_trials, promote, run_trial
from workbench.core.errors import WorkbenchError
from workbench.core.workspace import Workspace
from workbench.stages.expand.stage import expand
from workbench.stages.filter.stage import run_filter
from workbench.stages.qa.stage import run_qa
from workbench.stages.referee.stage import run_referees
from workbench.taxonomy.model import Taxonomy

pytestmark = pytest.mark.timeout(180)

DATA_TABLES = ("nodes", "filter_decisions", "samples", "votes", "selections", "sample_flags", "expand_results",
               "expand_proposals", "discoveries", "audit_labels", "review_log")


def script(req):
    if "grade one model reply" in req.text:           # the rubric judge: a reply of "0" fails
        return Reply("0 - it refuses" if req.text.rstrip().endswith("\n0") else "1 - fine")
    if not req.images:      # expand, audit_label and coverage_confirm: one JSON every parser reads
        return Reply(json.dumps({"names": ["alpha reading", "beta counting"], "choice": 1, "match": True,
                                 "reason": "fits"}))
    if "exemplars of a group" in req.text:
        return Reply(json.dumps({"name": "glyph spotting", "parent": None, "reason": "new"}))
    if "STRICT" in req.text:
        return Reply("0")
    if "write one complex question" in req.text:     # every kept task type answered: 7 samples
        kinds = re.findall(r"^- (.+)$", req.text, re.M)
        return Reply(json.dumps([{"task_type": k, "question": f"What about {k}?", "answer": "It is."}
                                 for k in kinds]))
    return Reply(vision_script(req))


@pytest.fixture
def server():
    with OpenAIServer(script, models=("vlm", "judge-a", "judge-b", "judge-c")) as srv:
        yield srv


@pytest.fixture
def vws(tmp_path, server):
    ws = make_workspace(tmp_path, server.base_url)
    cfg = (ws.root / "workbench.toml").read_text().replace('[endpoints.default]\n', '[endpoints.default]\n', 1)
    (ws.root / "workbench.toml").write_text(cfg)
    run_filter(ws, progress=False)
    run_qa(ws, progress=False)
    run_referees(ws, progress=False)
    (ws.root / "prompts").mkdir(exist_ok=True)
    return Workspace.open(ws.root)


def dump(ws) -> str:
    """A digest of every row of the workspace's data tables."""
    h = hashlib.sha256()
    for t in DATA_TABLES:
        for r in ws.store.query(f"SELECT * FROM {t} ORDER BY rowid"):
            h.update(repr(tuple(r)).encode())
    return h.hexdigest()


def edited(ws, name: str, extra: str) -> str:
    from workbench.analysis.trials import current_prompt

    path = ws.root / "prompts" / f"{extra.lower()}_{name}"
    path.write_text(current_prompt(ws, name.removesuffix(".j2")).source + f"\n{extra}\n")
    return str(path)


def seed_discovery_and_audit(ws) -> None:
    nid = Taxonomy.of(ws).find("ocr").id
    with ws.store.write() as c:
        c.execute("INSERT INTO audit_datasets(name, source, format, items, done, chunk_size, top_k, model, tasks_key, "
                  "array_dir, status, created_at, updated_at) "
                  "VALUES ('d', 'x', 'jsonl', 1, 1, 1, 1, 'm', 'k', 'a', 'done', 'now', 'now')")
        c.execute("INSERT INTO audit_labels(audit, item, seed, instruction, candidates, status, created_at) "
                  "VALUES ('d', 0, 0, 'Read the sign', ?, 'labelled', 'now')", (json.dumps([nid]),))
        c.execute("INSERT INTO discoveries(cluster, cluster_key, size, cohesion, image_ids, exemplar_ids, nearest, "
                  "status, created_at) VALUES (0, 'ck1', 2, 0.9, ?, ?, ?, 'unreadable', 'now')",
                  (json.dumps(["img0", "img1"]), json.dumps(["img0"]),
                   json.dumps([{"node_id": nid, "path": "ocr", "score": 0.5}])))


def test_trials_of_every_stage_change_no_data(vws, server):
    ws = vws
    seed_discovery_and_audit(ws)
    before = dump(ws)
    cases = {"expand:child_supplement": ["ocr", "counting"], "expand:level1_supplement": ["(first level)"],
             "filter": ["img0", "img4"],
             "qa": ["img0", "img5"], "referee:a": None, "audit_label": ["d#0"],
             "coverage_confirm": ["reading~signs|ocr~street sign reading"], "discover_name": ["ck1"]}
    tax = Taxonomy.of(ws)
    for stage, items in cases.items():
        if stage == "expand:child_supplement":
            items = [tax.find(p).id for p in items]
        ts = (TestSet.random(ws, stage, rows=3, seed=1) if items is None
              else TestSet.of(ws, stage, items, assertions=["non-empty"]))
        trial = run_trial(ws, stage, ["current"], ts)
        assert trial.id is not None and trial.status == "done", (stage, trial.errors)
        assert (trial.outputs.status == "ok").any(), (stage, trial.matrix())
        assert dump(ws) == before, f"a {stage} trial changed the workspace's data"
    # The trial's own stage runs are named as trials and never the stage's.
    stages = {r["stage"] for r in ws.store.query("SELECT stage FROM stage_runs WHERE stage LIKE 'trial:%'")}
    assert "trial:qa" in stages and "trial:referee:a" in stages
    assert len(list_trials(ws)) == len(cases)


def test_three_version_referee_trial_matrix_metrics_and_reopen(vws, server):
    ws = vws
    strict = edited(ws, "referee.j2", "STRICT")
    terse = edited(ws, "referee.j2", "TERSE")
    ts = TestSet.random(ws, "referee:a", rows=5, seed=0, assertions=["non-empty", "regex:^1", "rubric:agrees"],
                        name="five")
    trial = run_trial(ws, "referee:a", ["current", strict, terse], ts)
    assert len(trial.items) == 5 and list(trial.columns.values()) == ["current (referee.j2)", "strict_referee.j2",
                                                                      "terse_referee.j2"]
    m = trial.matrix()
    assert len(m) == 5 and all(m["strict_referee.j2"].str.startswith("FAIL (0)"))
    assert m["label"].str.contains(": ").all() and m["image_id"].notna().all()    # readable labels, thumbnails
    fig = trial.metrics()
    assert fig.loc["pass rate", "strict_referee.j2"] == 0.0
    assert fig.loc["assert regex:^1", "strict_referee.j2"] == 0.0
    assert fig.loc["assert rubric:agrees", "strict_referee.j2"] == 0.0
    assert fig.loc["assert rubric:agrees", "terse_referee.j2"] > 0.0
    assert "κ with b" in fig.index and fig.loc["n with b", "current (referee.j2)"] > 0
    again = Trial.load(Workspace.open(ws.root), trial.id)     # a fresh process's view: everything from the store
    assert again.matrix().equals(m) and again.metrics().equals(fig)
    assert again.raw(trial.items[0], "strict_referee.j2") == "0"
    assert TestSet.load(ws, "five").items == ts.items
    hashes = [v["hash"] for v in trial.versions]
    assert "+STRICT" in diff_versions(ws, hashes[0], hashes[1])    # any two stored versions


def test_test_set_filters_and_hand_picked_items(vws):
    ws = vws
    split = {r[0] for r in ws.store.query("SELECT sample_id FROM votes WHERE valid=1 AND referee NOT LIKE 'human:%' "
                                          "GROUP BY sample_id HAVING min(vote) <> max(vote)")}
    assert split, "the scripted referees disagree somewhere"
    ts = TestSet.random(ws, "referee:a", rows=0, disagreement=True)
    assert set(ts.items) == split and ts.how["by"] == "filter"
    ocr = TestSet.random(ws, "qa", rows=0, subtree="ocr")
    assert ocr.items and all(
        ws.store.scalar("SELECT count(*) FROM filter_decisions d JOIN nodes n ON n.id = d.node_id "
                        "WHERE d.image_id=? AND d.kept=1 AND n.parent_id=?", (i, Taxonomy.of(ws).find("ocr").id))
        for i in ocr.items)
    a, b = TestSet.random(ws, "qa", rows=2, seed=3), TestSet.random(ws, "qa", rows=2, seed=3)
    assert a.items == b.items                                     # a seed draws the same items again
    with pytest.raises(WorkbenchError, match="not found in this workspace: nope"):
        TestSet.of(ws, "qa", ["img0", "nope"])
    with pytest.raises(WorkbenchError, match="assertion 'regex:\\(': not a regular expression"):
        TestSet.of(ws, "qa", ["img0"], assertions=["regex:("])


def test_dry_run_budget_and_total_failure(vws, server):
    ws = vws
    ts = TestSet.random(ws, "qa", rows=2, seed=0)
    n_trials, calls = len(list_trials(ws)), len(server.requests)
    dry = run_trial(ws, "qa", ["current", edited(ws, "qa.j2", "NEW")], ts, dry_run=True)
    assert dry.id is None and len(server.requests) == calls and len(list_trials(ws)) == n_trials
    assert "calls to make" in dry.metrics(ws).index
    server.script = lambda req: Reply("bad request", status=400)
    trial = run_trial(ws, "qa", [edited(ws, "qa.j2", "OTHER")], ts)
    assert trial.failed and trial.status == "failed"
    assert trial.errors and "call failed" in trial.errors[0]
    assert all(c.startswith("✖ call failed") for c in trial.matrix().iloc[:, 3])
    assert list_trials(ws).iloc[0]["status"] == "failed"


def test_cli_trial_history_and_exit_status(vws, server):
    ws = vws
    v2 = edited(ws, "qa.j2", "SHORT")
    r = run_cli("prompts", "trial", str(ws.root), "--stage", "qa", "--version", "current", "--version", v2,
                "--rows", "2", "--assert", "non-empty")
    assert r.code == 0, r.err
    assert "stored as trial" in r.out and "pairs per image" in r.out and "Q: " in r.out
    r = run_cli("prompts", "trials", str(ws.root))
    assert r.code == 0 and "qa" in r.out and "short_qa.j2" in r.out
    r = run_cli("prompts", "trials", str(ws.root), "--show", "1")
    assert r.code == 0 and "trial 1" in r.out
    calls = len(server.requests)
    r = run_cli("prompts", "trial", str(ws.root), "--stage", "qa", "--version", "current", "--version",
                edited(ws, "qa.j2", "DRY"), "--rows", "2", "--dry-run")
    assert r.code == 0 and "2 already answered, 0 call(s)" in r.out and "0 already answered, 2 call(s)" in r.out
    assert len(server.requests) == calls and len(list_trials(ws)) == 1
    server.script = lambda req: Reply("no such model", status=404)
    r = run_cli("prompts", "trial", str(ws.root), "--stage", "qa", "--version", edited(ws, "qa.j2", "X"),
                "--rows", "2")
    assert r.code == 1 and "no version gave a readable reply" in r.err and "404" in r.err
    r = run_cli("prompts", "trial", str(ws.root), "--stage", "nope", "--version", "current")
    assert r.code == 2 and "unknown stage 'nope'" in r.err
    r = run_cli("prompts", "promote", str(ws.root), "--stage", "qa", "--version", v2)
    assert r.code == 0 and "qa: " in r.out and "referee:a: " in r.out
    assert (ws.root / "prompts" / "qa.j2").read_text() == open(v2).read()


def test_promote_and_expand_skip_reasons(seeded_ws, monkeypatch):
    def reply(req):
        return Reply('["one thing", "two things"]')

    with OpenAIServer(reply) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.base_url)
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
        ws = seeded_ws
        first = expand(ws, level=2, progress=False)
        assert first.skipped == 0 and "0 skipped" in first.summary()
        kinds = {r[0] for r in ws.store.query("SELECT template FROM expand_results")}
        assert kinds == {"child_expand"} or kinds == {"child_expand", "child_supplement"}
        text = (ws.root / "prompts").mkdir(exist_ok=True) or "[user]\nPROMOTED {{ parent_path }} {{ existing }}\n"
        (ws.root / "prompts" / "new_supp.j2").write_text(text)
        msg = promote(ws, "expand:child_supplement", "prompts/new_supp.j2")
        assert "expand levels 2+, parents with children: " in msg and "expand_child_supplement.j2" in msg
        rep = expand(ws, level=2, progress=False)
        # Parents expanded with expand_child_expand.j2 (unchanged) are skipped, and the summary says so.
        assert rep.skipped == first.parents - rep.run.rows
        assert "already expanded with expand_child_expand.j2" in rep.summary()
        assert "would now get expand_child_supplement.j2" in rep.summary()
        assert "with this prompt" not in rep.summary()


def test_trial_shows_itself_in_a_notebook(vws):
    ws = vws
    trial = run_trial(ws, "qa", ["current"], TestSet.of(ws, "qa", ["img0"]))
    page = trial._repr_html_()
    assert "<pre>trial 1 (qa" in page and "Q: What about ocr~street sign reading?<br>A: It is." in page
