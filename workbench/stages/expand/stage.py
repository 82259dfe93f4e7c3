"""Level-by-level taxonomy expansion (ARCHITECTURE.md, "Expansion"; the paper's three prompt shapes).

One LLM call per parent: the first level is *supplemented* (the prompt lists the existing
first-level categories); a parent with children is *supplemented* (the prompt lists them); a
parent with none is *expanded*. Replies are parsed as a JSON list of names, with a tolerant
line-based fallback; every dropped line is kept with its reason (`expand_proposals`).
New names become `proposed` nodes with provenance (stage run, prompt file and hash, model).

Resuming: a parent that already has an applied, parsed result for the same prompt hash and
model is skipped; one whose reply was stored but not yet applied (a kill in between) renders
the same prompt again and is served from the cache, so no answered parent is called twice.
The result row and the nodes are written in one transaction.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.core.clock import utcnow
from workbench.core.errors import ParseFailure, WorkbenchError
from workbench.core.workspace import Workspace
from workbench.llm.client import Endpoint, resolve_endpoint
from workbench.llm.prompts import PromptTemplate
from workbench.stages.base import LLMStage, Outcome, RunReport, StageRun
from workbench.taxonomy.model import Provenance, Taxonomy
from workbench.taxonomy.names import SEP, NameProblem, check_name, name_key, replace_lookalikes

STAGE = "expand"
TEMPLATES = ("level1_supplement", "child_supplement", "child_expand")
MAX_WORDS = 12   # a "name" longer than this is prose, not a task name


# -- rows ---------------------------------------------------------------------------------------
@dataclass
class ExpandRow:
    parent_id: str | None           # None: the first level
    parent_name: str | None
    parent_path: str | None
    level: int                      # the level of the nodes this call proposes
    existing: list[str]             # live children's names (what the prompt shows)
    taken: dict[str, str]           # name_key -> status of every child, rejected ones included
    template: str                   # one of TEMPLATES, or 'custom'


def plan(ws: Workspace, *, level: int | None = None, nodes: list[str] | None = None) -> list[ExpandRow]:
    """The parents to expand: every accepted node of level N-1 (`level`=N), or the given nodes."""
    if (level is None) == (not nodes):
        raise WorkbenchError("give either a level (--level N) or node ids (--node ID), not both or neither")
    tax = Taxonomy.of(ws)
    all_nodes = tax.nodes(None)
    kids: dict[str | None, list] = {}
    for n in all_nodes:
        kids.setdefault(n.parent_id, []).append(n)
    for v in kids.values():
        v.sort(key=lambda n: (n.position, n.name))

    def row_for(pid, pname, ppath, lvl) -> ExpandRow:
        children = kids.get(pid, [])
        existing = [c.name for c in children if c.status != "rejected"]
        template = "level1_supplement" if pid is None else ("child_supplement" if existing else "child_expand")
        taken = {name_key(c.name): c.status for c in children}
        return ExpandRow(pid, pname, ppath, lvl, existing, taken, template)

    if level is not None:
        if level < 1:
            raise WorkbenchError(f"--level must be 1 or more; got {level}")
        if level == 1:
            return [row_for(None, None, None, 1)]
        idx = tax.index(("accepted",))
        parents = [idx.nodes[i] for i in idx.dfs() if idx.nodes[i].level == level - 1]
        if not parents:
            raise WorkbenchError(f"no accepted nodes at level {level - 1} to expand; accept some first "
                                 f"(`workbench taxonomy accept`) or expand level {level - 1}")
        return [row_for(p.id, p.name, idx.paths[p.id], level) for p in parents]
    assert nodes   # no level: the check above requires nodes
    rows = []
    for ref in dict.fromkeys(nodes):
        n = tax.resolve(ref)
        if n.status == "rejected":
            raise WorkbenchError(f"node {n.id} ({tax.path(n.id)!r}) is rejected; accept it before expanding it")
        rows.append(row_for(n.id, n.name, tax.path(n.id), n.level + 1))
    return rows


# -- parsing ------------------------------------------------------------------------------------
@dataclass
class Proposal:
    line: str
    name: str | None = None
    outcome: str = "new"            # new | existing | dropped (then 'added' once written)
    reason: str | None = None
    node_id: str | None = None


@dataclass
class Parsed:
    proposals: list[Proposal] = field(default_factory=list)
    used_json: bool = False

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.proposals if p.outcome == "new" and p.name is not None]   # new: named

    @property
    def dropped(self) -> list[Proposal]:
        return [p for p in self.proposals if p.outcome == "dropped"]


_FENCE = re.compile(r"^\s*```[\w-]*\s*$|^\s*```\s*$", re.MULTILINE)
_BULLET = re.compile(r"^\s*(?:[-*+•·▪‣]|\(?\d{1,3}[.)\]:]|\(?[a-zA-Z][.)]|#+)\s+")
_QUOTES = "\"'`“”‘’«»"


def _json_items(text: str) -> list[Any] | None:
    """The JSON list in a reply (the whole reply, or the first [...] span), or None."""
    body = _FENCE.sub("", text).strip()
    candidates = [body]
    start, end = body.find("["), body.rfind("]")
    if 0 <= start < end:
        candidates.append(body[start:end + 1])
    for c in candidates:
        try:
            data = json.loads(c)
        except ValueError:
            continue
        if isinstance(data, dict):  # {"names": [...]} and friends
            lists = [v for v in data.values() if isinstance(v, list)]
            data = lists[0] if len(lists) == 1 else None
        if isinstance(data, list):
            return data
    return None


def _clean_line(line: str) -> str:
    s = line.strip()
    prev = None
    while s != prev:
        prev = s
        s = _BULLET.sub("", s).strip()
        s = s.strip(_QUOTES).rstrip(",;").strip().strip(_QUOTES).strip()
        if s.startswith("**") and s.endswith("**"):
            s = s[2:-2].strip()
    return s


def parse_reply(raw: str, row: ExpandRow) -> Parsed:
    """Names from a reply: a JSON list, else one per line. Every line that is not used gets a reason.
    Raises ParseFailure when nothing usable is left."""
    if not raw or not raw.strip():
        raise ParseFailure("empty reply")
    out = Parsed()
    items = _json_items(raw)
    if items is not None:
        out.used_json = True
        lines = []
        for it in items:
            if isinstance(it, dict):
                it = next((it[k] for k in ("name", "task", "category", "path") if isinstance(it.get(k), str)), None)
                if it is None:
                    out.proposals.append(Proposal(json.dumps(it), outcome="dropped", reason="JSON item has no name"))
                    continue
            if not isinstance(it, str):
                out.proposals.append(Proposal(json.dumps(it), outcome="dropped", reason="JSON item is not a string"))
                continue
            lines.append(it)
    else:
        lines = list(raw.splitlines())
    parent_key = name_key(row.parent_name) if row.parent_name else None
    parent_keys = [name_key(p) for p in row.parent_path.split(SEP)] if row.parent_path else []
    seen: set[str] = set()
    for line in lines:
        if not line.strip():
            continue
        if _FENCE.fullmatch(line):
            out.proposals.append(Proposal(line, outcome="dropped", reason="code fence"))
            continue
        p = Proposal(line)
        out.proposals.append(p)
        text, _ = replace_lookalikes(_clean_line(line))
        if not text:
            p.outcome, p.reason = "dropped", "nothing left after removing bullets, numbering and quotes"
            continue
        if SEP in text:
            parts = [x.strip() for x in text.split(SEP)]
            keys = [name_key(x) for x in parts]
            if row.parent_path is None:
                p.outcome, p.reason = "dropped", f"a path ({text!r}) where a first-level name was asked for"
                continue
            if keys[:len(parent_keys)] == parent_keys and len(parts) == len(parent_keys) + 1:
                text = parts[-1]
            elif len(parts) >= 2 and keys[-2] == parent_key:
                text = parts[-1]
            else:
                p.outcome, p.reason = "dropped", f"path {text!r} is not one level below {row.parent_path!r}"
                continue
        if text.endswith(":") or len(text.split()) > MAX_WORDS:
            p.outcome, p.reason = "dropped", "prose, not a task name"
            continue
        try:
            name = check_name(text)
        except NameProblem as exc:
            p.outcome, p.reason = "dropped", f"bad name: {exc}"
            continue
        p.name = name
        k = name_key(name)
        if parent_key is not None and k == parent_key:
            p.outcome, p.reason = "dropped", "repeats the parent's name"
        elif k in row.taken:
            st = row.taken[k]
            p.outcome, p.reason = "existing", ("already a child (rejected before)" if st == "rejected"
                                               else "already a child")
        elif k in seen:
            p.outcome, p.reason = "dropped", "repeated in this reply"
        else:
            seen.add(k)
    if not any(p.name for p in out.proposals):
        raise ParseFailure(f"no task names found in the reply ({len(out.proposals)} line(s), all dropped: "
                          f"{out.proposals[0].reason if out.proposals else 'nothing'})")
    return out


# -- the stage ----------------------------------------------------------------------------------
class ExpandStage(LLMStage):
    """One call per parent (`plan`); `record` writes the result row and the proposed nodes in one transaction."""

    name = STAGE
    expected_output_tokens = 200

    def __init__(self, ws: Workspace, prompts: dict[str, PromptTemplate], params: dict, *, level: int | None = None,
                 nodes: list[str] | None = None, apply: bool = True, again: bool = False,
                 endpoint: str | Endpoint = "default"):
        self.prompts, self.params = prompts, params
        self.level, self.nodes, self.apply, self.again = level, nodes, apply, again
        self.endpoint = endpoint
        self.parents = 0
        self.skipped = 0
        self.skip_reasons: dict[str, int] = {}   # why parents were skipped -> how many
        self.gone: list[str] = []      # parents deleted, rejected, renamed or moved while the stage ran

    def run_params(self) -> dict:
        return {"level": self.level, "nodes": self.nodes, "apply": self.apply, "again": self.again,
                "prompts": {k: [p.display_path, p.hash] for k, p in self.prompts.items()}}

    def rows(self, ws: Workspace) -> list[ExpandRow]:
        rows = plan(ws, level=self.level, nodes=self.nodes)
        self.parents = len(rows)
        if not self.again and self.apply:
            model = self.endpoint.model if isinstance(self.endpoint, Endpoint) else None
            done = _done_parents(ws, self.prompts, model)
            for r in rows:
                if r.parent_id in done:
                    reason = done[r.parent_id]
                    now = self.prompt_for(r).path.name
                    if now not in reason:     # the parent's template kind changed since (it has children now)
                        reason += f"; it would now get {now} (`--again` asks it)"
                    self.skip_reasons[reason] = self.skip_reasons.get(reason, 0) + 1
            rows = [r for r in rows if r.parent_id not in done]
        self.skipped = self.parents - len(rows)
        return rows

    def prompt_for(self, row: ExpandRow) -> PromptTemplate:
        return self.prompts.get("custom") or self.prompts[row.template]

    def context(self, row: ExpandRow) -> dict:
        return {"parent": row.parent_name, "parent_path": row.parent_path, "existing": row.existing,
                "level": row.level, "sep": SEP, "template": row.template}

    def parse(self, raw: str, row: ExpandRow):
        return parse_reply(raw, row)

    def previous_key(self, ws: Workspace, row: ExpandRow) -> str | None:
        return ws.store.scalar("SELECT call_key FROM expand_results WHERE parent_id IS ? ORDER BY id DESC LIMIT 1",
                               (row.parent_id,))

    def changed_inputs(self, ws: Workspace, row: ExpandRow) -> str:
        return "the parent's path or children changed"

    def record(self, ws: Workspace, oc: Outcome, run: StageRun) -> None:
        assert oc.record is not None   # the base records answered calls only
        gone = _write_result(ws, oc, oc.record.model, run, self.apply)
        if gone:
            self.gone.append(gone)
            run.summary["parents_gone"] = self.gone


def load_prompts(ws: Workspace, prompt: str | Path | None = None) -> dict[str, PromptTemplate]:
    """`prompt` (one file for every parent) or the three configured/default prompt files."""
    if prompt is not None:
        return {"custom": PromptTemplate.load(prompt, workspace_root=ws.root)}
    cfg = ws.config.expand
    if cfg.prompt is not None:
        return {"custom": PromptTemplate.load(cfg.prompt, workspace_root=ws.root)}
    return {t: PromptTemplate.load(getattr(cfg, f"prompt_{t}") or f"expand_{t}.j2", workspace_root=ws.root)
            for t in TEMPLATES}


def preview(ws: Workspace, node: str | None = None, *, prompt: str | Path | None = None) -> list[dict]:
    """The messages one parent's call would send (node None: the first-level supplement)."""
    row = plan(ws, level=1)[0] if node is None else plan(ws, nodes=[node])[0]
    return ExpandStage(ws, load_prompts(ws, prompt), {}).render(row)


