"""The funnel per stage, overall and per task type, and every rejected row with its reason.

matched (image × task type from CLIP top-k) → kept by the filter → Q&A parsed → passed the referees →
selected. Counts are of (image, task type) pairs until Q&A, of samples after. "Passed referees" is select's
k-of-N rule itself (`select.stage.referee_outcomes`): machine votes count toward K, a person's vote decides its
sample, a flagged sample does not pass -- the count `workbench select` reports. Where referees voted
adaptively (`workbench referee` without --full), a last row / column says how many referee calls that saved:
the votes full voting would have cast on the voted samples, minus the votes cast.
"""

from __future__ import annotations

import json

import pandas as pd

from workbench.analysis.agreement import adaptive_runs
from workbench.core.workspace import Workspace
from workbench.stages.select.stage import referee_outcomes
from workbench.taxonomy.model import Taxonomy

STAGES = ["matched", "kept by filter", "Q&A parsed", "passed referees", "selected"]
SAVED = "referee calls saved (adaptive)"


def referee_calls_saved(ws: Workspace, *, per_task: bool = False):
    """Referee calls adaptive voting did not make: (referees x ok samples with any vote) - votes cast.
    An int, or a Series by node_id with per_task."""
    machine = "referee NOT LIKE 'human:%'"     # people's decisions (review/adjudication) are not referee calls
    n = len(ws.config.referees) or int(ws.store.scalar(f"SELECT count(DISTINCT referee) FROM votes WHERE {machine}")
                                       or 0)
    sql = (f"SELECT s.node_id, sum({n} - v.cast) AS n FROM samples s JOIN (SELECT sample_id, count(*) AS cast "
           f"FROM votes WHERE {machine} GROUP BY sample_id) v ON v.sample_id = s.id WHERE s.status = 'ok' "
           "GROUP BY s.node_id")
    saved = pd.read_sql_query(sql, ws.store.conn).set_index("node_id")["n"].clip(lower=0)
    return saved if per_task else int(saved.sum())


def selection_min_votes(ws: Workspace) -> int:
    """The min_votes the stored selection was made with (its stage run's params); `[select] min_votes` when
    nothing was selected yet. "Passed referees" must use the selection's own rule, or it contradicts "selected"."""
    row = ws.store.one("SELECT r.params FROM stage_runs r WHERE r.id = (SELECT max(stage_run_id) FROM selections)")
    params = json.loads(row["params"] or "{}") if row is not None else {}
    return int(params.get("min_votes", ws.config.select.min_votes))


def funnel(ws: Workspace, *, min_votes: int | None = None, per_task: bool = False) -> pd.DataFrame:
    """Overall: one row per stage with `count`. Per task: one row per task type, one column per stage.
    `min_votes`: default the one the stored selection used (`selection_min_votes`)."""
    k = selection_min_votes(ws) if min_votes is None else min_votes
    q = {
        "matched": "SELECT node_id, count(*) AS n FROM matches GROUP BY node_id",
        "kept by filter": "SELECT node_id, count(*) AS n FROM filter_decisions WHERE kept = 1 GROUP BY node_id",
        "Q&A parsed": "SELECT node_id, count(*) AS n FROM samples WHERE status = 'ok' GROUP BY node_id",
        "selected": ("SELECT s.node_id, count(*) AS n FROM samples s JOIN selections x ON x.sample_id = s.id "
                     "WHERE x.selected = 1 GROUP BY s.node_id"),
    }
    frames = {}
    for stage, sql in q.items():
        frames[stage] = pd.read_sql_query(sql, ws.store.conn).set_index("node_id")["n"]

    oc = referee_outcomes(ws.store, min_votes=int(k))
    frames["passed referees"] = oc[oc["passed"]].groupby("node_id", dropna=False)["sample_id"].size()
    frames = {s: frames[s] for s in STAGES}

    adaptive = adaptive_runs(ws.store) > 0
    if not per_task:
        out = pd.DataFrame({"stage": STAGES, "count": [int(frames[s].sum()) for s in STAGES]})
        if adaptive:
            out.loc[len(out)] = [SAVED, referee_calls_saved(ws)]
        return out
    if adaptive:
        frames[SAVED] = referee_calls_saved(ws, per_task=True)
    df = pd.DataFrame(frames).fillna(0).astype(int)
    idx = Taxonomy.of(ws).index(None)
    df.insert(0, "task_type", [idx.paths.get(n, "") for n in df.index])
    return df.reset_index().sort_values("task_type").reset_index(drop=True)


def rejections(ws: Workspace, stage: str | None = None) -> pd.DataFrame:
    """Every row a stage did not pass on, with its reason: filter, qa, referee, select."""
    parts = []
    if stage in (None, "filter"):
        parts.append(pd.read_sql_query(
            "SELECT 'filter' AS stage, image_id, node_id, label AS item, reason, call_key FROM filter_decisions "
            "WHERE kept = 0", ws.store.conn))
    if stage in (None, "qa"):
        parts.append(pd.read_sql_query(
            "SELECT 'qa' AS stage, image_id, node_id, coalesce(question, '') AS item, reason, call_key FROM samples "
            "WHERE status = 'rejected'", ws.store.conn))
    if stage in (None, "referee"):
        parts.append(pd.read_sql_query(
            "SELECT 'referee' AS stage, s.image_id, s.node_id, v.referee || ': ' || coalesce(v.raw_text, '') AS item,"
            " CASE WHEN v.valid = 0 THEN 'invalid vote' ELSE 'voted 0' END AS reason, v.call_key FROM votes v "
            "JOIN samples s ON s.id = v.sample_id WHERE v.valid = 0 OR v.vote = 0", ws.store.conn))
    if stage in (None, "select"):
        parts.append(pd.read_sql_query(
            "SELECT 'select' AS stage, s.image_id, s.node_id, s.question AS item, x.reason, NULL AS call_key "
            "FROM selections x JOIN samples s ON s.id = x.sample_id WHERE x.selected = 0", ws.store.conn))
    parts = [p for p in parts if not p.empty]
    if not parts:
        return pd.DataFrame(columns=["stage", "image_id", "node_id", "item", "reason", "call_key"])
    return pd.concat(parts, ignore_index=True)
