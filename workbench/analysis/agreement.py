"""Referee agreement: pass rates, pairwise Cohen's kappa, Fleiss' kappa, agreement per category.

Votes are summarised in SQL into *patterns*: one row per distinct combination of the referees'
votes (1, 0, -1 = invalid output, NaN = no vote) with a count, optionally per task type. Every
figure here is computed from those weighted patterns, so 400k samples x 3 referees cost one
grouped query, not a 1.2M-row frame. Cohen's kappa is scikit-learn's (with sample weights);
Fleiss' kappa is implemented here (statsmodels is not a dependency) and tested against the
worked example of Fleiss (1971) as given on Wikipedia.

Adaptive voting (`workbench referee` without --full) asks a later referee only where the earlier ones left
the outcome open, so its votes are a biased sample: agreement is measured on *fully voted* samples
(`load_patterns(fully_voted=True)`): every referee voted and, if any vote came from an adaptive run, the
sample is in the audit set that adaptive runs always vote fully.

People are not referees: a person's vote (`human:<name>`, review/adjudication.py) decides its sample in
`select`, so every figure here is of the machine referees unless asked with `include_human=True` (then each
person is one more column / rater).
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from workbench.stages.referee.people import MACHINE_SQL
from workbench.stages.referee.stage import is_audit

INVALID = -1
_ADAPTIVE_RUNS = ("SELECT count(*) FROM stage_runs WHERE stage LIKE 'referee:%' "
                  "AND json_extract(params, '$.adaptive') = 1")


def adaptive_runs(store) -> int:
    """How many referee runs voted adaptively (their votes are not all a fair sample for agreement)."""
    return int(store.scalar(_ADAPTIVE_RUNS) or 0)


_MACHINE = MACHINE_SQL


def referees(store, include_human: bool = False) -> list[str]:
    """Referee names with votes: the machine referees, and people (`human:<name>`) only with include_human."""
    where = "" if include_human else f" WHERE {_MACHINE}"
    return [r[0] for r in store.query(f"SELECT DISTINCT referee FROM votes{where} ORDER BY referee")]


def _audit_sql_function(store, fraction: float) -> str:
    """Register the audit-set test (stages/referee/stage.is_audit) on this connection; its SQL name."""
    store.conn.create_function("wb_is_audit", 1, lambda sid: int(is_audit(sid, fraction)), deterministic=True)
    return "wb_is_audit"


def load_patterns(store, by_node: bool = True, *, fully_voted: bool = False, audit_fraction: float = 0.05,
                  include_human: bool = False) -> tuple[pd.DataFrame, list[str]]:
    """Vote patterns: columns = referee names (1/0/-1/NaN), [node_id,] n. Returns (frame, referee names).
    Machine referees only, over the samples they voted on; include_human adds each person as a column.

    fully_voted: only samples every referee voted on, and, where a vote came from an adaptive referee run,
    only those in the audit set (`audit_fraction`, as configured when the votes were cast)."""
    names = referees(store, include_human)
    if not names:
        return pd.DataFrame(columns=["n"]), []
    cols = []
    for i, _name in enumerate(names):
        cols.append(f"max(CASE WHEN v.referee = ?{i + 1} THEN (CASE WHEN v.valid = 1 AND v.vote IS NOT NULL "
                    f"THEN v.vote ELSE {INVALID} END) END) AS r{i}")
    only = "" if include_human else f" WHERE v.{_MACHINE}"
    inner = (f"SELECT v.sample_id, {', '.join(cols)} FROM votes v{only} GROUP BY v.sample_id")
    if fully_voted:
        # Every machine referee voted (people's `human:<name>` decisions, review/adjudication, are not referees).
        machine = [n for n in names if not n.startswith("human:")]
        having = f"count(CASE WHEN v.referee NOT LIKE 'human:%' THEN 1 END) = {len(machine)}"
        if store.scalar(_ADAPTIVE_RUNS):
            audit = _audit_sql_function(store, audit_fraction)
            inner = (f"SELECT v.sample_id, {', '.join(cols)} FROM votes v LEFT JOIN stage_runs r ON "
                     f"r.id = v.stage_run_id{only} GROUP BY v.sample_id")
            having += f" AND (max(coalesce(json_extract(r.params, '$.adaptive'), 0)) = 0 OR {audit}(v.sample_id))"
        inner += f" HAVING {having}"
    rcols = ", ".join(f"p.r{i}" for i in range(len(names)))
    if by_node:
        sql = (f"SELECT s.node_id AS node_id, {rcols}, count(*) AS n FROM ({inner}) p "
               f"JOIN samples s ON s.id = p.sample_id GROUP BY s.node_id, {rcols}")
    else:
        sql = f"SELECT {rcols}, count(*) AS n FROM ({inner}) p GROUP BY {rcols}"
    rows = store.query(sql, tuple(names))
    frame = pd.DataFrame([tuple(r) for r in rows],
                         columns=(["node_id"] if by_node else []) + [f"r{i}" for i in range(len(names))] + ["n"])
    frame = frame.rename(columns={f"r{i}": name for i, name in enumerate(names)})
    for name in names:
        frame[name] = pd.to_numeric(frame[name], errors="coerce").astype("float64")
    return frame, names


def pass_rates(patterns: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """Per referee: valid votes, passes (1), pass rate, invalid outputs."""
    out = []
    w = patterns["n"].to_numpy(dtype=np.float64)
    for name in names:
        v = patterns[name].to_numpy()
        valid = (v == 0) | (v == 1)
        n_valid = w[valid].sum()
        passes = w[v == 1].sum()
        out.append({"referee": name, "votes": int(n_valid), "passed": int(passes),
                    "pass_rate": passes / n_valid if n_valid else np.nan, "invalid": int(w[v == INVALID].sum())})
    return pd.DataFrame(out)


def cohen_kappa(a, b, weights=None) -> float:
    """Cohen's kappa of two raters' labels (scikit-learn), NaN when undefined."""
    from sklearn.metrics import cohen_kappa_score

    a, b = np.asarray(a), np.asarray(b)
    if len(a) == 0:
        return float("nan")
    with np.errstate(invalid="ignore", divide="ignore"):
        k = cohen_kappa_score(a, b, sample_weight=weights)
    return float(k)


def pairwise_kappa(patterns: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """Square frame of Cohen's kappa for every pair, over samples both voted on validly."""
    m = pd.DataFrame(np.eye(len(names)), index=names, columns=names)
    for x, y in itertools.combinations(names, 2):
        a, b = patterns[x].to_numpy(), patterns[y].to_numpy()
        both = np.isin(a, (0, 1)) & np.isin(b, (0, 1))
        k = cohen_kappa(a[both].astype(int), b[both].astype(int), patterns["n"].to_numpy()[both])
        m.loc[x, y] = m.loc[y, x] = k
    return m


