"""The dashboard's shared reads (the queries layer's base; queries/ holds each page's own): the workspace, table
versions, empty states, the taxonomy frame, select's referee outcomes and the overview's figures built on them, the
registered images. Every heavy read is cached and keyed on the data it depends on.

A cached function takes the workspace root and a *version* of the tables it reads (row count
and max rowid per table, plus the latest node edit), so a widget interaction reuses the
cached frame and a new stage run (new rows) invalidates exactly what it changed. The versions
are counted again only after something committed to the database (SQLite's `PRAGMA data_version`,
asked on a connection kept for that); prompt files' versions are re-read every few seconds.

Votes have two more versions: `human_votes` (people's `human:<name>` votes with `max(voted_at)`, read through the
partial index `votes_human`) and `machine_votes` (all votes minus people's, with the `stage_runs` version: referees
vote only inside a stage run). What only the referees' votes decide is keyed on `machine_votes` (the Referees page,
the plan, the machine part of select's rule), so a person's vote recomputes none of it. The machine counts are
also kept on disk (`arrays/dashboard/machine-votes-<key>.parquet`, the two newest) for a restarted server; "Reload
data" (`forget_derived`) clears every cache and those files.
"""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import threading
from pathlib import Path

import pandas as pd
import streamlit as st

from workbench.analysis import coverage
from workbench.core.errors import WorkbenchError
from workbench.core.workspace import Workspace
from workbench.llm.prompts import DEFAULT_PROMPTS_DIR
from workbench.stages.images import register
from workbench.stages.referee.people import HUMAN_SQL
from workbench.stages.select import stage as select_stage
from workbench.taxonomy.model import Taxonomy, TreeIndex, task_type_counts

VERSION_TTL_S = 3

# Which command fills each table (shown in empty states).
FILLED_BY = {
    "nodes": "workbench taxonomy import WORKSPACE tasktype.txt (or `workbench init WORKSPACE --seed`)",
    "images": "workbench images add WORKSPACE FOLDER",
    "embedding_sets": "workbench embed WORKSPACE",
    "matches": "workbench match WORKSPACE",
    "filter_decisions": "workbench filter WORKSPACE",
    "samples": "workbench qa WORKSPACE",
    "votes": "workbench referee WORKSPACE",
    "selections": "workbench select WORKSPACE",
    "llm_calls": "workbench expand WORKSPACE (or any LLM stage)",
    "stage_runs": "workbench expand WORKSPACE (or any other stage)",
}


def empty_state(what: str, table: str) -> None:
    st.info(f"{what} — nothing here yet. Fill it with `{FILLED_BY[table]}`.", icon="ℹ️")


@st.cache_resource(show_spinner=False)
def open_workspace(root: str) -> Workspace:
    return Workspace.open(root)


@st.cache_resource(show_spinner=False)
def _change_watch(root: str) -> tuple[sqlite3.Connection, threading.Lock]:
    """A connection of the dashboard's own, kept for the server's life, that only asks `PRAGMA data_version`: the
    number changes whenever any other connection (a stage run, the CLI, this dashboard's writes) commits."""
    conn = sqlite3.connect(open_workspace(root).store.path, check_same_thread=False, isolation_level=None)
    return conn, threading.Lock()


def db_version(root: str) -> int:
    conn, lock = _change_watch(root)
    with lock:
        return conn.execute("PRAGMA data_version").fetchone()[0]


@st.cache_data(show_spinner=False, max_entries=512)
def _db_table_version(root: str, table: str, db_v: int) -> tuple:
    """Counted again only after a commit (`db_v` changed). Each aggregate is its own subquery: a bare `count(*)`
    walks the smallest index's pages without reading rows and `max(rowid)` is one b-tree descent, while
    `SELECT count(*), max(rowid)` together reads every row (votes at 1.24 M: 0.13 s against 0.017 s; every table a
    page keys on, after each commit: ~0.37 s against ~0.035 s)."""
    store = open_workspace(root).store
    if table == "human_votes":   # a person's changed vote is an upsert (same rowid): voted_at tells it
        return tuple(store.one(f"SELECT count(*), max(rowid), max(voted_at) FROM votes INDEXED BY votes_human "
                               f"WHERE {HUMAN_SQL}"))
    parts = [f"(SELECT count(*) FROM {table})", f"(SELECT max(rowid) FROM {table})"]
    if table in ("nodes", "embedding_sets"):
        parts.append(f"(SELECT max(updated_at) FROM {table})")
    elif table == "stage_runs":   # a run's upserts keep rowids; its end (finished_at) tells they are done
        parts.append("(SELECT max(finished_at) FROM stage_runs)")
    return tuple(store.one(f"SELECT {', '.join(parts)}"))


