"""Export selected samples for training: LLaVA JSON, ShareGPT JSON, Parquet.

Deterministic: rows sorted by sample id (a hash of image, task type and question), no timestamps in
the files, so the same inputs give byte-identical files.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from workbench.core.errors import WorkbenchError
from workbench.core.workspace import Workspace
from workbench.stages.base import Stage
from workbench.stages.select.stage import machine_votes_since, people_changed
from workbench.taxonomy.model import Taxonomy, task_type_counts

FORMATS = ("llava", "sharegpt", "parquet")


def _chosen_sql(only_selected: bool) -> str:
    sel = "JOIN selections x ON x.sample_id = s.id AND x.selected = 1" if only_selected else ""
    return f"FROM samples s {sel} JOIN images i ON i.id = s.image_id WHERE s.status = 'ok'"


def flagged_left_out(ws: Workspace, *, only_selected: bool = True) -> int:
    """How many samples export would have written but leaves out because a reviewer flagged them."""
    return int(ws.store.scalar(f"SELECT count(*) {_chosen_sql(only_selected)} "
                               "AND EXISTS (SELECT 1 FROM sample_flags f WHERE f.sample_id = s.id)") or 0)


def selected_rows(ws: Workspace, *, only_selected: bool = True) -> pd.DataFrame:
    """The samples to export; a flagged sample (`sample_flags`) never is, even if it was selected before the flag."""
    df = pd.read_sql_query(
        f"SELECT s.id, s.image_id, s.node_id, s.question, s.answer, i.root, i.path AS image_path "
        f"{_chosen_sql(only_selected)} AND NOT EXISTS (SELECT 1 FROM sample_flags f WHERE f.sample_id = s.id) "
        "ORDER BY s.id",
        ws.store.conn)
    idx = Taxonomy.of(ws).index()   # only task types: a sample of a node awaiting review waits until it is accepted
    df = df[df["node_id"].isin(list(idx.nodes))].reset_index(drop=True)
    df["task_type"] = [idx.paths[n] for n in df["node_id"]]
    return df


def not_task_left_out(ws: Workspace, *, only_selected: bool = True) -> int:
    """How many samples export would have written but leaves out because their node is not a task type."""
    nodes = ws.store.query(f"SELECT s.node_id, count(*) AS n {_chosen_sql(only_selected)} AND NOT EXISTS "
                           "(SELECT 1 FROM sample_flags f WHERE f.sample_id = s.id) GROUP BY s.node_id")
    tasks = Taxonomy.of(ws).index().nodes
    return sum(r["n"] for r in nodes if r["node_id"] not in tasks)


def _image_field(df: pd.DataFrame, image_root: Path | None) -> list[str]:
    if image_root is None:
        return df["image_path"].tolist()
    root = Path(image_root).resolve()
    out = []
    for r, p in zip(df["root"], df["image_path"]):
        rel = os.path.relpath(Path(r) / p, root)
        if rel.startswith(".."):
            raise WorkbenchError(f"image {Path(r) / p} is outside --image-root {root}; choose a root that holds "
                                 "every image, or omit --image-root to write paths relative to where each was "
                                 "registered")
        out.append(rel)
    return out


def to_records(df: pd.DataFrame, fmt: str, images: list[str]) -> list[dict]:
    recs = []
    for row, image in zip(df.itertuples(index=False), images):
        human = "<image>\n" + row.question
        if fmt == "llava":
            recs.append({"id": row.id, "image": image, "task_type": row.task_type,
                         "conversations": [{"from": "human", "value": human}, {"from": "gpt", "value": row.answer}]})
        else:  # sharegpt (LLaMA-Factory's multimodal layout)
            recs.append({"id": row.id, "images": [image], "task_type": row.task_type,
                         "conversations": [{"from": "human", "value": human}, {"from": "gpt", "value": row.answer}]})
    return recs


@dataclass
class ExportReport:
    path: str
    samples: int
    format: str
    flagged_left_out: int = 0    # selected (or, with --all-ok, ok) samples not written: flagged by a reviewer
    people_changed: int = 0      # with allow_changed: samples whose people's votes changed since the last select
    machine_changed: int = 0     # with allow_changed: selected samples with referee votes newer than the select
    not_task_left_out: int = 0   # ... not written: their node is not a task type (awaiting review, or rejected)

    def summary(self) -> str:
        return (f"wrote {self.samples} samples to {self.path}"
                + (f"; left out {self.flagged_left_out} flagged sample(s) (`workbench adjudicate WORKSPACE "
                   "--unflag SAMPLE` to lift a flag)" if self.flagged_left_out else "")
                + (f"; WARNING: written as last selected although people's votes or flags changed on "
                   f"{self.people_changed} sample(s) since (run `workbench select` again to apply them)"
                   if self.people_changed else "")
                + (f"; WARNING: written as last selected although referees voted again on {self.machine_changed} "
                   "sample(s) since (run `workbench select` again to apply them)" if self.machine_changed else "")
                + (f"; left out {self.not_task_left_out} sample(s) of nodes that are not task types (awaiting "
                   "review or rejected)" if self.not_task_left_out else ""))


def _change(then: str, now: str) -> str:
    votes_then, _, flag_then = then.partition("|")
    votes_now, _, flag_now = now.partition("|")
    what = [f"votes {votes_then or 'none'} -> {votes_now or 'none'}"] if votes_then != votes_now else []
    return ", ".join(what + (["flag lifted"] if flag_then and not flag_now else []))


def changed_message(changed: list[tuple[str, str, str]]) -> str:
    """The refusal when people's decisions changed since the last select, naming the first samples."""
    shown = "; ".join(f"{sid[:12]} ({_change(a, b)})" for sid, a, b in changed[:5])
    more = f"; ... and {len(changed) - 5} more" if len(changed) > 5 else ""
    return (f"export: people's votes or flags changed on {len(changed)} sample(s) since the last `workbench select`, "
            f"so the selection does not reflect them: {shown}{more}. Run `workbench select WORKSPACE` again, then "
            "export (or pass --allow-changed to export the selection as it stands)")