@dataclass
class ExpandReport:
    run: RunReport
    parents: int = 0
    skipped: int = 0                # parents already expanded with the current version of their template
    skip_reasons: dict[str, int] = field(default_factory=dict)   # each skip's real reason -> how many
    prompt_hashes: dict[str, str] = field(default_factory=dict)
    gone: list[str] = field(default_factory=list)   # parents deleted or rejected while the stage ran

    def _count(self, what: str) -> int:
        return self.run.counts.get(what, 0) if self.run else 0

    added = property(lambda self: self._count("added"))
    existing = property(lambda self: self._count("existing"))
    dropped = property(lambda self: self._count("dropped"))
    parse_errors = property(lambda self: self._count("unparseable"))
    parents_gone = property(lambda self: self._count("parents_gone"))

    def summary(self) -> str:
        why = "; ".join(f"{n}: {r}" for r, n in self.skip_reasons.items())
        head = f"expand: {self.parents} parent(s), {self.skipped} skipped" + (f" ({why})" if why else "")
        if self.run.dry_run:
            return head + "\n" + self.run.summary()
        gone = (f", {self.parents_gone} parent(s) skipped because they were deleted or rejected meanwhile"
                if self.parents_gone else "")
        if self._count("parents_renamed"):
            gone += (f", {self._count('parents_renamed')} parent(s) not applied because they were renamed or moved "
                     "after their call was planned (asked under the old path; run expand again to ask under the new)")
        return (head + f"; {self.added} new proposed node(s), {self.existing} already present, "
                f"{self.dropped} line(s) dropped, {self.parse_errors} unparseable repl(ies){gone}\n"
                + self.run.summary())


