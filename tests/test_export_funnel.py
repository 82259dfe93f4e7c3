import hashlib
import json

import pytest

from workbench.analysis.funnel import funnel, rejections
from workbench.core.errors import WorkbenchError
from workbench.stages.export.stage import export
from workbench.stages.select.stage import select
from workbench.taxonomy.model import Taxonomy


def sid(*parts):
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:20]


@pytest.fixture
def filled(seeded_ws, tmp_path):
    """Images, matches, filter decisions, samples and votes written straight into the tables."""
    ws = seeded_ws
    leaves = [n.id for n, _ in Taxonomy.of(ws).leaves()][:3]
    root = tmp_path / "imgs"
    with ws.store.write() as c:
        for i in range(4):
            c.execute("INSERT INTO images(id, path, root, source, width, height, format, added_at) VALUES "
                      "(?, ?, ?, 'test', 8, 8, 'PNG', 'now')", (f"img{i}", f"sub/img{i}.png", str(root)))
            for r, n in enumerate(leaves, 1):
                c.execute("INSERT INTO matches(image_id, node_id, rank, score, match_key) VALUES (?,?,?,?, 'k')",
                          (f"img{i}", n, r, 0.3 - r / 100))
                kept = int(r != 3)
                c.execute("INSERT INTO filter_decisions(image_id, node_id, label, kept, reason) VALUES (?,?,?,?,?)",
                          (f"img{i}", n, n, kept, None if kept else "not chosen"))
                if kept:
                    q = f"question {i} {r}?"
                    s = sid(f"img{i}", n, q)
                    answer = "" if (i, r) == (3, 2) else f"answer {i} {r}"
                    status = "rejected" if not answer else "ok"
                    c.execute("INSERT INTO samples(id, image_id, node_id, question, answer, status, reason, "
                              "created_at) VALUES (?,?,?,?,?,?,?, 'now')",
                              (s, f"img{i}", n, q, answer, status, None if answer else "empty answer"))
                    votes = [1, 1, 0] if i % 2 == 0 else [1, 0, None]
                    for ref, v in zip(("r1", "r2", "r3"), votes):
                        c.execute("INSERT INTO votes(sample_id, referee, vote, valid, raw_text) VALUES (?,?,?,?,?)",
                                  (s, ref, v, int(v is not None), "maybe" if v is None else str(v)))
    return ws


def test_funnel_and_rejections(filled):
    ws = filled
    select(ws)
    f = funnel(ws)
    assert f["count"].tolist() == [12, 8, 7, 4, 4]
    per = funnel(ws, per_task=True)
    assert per["matched"].sum() == 12 and len(per) == 3
    rej = rejections(ws)
    assert set(rej["stage"]) == {"filter", "qa", "referee", "select"}
    assert (rej.loc[rej.stage == "qa", "reason"] == "empty answer").all()
    assert "invalid vote" in set(rej.loc[rej.stage == "referee", "reason"])


def test_funnel_uses_the_min_votes_the_selection_used(filled):
    """A selection made with min_votes=1 (e.g. one referee, as notebook 03 does) is not counted with the
    config's [select] min_votes: 'passed referees' agrees with 'selected'."""
    ws = filled
    assert ws.config.select.min_votes == 2
    rep = select(ws, min_votes=1)
    f = funnel(ws).set_index("stage")["count"]
    assert f["passed referees"] == rep.passed_votes == 7 and f["selected"] == rep.selected
    assert funnel(ws, min_votes=3).set_index("stage").at["passed referees", "count"] == 0   # asked for: obeyed
    select(ws, min_votes=2)
    assert funnel(ws).set_index("stage").at["passed referees", "count"] == 4


