"""workbench.review: pending proposals, applying decisions (idempotent, per-row failures), the widget table."""

from __future__ import annotations

import pytest

from workbench.core.errors import WorkbenchError
from workbench.review import Decision, apply_decisions, count_outcomes, pending_proposals
from workbench.taxonomy.model import Provenance, Taxonomy


def _run(ws, prompt_hash: str) -> int:
    """A finished expand stage run (as `expand` records one) whose id tags the nodes it proposed."""
    with ws.stage_run("expand", {"test": True}, prompt_file="prompts/x.j2", prompt_hash=prompt_hash,
                      model="m", lock_key=None) as run:
        pass
    return run.id


@pytest.fixture
def two_runs(ws):
    """Branch 'Vision' (accepted) with proposals from two expand runs (different prompts) and one by hand."""
    tax = Taxonomy.of(ws)
    root = tax.add("Vision")
    r1, r2 = _run(ws, "a" * 64), _run(ws, "b" * 64)
    p1 = Provenance(stage_run_id=r1, prompt_file="prompts/x.j2", prompt_hash="a" * 64, model="m")
    p2 = Provenance(stage_run_id=r2, prompt_file="prompts/y.j2", prompt_hash="b" * 64, model="m")
    ids = {}
    for name in ("Counting", "Colour naming", "OCR"):
        ids[name] = tax.add(name, root, origin="generated", status="proposed", provenance=p1).id
    for name in ("Depth", "Reading charts"):
        ids[name] = tax.add(name, root, origin="generated", status="proposed", provenance=p2).id
    ids["Hand"] = tax.add_path("Vision~Hand made", status="proposed").id
    return ws, r1, r2, ids


def _status(ws, nid):
    return Taxonomy.of(ws).get(nid).status


def _updated(ws):
    return {r["id"]: (r["name"], r["status"], r["updated_at"]) for r in ws.store.query("SELECT * FROM nodes")}


def test_pending_proposals_from_every_run_and_filters(two_runs):
    ws, r1, r2, ids = two_runs
    df = pending_proposals(ws)
    assert set(df.node_id) == {ids[n] for n in ids}          # both runs and the hand-made one, nothing accepted
    # Newest run first, tree order within a run; no stage run last.
    assert list(df.name) == ["Depth", "Reading charts", "Counting", "Colour naming", "OCR", "Hand made"]
    row = df.set_index("name").loc["Counting"]
    assert row.path == "Vision~Counting" and row.parent_path == "Vision"
    assert row.origin == "generated" and row.stage_run_id == r1 and row.prompt_hash == "a" * 64
    assert row.stage == "expand" and row.created_at and not row.under_rejected
    assert df.set_index("name").loc["Hand made"].stage_run_id is not None   # pd.NA, not a float NaN
    assert str(df.stage_run_id.dtype) == "Int64"

    assert list(pending_proposals(ws, stage_run_id=r1).name) == ["Counting", "Colour naming", "OCR"]
    assert list(pending_proposals(ws, stage_run_id=r2).name) == ["Depth", "Reading charts"]
    assert list(pending_proposals(ws, prompt_hash="b" * 64).name) == ["Depth", "Reading charts"]
    assert list(pending_proposals(ws, prompt_hash="aaaa").name) == ["Counting", "Colour naming", "OCR"]  # prefix
    assert len(pending_proposals(ws, parent="Vision")) == 6
    assert pending_proposals(ws, parent=ids["Depth"]).empty
    assert list(pending_proposals(ws, stage_run_id=r1 + r2 + 5).columns) == list(df.columns)

    # A decided node is no longer pending; one under a rejected parent is flagged.
    Taxonomy.of(ws).accept(ids["Depth"])
    Taxonomy.of(ws).add("Sub", ids["OCR"], status="proposed")
    Taxonomy.of(ws).reject(ids["OCR"])
    df = pending_proposals(ws).set_index("name")
    assert "Depth" not in df.index and "OCR" not in df.index
    assert df.loc["Sub"].under_rejected and df.loc["Sub"].path == "Vision~OCR~Sub"


def test_apply_accept_reject_rename_keep(two_runs):
    ws, _, _, ids = two_runs
    results = apply_decisions(ws, [
        Decision(ids["Counting"], "accept"),
        Decision(ids["Colour naming"], "reject"),
        Decision(ids["OCR"], "rename", new_name="  Text   reading "),
        Decision(ids["Depth"], "keep"),
        Decision(ids["Reading charts"], "accept", new_name="Chart reading"),
    ])
    assert [r.outcome for r in results] == ["applied", "applied", "applied", "skipped (keep)", "applied"]
    assert _status(ws, ids["Counting"]) == "accepted"
    assert _status(ws, ids["Colour naming"]) == "rejected"
    ocr = Taxonomy.of(ws).get(ids["OCR"])
    assert (ocr.name, ocr.status) == ("Text reading", "proposed")   # rename only: still pending
    assert results[2].path == "Vision~Text reading"
    assert _status(ws, ids["Depth"]) == "proposed"
    charts = Taxonomy.of(ws).get(ids["Reading charts"])
    assert (charts.name, charts.status) == ("Chart reading", "accepted")
    assert results[4].detail == "renamed to 'Chart reading' and accepted"
    assert count_outcomes(results) == {"applied": 4, "skipped": 1}
    assert set(pending_proposals(ws).name) == {"Text reading", "Depth", "Hand made"}


