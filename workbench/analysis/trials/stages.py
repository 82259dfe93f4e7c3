"""What a trial needs of each prompt the pipeline uses: the template in use now, the items a test set may hold,
the stage's own rows rebuilt for chosen items, the real stage with a given template and `record` writing nothing,
and each parsed value as a person reads it.

Stage keys: `expand:level1_supplement` (the first level), `expand:child_supplement` (parents with children),
`expand:child_expand` (parents without), `filter`, `qa`, `referee:<name>` (or `referee`: the first
configured), `audit_label`, `coverage_confirm` (items given by hand as `reference path|task path`) and
`discover_name`. A trial's stage is the real stage class (render, call through the seam, parse), renamed
`trial:<key>` (its calls and run record say so, and it takes no stage lock) with `record` doing nothing, so the
workspace's nodes, decisions, samples and votes never change.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, is_dataclass
from typing import Any

from workbench.core.errors import WorkbenchError
from workbench.core.workspace import Workspace
from workbench.llm.prompts import PromptTemplate
from workbench.stages.audit_label.stage import PROMPT as AUDIT_PROMPT
from workbench.stages.audit_label.stage import AuditLabelStage, LabelRow
from workbench.stages.base import LLMStage
from workbench.stages.coverage_confirm.stage import PROMPT as CONFIRM_PROMPT
from workbench.stages.coverage_confirm.stage import ConfirmRow, CoverageConfirmStage
from workbench.stages.discover_name.stage import PROMPT as DISCOVER_PROMPT
from workbench.stages.discover_name.stage import Cluster, DiscoverNameStage
from workbench.stages.expand.stage import TEMPLATES, ExpandRow, ExpandStage, load_prompts, plan
from workbench.stages.filter.stage import FilterRow, FilterStage, filter_rows
from workbench.stages.qa.stage import QARow, QAStage, qa_rows
from workbench.stages.referee.stage import RefereeStage, VoteRow
from workbench.stages.vision import task_types_per_image
from workbench.taxonomy.model import Taxonomy
from workbench.taxonomy.names import SEP

ROOT_ITEM = "(first level)"    # the item key of the first level's one expansion call


@dataclass
class Item:
    """One test item resolved against the workspace as it is now."""

    key: str
    label: str                  # as a person reads it: the parent path, the image and its task types, the question
    row: Any                    # the stage's own row
    image_id: str | None = None


def stage_keys(ws: Workspace) -> list[str]:
    """Every stage key a trial may name in this workspace."""
    refs = [f"referee:{r.name}" for r in ws.config.referees]
    return [*(f"expand:{t}" for t in TEMPLATES), "filter", "qa", *refs, "audit_label",
            "coverage_confirm", "discover_name"]


def check_stage(ws: Workspace, stage: str) -> str:
    """The stage key, normalised (`referee` is the first configured referee); a clear error for an unknown one."""
    if stage == "referee" and ws.config.referees:
        return f"referee:{ws.config.referees[0].name}"
    if stage == "expand":
        raise WorkbenchError("expand has three templates: choose expand:level1_supplement (the first level), "
                             "expand:child_supplement (parents with children) or expand:child_expand (without)")
    if stage not in stage_keys(ws):
        hint = " (no [[referees]] in workbench.toml)" if stage.startswith("referee") else ""
        raise WorkbenchError(f"unknown stage {stage!r}{hint}; choose one of {', '.join(stage_keys(ws))}")
    return stage


def _quiet(cls: type) -> type:
    """The stage class with `record` writing nothing and no stage lock: a trial keeps its outputs itself."""

    class TrialStage(cls):  # type: ignore[valid-type, misc]
        def record(self, ws, oc, run) -> None:
            return None

        @property
        def lock_key(self) -> str | None:
            return None

    TrialStage.__name__ = f"Trial{cls.__name__}"
    return TrialStage


def _referee(ws: Workspace, stage: str):
    name = stage.split(":", 1)[1]
    ref = next((r for r in ws.config.referees if r.name == name), None)
    if ref is None:
        raise WorkbenchError(f"no referee {name!r} in workbench.toml; configured: "
                             f"{', '.join(r.name for r in ws.config.referees) or 'none'}")
    return ref


def current_prompt(ws: Workspace, stage: str) -> PromptTemplate:
    """The template the stage uses now (a workspace copy or the configured file wins over the bundled one)."""
    stage = check_stage(ws, stage)
    if stage.startswith("expand"):
        prompts = load_prompts(ws)
        return prompts.get("custom") or prompts[stage.split(":", 1)[1]]
    if stage == "filter":
        return FilterStage(ws).prompt
    if stage == "qa":
        return QAStage(ws).prompt
    if stage.startswith("referee:"):
        return RefereeStage(ws, _referee(ws, stage)).prompt
    name = {"audit_label": AUDIT_PROMPT, "coverage_confirm": CONFIRM_PROMPT, "discover_name": DISCOVER_PROMPT}[stage]
    return PromptTemplate.load(name, workspace_root=ws.root)


def make_stage(ws: Workspace, stage: str, prompt: PromptTemplate) -> LLMStage:
    """The real stage with `prompt`, renamed `trial:<stage>`, recording nothing."""
    st: LLMStage
    if stage.startswith("expand"):
        cfg = ws.config.expand
        params = {"temperature": cfg.temperature, **({"max_tokens": cfg.max_tokens} if cfg.max_tokens else {})}
        st = _quiet(ExpandStage)(ws, {"custom": prompt}, params, apply=False, again=True, endpoint=cfg.endpoint)
    elif stage in ("filter", "qa"):
        st = _quiet(FilterStage if stage == "filter" else QAStage)(ws)
        st.prompt = prompt
    elif stage.startswith("referee:"):
        st = _quiet(RefereeStage)(ws, _referee(ws, stage))
        st.prompt = prompt
    elif stage == "audit_label":
        st = _quiet(AuditLabelStage)(prompt)
    elif stage == "coverage_confirm":
        st = _quiet(CoverageConfirmStage)(prompt)
    else:
        st = _quiet(DiscoverNameStage)(ws, prompt)
    st.name = f"trial:{stage}"
    return st


# -- items -------------------------------------------------------------------------------------------
def _expand_rows(ws: Workspace, stage: str, level: int | None) -> list[ExpandRow]:
    kind = stage.split(":", 1)[1]
    levels = [level] if level else range(1, 64)
    rows: list[ExpandRow] = []
    for lvl in levels:
        if kind != "level1_supplement" and lvl == 1:
            continue
        if kind == "level1_supplement" and lvl > 1:
            break
        try:
            got = plan(ws, level=lvl)
        except WorkbenchError:         # no accepted parents at this depth: the taxonomy ends here
            if level:
                raise
            break
        rows += [r for r in got if r.template == kind]
    return rows


def _subtree_ids(ws: Workspace, subtree: str) -> set[str]:
    tax = Taxonomy.of(ws)
    return set(tax.index(None).subtree(tax.resolve(subtree).id))


def candidates(ws: Workspace, stage: str, *, level: int | None = None, subtree: str | None = None,
               disagreement: bool = False, gap: bool = False) -> list[str]:
    """The item keys a test set for `stage` may hold, narrowed by a filter: `subtree` (a node id or path: parents,
    images or samples under it), `disagreement` (referees: samples the machine referees split on), `gap` (filter:
    images whose filter kept nothing)."""
    stage = check_stage(ws, stage)
    under = _subtree_ids(ws, subtree) if subtree else None
    if stage.startswith("expand"):
        rows = _expand_rows(ws, stage, level)
        return [r.parent_id or ROOT_ITEM for r in rows if under is None or r.parent_id in under]
    if stage in ("filter", "qa"):
        rows = filter_rows(ws) if stage == "filter" else qa_rows(ws)
        keys = [r.image_id for r in rows
                if under is None or any(n in under for n, _ in getattr(r, "candidates", None) or r.task_types)]
        if gap:
            kept = {r[0] for r in ws.store.query("SELECT DISTINCT image_id FROM filter_decisions WHERE kept=1")}
            seen = {r[0] for r in ws.store.query("SELECT DISTINCT image_id FROM filter_decisions")}
            keys = [k for k in keys if k in seen and k not in kept]
        return keys
    if stage.startswith("referee:"):
        sql = "SELECT id, node_id FROM samples WHERE status='ok' ORDER BY image_id, id"
        keys = [r[0] for r in ws.store.query(sql) if under is None or r[1] in under]
        if disagreement:
            split = {r[0] for r in ws.store.query(
                "SELECT sample_id FROM votes WHERE valid=1 AND referee NOT LIKE 'human:%' "
                "GROUP BY sample_id HAVING min(vote) <> max(vote)")}
            keys = [k for k in keys if k in split]
        return keys
    if stage == "audit_label":
        return [f"{r[0]}#{r[1]}" for r in ws.store.query("SELECT audit, item FROM audit_labels ORDER BY audit, item")]
    if stage == "discover_name":
        return [r[0] for r in ws.store.query("SELECT DISTINCT cluster_key FROM discoveries ORDER BY id")]
    return []        # coverage_confirm: pairs are given by hand


def resolve(ws: Workspace, stage: str, keys: list[str]) -> list[Item]:
    """The stage's rows for `keys`, in their order; a key the workspace no longer has is an error naming it."""
    stage = check_stage(ws, stage)
    found = _resolvers[stage.split(":", 1)[0]](ws, stage, keys)
    missing = [k for k in keys if k not in found]
    if missing:
        raise WorkbenchError(f"stage {stage}: {len(missing)} test item(s) not found in this workspace: "
                             f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}; choose items from "
                             "`TestSet.random` / `candidates`, or drop these from the test set")
    return [found[k] for k in keys]


