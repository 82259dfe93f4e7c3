"""Library helpers behind the notebooks (the cells stay thin): one tutorial workspace, endpoint parameters,
prompt versions (draft, preview, promote; the trials themselves are in apps/notebook_trials.py) and CLIP
without weights.

    ws = tutorial_workspace("tutorial-workspace", base_url=..., model=...)   # init + seeds + endpoints
    draft = save_draft(ws, "expand_child_supplement.j2", text)   # prompts/drafts/<stem>.<hash>.j2
    print(preview_version(ws, "expand_child_supplement.j2", draft, parents))   # the stage's real template per parent
    res = notebook_trials.trial(ws, "expand:child_supplement", {"edited": draft.source}, parents, budget_usd=0.5)
    print(promote(ws, "expand_child_supplement.j2", draft))     # WORKSPACE/prompts/<name>: every level uses it

Prompt versions are files named by their content hash, so saving the same text twice is one version and a
re-run notebook finds its drafts again. The workspace's copy (`WORKSPACE/prompts/<name>`) is what the expand
stage uses (llm/prompts.py); promoting first keeps the replaced text as a draft, so no version is lost.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from workbench.analysis import trials
from workbench.apps.doctor import check_clip
from workbench.core.config import CONFIG_NAME, MarkedBlock, edit_sections, read_block
from workbench.core.errors import WorkbenchError
from workbench.core.workspace import Workspace
from workbench.llm.prompts import PromptTemplate, template_hash
from workbench.stages.embed.clip import TINY_MODEL_NAME, write_model_config
from workbench.stages.expand.stage import TEMPLATES, ExpandStage, load_prompts, plan
from workbench.taxonomy.io import load_seed
from workbench.taxonomy.model import LIVE, Taxonomy, first_open_notice, task_type_counts

DEFAULT_WORKSPACE = "tutorial-workspace"    # relative to the notebooks' folder; .gitignore ignores it
DRAFTS = "drafts"                           # WORKSPACE/prompts/drafts/: every saved prompt version
# The endpoint parameters live in this block of workbench.toml (the markers are those earlier versions wrote).
PARAMETERS_BLOCK = MarkedBlock(
    start="# >>> notebook parameters (workbench.apps.notebooks.configure_endpoints) >>>",
    end="# <<< notebook parameters <<<",
    note="Written from the notebooks' parameter cells; re-running one with other values rewrites this block.",
    hint="set the notebook's endpoint parameters to None to use it, or delete that section and re-run the cell")


# -- the workspace --------------------------------------------------------------------------------
def tutorial_workspace(path: str | Path = DEFAULT_WORKSPACE, *, base_url: str | None = None,
                       model: str | None = None, referee_models: list[str] | None = None,
                       seed: bool = True) -> Workspace:
    """Open (or create) the workspace the notebooks share; load the seed task types into an empty taxonomy;
    write the endpoint parameters (`configure_endpoints`) when given. Prints one line per thing it did."""
    path = Path(path).expanduser()
    created = not (path / "workbench.sqlite").exists()
    ws = Workspace.init(path, exist_ok=True)
    if seed and Taxonomy.of(ws).count(None) == 0:
        print(f"seed task types: {load_seed(Taxonomy.of(ws)).summary()}")
    said = configure_endpoints(ws, base_url=base_url, model=model, referee_models=referee_models)
    if said:
        print(said)
    notice = first_open_notice(ws)
    if notice:
        print(notice)
    print(f"workspace {ws.root.resolve()} ({'created' if created else 'opened'}): "
          f"{Taxonomy.of(ws).count(LIVE)} live node(s); {task_type_counts(ws).line()}")
    return ws


def configure_endpoints(ws: Workspace, *, base_url: str | None = None, model: str | None = None,
                        referee_models: list[str] | None = None) -> str:
    """Write the notebook's endpoint parameters into a marked block at the end of workbench.toml.

    `[endpoints.default]` (base_url, model) and, with `referee_models`, one `[endpoints.referee_<i>]` +
    `[[referees]]` entry per model on the same base URL. None leaves that part of the block as it is; the
    rest of the file is never touched: a section the user wrote there is an error naming its line.
    Returns what changed ('' when nothing did).
    """
    if base_url is None and model is None and referee_models is None:
        return ""
    cfg_path = ws.root / CONFIG_NAME
    old = read_block(cfg_path, PARAMETERS_BLOCK)
    old_endpoints = old.get("endpoints", {})
    base_url = base_url if base_url is not None else old_endpoints.get("default", {}).get("base_url")
    model = model if model is not None else old_endpoints.get("default", {}).get("model")
    if referee_models is None:
        referee_models = [old_endpoints[r["endpoint"]]["model"] for r in old.get("referees", [])]
    if isinstance(referee_models, str):
        referee_models = [referee_models]
    # An empty value is left out, as None is: the endpoint's default model, OPENAI_BASE_URL.
    edits: dict = {"endpoints.default": {"base_url": base_url or None, "model": model or None}}
    for i, m in enumerate(referee_models, 1):
        edits[f"endpoints.referee_{i}"] = {"base_url": base_url or None, "model": m}
    for name in old_endpoints:                  # referees of an earlier run that are no longer asked for
        if name != "default" and f"endpoints.{name}" not in edits:
            edits[f"endpoints.{name}"] = None
    edits["referees"] = [{"name": f"{i}-{m}", "endpoint": f"referee_{i}"} for i, m in enumerate(referee_models, 1)]
    if not edit_sections(cfg_path, edits, block=PARAMETERS_BLOCK):
        return ""
    ws.reload_config()
    refs = f"; referees: {', '.join(r.name for r in ws.config.referees)}" if referee_models else ""
    return f"endpoint: {model or '(the endpoint default model)'} at {base_url or 'OPENAI_BASE_URL'}{refs} " \
           f"(written to {cfg_path})"


# -- prompt versions ------------------------------------------------------------------------------
def _template_key(name: str) -> str:
    key = Path(name).name.removeprefix("expand_").removesuffix(".j2")
    if key not in TEMPLATES:
        raise WorkbenchError(f"prompt {name!r} is not an expansion prompt; use one of "
                             + ", ".join(f"expand_{t}.j2" for t in TEMPLATES))
    return key


def current_prompt(ws: Workspace, name: str) -> PromptTemplate:
    """The file the expand stage uses for `name` now (the workspace's copy if there is one, else bundled); a
    trial stage key (`qa`, `filter`, `referee`, ...) names the template that stage uses now."""
    if not name.endswith(".j2"):
        return trials.current_prompt(ws, name)
    key = _template_key(name)
    prompts = load_prompts(ws)
    if "custom" in prompts:
        raise WorkbenchError(f"{ws.root / 'workbench.toml'}: [expand] prompt names one file for every parent; "
                             "remove that line to work on the three expansion prompts one by one")
    return prompts[key]


def describe_prompt(ws: Workspace, name: str) -> str:
    tpl = current_prompt(ws, name)
    copy = ws.prompts_dir / Path(name).name
    where = ("the workspace's copy" if tpl.path == copy.resolve()
             else f"the bundled prompt (a copy saved as {copy} would override it)")
    return f"{name}: the expand stage uses {tpl.path} — {where}; version {tpl.hash[:8]}"


def drafts_dir(ws: Workspace) -> Path:
    return ws.prompts_dir / DRAFTS


def save_draft(ws: Workspace, name: str, text: str) -> PromptTemplate:
    """Save `text` as a version of prompt `name` (checked: it must parse as a template); returns it loaded."""
    stem = _draft_stem(ws, name)
    PromptTemplate.from_text(text, path=f"{name} (draft)")    # a syntax error names its line; nothing written
    path = drafts_dir(ws) / f"{stem}.{template_hash(text)[:8]}.j2"
    if path.exists():
        path.touch()                 # the latest saved version is the newest file
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return PromptTemplate.load(path)


def _draft_stem(ws: Workspace, name: str) -> str:
    """Drafts of an expansion prompt file are named after it; those of a stage key after its template file."""
    if name.endswith(".j2"):
        _template_key(name)
        return Path(name).name.removesuffix(".j2")
    return current_prompt(ws, name).path.name.removesuffix(".j2")


def latest_draft(ws: Workspace, name: str) -> Path | None:
    stem = _draft_stem(ws, name)
    found = sorted(drafts_dir(ws).glob(f"{stem}.*.j2"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def promote(ws: Workspace, name: str, version: PromptTemplate | str | Path) -> str:
    """Make `version` the workspace's copy of `name`: the expand stage uses it at every level until changed.
    The text it replaces is kept as a draft first. Returns what happened."""
    current = current_prompt(ws, name)
    tpl = version if isinstance(version, PromptTemplate) else PromptTemplate.load(version, workspace_root=ws.root)
    if tpl.hash == current.hash:
        return f"{name}: version {tpl.hash[:8]} is already what the stage uses ({current.path})"
    save_draft(ws, name, current.source)
    copy = ws.prompts_dir / Path(name).name
    copy.write_text(tpl.source, encoding="utf-8")
    return (f"{name}: promoted version {tpl.hash[:8]} to {copy} (was {current.hash[:8]}, kept in "
            f"{drafts_dir(ws)}); expansion uses it at every level until changed")


# -- choosing parents, preview ------------------------------------------------------------------
def parents_using(ws: Workspace, name: str, n: int = 5) -> list[str]:
    """Up to n accepted parents (shallowest level first) whose expansion uses template `name` now."""
    key = _template_key(name)
    if key == "level1_supplement":
        return []                                    # one call: the first level (nodes=None)
    idx = Taxonomy.of(ws).index(("accepted",))
    order = sorted(idx.dfs(), key=lambda i: idx.nodes[i].level)
    out = []
    for row in plan(ws, nodes=order) if order else []:
        if row.template == key:
            out.append(row.parent_id)
            if len(out) == n:
                break
    return out


def _prompts_with(ws: Workspace, name: str, version: PromptTemplate | None) -> dict:
    prompts = load_prompts(ws)
    if version is not None:
        prompts[_template_key(name)] = version
    return prompts


def preview_version(ws: Workspace, name: str, version: PromptTemplate | None, parents: list[str] | None) -> str:
    """The messages each parent's call would send, with the template the stage would really use for it: the
    version of `name` where that is its template, the current file of its own template otherwise."""
    prompts = _prompts_with(ws, name, version)
    stage = ExpandStage(ws, prompts, {})
    rows = plan(ws, nodes=parents) if parents else plan(ws, level=1)
    out = []
    for row in rows:
        tpl = prompts[row.template]
        note = "" if row.template == _template_key(name) else f" (not {name}: this parent has " + (
            "children" if row.existing else "no children") + ")"
        out.append(f"=== {row.parent_path or '(first level)'} — template expand_{row.template}.j2{note}, "
                   f"file {tpl.path.name}, version {tpl.hash[:8]} ===")
        for m in stage.render(row):
            out.append(f"--- {m['role']} ---\n{m['content']}")
    return "\n".join(out)


# -- CLIP without weights -------------------------------------------------------------------------
class _DropRandomWeightsWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "CLIP weights: random" not in record.getMessage()


def clip_or_tiny(ws: Workspace, *, model: str | None = None, pretrained: str | None = None) -> str:
    """Use the configured CLIP (or `model`/`pretrained`) when its weights are on this machine; otherwise the
    tiny random-weight model, for this session only (workbench.toml is not changed). Returns one line saying
    which, and what to set for real matches; the library's own random-weights warning is not repeated."""
    clip = ws.config.clip
    if model is not None or pretrained is not None:
        clip = clip.model_copy(update={k: v for k, v in (("model", model), ("pretrained", pretrained))
                                       if v is not None})
        ws.config.clip = clip
    check = check_clip(ws.config)
    if check.ok:
        return f"CLIP: {clip.model} with {check.detail}"
    wanted = f"{clip.model} / {clip.pretrained or 'random weights'}"
    cfg_file = write_model_config(ws.root / f"{TINY_MODEL_NAME}.json")
    ws.config.clip = clip.model_copy(update={"model": cfg_file.name, "pretrained": ""})
    logging.getLogger("workbench.clip").addFilter(_DropRandomWeightsWarning())
    return (f"CLIP: no weights for {wanted} on this machine ({check.detail}), so this run uses a tiny "
            f"random-weight model: matches are meaningless. For real ones set CLIP_PRETRAINED (or [clip] "
            f"pretrained in {ws.root / 'workbench.toml'}) to a local checkpoint file.")


# -- the prompt editor widget ---------------------------------------------------------------------
class PromptEditor:
    """A text area holding a version of prompt `name` (an expansion prompt file, or a trial stage key such as
    `qa`, `filter`, `referee`); every edit is saved as a version when the box loses focus. It opens on your
    latest saved version when that is newer than the workspace's copy, else on the file the stage uses now."""

    def __init__(self, ws: Workspace, name: str):
        import ipywidgets as W

        self.ws, self.name = ws, name
        current = current_prompt(ws, name)
        text = current.source
        draft = latest_draft(ws, name)
        if draft is not None and draft.stat().st_mtime > current.path.stat().st_mtime:
            text = draft.read_text(encoding="utf-8")
            self._origin = f"your latest version ({draft.name})"
        else:
            self._origin = f"the file the stage uses ({current.path.name}, {current.hash[:8]})"
        self.text = W.Textarea(value=text, continuous_update=False,
                               layout=W.Layout(width="100%", height="320px"))
        self.status = W.HTML()
        self.box = W.VBox([W.HTML(f"<b>{name}</b> — opened on {self._origin}"), self.text, self.status])
        self.text.observe(lambda _change: self._save_quietly(), names="value")

    @property
    def value(self) -> str:
        return self.text.value

    def replace(self, old: str, new: str) -> None:
        """An edit from code: replace `old` by `new` unless `new` is already in the text."""
        if new not in self.text.value and old in self.text.value:
            self.text.value = self.text.value.replace(old, new)

    def append(self, line: str) -> None:
        """An edit from code: add `line` at the end unless it is already in the text."""
        if line not in self.text.value:
            self.text.value = self.text.value.rstrip("\n") + "\n" + line + "\n"

    def save(self) -> PromptTemplate:
        tpl = save_draft(self.ws, self.name, self.text.value)
        self.status.value = f"saved as version <code>{tpl.hash[:8]}</code> ({tpl.path.name})"
        return tpl

    def _save_quietly(self) -> None:
        try:
            self.save()
        except WorkbenchError as exc:     # a template error: say so beside the box; nothing is written
            import html

            self.status.value = f"<span style='color:#b00'>not saved: {html.escape(str(exc))}</span>"

    def _repr_mimebundle_(self, **kwargs):
        bundle = self.box._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = (f"Prompt editor for {self.name}: a live widget, not saved with the notebook; "
                                "re-run this cell to show it (your versions are in WORKSPACE/prompts/drafts/).")
        return bundle


# -- what a session did -------------------------------------------------------------------------
def session_note(ws: Workspace) -> str:
    """A closing note for notebook 01: nodes by status and origin, the workspace's prompt copies, stored trials."""
    counts = {(r[0], r[1]): r[2] for r in ws.store.query(
        "SELECT origin, status, count(*) FROM nodes GROUP BY origin, status")}
    gen = {s: n for (o, s), n in counts.items() if o == "generated"}
    copies = sorted(p.name for p in ws.prompts_dir.glob("*.j2"))
    versions = len(list(drafts_dir(ws).glob("*.j2"))) if drafts_dir(ws).is_dir() else 0
    trials_n = ws.store.scalar("SELECT count(*) FROM trials WHERE stage LIKE 'expand%'") or 0
    applied = ws.store.scalar("SELECT count(*) FROM expand_results WHERE applied=1") or 0
    return (f"{Taxonomy.of(ws).count(LIVE)} live node(s); {task_type_counts(ws).line()}; generated: "
            f"{gen.get('accepted', 0)} accepted, {gen.get('proposed', 0)} still proposed, {gen.get('rejected', 0)} "
            f"rejected. {applied} expansion call(s) applied; {trials_n} expansion prompt trial(s) stored (no nodes). "
            f"Workspace prompt copies: {', '.join(copies) or 'none (bundled prompts)'}; {versions} saved version(s) "
            f"in {drafts_dir(ws)}. Next: 02_images_and_matching.ipynb on the same WORKSPACE.")


def expand_runs(ws: Workspace):
    """The expand stage runs as a table: A/B (no nodes) or applied, parents, prompt versions, calls, cost."""
    import pandas as pd

    rows = []
    for r in ws.runs("expand"):
        p, s = json.loads(r["params"] or "{}"), json.loads(r["summary"] or "{}")
        prompts = p.get("prompts") or {}
        rows.append({"run": r["id"], "status": r["status"],
                     "kind": "applied" if p.get("apply", True) else "A/B (no nodes)",
                     "parents": f"level {p['level']}" if p.get("level") else f"{len(p.get('nodes') or [])} node(s)",
                     "prompts": ", ".join(f"{Path(f).name} {h[:8]}" for f, h in prompts.values()),
                     "calls": s.get("called"), "cached": s.get("cached"), "cost_usd": s.get("cost_usd"),
                     "started_at": r["started_at"]})
    return pd.DataFrame(rows, columns=["run", "status", "kind", "parents", "prompts", "calls", "cached", "cost_usd",
                                       "started_at"])


# -- notebook 03 ----------------------------------------------------------------------------------
def vision_inputs_line(ws: Workspace) -> str:
    """One line: what 03 starts from (images, matches, which CLIP made them, endpoint, referees)."""
    n_img = ws.store.scalar("SELECT count(*) FROM images") or 0
    n_match = ws.store.scalar("SELECT count(DISTINCT image_id) FROM matches") or 0
    tiny = ws.store.scalar("SELECT count(*) FROM embedding_sets WHERE model LIKE 'wb-tiny-clip%'") or 0
    clip = " (made by the tiny random-weight CLIP: meaningless; set CLIP_PRETRAINED in 02)" if tiny else ""
    ep = ws.config.endpoints.get("default")
    where = f"{ep.model} at {ep.base_url or 'OPENAI_BASE_URL'}" if ep else "no [endpoints.default] (set BASE_URL/MODEL)"
    return (f"{n_img} image(s), {n_match} with CLIP matches{clip}; endpoint: {where}; "
            f"{len(ws.config.referees)} referee(s)")


def nothing_selected_reason(ws: Workspace) -> str:
    """Why no sample is selected, naming the first stage that handed nothing on and what to do."""
    q = ws.store.scalar
    if not q("SELECT count(*) FROM matches"):
        return "no image has CLIP matches: run 02_images_and_matching.ipynb on this WORKSPACE first"
    if not q("SELECT count(*) FROM filter_decisions"):
        return "the filter has not run (no endpoint: set BASE_URL and MODEL in the parameters)"
    if not q("SELECT count(*) FROM filter_decisions WHERE kept=1"):
        return "the filter kept no candidate for these images (see the rejections above)"
    if not q("SELECT count(*) FROM samples WHERE status='ok'"):
        return "Q&A wrote no usable sample (see the rejections above)"
    if not ws.config.referees:
        return "no referee is configured: set REFEREE_MODELS (or add [[referees]] to workbench.toml)"
    if not q("SELECT count(*) FROM votes"):
        return "the referees have not voted yet"
    return "no sample reached the minimum number of positive votes (lower MIN_VOTES, or see the votes above)"