def test_exports_are_deterministic_and_well_formed(filled, tmp_path):
    ws = filled
    select(ws)
    path, n = export(ws, tmp_path / "a.json", fmt="llava")
    assert n == 4
    recs = json.loads(path.read_text())
    for r in recs:
        assert r["image"].startswith("sub/img") and r["task_type"].count("~") >= 0
        human, gpt = r["conversations"]
        assert human["from"] == "human" and human["value"].startswith("<image>\n")
        assert human["value"].count("<image>") == 1 and gpt["from"] == "gpt" and gpt["value"]
    assert [r["id"] for r in recs] == sorted(r["id"] for r in recs)
    path2, _ = export(ws, tmp_path / "b.json", fmt="llava")
    assert path.read_bytes() == path2.read_bytes()
    p1, _ = export(ws, tmp_path / "a.parquet", fmt="parquet")
    p2, _ = export(ws, tmp_path / "b.parquet", fmt="parquet")
    assert p1.read_bytes() == p2.read_bytes()
    import datasets

    ds = datasets.load_dataset("parquet", data_files=str(p1), split="train")
    assert len(ds) == 4 and set(ds.column_names) >= {"id", "image", "conversations", "task_type"}
    sg, _ = export(ws, tmp_path / "s.json", fmt="sharegpt", image_root=tmp_path)
    assert json.loads(sg.read_text())[0]["images"][0].startswith("imgs/sub/")
    with pytest.raises(WorkbenchError, match="outside --image-root"):
        export(ws, tmp_path / "x.json", image_root=tmp_path / "elsewhere")


def test_referee_figures_agree_with_select_on_human_votes_and_flags(filled, tmp_path):
    """The funnel and the dashboard's figures count "passing the referees" by select's rule: a person's vote
    decides its sample (not one more vote toward k-of-N) and a flagged sample does not pass."""
    from workbench.apps.dashboard import data
    from workbench.review import adjudication as adj

    ws = filled
    ok = {(r["image_id"], r["question"].split()[2].rstrip("?")): r["id"] for r in ws.store.query(
        "SELECT id, image_id, question FROM samples WHERE status = 'ok'")}
    adj.vote(ws, ok[("img0", "1")], 0, reviewer="ann")   # two machine yes, a person's no: rejected
    adj.vote(ws, ok[("img1", "1")], 1, reviewer="ann")   # one machine yes, a person's yes: passes
    adj.flag(ws, ok[("img2", "1")], "wrong task type", reviewer="ann")   # two machine yes, flagged
    rep = select(ws)
    assert rep.passed_votes == 3
    assert funnel(ws).set_index("stage").at["passed referees", "count"] == 3
    assert funnel(ws, per_task=True)["passed referees"].sum() == 3
    assert data._passing(str(ws.root), ws) == 3
    root = str(ws.root)
    counts = data.overview(root)["counts"]
    assert counts["votes"] == 24 and counts["human votes"] == 2     # 8 samples x 3 referees; 2 decisions
    outcomes = data.image_outcomes(root, data.version(root, "votes", "samples"), ws.config.select.min_votes)
    assert outcomes.to_dict() == {"img0": "some passed", "img1": "some passed", "img2": "some passed",
                                  "img3": "none passed"}
    adj.unflag(ws, ok[("img2", "1")])
    outcomes = data.image_outcomes(root, data.version(root, "votes", "samples"), ws.config.select.min_votes)
    assert outcomes["img2"] == "all passed"


def test_export_reports_the_flagged_samples_it_left_out(filled, tmp_path):
    from workbench.review import adjudication as adj
    from workbench.stages.export.stage import ExportStage

    ws = filled
    select(ws)
    chosen = [r[0] for r in ws.store.query("SELECT sample_id FROM selections WHERE selected = 1 ORDER BY sample_id")]
    assert len(chosen) == 4
    adj.flag(ws, chosen[0], "answer is wrong", reviewer="ann")   # flagged after selection
    rep = ExportStage(tmp_path / "a.json").run(ws)
    assert rep.samples == 3 and rep.flagged_left_out == 1
    assert "left out 1 flagged sample" in rep.summary()
    summary = json.loads(ws.store.scalar("SELECT summary FROM stage_runs WHERE stage = 'export' ORDER BY id DESC"))
    assert summary["flagged_left_out"] == 1 and summary["counts"] == {"flagged_left_out": 1}
    assert chosen[0] not in {r["id"] for r in json.loads((tmp_path / "a.json").read_text())}
    adj.unflag(ws, chosen[0])
    rep = ExportStage(tmp_path / "c.json").run(ws)
    assert rep.flagged_left_out == 0 and "flagged" not in rep.summary()
    for sid in chosen:
        adj.flag(ws, sid, "bad", reviewer="ann")
    with pytest.raises(WorkbenchError, match="4 flagged by a reviewer"):
        export(ws, tmp_path / "d.json")


