"""Prompt versions: every template text stored once by hash, a history per prompt name, diffs between
versions, each version's outcome figures, and a playground that runs an edited prompt without changing
the taxonomy or the samples.

Credit is per call: `llm_calls.prompt_hash` (and `expand_results.prompt_hash`) name the exact template
each reply came from; a stage run may use several (expansion picks a template per parent), so figures
are read from the calls, never from the run's single `prompt_hash`; `stage_runs.params.prompts_used` lists every
template a run used. Texts are stored by `llm/prompt_store.py` when an LLM stage run starts.

Outcome figures per version (`outcomes`): calls and errors; expand: proposals added / existing / dropped and the
top drop reasons; filter: keep rate; Q&A: parse failures and empty answers; referees: pass rate and κ against the
other referees. The playground (`try_prompt`) runs an edited prompt on a few rows through the normal call path:
expansion records with `apply=False`, the other stages record nothing; `save_copy` writes `WORKSPACE/prompts/<name>`.
"""

from __future__ import annotations

import difflib
import random
from pathlib import Path

import pandas as pd

from workbench.analysis.agreement import cohen_kappa
from workbench.core.errors import WorkbenchError
from workbench.core.workspace import Workspace
from workbench.llm.cache import CallCache, request_json
from workbench.llm.client import Endpoint, resolve_endpoint
from workbench.llm.prompt_store import text_of
from workbench.llm.prompts import PromptTemplate
from workbench.stages.expand.stage import ExpandStage, load_prompts, plan
from workbench.stages.filter.stage import FilterStage
from workbench.stages.qa.stage import QAStage
from workbench.stages.referee.stage import RefereeStage

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


# -- the playground ---------------------------------------------------------------------------------
def stage_prompts(ws: Workspace, stage: str) -> dict[str, PromptTemplate]:
    """The templates a stage uses now (workspace copies preferred), by template kind or referee name."""
    if stage == "expand":
        return load_prompts(ws)
    if stage == "referee":
        if not ws.config.referees:
            raise WorkbenchError("no referees configured: add [[referees]] to workbench.toml (README, "
                                 "\"Referees\") to try a referee prompt")
        return {r.name: RefereeStage(ws, r).prompt for r in ws.config.referees}
    return {stage: _image_stage(ws, stage)(ws).prompt}


def _image_stage(ws: Workspace, stage: str):
    if stage == "filter":
        return FilterStage
    if stage == "qa":
        return QAStage
    raise WorkbenchError(f"playground: unknown stage {stage!r}; choose one of {', '.join(STAGES)}")


def candidate_rows(ws: Workspace, stage: str, which: str | None = None, *, limit: int | None = None) -> list:
    """The rows a stage could run on with prompt `which` (expand: the first level and the accepted parents that
    template is for; others: the stage's rows), the first `limit` of them."""
    if stage == "expand":
        # Level by level (one pass over the taxonomy each), stopping once `limit` rows fit the template: only
        # the parents this template is for (a custom prompt is for every parent).
        rows, level = [], 1 if which in (None, "custom", "level1_supplement") else 2
        while (limit is None or len(rows) < limit) and (level == 1 or which != "level1_supplement"):
            try:
                got = plan(ws, level=level)
            except WorkbenchError:      # no accepted parents at this depth: the taxonomy ends here
                break
            rows += [r for r in got if which in (None, "custom", r.template)]
            level += 1
        return rows[:limit]
    st = _make_stage(ws, stage, which, None)
    st.limit = limit
    return st.rows(ws)


def row_label(row) -> str:
    for attr in ("parent_path", "sample_id", "image_id"):
        v = getattr(row, attr, None)
        if v:
            return f"{v} — {row.question[:60]}" if attr == "sample_id" else str(v)
    return "(first level)"


def pick_rows(rows: list, n: int, *, seed: int | None = None, labels: list[str] | None = None) -> list:
    """N rows at random (seeded), or the rows whose `row_label` is in `labels`."""
    if labels:
        want = set(labels)
        return [r for r in rows if row_label(r) in want]
    return random.Random(seed).sample(rows, min(n, len(rows)))


def _make_stage(ws: Workspace, stage: str, which: str | None, prompt: PromptTemplate | None):
    """The stage class with `record` writing nothing: outcomes are collected in memory."""
    if stage == "referee":
        base = RefereeStage
        ref = next((r for r in ws.config.referees if r.name == which), None) or ws.config.referees[0]
        args = (ws, ref)
    else:
        base, args = _image_stage(ws, stage), (ws,)

    class Trial(base):
        def record(self, ws: Workspace, oc, run) -> None:   # nothing written: samples and decisions stay as they are
            self.seen.append(oc)

    st = Trial(*args)
    st.seen = []
    if prompt is not None:
        st.prompt = prompt
    return st