def fleiss_kappa(table, weights=None) -> float:
    """Fleiss' kappa of an items x categories count table (every row sums to the same rater count)."""
    t = np.asarray(table, dtype=np.float64)
    if t.ndim != 2 or t.shape[0] == 0:
        return float("nan")
    w = np.ones(t.shape[0]) if weights is None else np.asarray(weights, dtype=np.float64)
    n = t.sum(axis=1)
    if not np.allclose(n, n[0]) or n[0] < 2:
        raise ValueError("every item needs the same number (>= 2) of ratings")
    r = n[0]
    total = w.sum()
    p_j = (w[:, None] * t).sum(axis=0) / (total * r)
    p_i = ((t * t).sum(axis=1) - r) / (r * (r - 1))
    p_bar = (w * p_i).sum() / total
    p_e = (p_j ** 2).sum()
    if np.isclose(p_e, 1.0):
        return float("nan")
    return float((p_bar - p_e) / (1 - p_e))


def complete(patterns: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """Patterns where every referee gave a valid vote."""
    if not names:
        return patterns.iloc[:0]
    mask = np.ones(len(patterns), dtype=bool)
    for name in names:
        mask &= patterns[name].isin((0, 1)).to_numpy()
    return patterns[mask]


def fleiss_from_patterns(patterns: pd.DataFrame, names: list[str]) -> float:
    full = complete(patterns, names)
    if len(names) < 2 or full.empty:
        return float("nan")
    ones = full[names].sum(axis=1).to_numpy()
    table = np.stack([len(names) - ones, ones], axis=1)
    return fleiss_kappa(table, full["n"].to_numpy())


def agreement_by(patterns: pd.DataFrame, names: list[str], group: str) -> pd.DataFrame:
    """Per group (e.g. first-level category): samples, unanimous share, pass-all share, Fleiss' kappa."""
    full = complete(patterns, names)
    out = []
    for key, grp in full.groupby(group, sort=True):
        ones = grp[names].sum(axis=1).to_numpy()
        w = grp["n"].to_numpy(dtype=np.float64)
        total = w.sum()
        unanimous = w[(ones == 0) | (ones == len(names))].sum()
        out.append({group: key, "samples": int(total), "unanimous": unanimous / total if total else np.nan,
                    "all_pass": w[ones == len(names)].sum() / total if total else np.nan,
                    "fleiss_kappa": fleiss_kappa(np.stack([len(names) - ones, ones], axis=1), w)
                    if len(names) >= 2 else np.nan})
    return pd.DataFrame(out, columns=[group, "samples", "unanimous", "all_pass", "fleiss_kappa"])


def disagreements(store, *, limit: int = 200, node_ids: list[str] | None = None,
                  include_human: bool = False) -> pd.DataFrame:
    """Samples on which valid (machine, unless include_human) votes differ: sample, image, task type, question,
    answer."""
    where = ""
    params: tuple = ()
    if node_ids is not None:
        if not node_ids:
            return pd.DataFrame(columns=["sample_id", "image_id", "node_id", "question", "answer"])
        where = f"WHERE s.node_id IN ({','.join('?' * len(node_ids))})"
        params = tuple(node_ids)
    rows = store.query(
        "SELECT s.id AS sample_id, s.image_id, s.node_id, s.question, s.answer FROM samples s "
        f"JOIN (SELECT sample_id FROM votes WHERE valid = 1{'' if include_human else ' AND ' + _MACHINE} "
        "GROUP BY sample_id "
        "      HAVING min(vote) <> max(vote)) d ON d.sample_id = s.id "
        f"{where} ORDER BY s.id LIMIT {int(limit)}", params)
    return pd.DataFrame([dict(r) for r in rows],
                        columns=["sample_id", "image_id", "node_id", "question", "answer"])


def votes_of(store, sample_id: str) -> pd.DataFrame:
    rows = store.query("SELECT referee, vote, valid, raw_text, call_key FROM votes WHERE sample_id=? "
                       "ORDER BY referee", (sample_id,))
    return pd.DataFrame([dict(r) for r in rows], columns=["referee", "vote", "valid", "raw_text", "call_key"])