def _done_parents(ws: Workspace, prompts: dict[str, PromptTemplate], model: str | None) -> dict[str | None, str]:
    """parent -> why it is done: it has an applied, parsed result from `model` whose template (the kind the result
    row records: level1_supplement, child_supplement, child_expand or custom) is still at the version that result
    used. A version of one kind never counts for a parent expanded with another kind (a promoted supplement prompt
    does not mark parents expanded with the expand prompt as done, nor the other way round)."""
    rows = ws.store.query("SELECT parent_id, template, prompt_hash FROM expand_results WHERE applied=1 "
                          "AND status='ok' AND model=?", (model,))
    done: dict[str | None, str] = {}
    for pid, template, h in rows:
        tpl = prompts.get("custom") or prompts.get(template)
        if tpl is not None and tpl.hash == h:
            done[pid] = f"already expanded with {tpl.path.name} (this version, {h[:8]}) and model {model}"
    return done


def expand(ws: Workspace, *, level: int | None = None, nodes: list[str] | None = None, prompt: str | Path | None = None,
           endpoint: str | Endpoint | None = None, base_url: str | None = None, model: str | None = None,
           dry_run: bool = False, budget_usd: float | None = None, apply: bool = True, again: bool = False,
           progress: bool | None = None, refresh_failed: bool = False, on_result=None) -> ExpandReport:
    """Propose children for every accepted node of level N-1 (`level`=N) or for `nodes`.

    apply=False records the proposals (for prompt A/B comparison) without adding nodes.
    again=True asks again even for parents already expanded with this prompt and model.
    refresh_failed=True calls again for parents whose stored reply could not be parsed.
    """
    cfg = ws.config.expand
    if isinstance(endpoint, Endpoint):
        ep = endpoint
    else:
        ep = resolve_endpoint(ws.config, endpoint or cfg.endpoint, base_url=base_url, model=model)
    prompts = load_prompts(ws, prompt)
    params = {"temperature": cfg.temperature}
    if cfg.max_tokens:
        params["max_tokens"] = cfg.max_tokens
    stage = ExpandStage(ws, prompts, params, level=level, nodes=nodes, apply=apply, again=again, endpoint=ep)
    rows = stage.rows(ws)
    run = stage.run(ws, rows, dry_run=dry_run, budget_usd=budget_usd, progress=progress,
                    refresh_failed=refresh_failed, on_result=on_result)
    return ExpandReport(run=run, parents=stage.parents, skipped=stage.skipped, gone=stage.gone,
                        skip_reasons=stage.skip_reasons,
                        prompt_hashes={k: p.hash for k, p in prompts.items()})