def _resolve_expand(ws: Workspace, stage: str, keys: list[str]) -> dict[str, Item]:
    out = {}
    if ROOT_ITEM in keys:
        r = plan(ws, level=1)[0]
        out[ROOT_ITEM] = Item(ROOT_ITEM, ROOT_ITEM, r)
    ids = [k for k in keys if k != ROOT_ITEM]
    known = ids and {r[0] for r in ws.store.query(
        f"SELECT id FROM nodes WHERE id IN ({','.join('?' * len(ids))})", ids)}
    known = [k for k in ids if k in known] if ids else []
    for r in plan(ws, nodes=known) if known else []:
        out[r.parent_id] = Item(r.parent_id, r.parent_path or r.parent_id, r)
    return out


def _resolve_images(ws: Workspace, stage: str, keys: list[str]) -> dict[str, Item]:
    """The chosen images' rows, as `filter_rows` / `qa_rows` build them, reading only those images' matches."""
    chosen = "(SELECT value FROM json_each('" + json.dumps(keys).replace("'", "''") + "'))"
    if stage == "filter":
        sql = f"SELECT image_id, node_id FROM matches WHERE image_id IN {chosen} ORDER BY image_id, rank"
        rows: list = [FilterRow(i, c) for i, c in task_types_per_image(ws, sql, image_ids=keys)]
    else:
        sql = ("SELECT d.image_id, d.node_id FROM filter_decisions d LEFT JOIN matches m ON m.image_id = d.image_id "
               f"AND m.node_id = d.node_id WHERE d.kept = 1 AND d.image_id IN {chosen} ORDER BY d.image_id, m.rank")
        rows = [QARow(i, t) for i, t in task_types_per_image(ws, sql, image_ids=keys)]
    out = {}
    for r in rows:
        kinds = [p for _, p in (r.candidates if stage == "filter" else r.task_types)]
        label = f"{r.image_id[:12]} — {len(kinds)} task type(s): {', '.join(k.split(SEP)[-1] for k in kinds[:4])}"
        out[r.image_id] = Item(r.image_id, label, r, image_id=r.image_id)
    return out


