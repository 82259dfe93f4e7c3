"""`workbench preflight`: the checks a curator needs before paying for a large run, each finding naming the
nodes and the fix.

The taxonomy: pending proposals (status 'proposed'), near-duplicate siblings (analysis/duplicates.py), names
that repeat their parent or are placeholders ("subtask 4335", "other", "misc"), task texts over CLIP's text
context (as the last `workbench embed` recorded them), single-child chains and empty first-level categories.
The run: unknown prices, endpoints that do not answer (doctor's probe; skipped `offline`), referees that all
share one model family, and the plan's cost against `[limits] budget_usd`. A failed check makes the command
exit 1; `ok` checks are listed too, so the report says what was checked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from workbench.analysis.duplicates import suggest_merges
from workbench.analysis.plan import Plan, _dur, make_plan
from workbench.apps.doctor import check_endpoints
from workbench.core.errors import WorkbenchError
from workbench.core.workspace import Workspace
from workbench.llm.client import resolve_endpoint
from workbench.llm.cost import is_local_endpoint
from workbench.stages.embed import stage as E
from workbench.taxonomy.model import LIVE, Taxonomy
from workbench.taxonomy.names import name_key

SHOWN = 10          # nodes named per finding (the count says how many there are)
PLACEHOLDER = re.compile(
    r"^(?:(?:sub)?(?:task|category|node|item|type|class|leaf|topic|group)(?:\s*type)?\s*#?\s*\d+|\d+|"
    r"others?|misc\.?|miscellaneous|general|unknown|unnamed|untitled|tbd|todo|n/?a|none|placeholder|"
    r"new (?:node|task|category)(?:\s*\d+)?|etc\.?)$", re.I)


@dataclass
class Finding:
    check: str
    ok: bool
    message: str
    nodes: list[str] = field(default_factory=list)   # paths (or names) of what the finding is about
    fix: str = ""

    def lines(self) -> list[str]:
        out = [f"{'ok  ' if self.ok else 'FAIL'} {self.check}: {self.message}"]
        if self.nodes:
            more = f" (and {len(self.nodes) - SHOWN:,} more)" if len(self.nodes) > SHOWN else ""
            out.append("       " + "; ".join(self.nodes[:SHOWN]) + more)
        if self.fix and not self.ok:
            out.append(f"       fix: {self.fix}")
        return out


@dataclass
class Preflight:
    findings: list[Finding]
    plan: Plan | None = None

    @property
    def failed(self) -> list[Finding]:
        return [f for f in self.findings if not f.ok]

    def text(self) -> str:
        lines = [line for f in self.findings for line in f.lines()]
        n = len(self.failed)
        lines.append(f"preflight: {len(self.findings) - n} ok, {n} failed"
                     + ("" if n else ": ready for the run"))
        return "\n".join(lines)


def preflight(ws: Workspace, *, images: int | None = None, offline: bool = False, embed: bool = True) -> Preflight:
    """Every check, in the order a curator fixes them: the taxonomy first, then endpoints, prices and budget.
    `embed`: near-duplicates by sentence embedding as well as by spelling."""
    idx = Taxonomy.of(ws).index(LIVE)   # proposals too: they are what a curator decides before the run
    out = [_pending(ws, idx), _duplicates(ws, embed), _names(idx), _clip_overflow(ws, idx), _chains(idx),
           _empty_roots(idx), _prices(ws)]
    if offline:
        out.append(Finding("endpoints", True, "not probed (--offline)"))
    else:
        out.append(_endpoints(ws))
    out.append(_referee_families(ws))
    plan = make_plan(ws, images=images)
    out.append(_budget(ws, plan))
    return Preflight(out, plan)


def _pending(ws: Workspace, idx) -> Finding:
    rows = [n for n in idx.nodes.values() if n.status == "proposed"]
    paths = [idx.paths[n.id] for n in rows]
    if not rows:
        return Finding("pending proposals", True, "no proposed task types wait for a decision")
    return Finding("pending proposals", False, f"{len(rows):,} proposed task type(s) wait for a decision", paths,
                   "accept or reject them (`workbench taxonomy accept|reject WS ID...` or the Review page)")


def _duplicates(ws: Workspace, embed: bool) -> Finding:
    try:
        found = suggest_merges(ws, scope="siblings", embed=embed)
        how = "by spelling and by meaning"
    except WorkbenchError:     # no sentence-embedding model here: spelling only
        found = suggest_merges(ws, scope="siblings", embed=False)
        how = "by spelling (no sentence-embedding model)"
    if not found:
        return Finding("near-duplicate siblings", True, f"none found ({how})")
    pairs = [f"{s.a_path!r} ~ {s.b_path!r} ({s.kind} {s.score:.2f})" for s in found]
    return Finding("near-duplicate siblings", False, f"{len(found):,} pair(s) of siblings look alike ({how})", pairs,
                   "merge each pair (`workbench taxonomy merge WS VICTIM SURVIVOR`, or the Review page) or rename "
                   "one so that they differ")


def _names(idx) -> Finding:
    bad = []
    for n in idx.nodes.values():
        parent = idx.nodes.get(n.parent_id) if n.parent_id else None
        if PLACEHOLDER.match(n.name.strip()):
            bad.append(f"{idx.paths[n.id]!r} is a placeholder")
        elif parent is not None and name_key(n.name) == name_key(parent.name):
            bad.append(f"{idx.paths[n.id]!r} repeats its parent")
    if not bad:
        return Finding("names", True, "no placeholder names and none repeating its parent")
    return Finding("names", False, f"{len(bad):,} name(s) say nothing a VLM can use", bad,
                   "rename each to the skill it stands for (`workbench taxonomy rename WS ID NEW`), or delete it")


def _clip_overflow(ws: Workspace, idx) -> Finding:
    try:
        key = E.text_set_key(ws)
    except WorkbenchError as exc:
        return Finding("CLIP text length", True, f"not checked: {exc}")
    rows = ws.store.query("SELECT item_id FROM embedding_rows WHERE set_key=? AND truncated=1", (key,))
    cut = [idx.paths[r[0]] for r in rows if r[0] in idx.nodes]
    embedded = int(ws.store.scalar("SELECT count(*) FROM embedding_rows WHERE set_key=?", (key,)) or 0)
    unchecked = max(0, sum(1 for n in idx.nodes if idx.is_leaf(n)) - embedded)
    tail = f"; {unchecked:,} task type(s) not embedded yet are unchecked (`workbench embed`)" if unchecked else ""
    if not cut:
        return Finding("CLIP text length", True, f"no task text is cut by CLIP's text context{tail}")
    return Finding("CLIP text length", False, f"{len(cut):,} task text(s) are longer than CLIP's text context and "
                   f"are cut before matching{tail}", cut,
                   "shorten the names (or `[clip] template`) so that the path fits, then `workbench embed`")


def _chains(idx) -> Finding:
    bad = [f"{idx.paths[n.id]!r} has only {idx.paths[idx.children[n.id][0]]!r}"
           for n in idx.nodes.values() if len(idx.children.get(n.id, [])) == 1]
    if not bad:
        return Finding("single-child chains", True, "every parent has two or more children")
    return Finding("single-child chains", False, f"{len(bad):,} parent(s) have exactly one child (the level says "
                   "nothing)", bad, "merge the child into its parent, add its siblings, or expand the parent again")


def _empty_roots(idx) -> Finding:
    roots = idx.roots()
    if not any(idx.children.get(r.id) for r in roots):
        return Finding("empty first-level categories", True, "the taxonomy is one level deep: nothing to compare")
    bad = [r.name for r in roots if not idx.children.get(r.id)]
    if not bad:
        return Finding("empty first-level categories", True, "every first-level category has task types")
    return Finding("empty first-level categories", False, f"{len(bad):,} first-level categor(ies) have no task "
                   "types while the others do", bad, "expand them (`workbench expand WS --node ID`) or delete them")


def _stage_endpoints(ws: Workspace) -> dict[str, str]:
    cfg = ws.config
    out = {"expand": cfg.expand.endpoint, "filter": cfg.filter.endpoint, "qa": cfg.qa.endpoint}
    out.update({f"referee:{r.name}": r.endpoint for r in cfg.referees})
    return out


def _prices(ws: Workspace) -> Finding:
    bad = []
    for stage, name in _stage_endpoints(ws).items():
        ep = resolve_endpoint(ws.config, name)
        if ep.price is None and not is_local_endpoint(ep.config, ep.base_url):
            bad.append(f"{stage}: [endpoints.{ep.name}] {ep.model}")
    if not bad:
        return Finding("prices", True, "every stage's model has a price (or runs locally)")
    return Finding("prices", False, f"{len(bad):,} stage(s) use a model with no known price: their cost is unknown",
                   bad, "set price_input_per_mtok and price_output_per_mtok on the endpoint (or in [prices])")


def _endpoints(ws: Workspace) -> Finding:
    used = set(_stage_endpoints(ws).values())
    checks = [c for c in check_endpoints(ws.config) if c.name in used or c.name.split(" ")[0] in used]
    bad = [f"{c.name}: {c.detail}" for c in checks if not c.ok]
    if not bad:
        return Finding("endpoints", True, f"{len(checks)} endpoint(s) the stages use answer")
    return Finding("endpoints", False, f"{len(bad):,} endpoint(s) the stages use do not answer", bad,
                   "start the server or fix base_url / the key variable (`workbench doctor WS` shows each), or "
                   "run with --offline to skip this check")


def model_family(model: str) -> str:
    """'gpt' for gpt-4o-mini, 'internvl' for OpenGVLab/InternVL2-26B, 'qwen' for Qwen2-VL-7B-Instruct."""
    base = model.rsplit("/", 1)[-1].lower()
    m = re.match(r"[a-z]+", base)
    return m.group(0) if m else base


def _referee_families(ws: Workspace) -> Finding:
    refs = ws.config.referees
    if len(refs) < 2:
        return Finding("referee families", True, f"{len(refs)} referee(s): nothing to compare")
    fam = {r.name: model_family(resolve_endpoint(ws.config, r.endpoint).model) for r in refs}
    if len(set(fam.values())) > 1:
        return Finding("referee families", True, f"{len(set(fam.values()))} model families among {len(refs)} "
                       "referees")
    return Finding("referee families", False, f"all {len(refs)} referees are {next(iter(fam.values()))!r} models: "
                   "their errors agree, so k-of-N filters less than it seems", [f"{k}: {v}" for k, v in fam.items()],
                   "give at least one referee a model of another family ([[referees]] endpoint)")


def _budget(ws: Workspace, plan: Plan) -> Finding:
    budget = ws.config.limits.budget_usd
    cost, batch, wall = plan.total("cost_usd"), plan.total("batch_cost_usd"), plan.total("wall_s")
    hours = f"LLM wall time ~{_dur(wall.value)}" if wall else "wall time unknown"
    if cost is None:
        ok = budget is None
        return Finding("budget", ok, f"the plan's cost is unknown (a stage's price is unknown); {hours}", [],
                       "set the missing prices (see 'prices') so that the cost can be held against "
                       "[limits] budget_usd")
    figure = f"the plan costs ${cost.value:,.2f} (up to ${cost.high:,.2f}; batch ${batch.value:,.2f}), {hours}" \
        if batch else f"the plan costs ${cost.value:,.2f} (up to ${cost.high:,.2f}), {hours}"
    if budget is None:
        return Finding("budget", True, f"{figure}; no [limits] budget_usd set")
    if cost.high <= budget:
        return Finding("budget", True, f"{figure}, within [limits] budget_usd ${budget:,.2f}")
    return Finding("budget", False, f"{figure}: over [limits] budget_usd ${budget:,.2f}",
                   [f"{s.stage}: ${s.cost_usd.value:,.2f}" for s in plan.stages if s.cost_usd and s.cost_usd.value],
                   "raise [limits] budget_usd, plan fewer images (--images N), run with --batch, or cut the "
                   "taxonomy")