def _write_result(ws: Workspace, oc: Outcome, model: str, run: StageRun, apply: bool) -> str | None:
    """Runs inside the base's write transaction: the result row and its nodes land together.
    Returns why the parent was skipped when it is gone (deleted or rejected meanwhile) or was renamed or moved
    since the plan (its call asked under the old path)."""
    row: ExpandRow = oc.row
    parsed = oc.value if oc.error is None else None
    prov = Provenance(stage_run_id=run.id, prompt_file=oc.prompt.display_path, prompt_hash=oc.prompt.hash,
                      model=model)
    tax = Taxonomy.of(ws)
    conn = ws.store.conn
    if row.parent_id is not None:
        # The tree may have changed since the plan (a curator deleted or rejected this parent meanwhile):
        # skip it with a reason; the rest of the stage goes on.
        parent = conn.execute("SELECT status FROM nodes WHERE id=?", (row.parent_id,)).fetchone()
        if parent is None or parent["status"] == "rejected":
            run.add("parents_gone")
            return f"{row.parent_path} ({'deleted' if parent is None else 'rejected'} while expanding)"
        # Renamed or moved since the plan: the call asked under the old path, so its names are not applied;
        # with no applied result, the next run asks again under the new one.
        now = tax.path(row.parent_id)
        if now != row.parent_path:
            run.add("parents_renamed")
            return (f"{row.parent_path} (renamed or moved to {now!r} while expanding: asked under its old path; "
                    "run expand again to ask under the new one)")
    # A reply stored but never applied (a crash) or re-parsed: replace its earlier result.
    conn.execute("DELETE FROM expand_results WHERE call_key=? AND applied=? AND coalesce(parent_id,'')=?",
                 (oc.key, int(apply), row.parent_id or ""))
    if parsed is None:
        conn.execute(
            "INSERT INTO expand_results(parent_id, call_key, stage_run_id, template, prompt_file, prompt_hash,"
            " model, applied, status, error, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (row.parent_id, oc.key, run.id, _template_name(oc), oc.prompt.display_path, oc.prompt.hash, model,
             int(apply), "parse_error", oc.error, utcnow()))
        run.add("unparseable")
        return None
    # Re-check siblings inside the transaction: the tree may have changed since the plan.
    taken = {r["name_key"]: r["id"] for r in conn.execute(
        "SELECT id, name_key FROM nodes WHERE coalesce(parent_id,'')=?", (row.parent_id or "",))}
    for p in parsed.proposals:
        if p.name is None:
            continue
        k = name_key(p.name)
        if p.outcome in ("new", "existing") and k in taken:
            if p.outcome == "new":
                p.outcome, p.reason = "existing", "already a child"
            p.node_id = taken[k]
        elif p.outcome == "new" and apply:
            node = tax.add(p.name, row.parent_id, origin="generated", status="proposed", provenance=prov)
            p.outcome, p.node_id = "added", node.id
            taken[k] = node.id
    n_added = sum(p.outcome in ("added", "new") for p in parsed.proposals)
    n_dropped = sum(p.outcome == "dropped" for p in parsed.proposals)
    cur = conn.execute(
        "INSERT INTO expand_results(parent_id, call_key, stage_run_id, template, prompt_file, prompt_hash, model,"
        " applied, status, n_proposed, n_added, n_dropped, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (row.parent_id, oc.key, run.id, _template_name(oc), oc.prompt.display_path, oc.prompt.hash, model,
         int(apply), "ok", len(parsed.proposals), n_added, n_dropped, utcnow()))
    conn.executemany(
        "INSERT INTO expand_proposals(result_id, position, line, name, outcome, reason, node_id)"
        " VALUES (?,?,?,?,?,?,?)",
        [(cur.lastrowid, i, p.line, p.name, p.outcome, p.reason, p.node_id)
         for i, p in enumerate(parsed.proposals)])
    run.add("added", n_added)
    run.add("existing", sum(p.outcome == "existing" for p in parsed.proposals))
    run.add("dropped", n_dropped)
    return None