def prompt_files_paths(ws: Workspace) -> list[Path]:
    """The prompt templates the workspace's stages use: its own, then the bundled ones (checkout or installed)."""
    out = []
    for folder in (ws.prompts_dir, DEFAULT_PROMPTS_DIR):
        if Path(folder).is_dir():
            out.extend(sorted(Path(folder).glob("*.j2")))
    return out


@st.cache_data(ttl=VERSION_TTL_S, show_spinner=False)
def _prompt_files_version(root: str) -> tuple:
    """Prompt files live outside the database: their paths and modification times, re-read every few seconds."""
    ws = open_workspace(root)
    return tuple(sorted((str(p), p.stat().st_mtime_ns) for p in prompt_files_paths(ws)))


def prompt_files_changed() -> None:
    """After the dashboard itself wrote a prompt file: read the files' versions now, not within seconds."""
    _prompt_files_version.clear()


def table_version(root: str, table: str) -> tuple:
    """A key that changes when `table` does: its row count and largest rowid (after each commit). Besides the
    tables: "prompts" (the prompt files), "human_votes" (people's `human:<name>` votes) and "machine_votes" (the
    referees'), so that a person's vote does not recompute what only the referees' votes decide (at paper scale: the
    Referees page's figures ~8 s, the machine part of select's rule ~4.5 s)."""
    if table == "prompts":
        return _prompt_files_version(root)
    db_v = db_version(root)
    if table == "machine_votes":
        # Only referee stage runs write them (a rerun's upsert keeps rowids, but the run is a new stage_runs row).
        votes, people = _db_table_version(root, "votes", db_v), _db_table_version(root, "human_votes", db_v)
        return votes[0] - people[0], _db_table_version(root, "stage_runs", db_v)
    return _db_table_version(root, table, db_v)


def version(root: str, *tables: str) -> tuple:
    return tuple(table_version(root, t) for t in tables)


def has_rows(root: str, table: str) -> bool:
    return bool(table_version(root, table)[0])


# -- taxonomy ------------------------------------------------------------------------------------

@st.cache_data(show_spinner="Reading the taxonomy…", max_entries=4)
def nodes(root: str, v: tuple) -> pd.DataFrame:
    ws = open_workspace(root)
    idx = Taxonomy.of(ws).index()
    counts = coverage.load_counts(ws.store)
    return coverage.node_frame(idx, counts)


def node_table(root: str) -> pd.DataFrame:
    return nodes(root, version(root, "nodes", "matches", "samples", "selections"))


@st.cache_resource(show_spinner=False, max_entries=2)
def _every_node(root: str, v: tuple) -> TreeIndex:
    return Taxonomy.of(open_workspace(root)).index(None)


def every_node_index(root: str) -> TreeIndex:
    """The tree of every node (any status), kept per version of the nodes table (a rename or a decision changes
    it): building it is ~0.5 s at paper scale, which each drill-down (a map selection) would pay again. Read only."""
    return _every_node(root, version(root, "nodes"))


@st.cache_data(show_spinner=False, max_entries=4)
def _task_types(root: str, v: tuple) -> dict:
    c = task_type_counts(open_workspace(root))
    return {"accepted": c.accepted, "in_use": c.in_use, "awaiting": c.awaiting, "line": c.line()}


def task_types(root: str) -> dict:
    """Task types accepted and in use, proposals awaiting review, and the sentence that says so (with the command
    that accepts them): what the Overview and Coverage pages show above their counts."""
    return _task_types(root, version(root, "nodes"))


def task_types_note(root: str) -> dict:
    """`task_types` shown: a notice while proposals await review (they are not counted), else a caption."""
    tt = task_types(root)
    (st.info if tt["awaiting"] else st.caption)(tt["line"])
    return tt


# -- overview ------------------------------------------------------------------------------------

COUNT_SQL = {
    "task types": None,
    "images": "SELECT count(*) FROM images",
    "embedded items": "SELECT count(*) FROM embedding_rows",
    "matches": "SELECT count(*) FROM matches",
    "filter: kept labels": "SELECT count(*) FROM filter_decisions WHERE kept=1",
    "samples (ok)": "SELECT count(*) FROM samples WHERE status='ok'",
    "votes": None,         # the referees' (machines'): from the table version, as people's decisions below
    "human votes": None,
    "selected": "SELECT count(*) FROM selections WHERE selected=1",
    "LLM calls": "SELECT count(*) FROM llm_calls",
}
# What the overview's other figures depend on: not votes, so that a person's vote (Adjudicate) recounts only the
# vote figures and the funnel's "passing" step (~0.3 s at paper scale instead of ~1 s).
OVERVIEW_TABLES = ("nodes", "images", "embedding_rows", "matches", "filter_decisions", "samples", "selections",
                   "llm_calls", "stage_runs")
