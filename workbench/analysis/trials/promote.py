"""Promote: make one version the template a stage uses from now on (the workspace's copy of the file the stage
loads), keep the text it replaces in `prompt_texts`, log it in `trial_promotions`, and say which template every
level and stage uses afterwards."""

from __future__ import annotations

import getpass
from pathlib import Path

from workbench.analysis.trials.stages import check_stage, current_prompt, stage_keys
from workbench.analysis.trials.versions import Version, as_version
from workbench.core.clock import utcnow
from workbench.core.errors import WorkbenchError
from workbench.core.workspace import Workspace
from workbench.llm.prompt_store import remember

_EXPAND_WORDS = {"expand:level1_supplement": "expand level 1",
                 "expand:child_supplement": "expand levels 2+, parents with children",
                 "expand:child_expand": "expand levels 2+, parents without children"}


def uses_now(ws: Workspace) -> list[str]:
    """One line per level and stage: the template file it uses now and its hash."""
    out = []
    for key in stage_keys(ws):
        tpl = current_prompt(ws, key)
        out.append(f"{_EXPAND_WORDS.get(key, key)}: {tpl.display_path} ({tpl.hash[:8]})")
    return out


def _target_stage(stage: str, level: int | None) -> str:
    if stage == "expand" and level == 1:
        return "expand:level1_supplement"
    return stage


def promote(ws: Workspace, stage: str, version: Version | str | Path, *, level: int | None = None,
            who: str | None = None) -> str:
    """Make `version` what `stage` uses (expand: `level=1`, or name the template in the stage key). Returns what
    happened and the template each level and stage uses afterwards."""
    stage = check_stage(ws, _target_stage(stage, level))
    v = as_version(ws, stage, version)
    cur = current_prompt(ws, stage)
    if v.hash == cur.hash:
        return f"{stage}: version {v.hash[:8]} is already what it uses ({cur.display_path})\n" + "\n".join(uses_now(ws))
    folder = Path(ws.prompts_dir).resolve()
    target = cur.path if cur.path.resolve().parent == folder else folder / cur.path.name
    remember(ws, [cur, v.template])          # the replaced text stays readable by its hash
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".j2.tmp")
    tmp.write_text(v.template.source, encoding="utf-8")
    tmp.replace(target)
    now = current_prompt(ws, stage)
    if now.hash != v.hash:      # the config names a file outside the workspace's prompts folder: it still wins
        target.write_text(cur.source, encoding="utf-8") if target == cur.path else target.unlink()
        raise WorkbenchError(f"{ws.root / 'workbench.toml'}: {stage} is configured to use {cur.path}; point that "
                             f"setting at {target.name} (or remove it) to promote, nothing was changed")
    with ws.store.write() as conn:
        conn.execute("INSERT INTO trial_promotions(stage, version, previous, file, who, created_at) "
                     "VALUES (?,?,?,?,?,?)", (stage, v.hash, cur.hash, str(target), who or getpass.getuser(), utcnow()))
    return (f"{stage}: promoted {v.name} ({v.hash[:8]}) to {target} (was {cur.hash[:8]}, kept by hash)\n"
            "Templates in use now:\n" + "\n".join(f"  {line}" for line in uses_now(ws)))