def _template_name(oc: Outcome) -> str:
    return "custom" if oc.prompt.path.name not in {f"expand_{t}.j2" for t in TEMPLATES} else oc.row.template


# -- review and comparison ------------------------------------------------------------------------
def proposals(ws: Workspace, *, stage_run_id: int | None = None, parent_id: str | None = None,
              prompt_hash: str | None = None, outcomes: tuple[str, ...] | None = None):
    """Proposals as a pandas DataFrame (one row per reply line), newest results first."""
    import pandas as pd

    conds, params = [], []
    for col, val in (("r.stage_run_id", stage_run_id), ("r.parent_id", parent_id), ("r.prompt_hash", prompt_hash)):
        if val is not None:
            conds.append(f"{col}=?")
            params.append(val)
    if outcomes:
        conds.append(f"p.outcome IN ({','.join('?' * len(outcomes))})")
        params.extend(outcomes)
    where = (" WHERE " + " AND ".join(conds)) if conds else ""
    rows = ws.store.query(
        "SELECT r.id AS result_id, r.parent_id, r.prompt_hash, r.prompt_file, r.model, r.applied, r.stage_run_id,"
        " p.position, p.line, p.name, p.outcome, p.reason, p.node_id, n.status AS node_status"
        " FROM expand_proposals p JOIN expand_results r ON r.id = p.result_id"
        f" LEFT JOIN nodes n ON n.id = p.node_id{where} ORDER BY r.id DESC, p.position", params)
    return pd.DataFrame([dict(r) for r in rows], columns=[
        "result_id", "parent_id", "prompt_hash", "prompt_file", "model", "applied", "stage_run_id", "position",
        "line", "name", "outcome", "reason", "node_id", "node_status"])