PASSING = "samples passing the referees"
# What a referee outcome depends on (select's rule: the referees' votes, people's votes, flags).
OUTCOME_TABLES = ("machine_votes", "human_votes", "samples", "sample_flags")


def overview(root: str) -> dict:
    """The overview's counts, funnel, LLM usage and recent runs, read now (the parts that votes do not change are
    cached per version of their tables). The funnel's "passing" step is select's k-of-N rule on the current votes,
    or, when the current selection was made with Dawid–Skene consensus, what passed that run (`rule` says which;
    `kofn_passing` is the k-of-N figure either way)."""
    ov = _overview(root, version(root, *OVERVIEW_TABLES))
    counts = dict(ov["counts"], **{"votes": table_version(root, "machine_votes")[0],
                                   "human votes": table_version(root, "human_votes")[0]})
    kofn = _passing(root, open_workspace(root))
    rule = selection_rule(root, version(root, "selections", "stage_runs"))
    passing = rule["passed"] if rule and rule["consensus"] == "ds" else kofn
    funnel = [(step, passing if step == PASSING else n) for step, n in ov["funnel"]]
    return dict(ov, counts=counts, funnel=funnel, rule=rule, kofn_passing=kofn)


@st.cache_data(show_spinner=False, max_entries=4)
def selection_rule(root: str, v: tuple) -> dict | None:
    """How the current selection was made: its select run, consensus ("kofn" / "ds") and threshold, and how many
    samples passed the referees under that rule (from the reasons the run stored). None before any select."""
    store = open_workspace(root).store
    row = store.one("SELECT r.id, r.params FROM selections s JOIN stage_runs r ON r.id = s.stage_run_id LIMIT 1")
    if row is None:
        return None
    try:
        params = json.loads(row[1] or "{}")
    except ValueError:
        params = {}
    failed = " OR ".join("reason LIKE ?" for _ in select_stage.REFEREE_REASONS)
    passed = store.scalar(f"SELECT count(*) FROM selections WHERE NOT (selected = 0 AND ({failed}))",
                          tuple(f"{r}%" for r in select_stage.REFEREE_REASONS))
    return {"run": int(row[0]), "consensus": params.get("consensus", "kofn"),
            "min_posterior": float(params.get("min_posterior", 0.8)), "passed": int(passed)}


@st.cache_data(show_spinner=False, max_entries=4)
def _overview(root: str, v: tuple) -> dict:
    ws = open_workspace(root)
    s = ws.store
    # Task types counted in SQL (~0.09 s at 22k nodes; building the tree index for it took 0.6-0.8 s of a cold start).
    counts = {k: 0 if k in ("votes", "human votes") else int(s.scalar(q)) if q else Taxonomy.of(ws).count_leaves()
              for k, q in COUNT_SQL.items()}
    funnel = [
        ("images registered", counts["images"]),
        ("images matched to task types", int(s.scalar("SELECT count(DISTINCT image_id) FROM matches"))),
        ("image × task pairs kept by the filter", counts["filter: kept labels"]),
        ("Q&A samples written", counts["samples (ok)"]),
        (PASSING, None),
        ("samples selected", counts["selected"]),
    ]
    usage = pd.DataFrame([dict(r) for r in s.query(
        "SELECT stage, model, count(*) AS calls, sum(status='error') AS errors, "
        "coalesce(sum(prompt_tokens),0) AS prompt_tokens, coalesce(sum(completion_tokens),0) AS completion_tokens, "
        "coalesce(sum(cost_usd),0) AS cost_usd FROM llm_calls GROUP BY stage, model ORDER BY stage, model")],
        columns=["stage", "model", "calls", "errors", "prompt_tokens", "completion_tokens", "cost_usd"])
    runs = pd.DataFrame([dict(r) for r in s.query(
        "SELECT id, stage, status, started_at, finished_at, model, prompt_file, prompt_hash, summary "
        "FROM stage_runs ORDER BY id DESC LIMIT 30")],
        columns=["id", "stage", "status", "started_at", "finished_at", "model", "prompt_file", "prompt_hash",
                 "summary"])
    return {"counts": counts, "funnel": funnel, "usage": usage, "runs": runs}


def _passing(root: str, ws: Workspace) -> int:
    """Samples passing the referees as `select` counts them (k-of-N on machine votes, a person's vote decides,
    flagged samples do not pass): the same function, so the figure equals select's "passed the referees"."""
    min_votes = ws.config.select.min_votes
    return int(outcomes_frame(root, version(root, *OUTCOME_TABLES), min_votes)["passed"].sum())


