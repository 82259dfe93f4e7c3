"""Prompt versions: every template text stored once by hash, a history per prompt name, diffs between
versions and each version's outcome figures (trying versions side by side is `analysis/trials/`).

Credit is per call: `llm_calls.prompt_hash` (and `expand_results.prompt_hash`) name the exact template
each reply came from; a stage run may use several (expansion picks a template per parent), so figures
are read from the calls, never from the run's single `prompt_hash`; `stage_runs.params.prompts_used` lists every
template a run used. Texts are stored by `llm/prompt_store.py` when an LLM stage run starts.

Outcome figures per version (`outcomes`): calls and errors; expand: proposals added / existing / dropped and the
top drop reasons; filter: keep rate; Q&A: parse failures and empty answers; referees: pass rate and κ against the
other referees.
"""

from __future__ import annotations

import difflib

import pandas as pd

from workbench.analysis.agreement import cohen_kappa
from workbench.core.errors import WorkbenchError
from workbench.core.workspace import Workspace
from workbench.llm.prompt_store import text_of

STAGES = ("expand", "filter", "qa", "referee")


def history(ws: Workspace, name: str) -> pd.DataFrame:
    """The versions of one prompt name, oldest first: hash, first_seen, path, calls, runs."""
    rows = ws.store.query(
        "SELECT t.hash, t.first_seen, t.path, length(t.text) AS chars,"
        " (SELECT count(*) FROM llm_calls c WHERE c.prompt_hash = t.hash) AS calls,"
        " (SELECT count(DISTINCT c.stage_run_id) FROM llm_calls c WHERE c.prompt_hash = t.hash) AS runs"
        " FROM prompt_texts t WHERE t.name=? ORDER BY t.first_seen, t.rowid", (name,))
    df = pd.DataFrame([dict(r) for r in rows], columns=["hash", "first_seen", "path", "chars", "calls", "runs"])
    df.insert(0, "version", range(1, len(df) + 1))
    return df


def diff(ws: Workspace, hash_a: str, hash_b: str, *, html: bool = False, context: int = 3) -> str:
    """A unified diff (or a side-by-side HTML table) between two stored versions."""
    a, b = text_of(ws, hash_a), text_of(ws, hash_b)
    for h, t in ((hash_a, a), (hash_b, b)):
        if t is None:
            raise WorkbenchError(f"prompt version {h!r} is not stored in prompt_texts; versions are stored when "
                                 "a stage run uses them (see `history`)")
    la, lb = a.splitlines(), b.splitlines()
    if html:
        return difflib.HtmlDiff(wrapcolumn=80).make_table(la, lb, hash_a, hash_b, context=True, numlines=context)
    return "\n".join(difflib.unified_diff(la, lb, hash_a, hash_b, n=context, lineterm=""))


# -- outcome figures --------------------------------------------------------------------------------
def _one(ws: Workspace, sql: str, params=()) -> dict:
    row = ws.store.one(sql, params)
    return dict(row) if row is not None else {}


def outcomes(ws: Workspace, prompt_hash: str) -> dict:
    """What one version produced, for the stage(s) that used it: calls and errors, then per stage
    expand: proposals added / existing / dropped and the top drop reasons; filter: keep rate;
    qa: parse failures and empty answers; referee: pass rate and mean Cohen's κ against the other referees."""
    s = ws.store
    out = _one(ws, "SELECT count(*) AS calls, coalesce(sum(status='error'),0) AS call_errors, "
                   "group_concat(DISTINCT stage) AS stages FROM llm_calls WHERE prompt_hash=?", (prompt_hash,))
    stages = (out.get("stages") or "").split(",")
    if any(st == "expand" for st in stages) or s.scalar(
            "SELECT 1 FROM expand_results WHERE prompt_hash=? LIMIT 1", (prompt_hash,)):
        e = _one(ws, "SELECT count(*) AS replies, coalesce(sum(r.status='parse_error'),0) AS parse_failures "
                     "FROM expand_results r WHERE r.prompt_hash=?", (prompt_hash,))
        counts = dict(s.query("SELECT p.outcome, count(*) FROM expand_proposals p JOIN expand_results r "
                              "ON r.id = p.result_id WHERE r.prompt_hash=? GROUP BY p.outcome", (prompt_hash,)))
        reasons = s.query("SELECT p.reason, count(*) AS n FROM expand_proposals p JOIN expand_results r "
                          "ON r.id = p.result_id WHERE r.prompt_hash=? AND p.outcome='dropped' "
                          "GROUP BY p.reason ORDER BY n DESC LIMIT 5", (prompt_hash,))
        out.update(e, proposed=sum(counts.values()), added=counts.get("added", 0) + counts.get("new", 0),
                   existing=counts.get("existing", 0), dropped=counts.get("dropped", 0),
                   drop_reasons="; ".join(f"{r[0]} ({r[1]})" for r in reasons))
    if "filter" in stages:
        f = _one(ws, "SELECT count(*) AS decisions, coalesce(sum(d.kept),0) AS kept FROM filter_decisions d "
                     "JOIN llm_calls c ON c.key = d.call_key WHERE c.prompt_hash=?", (prompt_hash,))
        out.update(f, keep_rate=f["kept"] / f["decisions"] if f.get("decisions") else None)
    if "qa" in stages:
        q = _one(ws, "SELECT count(*) AS qa_rows, coalesce(sum(s.status='ok'),0) AS samples_ok, "
                     "coalesce(sum(s.reason LIKE 'parse%'),0) AS parse_failures, "
                     "coalesce(sum(s.status='ok' AND trim(coalesce(s.answer,''))=''),0) + "
                     "coalesce(sum(s.reason LIKE '%empty%'),0) AS empty_answers FROM samples s "
                     "JOIN llm_calls c ON c.key = s.call_key WHERE c.prompt_hash=?", (prompt_hash,))
        out.update(q)
    if any(st.startswith("referee") for st in stages) or s.scalar(
            "SELECT 1 FROM votes WHERE prompt_hash=? LIMIT 1", (prompt_hash,)):
        out.update(_referee_figures(ws, prompt_hash))
    return out


def _referee_figures(ws: Workspace, prompt_hash: str) -> dict:
    s = ws.store
    v = _one(ws, "SELECT count(*) AS votes, coalesce(sum(valid=0),0) AS invalid_votes, avg(vote) AS pass_rate "
                 "FROM votes WHERE prompt_hash=?", (prompt_hash,))
    # κ against the other machine referees: a person's decision is not a referee vote.
    pairs = s.query("SELECT a.vote, b.vote FROM votes a JOIN votes b ON b.sample_id = a.sample_id "
                    "AND b.referee <> a.referee AND b.referee NOT LIKE 'human:%' AND b.valid=1 "
                    "WHERE a.prompt_hash=? AND a.valid=1", (prompt_hash,))
    kappa = None
    if len(pairs) >= 2:
        k = cohen_kappa([p[0] for p in pairs], [p[1] for p in pairs])
        kappa = None if k != k else float(k)   # NaN: one class only
    return {**v, "kappa_vs_others": kappa}


def compare(ws: Workspace, hashes: list[str]) -> pd.DataFrame:
    """Outcome figures of several versions side by side (one column per version)."""
    return pd.DataFrame({h: pd.Series(outcomes(ws, h), dtype=object) for h in hashes})