def _resolve_referee(ws: Workspace, stage: str, keys: list[str]) -> dict[str, Item]:
    """The chosen samples only (a referee's own rows read every ok sample: seconds at paper scale)."""
    if not keys:
        return {}
    idx = Taxonomy.of(ws).index(None)
    rows = ws.store.query("SELECT id, image_id, node_id, question, answer FROM samples WHERE status='ok' AND id IN "
                          "(SELECT value FROM json_each(?))", (json.dumps(keys),))
    out = {}
    for r in rows:
        row = VoteRow(r["id"], r["image_id"], idx.paths.get(r["node_id"], ""), r["question"], r["answer"])
        out[row.sample_id] = Item(row.sample_id, f"{row.task_type.split(SEP)[-1]}: {row.question}", row,
                                  image_id=row.image_id)
    return out


def _resolve_audit(ws: Workspace, stage: str, keys: list[str]) -> dict[str, Item]:
    idx = Taxonomy.of(ws).index(None)
    out = {}
    for r in ws.store.query("SELECT audit, item, seed, instruction, candidates FROM audit_labels"):
        key = f"{r['audit']}#{r['item']}"
        if key in keys:
            cands = tuple(json.loads(r["candidates"]))
            row = LabelRow(r["audit"], r["item"], r["seed"], r["instruction"], cands,
                           tuple(idx.paths.get(c, c) for c in cands))
            out[key] = Item(key, r["instruction"], row)
    return out