# cache_resource: one shared frame (400k rows at paper scale), not a copy per caller; the overview and the map's
# "referee outcome" colouring read the same one. Callers only read it.
@st.cache_resource(show_spinner="Applying select's referee rule to every sample…", max_entries=2)
def outcomes_frame(root: str, v: tuple, min_votes: int) -> pd.DataFrame:
    """select's rule per sample. The referees' vote counts (one GROUP BY over every vote: ~4.5 s at paper scale)
    are kept per machine-vote version; people's votes and flags are read anew (~15 ms), so a vote cast on the
    Adjudicate page does not make the overview or the map wait for the whole count again."""
    store = open_workspace(root).store
    counts = machine_vote_counts(root, version(root, "machine_votes", "samples"))
    return select_stage.referee_outcomes(store, min_votes=min_votes, table=select_stage.with_people(counts, store))


@st.cache_resource(show_spinner="Counting the referees' votes…", max_entries=2)
def machine_vote_counts(root: str, v: tuple) -> pd.DataFrame:
    """Per ok sample, its machine votes: kept on disk too (`arrays/dashboard/`), keyed by `v`, so a restarted
    dashboard reads them (~0.2 s) instead of counting every vote again (~4 s at paper scale, most of a cold start).
    The key changes with every referee or Q&A run (their stage_runs row, counted and finished) and every count of
    samples or votes; "Reload data" forgets it."""
    folder = open_workspace(root).arrays_dir / "dashboard"
    path = folder / f"machine-votes-{hashlib.sha1(repr(v).encode()).hexdigest()[:16]}.parquet"
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError, ImportError):
        pass
    frame = select_stage.machine_vote_counts(open_workspace(root).store)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        frame.to_parquet(tmp, index=False)
        tmp.replace(path)
        for old in sorted(folder.glob("machine-votes-*.parquet"), key=lambda p: p.stat().st_mtime)[:-2]:
            old.unlink(missing_ok=True)   # the two newest are kept
    except (OSError, ValueError, ImportError):
        pass   # a read-only workspace: counted again next start
    return frame


def forget_derived(root: str) -> None:
    """"Reload data": every cached read, and the vote counts kept on disk, are read anew."""
    st.cache_data.clear()
    machine_vote_counts.clear()
    outcomes_frame.clear()
    for path in (open_workspace(root).arrays_dir / "dashboard").glob("machine-votes-*.parquet"):
        path.unlink(missing_ok=True)


# -- images --------------------------------------------------------------------------------------

def image_path(root_dir: str, rel: str) -> Path:
    return Path(root_dir) / rel


@st.cache_data(show_spinner=False, max_entries=4)
def image_table(root: str, v: tuple) -> pd.DataFrame:
    s = open_workspace(root).store
    rows = s.query("SELECT id, path, root, source FROM images")
    return pd.DataFrame([tuple(r) for r in rows], columns=["id", "path", "root", "source"]).set_index("id")


@st.cache_data(show_spinner=False, max_entries=4)
def image_best_match(root: str, v: tuple) -> pd.Series:
    s = open_workspace(root).store
    rows = s.query("SELECT image_id, node_id FROM matches WHERE rank = 1")
    return pd.Series({r[0]: r[1] for r in rows}, dtype="object")


def image_outcomes(root: str, v: tuple, min_votes: int) -> pd.Series:
    """Per image: referee outcome of its refereed samples (all passed / some / none; images without a vote are
    left out: "not refereed"), by select's rule. `v` is the caller's version; flags are versioned here."""
    return _image_outcomes(root, (v, version(root, "sample_flags")), min_votes)


@st.cache_data(show_spinner=False, max_entries=4)
def _image_outcomes(root: str, v: tuple, min_votes: int) -> pd.Series:
    out = outcomes_frame(root, version(root, *OUTCOME_TABLES), min_votes)
    out = out[out["refereed"]]
    g = out.groupby("image_id")["passed"].agg(["sum", "size"])
    label = pd.Series("some passed", index=g.index, dtype="object")
    label[g["sum"] == g["size"]] = "all passed"
    label[g["sum"] == 0] = "none passed"
    return label


def thumbnail(root: str, image_id: str, px: int) -> bytes | None:
    """A small JPEG of a registered image (None if its file is gone or unreadable), cached per file state."""
    try:
        path = register.image_path(open_workspace(root), image_id)
        stamp = path.stat().st_mtime_ns
    except (OSError, WorkbenchError):
        return None
    return _thumbnail(str(path), stamp, px)


@st.cache_data(show_spinner=False, max_entries=2000)
def _thumbnail(path: str, mtime_ns: int, px: int) -> bytes | None:
    # A preview: decoded at reduced scale and not re-hashed (the file's mtime keys the cache).
    try:
        img = register.open_rgb(Path(path), min_side=px)
    except WorkbenchError:
        return None
    img.thumbnail((px, px))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=80)
    return buf.getvalue()