def machine_message(votes: list[tuple[str, str]]) -> str:
    """The refusal when referees voted on selected samples after the last select, naming the first."""
    samples = sorted({sid for sid, _ in votes})
    referees = sorted({ref for _, ref in votes})
    shown = ", ".join(sid[:12] for sid in samples[:5]) + (f" ... and {len(samples) - 5} more" if len(samples) > 5
                                                           else "")
    return (f"export: referee(s) {', '.join(referees)} voted on {len(samples)} selected sample(s) after the last "
            f"`workbench select` ({shown}), so the selection does not reflect those votes. Run `workbench select "
            "WORKSPACE` again, then export (or pass --allow-changed to export the selection as it stands)")


class ExportStage(Stage):
    name = "export"

    def __init__(self, dest: Path | str | None = None, *, fmt: str = "llava", image_root: Path | str | None = None,
                 only_selected: bool = True, overwrite: bool = True, allow_changed: bool = False):
        self.dest, self.fmt, self.image_root = dest, fmt, image_root
        self.only_selected, self.overwrite, self.allow_changed = only_selected, overwrite, allow_changed

    @property
    def lock_key(self) -> str | None:
        return None    # a read of the store into a file of its own

    def run_params(self) -> dict:
        return {"dest": str(self.dest) if self.dest else None, "format": self.fmt,
                "image_root": str(self.image_root) if self.image_root else None, "only_selected": self.only_selected}

    def check(self, ws: Workspace) -> None:
        if self.fmt not in FORMATS:
            raise WorkbenchError(f"export format must be one of {', '.join(FORMATS)}; got {self.fmt!r}")
        self.df = selected_rows(ws, only_selected=self.only_selected)
        self.flagged = flagged_left_out(ws, only_selected=self.only_selected)
        # People who voted (or lifted a flag) after the last select: the selection does not say what they decided.
        self.changed = people_changed(ws.store) if self.only_selected else []
        if self.changed and not self.allow_changed:
            raise WorkbenchError(changed_message(self.changed))
        self.machine = machine_votes_since(ws.store) if self.only_selected else []
        if self.machine and not self.allow_changed:
            raise WorkbenchError(machine_message(self.machine))
        self.not_task = not_task_left_out(ws, only_selected=self.only_selected)
        if self.df.empty:
            what = ("selected samples (run `workbench select`)" if self.only_selected
                    else "Q&A samples (run `workbench qa`)")
            flagged = (f" that are not flagged ({self.flagged} flagged by a reviewer: see `workbench adjudicate`)"
                       if self.flagged else "")
            pending = (f" of a task type ({self.not_task} belong to nodes awaiting review or rejected: "
                       f"`{task_type_counts(ws).accept_command()}` accepts the proposals)" if self.not_task else "")
            raise WorkbenchError(f"export: no {what}{flagged}{pending}")
        name = {"llava": "llava.json", "sharegpt": "sharegpt.json", "parquet": "samples.parquet"}[self.fmt]
        self.path = Path(self.dest) if self.dest else ws.exports_dir / name
        if self.path.exists() and not self.overwrite:
            raise WorkbenchError(f"{self.path}: exists; pass --overwrite or choose another name")

    def execute(self, ws: Workspace, run) -> ExportReport:
        df, dest, fmt = self.df, self.path, self.fmt
        dest.parent.mkdir(parents=True, exist_ok=True)
        images = _image_field(df, Path(self.image_root) if self.image_root else None)
        tmp = dest.with_name(dest.name + ".tmp")
        if fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            recs = to_records(df, "llava", images)
            table = pa.Table.from_pylist([
                {"id": r["id"], "image": r["image"], "task_type": r["task_type"],
                 "question": q, "answer": a, "conversations": r["conversations"]}
                for r, q, a in zip(recs, df["question"], df["answer"])])
            pq.write_table(table, tmp, compression="zstd")
        else:
            text = json.dumps(to_records(df, fmt, images), ensure_ascii=False, indent=1)
            tmp.write_text(text + "\n", encoding="utf-8")
        os.replace(tmp, dest)
        if self.flagged:
            run.add("flagged_left_out", self.flagged)
        if self.changed:
            run.add("people_changed", len(self.changed))
        machine = len({sid for sid, _ in self.machine})
        if machine:
            run.add("machine_changed", machine)
        if self.not_task:
            run.add("not_task_left_out", self.not_task)
        return ExportReport(str(dest), len(df), fmt, self.flagged, people_changed=len(self.changed),
                            machine_changed=machine, not_task_left_out=self.not_task)


def export(ws: Workspace, dest: Path | str | None = None, *, fmt: str = "llava", image_root: Path | str | None = None,
           only_selected: bool = True, overwrite: bool = True, allow_changed: bool = False) -> tuple[Path, int]:
    """Write the selected (or all ok) samples; same inputs give byte-identical files. Returns (path, count).
    Refused (a WorkbenchError naming them) when people's votes changed, or referees voted on selected samples,
    since the last select, unless `allow_changed`."""
    rep = ExportStage(dest, fmt=fmt, image_root=image_root, only_selected=only_selected,
                      overwrite=overwrite, allow_changed=allow_changed).run(ws)
    return Path(rep.path), rep.samples