def _resolve_confirm(ws: Workspace, stage: str, keys: list[str]) -> dict[str, Item]:
    out = {}
    for k in keys:
        ref, sep, task = k.partition("|")
        if sep and ref.strip() and task.strip():
            out[k] = Item(k, f"{ref.strip()}  ↔  {task.strip()}", ConfirmRow(ref.strip(), task.strip()))
    return out


def _resolve_discover(ws: Workspace, stage: str, keys: list[str]) -> dict[str, Item]:
    tax = Taxonomy.of(ws)
    idx = tax.index(None)
    out = {}
    for r in ws.store.query("SELECT * FROM discoveries ORDER BY id DESC"):
        if r["cluster_key"] in keys and r["cluster_key"] not in out:
            pid = r["parent_id"]
            parents = [(pid, idx.paths[pid])] if pid in idx.paths else []
            kids = idx.kids(pid) if pid in idx.paths else idx.roots()
            row = Cluster(r["cluster"], json.loads(r["image_ids"]), json.loads(r["exemplar_ids"]), r["cohesion"],
                          json.loads(r["nearest"]), parents, [k.name for k in kids])
            ex = row.exemplar_ids
            out[r["cluster_key"]] = Item(r["cluster_key"], f"cluster of {r['size']} image(s), named {r['name']!r}",
                                         row, image_id=ex[0] if ex else None)
    return out


_resolvers = {"expand": _resolve_expand, "filter": _resolve_images, "qa": _resolve_images,
              "referee": _resolve_referee, "audit_label": _resolve_audit, "coverage_confirm": _resolve_confirm,
              "discover_name": _resolve_discover}


# -- outputs as a person reads them ------------------------------------------------------------------
def jsonable(value: Any) -> Any:
    """The parsed value as JSON-ready data (dataclasses as dicts)."""
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    return value


def show(stage: str, value: Any, raw: str | None) -> str:
    """A parsed value as a person reads it: child names one per line, Q&A pairs, kept labels, verdict and reason."""
    if stage.startswith("expand"):
        lines = [f"• {p.name}" + ("" if p.outcome == "new" else f"  ({p.reason})")
                 for p in value.proposals if p.name]
        return "\n".join(lines) or "(no names)"
    if stage == "filter":
        if value.none or not value.kept:
            return "keeps none"
        return "\n".join(f"• {k}" for k in value.kept)
    if stage == "qa":
        return "\n\n".join(f"[{p.task_type.split(SEP)[-1]}]{'  REJECTED: ' + p.reason if p.reason else ''}\n"
                           f"Q: {p.question}\nA: {p.answer}" for p in value.pairs) or "(no pairs)"
    if stage.startswith("referee:"):
        reason = " ".join((raw or "").split())[:200]
        return f"{'PASS (1)' if value == 1 else 'FAIL (0)'} — {reason}"
    if stage == "audit_label":
        return f"choice {value['choice']}{' (none fits)' if value['choice'] == 0 else ''} — {value['reason']}"
    if stage == "coverage_confirm":
        return f"{'match' if value['match'] else 'no match'} — {value['reason']}"
    return f"{value.get('name')} (under {value.get('parent') or '?'}) — {value.get('reason') or ''}"