def test_export_refuses_a_selection_that_people_voted_against_since(filled, tmp_path, monkeypatch):
    """A person's vote cast while select runs (after it read the votes) is not in the selection: export refuses and
    names the sample; --allow-changed exports with a warning; select again applies the vote."""
    from workbench.review import adjudication as adj
    from workbench.stages.export.stage import ExportStage
    from workbench.stages.select import stage as select_stage

    ws = filled
    select(ws)
    chosen = [r[0] for r in ws.store.query("SELECT sample_id FROM selections WHERE selected = 1 ORDER BY sample_id")]
    real = select_stage.vote_table

    def read_then_vote(store):
        table = real(store)
        adj.vote(ws, chosen[0], 0, reviewer="ann")        # lands after select read the votes
        return table

    monkeypatch.setattr(select_stage, "vote_table", read_then_vote)
    select(ws)
    monkeypatch.setattr(select_stage, "vote_table", real)
    assert ws.store.scalar("SELECT selected FROM selections WHERE sample_id = ?", (chosen[0],)) == 1
    with pytest.raises(WorkbenchError, match=rf"changed on 1 sample\(s\).*{chosen[0][:12]} \(votes none -> "
                                             r"human:ann=0\).*workbench select"):
        export(ws, tmp_path / "a.json")
    assert not (tmp_path / "a.json").exists()
    rep = ExportStage(tmp_path / "b.json", allow_changed=True).run(ws)
    assert rep.people_changed == 1 and "WARNING" in rep.summary() and rep.samples == len(chosen)
    select(ws)                                             # applies the vote
    path, n = export(ws, tmp_path / "c.json")
    assert n == len(chosen) - 1 and chosen[0] not in {r["id"] for r in json.loads(path.read_text())}
    # A lifted flag is a change too (the sample was left unselected for it); a flag added since is not (export
    # leaves a flagged sample out and says so).
    adj.flag(ws, chosen[1], "bad", reviewer="ann")
    assert export(ws, tmp_path / "d.json")[1] == len(chosen) - 2
    select(ws)
    adj.unflag(ws, chosen[1])
    with pytest.raises(WorkbenchError, match="flag lifted"):
        export(ws, tmp_path / "e.json")
    # --all-ok does not use the selection: nothing to compare.
    assert export(ws, tmp_path / "f.json", only_selected=False)[1] > 0


def test_export_refuses_a_selection_that_referees_voted_on_since(filled, tmp_path):
    """A referee run after `select` (a re-run with another prompt, a new referee) changes votes the selection
    was made from: export refuses naming the referee and samples; select again, and export goes through."""
    from workbench.stages.export.stage import ExportStage

    ws = filled
    select(ws)
    chosen = [r[0] for r in ws.store.query("SELECT sample_id FROM selections WHERE selected = 1 ORDER BY sample_id")]
    export(ws, tmp_path / "a.json")                                   # nothing new since the select
    with ws.stage_run("referee", {"test": True}, lock_key=None) as run:
        with ws.store.write() as c:
            c.execute("INSERT OR REPLACE INTO votes(sample_id, referee, vote, valid, raw_text, stage_run_id) "
                      "VALUES (?, 'r2', 0, 1, '0', ?)", (chosen[0], run.id))
    with pytest.raises(WorkbenchError, match=rf"referee\(s\) r2 voted on 1 selected sample\(s\).*{chosen[0][:12]}"
                                             r".*workbench select"):
        export(ws, tmp_path / "b.json")
    assert not (tmp_path / "b.json").exists()
    rep = ExportStage(tmp_path / "c.json", allow_changed=True).run(ws)
    assert rep.machine_changed == 1 and "referees voted again on 1" in rep.summary()
    select(ws)                                                        # the selection now reflects the new vote
    path, n = export(ws, tmp_path / "d.json")
    assert path.exists() and n >= 1