def compare_prompts(ws: Workspace, prompt_a: str | Path, prompt_b: str | Path, *, nodes: list[str] | None = None,
                    level: int | None = None, endpoint: str | Endpoint | None = None, base_url: str | None = None,
                    model: str | None = None, progress: bool | None = None):
    """Prompt A/B: both prompts on the same parents (proposals recorded, no nodes added); a side-by-side table."""
    import pandas as pd

    reports = {}
    for label, prompt in (("a", prompt_a), ("b", prompt_b)):
        reports[label] = expand(ws, level=level, nodes=nodes, prompt=prompt, endpoint=endpoint, base_url=base_url,
                                model=model, apply=False, progress=progress)
    ha, hb = reports["a"].prompt_hashes["custom"], reports["b"].prompt_hashes["custom"]
    rows = plan(ws, level=level, nodes=nodes)
    out = []
    for r in rows:
        names = {}
        for label, h in (("a", ha), ("b", hb)):
            df = proposals(ws, prompt_hash=h, parent_id=r.parent_id)
            if r.parent_id is None:
                df = df[df.parent_id.isna()]
            latest = df[df.result_id == df.result_id.max()] if len(df) else df
            names[label] = [n for n, o in zip(latest.name, latest.outcome) if o in ("new", "existing", "added")]
        ka = {name_key(n) for n in names["a"]}
        kb = {name_key(n) for n in names["b"]}
        out.append({"parent": r.parent_path or "(first level)", "a": names["a"], "b": names["b"],
                    "only_a": [n for n in names["a"] if name_key(n) not in kb],
                    "only_b": [n for n in names["b"] if name_key(n) not in ka],
                    "both": [n for n in names["a"] if name_key(n) in kb]})
    table = pd.DataFrame(out)
    table.attrs.update(prompt_a=str(prompt_a), prompt_b=str(prompt_b), hash_a=ha, hash_b=hb)
    return table