def test_apply_twice_is_idempotent_and_reported_unchanged(two_runs):
    ws, _, _, ids = two_runs
    decisions = [Decision(ids["Counting"], "accept"), Decision(ids["Colour naming"], "reject"),
                 Decision(ids["OCR"], "rename", new_name="Text reading"), Decision(ids["Depth"], "keep"),
                 Decision(ids["Reading charts"], "accept", new_name="Chart reading")]
    first = apply_decisions(ws, decisions)
    assert [r.status for r in first] == ["applied", "applied", "applied", "skipped", "applied"]
    before = _updated(ws)
    second = apply_decisions(ws, decisions)
    assert [r.outcome for r in second] == [
        "unchanged (already accepted)", "unchanged (already rejected)", "unchanged (already named 'Text reading')",
        "skipped (keep)", "unchanged (already accepted)"]
    assert _updated(ws) == before            # not even updated_at moved
    assert "applied" not in count_outcomes(second)


def test_a_clash_fails_alone_and_the_other_rows_apply(two_runs):
    ws, _, _, ids = two_runs
    Taxonomy.of(ws).delete(ids["Hand"])
    results = apply_decisions(ws, [
        Decision(ids["Counting"], "accept"),
        Decision(ids["Colour naming"], "rename", new_name="ocr"),          # a sibling is called OCR
        Decision(ids["Depth"], "accept", new_name="COUNTING"),             # rename + accept: neither happens
        Decision(ids["Hand"], "accept"),                                   # deleted meanwhile
        Decision(ids["OCR"], "rename", new_name="bad/name"),               # not a valid name
        Decision(ids["OCR"], "rename"),                                    # no new name
        Decision(ids["Reading charts"], "reject"),
    ])
    outcomes = [r.outcome for r in results]
    assert outcomes[0] == "applied" and outcomes[-1] == "applied"
    assert outcomes[1].startswith("failed: a node named 'OCR' already exists under 'Vision'")
    assert outcomes[2].startswith("failed: a node named 'Counting' already exists")
    assert outcomes[3] == f"failed: node {ids['Hand']} no longer exists (deleted meanwhile)"
    assert results[3].path is None
    assert outcomes[4].startswith("failed: bad name 'bad/name'")
    assert outcomes[5] == "failed: rename needs a new name"
    assert _status(ws, ids["Counting"]) == "accepted"
    assert _status(ws, ids["Reading charts"]) == "rejected"
    depth = Taxonomy.of(ws).get(ids["Depth"])
    assert (depth.name, depth.status) == ("Depth", "proposed")        # the failed rename undid nothing else
    assert Taxonomy.of(ws).get(ids["Colour naming"]).name == "Colour naming"
    assert count_outcomes(results) == {"applied": 2, "failed": 5}


def test_merged_away_node_is_not_decided_through_its_alias(two_runs):
    ws, _, _, ids = two_runs
    Taxonomy.of(ws).merge(ids["Colour naming"], ids["Counting"])
    [res] = apply_decisions(ws, [Decision(ids["Colour naming"], "reject")])
    assert res.status == "failed" and "merged into 'Vision~Counting'" in res.detail
    assert _status(ws, ids["Counting"]) == "proposed"


def test_reject_with_a_new_name_says_the_name_was_not_applied(two_runs):
    ws, _, _, ids = two_runs
    [res] = apply_decisions(ws, [Decision(ids["OCR"], "reject", new_name="Optical")])
    assert res.outcome == "applied" and "new name was not applied" in res.detail
    assert Taxonomy.of(ws).get(ids["OCR"]).name == "OCR"


def test_unknown_action_is_an_error():
    with pytest.raises(WorkbenchError, match="one of keep, accept, reject, rename"):
        Decision("t000000000000", "approve")
    assert Decision("t000000000000", "rename", new_name="  ").new_name is None