def _edited(ws: Workspace, stage: str, which: str, text: str) -> PromptTemplate:
    current = stage_prompts(ws, stage)
    if which not in current:
        raise WorkbenchError(f"playground: stage {stage!r} has no prompt {which!r}; choose one of "
                             f"{', '.join(current)}")
    return PromptTemplate.from_text(text, path=current[which].path,
                                    label=f"the playground text (edited {current[which].path.name})")


def _expand_stage(ws: Workspace, which: str, prompt: PromptTemplate, rows: list, endpoint=None):
    prompts = dict(load_prompts(ws))
    prompts[which] = prompt
    cfg = ws.config.expand
    params = {"temperature": cfg.temperature, **({"max_tokens": cfg.max_tokens} if cfg.max_tokens else {})}
    return ExpandStage(ws, prompts, params, apply=False, again=True, endpoint=endpoint or cfg.endpoint)


def estimate(ws: Workspace, stage: str, which: str, text: str, rows: list, *, endpoint=None):
    """The dry run of the edited prompt on `rows`: calls, tokens, cost (a RunReport)."""
    prompt = _edited(ws, stage, which, text)
    st = (_expand_stage(ws, which, prompt, rows, endpoint) if stage == "expand"
          else _make_stage(ws, stage, which, prompt))
    return st.run(ws, rows, dry_run=True, endpoint=endpoint, progress=False)


def try_prompt(ws: Workspace, stage: str, which: str, text: str, rows: list, *, endpoint=None,
               budget_usd: float | None = None) -> pd.DataFrame:
    """Run the edited prompt on `rows` through the seam (cache, budget) and put each row's output next to the
    current version's. Expansion records its proposals with apply=False (no node added); the other stages
    record nothing. Columns: row, edited, current, edited_parsed, current_parsed."""
    prompt = _edited(ws, stage, which, text)
    current = stage_prompts(ws, stage)[which]
    got: dict[str, dict] = {}

    def keep(tag):
        def on(oc):
            got.setdefault(row_label(oc.row), {})[tag] = (
                oc.record.raw_text if oc.record is not None else None,
                oc.error if oc.error else _show(oc.value))
        return on

    if stage == "expand":
        st = _expand_stage(ws, which, prompt, rows, endpoint)
        report = st.run(ws, rows, endpoint=endpoint, on_result=keep("edited"), budget_usd=budget_usd,
                        progress=False)
        cur = _expand_stage(ws, which, current, rows, endpoint)
    else:
        st = _make_stage(ws, stage, which, prompt)
        report = st.run(ws, rows, endpoint=endpoint, on_result=keep("edited"), budget_usd=budget_usd,
                        progress=False)
        cur = _make_stage(ws, stage, which, current)
    # The current version's replies for the same rows: read from the cache, nothing called or recorded.
    for r, raw in zip(rows, _cached_replies(ws, cur, rows, endpoint)):
        parsed = None if raw is None else cur.parse_or_reason(raw, r)
        got.setdefault(row_label(r), {})["current"] = (
            raw, None if parsed is None else (parsed[1] or _show(parsed[0])))
    out = []
    for r in rows:
        lab = row_label(r)
        e, c = got.get(lab, {}).get("edited", (None, None)), got.get(lab, {}).get("current", (None, None))
        out.append({"row": lab, "edited": e[0], "current": c[0], "edited_parsed": e[1], "current_parsed": c[1]})
    df = pd.DataFrame(out, columns=["row", "edited", "current", "edited_parsed", "current_parsed"])
    df.attrs["report"] = report
    return df


def _cached_replies(ws: Workspace, stage, rows: list, endpoint=None) -> list[str | None]:
    """The stored raw reply for each row under `stage`'s prompt (None: never asked), keyed as the seam keys."""
    import hashlib


    ep = endpoint or stage.endpoint
    ep = ep if isinstance(ep, Endpoint) else resolve_endpoint(ws.config, ep or "default")
    keys = [hashlib.sha256(request_json(ep.model, stage.render(r), dict(stage.params)).encode()).hexdigest()
            for r in rows]
    found = CallCache(ws.store).get_many(keys)
    return [found[k].raw_text if k in found and found[k].ok else None for k in keys]


def _show(value) -> str | None:
    if value is None:
        return None
    names = getattr(value, "names", None)
    if names is not None:
        return "\n".join(names)
    return str(value)


def save_copy(ws: Workspace, name: str, text: str) -> Path:
    """Save `text` as the workspace's copy of prompt `name` (WORKSPACE/prompts/<name>; the loader prefers it)."""
    PromptTemplate.from_text(text, path=name)      # refuse a template that does not parse
    if Path(name).name != name or not name.endswith(".j2"):
        raise WorkbenchError(f"prompt name {name!r}: give a bare file name ending in .j2 (e.g. expand_child_expand.j2)")
    folder = Path(ws.prompts_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    tmp = path.with_suffix(".j2.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path
