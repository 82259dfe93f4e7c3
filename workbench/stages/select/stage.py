"""Selection: keep samples the referees pass, then apply per-task caps/floors and a budget.

Two ways to pass: k-of-N (default: at least K positive machine votes) or Dawid–Skene (`consensus="ds"`:
posterior P(good) >= `min_posterior`, stages/select/consensus.py). A person's decision (`human:<name>` votes,
review/adjudication.py) overrides the count in k-of-N and is the true label in Dawid–Skene. A flagged sample
(`sample_flags`) is never selected.

Vision-Flan: at a fixed budget, many tasks × few samples beats few × many. So a budget is spent by
water-filling across task types (every task gets up to q samples, with q as large as the budget allows)
rather than by sampling samples uniformly, which would favour the big tasks.

Order within a task is a seeded hash of the sample id: reproducible, and independent of row order.
Every ok sample gets a row in `selections`, the unselected ones with their reason; a sample whose node is not a
task type (a proposal awaiting review, or rejected: `Taxonomy.of(ws).index()`) is not selected, with `NOT_TASK`.

The k-of-N rule per sample is shared with the figures that must agree with `select` (the funnel, the dashboard):
`referee_outcomes` over `machine_vote_counts` (one GROUP BY over every vote) plus `with_people` (people's votes and
flags, read anew: cheap, so the dashboard keeps the machine counts while people vote). `REFEREE_REASONS` begin the
stored reasons that mean "did not pass the referees" (not a quota or a cap): how the dashboard counts what passed a
Dawid–Skene selection.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from workbench.core.errors import WorkbenchError
from workbench.core.workspace import Workspace
from workbench.stages.base import Stage, StageRun
from workbench.stages.referee.people import HUMAN_SQL, MACHINE_SQL
from workbench.stages.referee.stage import no_samples_message
from workbench.stages.select.consensus import require
from workbench.taxonomy.model import Taxonomy


@dataclass
class SelectionReport:
    samples: int
    passed_votes: int
    selected: int
    tasks_selected: int
    reasons: dict[str, int]
    per_task_quota: int | None

    def summary(self) -> str:
        rs = ", ".join(f"{k}: {v}" for k, v in sorted(self.reasons.items()))
        quota = f" (at most {self.per_task_quota} per task to fit the budget)" if self.per_task_quota else ""
        return (f"{self.samples} samples, {self.passed_votes} passed the referees, {self.selected} selected over "
                f"{self.tasks_selected} task types" + quota + (f"; dropped: {rs}" if rs else ""))


CONSENSUS = ("kofn", "ds")
# How `vote_reasons` begins each reason a sample fails the referees (the other reasons are quotas and caps).
REFEREE_REASONS = ("fewer than ", "rejected by a human reviewer", "no valid votes", "posterior P(good) below",
                   "flagged by a reviewer")
HUMAN = HUMAN_SQL
NOT_TASK = "not a task type (awaiting review or rejected)"


def vote_table(store) -> pd.DataFrame:
    """One row per ok sample: node_id, image_id, positive / valid / cast machine votes, the people's decision (mean of
    their valid votes, NaN if none) and whether it is flagged."""
    return with_people(machine_vote_counts(store), store)


def machine_vote_counts(store) -> pd.DataFrame:
    """One row per ok sample: sample_id, node_id, image_id and its positive / valid / cast machine votes. One GROUP
    BY over the covering index for all votes, then the (few) human votes, read apart and taken out of the counts:
    a referee test inside the big GROUP BY costs 1.3x."""
    table = pd.read_sql_query(
        "SELECT s.id AS sample_id, s.node_id, s.image_id, "
        " coalesce(sum(CASE WHEN v.vote = 1 THEN 1 ELSE 0 END), 0) AS yes,"
        " coalesce(sum(v.valid), 0) AS valid, count(v.sample_id) AS cast"
        " FROM samples s LEFT JOIN votes v ON v.sample_id = s.id WHERE s.status = 'ok' GROUP BY s.id",
        store.conn)
    human = pd.read_sql_query(
        "SELECT sample_id, sum(CASE WHEN vote = 1 THEN 1 ELSE 0 END) AS yes, sum(valid) AS valid, count(*) AS cast"
        f" FROM votes INDEXED BY votes_human WHERE {HUMAN} GROUP BY sample_id", store.conn).set_index("sample_id")
    if len(human):
        rows = table["sample_id"].isin(human.index).to_numpy()   # a few rows: no map over every sample
        sid = table.loc[rows, "sample_id"]
        for col in ("yes", "valid", "cast"):
            table.loc[rows, col] -= sid.map(human[col]).fillna(0).astype(table[col].dtype).to_numpy()
    return table


def with_people(counts: pd.DataFrame, store) -> pd.DataFrame:
    """`machine_vote_counts` (not changed) plus the people's decision per sample (`human`: the mean of their valid
    votes, NaN if none) and `flagged`, read now: cheap, so machine counts can be kept while people vote."""
    table = counts.copy()
    human = pd.read_sql_query(f"SELECT sample_id, avg(CASE WHEN valid = 1 THEN vote END) AS human FROM votes "
                              f"INDEXED BY votes_human WHERE {HUMAN} GROUP BY sample_id",
                              store.conn).set_index("sample_id")["human"]
    table["human"] = np.nan
    if len(human):
        rows = table["sample_id"].isin(human.index).to_numpy()   # a few rows: no map over every sample
        table.loc[rows, "human"] = table.loc[rows, "sample_id"].map(human).astype("float64").to_numpy()
    flagged = {r[0] for r in store.query("SELECT sample_id FROM sample_flags")}
    table["flagged"] = table["sample_id"].isin(flagged).astype(int) if flagged else 0
    return table


def people_state(store) -> dict[str, str]:
    """What people decided on each sample they touched, as `selections.people` stores it: their votes sorted by
    referee ('human:ann=0;human:bo=1', '?' for an invalid vote) and '|flagged' when it is flagged."""
    votes: dict[str, list[str]] = {}
    for sid, ref, v in store.query(f"SELECT sample_id, referee, vote FROM votes INDEXED BY votes_human WHERE {HUMAN} "
                                   "ORDER BY sample_id, referee"):
        votes.setdefault(sid, []).append(f"{ref}={'?' if v is None else v}")
    out = {sid: ";".join(vs) for sid, vs in votes.items()}
    for (sid,) in store.query("SELECT sample_id FROM sample_flags"):
        out[sid] = out.get(sid, "") + "|flagged"
    return out


def people_changed(store) -> list[tuple[str, str, str]]:
    """Samples whose people's votes changed since the last `select` read them, or whose flag was lifted since:
    (sample id, then, now) in `people_state`'s form. A flag added since is left out: export never writes a flagged
    sample. Rows selected before `selections.people` existed (NULL) are not compared."""
    now = people_state(store)
    then = {r[0]: r[1] for r in store.query(
        "SELECT sample_id, people FROM selections WHERE people IS NOT NULL AND people != ''")}
    new = [sid for sid in now if sid not in then]
    for i in range(0, len(new), 900):
        chunk = new[i:i + 900]
        then.update({r[0]: "" for r in store.query(
            f"SELECT sample_id FROM selections WHERE people = '' AND sample_id IN ({','.join('?' * len(chunk))})",
            chunk)})
    changed = []
    for sid in sorted(then):
        (votes_then, _, flag_then), (votes_now, _, flag_now) = then[sid].partition("|"), now.get(sid, "").partition("|")
        if votes_then != votes_now or (flag_then and not flag_now):
            changed.append((sid, then[sid], now.get(sid, "")))
    return changed


def machine_votes_since(store) -> list[tuple[str, str]]:
    """(sample id, referee) of machine votes recorded on a sample by a referee run newer than the select run that
    last decided it: a referee re-run or a new referee after `select`, whose votes the selection does not reflect.
    Samples selected by no recorded run (NULL) are not compared."""
    return [(r[0], r[1]) for r in store.query(
        f"SELECT v.sample_id, v.referee FROM votes v JOIN selections s ON s.sample_id = v.sample_id "
        f"WHERE v.{MACHINE_SQL} AND v.stage_run_id > s.stage_run_id ORDER BY v.sample_id, v.referee")]


def referee_outcomes(store, *, min_votes: int = 2, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """What k-of-N selection makes of each ok sample's votes, for the figures that must agree with `select`
    (the funnel, the dashboard): sample_id, node_id, image_id, `refereed` (a machine or a person voted) and
    `passed` (`vote_reasons` gives no reason: K positive machine votes or a person's 1, no person's 0 outweighing
    it, not flagged) -- exactly `SelectionReport.passed_votes` per sample. `table`: a `vote_table` already read."""
    table = vote_table(store) if table is None else table
    out = table[["sample_id", "node_id", "image_id"]].copy()
    out["refereed"] = (table["cast"] > 0) | table["human"].notna()
    out["passed"] = vote_reasons(table, min_votes=min_votes).isna()
    return out


def _seeded_rank(ids: pd.Series, seed: int) -> np.ndarray:
    salt = str(seed).encode()
    return np.fromiter((int.from_bytes(hashlib.blake2b(salt + i.encode(), digest_size=8).digest(), "big")
                        for i in ids), dtype=np.uint64, count=len(ids))


def water_fill(counts: np.ndarray, budget: int) -> int:
    """The largest per-task quota q with sum(min(count, q)) <= budget."""
    if counts.sum() <= budget:
        return int(counts.max()) if len(counts) else 0
    lo, hi = 0, int(counts.max())
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if np.minimum(counts, mid).sum() <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def check_params(min_votes: int, consensus: str, min_posterior: float) -> None:
    if consensus not in CONSENSUS:
        raise WorkbenchError(f"select: --consensus must be one of {', '.join(CONSENSUS)}; got {consensus!r}")
    if min_votes < 0:
        raise WorkbenchError("select: min_votes must be >= 0")
    if not 0 <= min_posterior <= 1:
        raise WorkbenchError(f"select: --min-posterior must be between 0 and 1; got {min_posterior}")


def vote_reasons(table: pd.DataFrame, *, min_votes: int = 2, consensus: str = "kofn",
                 min_posterior: float = 0.8) -> pd.Series:
    """Why each sample fails the referees (None: it passes). `table` may carry `human` (the people's mean vote),
    `flagged` and, for consensus="ds", `p_good` (the Dawid–Skene posterior)."""
    check_params(min_votes, consensus, min_posterior)
    nan = pd.Series(np.nan, index=table.index)
    reason = pd.Series(None, index=table.index, dtype=object)
    if consensus == "kofn":
        human = table["human"] if "human" in table else nan
        reason[(table["yes"] < min_votes) & ~(human > 0.5)] = f"fewer than {min_votes} positive votes"
        reason[human < 0.5] = "rejected by a human reviewer"
    else:
        p = table["p_good"] if "p_good" in table else nan
        reason[p.isna()] = "no valid votes (no posterior)"
        reason[p < min_posterior] = f"posterior P(good) below {min_posterior:g}"
    if "flagged" in table:
        reason[table["flagged"].fillna(0).astype(bool)] = "flagged by a reviewer"
    return reason


def choose(table: pd.DataFrame, *, min_votes: int = 2, max_per_task: int | None = None,
           min_per_task: int | None = None, budget: int | None = None, seed: int = 0, consensus: str = "kofn",
           min_posterior: float = 0.8) -> tuple[pd.DataFrame, int | None]:
    """Pure selection on a vote table; returns (sample_id, selected, reason) and the budget quota used."""
    df = table[["sample_id", "node_id", "yes"]].copy()
    df["reason"] = vote_reasons(table, min_votes=min_votes, consensus=consensus, min_posterior=min_posterior)
    ok = df["reason"].isna()
    passed = df[ok].copy()
    passed["rank"] = _seeded_rank(passed["sample_id"], seed)
    passed = passed.sort_values(["node_id", "rank"], kind="stable")
    passed["pos"] = passed.groupby("node_id").cumcount()
    sizes = passed.groupby("node_id")["sample_id"].transform("size")
    reason = pd.Series(None, index=passed.index, dtype=object)
    if min_per_task:
        reason[sizes < min_per_task] = f"task type has fewer than {min_per_task} passing samples"
    if max_per_task:
        reason[reason.isna() & (passed["pos"] >= max_per_task)] = f"over the per-task cap of {max_per_task}"
    quota = None
    if budget is not None:
        live = passed[reason.isna()]
        counts = live.groupby("node_id").size().to_numpy()
        if counts.sum() > budget:
            quota = water_fill(counts, budget)
            reason[reason.isna() & (passed["pos"] >= quota)] = "over the total budget"
            # Spend what the equal quota leaves over on the next sample of tasks, in seeded order.
            left = budget - int((reason.isna()).sum())
            if left > 0:
                extra = passed[(passed["pos"] == quota) & (reason == "over the total budget")]
                extra = extra.sort_values("rank", kind="stable").head(left)
                reason[extra.index] = None
    passed["reason"] = reason
    out = pd.concat([df.loc[~ok, ["sample_id", "reason"]], passed[["sample_id", "reason"]]])
    out["selected"] = out["reason"].isna().astype(int)
    return out.sort_values("sample_id", kind="stable").reset_index(drop=True), quota


class SelectStage(Stage):
    name = "select"

    def __init__(self, **params):
        self.params = params

    def run_params(self) -> dict:
        return self.params

    def check(self, ws: Workspace) -> None:
        self.people = people_state(ws.store)     # read first: a vote cast meanwhile looks changed, never missed
        self.table = vote_table(ws.store)
        self.is_task = self.table["node_id"].isin(list(Taxonomy.of(ws).index().nodes))
        if not self.is_task.any():   # none, or none of a task type: the stored selection stays as it is
            raise WorkbenchError(no_samples_message(ws, "select"))
        if self.params.get("consensus") == "ds":
            cons = require(ws, include_human=True)
            self.table["p_good"] = self.table["sample_id"].map(cons.posterior)
            self.params = {**self.params, "consensus_key": cons.key}

    def execute(self, ws: Workspace, run: StageRun) -> SelectionReport:
        params = {k: v for k, v in self.params.items() if k != "consensus_key"}
        table = self.table[self.is_task]
        chosen, quota = choose(table, **params)
        left = self.table.loc[~self.is_task, ["sample_id"]].assign(reason=NOT_TASK, selected=0)
        chosen = pd.concat([chosen, left[chosen.columns]], ignore_index=True) if len(left) else chosen
        passed = vote_reasons(table, min_votes=params.get("min_votes", 2), consensus=params.get("consensus", "kofn"),
                              min_posterior=params.get("min_posterior", 0.8)).isna()
        with ws.store.write() as conn:
            conn.execute("DELETE FROM selections")
            conn.executemany("INSERT INTO selections(sample_id, selected, reason, stage_run_id, people) "
                             "VALUES (?,?,?,?,?)",
                             zip(chosen["sample_id"], chosen["selected"].tolist(), chosen["reason"],
                                 [run.id] * len(chosen), [self.people.get(i, "") for i in chosen["sample_id"]]))
        sel = chosen[chosen["selected"] == 1]
        return SelectionReport(
            samples=len(self.table), passed_votes=int(passed.sum()), selected=len(sel),
            tasks_selected=(int(table.set_index("sample_id").loc[sel["sample_id"], "node_id"].nunique())
                            if len(sel) else 0),
            reasons={k: int(v) for k, v in chosen["reason"].value_counts().items()}, per_task_quota=quota)


def select(ws: Workspace, *, min_votes: int | None = None, max_per_task: int | None = None,
           min_per_task: int | None = None, budget: int | None = None, seed: int | None = None, consensus: str = "kofn",
           min_posterior: float = 0.8) -> SelectionReport:
    """consensus="kofn": at least `min_votes` positive votes; "ds": Dawid–Skene posterior >= `min_posterior`."""
    cfg = ws.config.select
    params: dict[str, Any] = {"min_votes": cfg.min_votes if min_votes is None else min_votes,
                  "max_per_task": cfg.max_per_task if max_per_task is None else max_per_task,
                  "min_per_task": cfg.min_per_task if min_per_task is None else min_per_task,
                  "budget": cfg.budget if budget is None else budget, "seed": cfg.seed if seed is None else seed,
                  "consensus": consensus, "min_posterior": min_posterior}
    check_params(params["min_votes"], consensus, min_posterior)   # before a run record is opened
    return SelectStage(**params).run(ws)