# -- the widget ----------------------------------------------------------------------------------
def test_review_table_shows_every_run_and_filters(two_runs):
    from workbench.review import ReviewTable

    ws, r1, r2, ids = two_runs
    table = ReviewTable(ws)
    assert [r.node_id for r in table.rows] == list(pending_proposals(ws).node_id)
    assert {v for _, v in table.run_filter.options} == {"all", r1, r2, "none"}
    table.run_filter.value = r1
    assert [r.node_id for r in table.rows] == [ids["Counting"], ids["Colour naming"], ids["OCR"]]
    table.run_filter.value = "all"
    table.hash_filter.value = "b" * 64
    assert [r.node_id for r in table.rows] == [ids["Depth"], ids["Reading charts"]]
    table.set_filter(stage_run_id="none", prompt_hash=None)
    assert [r.node_id for r in table.rows] == [ids["Hand"]]
    table.set_filter(stage_run_id=999)
    assert table.rows == [] and table.run_filter.value == 999
    # Built on a filter and a given frame.
    assert len(ReviewTable(ws, stage_run_id=r2).rows) == 2
    assert [r.node_id for r in ReviewTable(ws, pending_proposals(ws, stage_run_id=r1).head(1)).rows] == \
        [ids["Counting"]]
    # Names are escaped (an LLM may propose anything).
    Taxonomy.of(ws).rename(ids["Hand"], "<script>x<script>")
    table = ReviewTable(ws)
    assert all("<script>" not in r.label.value for r in table.rows)
    assert any("&lt;script&gt;" in r.label.value for r in table.rows)


def test_review_table_apply_click_writes_and_reports_per_row(two_runs):
    from workbench.review import ReviewTable

    ws, r1, r2, ids = two_runs
    table = ReviewTable(ws)
    rows = {r.node_id: r for r in table.rows}
    rows[ids["Counting"]].action.value = "accept"
    rows[ids["Colour naming"]].action.value = "reject"
    rows[ids["OCR"]].new_name.value = "Text reading"                 # typing turns 'keep' into 'rename'
    assert rows[ids["OCR"]].action.value == "rename"
    rows[ids["Depth"]].action.value = "rename"
    rows[ids["Depth"]].new_name.value = "counting"                   # clashes with 'Counting'
    rows[ids["Reading charts"]].action.value = "accept"
    rows[ids["Reading charts"]].new_name.value = "Chart reading"

    table.apply_button.click()
    assert table.error is None
    by_id = {r.node_id: r.outcome for r in table.results}
    assert by_id[ids["Counting"]] == "applied" and by_id[ids["Colour naming"]] == "applied"
    assert by_id[ids["OCR"]] == "applied" and by_id[ids["Reading charts"]] == "applied"
    assert by_id[ids["Depth"]].startswith("failed: a node named 'Counting' already exists")
    assert by_id[ids["Hand"]] == "skipped (keep)"
    assert _status(ws, ids["Counting"]) == "accepted" and _status(ws, ids["Colour naming"]) == "rejected"
    assert Taxonomy.of(ws).get(ids["OCR"]).name == "Text reading"
    assert Taxonomy.of(ws).get(ids["Reading charts"]).status == "accepted"
    html = table.result_html.value
    assert "4 applied, 1 skipped, 1 failed" in html and "already exists" in html
    assert "Text reading" in html

    # Refreshed from the workspace: decided rows are gone, the renamed one stays (pending) and is reset,
    # the failed one keeps its choice and says why.
    shown = [r.node_id for r in table.rows]
    assert shown == list(pending_proposals(ws).node_id)
    assert set(shown) == {ids["OCR"], ids["Depth"], ids["Hand"]}
    rows = {r.node_id: r for r in table.rows}
    assert (rows[ids["OCR"]].action.value, rows[ids["OCR"]].new_name.value) == ("keep", "")
    assert "Text reading" in rows[ids["OCR"]].label.value
    assert (rows[ids["Depth"]].action.value, rows[ids["Depth"]].new_name.value) == ("rename", "counting")
    assert "already exists" in rows[ids["Depth"]].message.value
    assert sorted(r.node_id for r in table.applied) == sorted(ids[n] for n in ("Counting", "Colour naming", "OCR",
                                                                               "Reading charts"))

    # Fix the clash and apply again: only that row changes; pressing Apply once more changes nothing.
    rows[ids["Depth"]].new_name.value = "Depth estimation"
    before = _updated(ws)
    results = table.apply()
    assert [r.outcome for r in results if r.node_id == ids["Depth"]] == ["applied"]
    assert Taxonomy.of(ws).get(ids["Depth"]).name == "Depth estimation"
    assert "already exists" not in table.rows[0].message.value
    changed = {k for k in before if before[k] != _updated(ws)[k]}
    assert changed == {ids["Depth"]}
    again = table.apply()
    assert {r.status for r in again} == {"skipped"}
    assert len(table.applied) == 5                                   # nothing recorded twice
    assert "nothing" not in table.result_html.value and "3 skipped" in table.result_html.value


def test_review_table_decisions_on_filtered_out_rows_are_not_applied(two_runs):
    from workbench.review import ReviewTable

    ws, r1, r2, ids = two_runs
    table = ReviewTable(ws)
    {r.node_id: r for r in table.rows}[ids["Depth"]].action.value = "accept"
    table.run_filter.value = r1
    table.apply()
    assert _status(ws, ids["Depth"]) == "proposed"
    assert "1 decision(s) on rows hidden by the filters were not applied" in table.result_html.value
    table.run_filter.value = "all"                                   # the choice survived the filter change
    assert {r.node_id: r for r in table.rows}[ids["Depth"]].action.value == "accept"
