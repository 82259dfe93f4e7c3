"""Referee consensus beyond a vote count: Dawid–Skene (crowd-kit) over the 0/1 votes.

Dawid–Skene estimates, from the votes alone, each referee's confusion matrix (sensitivity = P(vote 1 | good),
specificity = P(vote 0 | bad)) and each sample's posterior P(good). We use crowd-kit's `DawidSkene` (EM) as is.

- Human votes (`human:<name>`, review/adjudication.py) are not a referee among others: a person adjudicates, so
  with `include_human=True` their decision is the sample's true label (crowd-kit's `true_labels`, which also
  anchors the referees' confusion matrices); with `include_human=False` they are ignored. Two people who
  disagree on a sample leave it to the model.
- Only valid votes on ok samples count; a sample with no valid vote has no posterior.
- Per first-level category: the referees' confusion counts weighted by the global posterior (soft counts), i.e.
  the M-step restricted to the category's samples, so no category is fitted on too few samples on its own.
- The result is stored as `arrays/consensus/<with-human|machines>-<key>.npz`, the key a hash of the votes' content
  (count, max rowid, a rowid-weighted checksum of the votes: a changed vote changes it), the options and crowd-kit's
  version, so the CLI, `select` and the dashboard load it instead of refitting (about 15 s at 400k samples x 3
  referees on 2 cores); the newest 4 files are kept.
- `uncertain_queue`: the samples whose posterior is closest to 0.5, those a person already decided left out.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from workbench.core.clock import utcnow
from workbench.core.errors import WorkbenchError
from workbench.core.imports import locked_import
from workbench.core.workspace import Workspace
from workbench.stages.referee.people import HUMAN_SQL, decided_samples
from workbench.taxonomy.model import Taxonomy

DS_PARAMS = {"n_iter": 100, "tol": 1e-5}
KEEP_FILES = 4          # stored results kept in arrays/consensus/ (both human modes, a previous version)


def votes_version(store) -> tuple:
    """Changes whenever a vote is added, removed or changed (one pass over the covering index)."""
    return tuple(store.one(
        "SELECT count(*), coalesce(max(rowid), 0), coalesce(sum(vote), 0), coalesce(sum(valid), 0), "
        "coalesce(sum((rowid * 2654435761 + coalesce(vote, 2) * 97 + valid) % 2147483647), 0) FROM votes"))


def consensus_key(store, include_human: bool = True, votes_v: tuple | None = None) -> str:
    from importlib.metadata import version

    votes_v = votes_version(store) if votes_v is None else votes_v
    blob = json.dumps([list(votes_v), bool(include_human), DS_PARAMS, version("crowd-kit")])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class Consensus:
    key: str
    include_human: bool
    posterior: pd.Series        # sample_id -> P(good), every ok sample with a valid vote
    reliability: pd.DataFrame   # referee, votes, sensitivity, specificity, accuracy
    per_node: pd.DataFrame      # referee, node_id, votes, good, tp, tn (soft counts under the posterior)
    prior: float                # P(good) over all samples
    gold: int                   # samples whose label a person decided
    computed_at: str
    stale: bool = False         # loaded as the latest stored result although the votes changed since
    _ranked: pd.DataFrame | None = field(default=None, repr=False, compare=False)

    def ranked(self) -> pd.DataFrame:
        """sample_id, p_good, uncertainty = |p - 0.5|, most uncertain first (ties by sample id); sorted once."""
        if self._ranked is None:
            q = pd.DataFrame({"sample_id": self.posterior.index.to_numpy(), "p_good": self.posterior.to_numpy()})
            q["uncertainty"] = (q["p_good"] - 0.5).abs()
            self._ranked = q.sort_values(["uncertainty", "sample_id"], kind="stable").reset_index(drop=True)
        return self._ranked

    def by_category(self, category_of: dict) -> pd.DataFrame:
        """Reliability per referee x first-level category (`category_of`: node_id -> category name)."""
        pn = self.per_node.assign(category=self.per_node["node_id"].map(category_of).fillna("(not in taxonomy)"))
        g = pn.groupby(["referee", "category"], sort=True)[["votes", "good", "tp", "tn"]].sum().reset_index()
        with np.errstate(invalid="ignore", divide="ignore"):
            g["sensitivity"] = g["tp"] / g["good"]
            g["specificity"] = g["tn"] / (g["votes"] - g["good"])
            g["accuracy"] = (g["tp"] + g["tn"]) / g["votes"]
        g["votes"] = g["votes"].astype(int)
        return g[["referee", "category", "votes", "sensitivity", "specificity", "accuracy"]]


def load_votes(store, include_human: bool = True) -> tuple[pd.DataFrame, pd.Series]:
    """Valid machine votes on ok samples (sample_id, node_id, referee, vote) and the human decisions
    (sample_id -> 0/1; empty unless include_human)."""
    rows = store.query(
        "SELECT v.sample_id, s.node_id, v.referee, v.vote FROM votes v JOIN samples s ON s.id = v.sample_id "
        f"WHERE s.status = 'ok' AND v.valid = 1 AND v.vote IS NOT NULL AND NOT v.{HUMAN_SQL}")
    votes = pd.DataFrame([tuple(r) for r in rows], columns=["sample_id", "node_id", "referee", "vote"])
    gold = pd.Series(dtype="int64")
    if include_human:
        h = store.query(
            "SELECT v.sample_id, avg(v.vote) FROM votes v JOIN samples s ON s.id = v.sample_id "
            f"WHERE s.status = 'ok' AND v.valid = 1 AND v.vote IS NOT NULL AND v.{HUMAN_SQL} GROUP BY v.sample_id")
        decided = {sid: int(m > 0.5) for sid, m in h if m != 0.5}   # a tie between people decides nothing
        gold = pd.Series(decided, dtype="int64")
    return votes, gold


def fit(votes: pd.DataFrame, gold: pd.Series | None = None) -> tuple[pd.Series, pd.DataFrame, float]:
    """crowd-kit Dawid–Skene on (sample_id, referee, vote) rows -> (posterior P(good) per sample,
    reliability per referee, prior P(good))."""
    try:
        DawidSkene = locked_import("crowdkit.aggregation").DawidSkene
    except ImportError:
        raise WorkbenchError("Dawid-Skene needs crowd-kit: pip install 'taskgalaxy-workbench[analysis]' "
                             "(or use k-of-N: --consensus kofn)") from None

    gold = gold if gold is not None else pd.Series(dtype="int64")
    if votes.empty:
        post = gold.astype("float64")
        return post, pd.DataFrame(columns=["referee", "votes", "sensitivity", "specificity", "accuracy"]), \
            float(post.mean()) if len(post) else float("nan")
    # Integer task/worker codes: crowd-kit joins on them several times per iteration (4x faster than strings).
    task, samples = pd.factorize(votes["sample_id"])
    worker, names = pd.factorize(votes["referee"])
    data = pd.DataFrame({"task": task, "worker": worker, "label": votes["vote"].astype("int64").to_numpy()})
    code_of = pd.Series(np.arange(len(samples)), index=samples)
    known = gold[gold.index.isin(samples)]
    true_labels = pd.Series(known.to_numpy(), index=code_of[known.index].to_numpy()) if len(known) else None
    if data["label"].nunique() < 2:
        # Every vote is the same: nothing to tell good from bad by (crowd-kit would leave one class out).
        label = float(data["label"].iloc[0])
        post = pd.Series(label, index=samples, name="p_good")
        post.loc[known.index] = known.astype("float64")
        post = pd.concat([post, gold[~gold.index.isin(samples)].astype("float64")])
        rel = pd.DataFrame({"referee": list(names), "votes": np.bincount(worker, minlength=len(names)),
                            "sensitivity": np.nan, "specificity": np.nan, "accuracy": np.nan})
        return post, rel.sort_values("referee").reset_index(drop=True), float(post.mean())
    with warnings.catch_warnings():   # crowd-kit 1.4 uses pandas' deprecated inplace=/copy= keywords
        warnings.filterwarnings("ignore", module=r"crowdkit\.")
        ds = DawidSkene(**DS_PARAMS).fit(data, true_labels=true_labels)
    probas = ds.probas_.reindex(columns=[0, 1])
    post = pd.Series(probas[1].fillna(0.0).to_numpy(), index=samples[probas.index.to_numpy()], name="p_good")
    post[known.index] = known.astype("float64")   # exactly the person's label (crowd-kit clips it to 1e-10)
    # A person's decision on a sample no machine voted on is its posterior too.
    extra = gold[~gold.index.isin(samples)]
    if len(extra):
        post = pd.concat([post, extra.astype("float64")])
    errors = ds.errors_.reindex(pd.MultiIndex.from_product([range(len(names)), [0, 1]]), fill_value=0.0)
    errors = errors.reindex(columns=[0, 1])     # a class no sample belongs to leaves its column NaN
    prior = float(ds.priors_.get(1, 0.0))
    n_votes = np.bincount(worker, minlength=len(names))
    sens = np.array([errors.loc[(w, 1), 1] for w in range(len(names))], dtype="float64")
    spec = np.array([errors.loc[(w, 0), 0] for w in range(len(names))], dtype="float64")
    rel = pd.DataFrame({"referee": list(names), "votes": n_votes, "sensitivity": sens, "specificity": spec,
                        "accuracy": prior * sens + (1 - prior) * spec})
    return post, rel.sort_values("referee").reset_index(drop=True), prior


def soft_counts(votes: pd.DataFrame, posterior: pd.Series) -> pd.DataFrame:
    """Per (referee, node): votes, expected good samples, expected true positives / true negatives."""
    if votes.empty:
        return pd.DataFrame(columns=["referee", "node_id", "votes", "good", "tp", "tn"])
    p = posterior.reindex(votes["sample_id"]).to_numpy()
    v = votes["vote"].to_numpy()
    frame = pd.DataFrame({"referee": votes["referee"].to_numpy(), "node_id": votes["node_id"].fillna("").to_numpy(),
                          "votes": 1, "good": p, "tp": p * (v == 1), "tn": (1 - p) * (v == 0)})
    out = frame.groupby(["referee", "node_id"], sort=True).sum().reset_index()
    out["node_id"] = out["node_id"].replace("", None)
    return out


def compute(ws: Workspace, include_human: bool = True, key: str | None = None) -> Consensus:
    votes, gold = load_votes(ws.store, include_human)
    post, rel, prior = fit(votes, gold)
    return Consensus(key=key or consensus_key(ws.store, include_human), include_human=include_human,
                     posterior=post, reliability=rel, per_node=soft_counts(votes, post), prior=prior,
                     gold=len(gold), computed_at=utcnow())


# -- storage -------------------------------------------------------------------------------------

def _folder(ws: Workspace) -> Path:
    return Path(ws.arrays_dir) / "consensus"


def _file(ws: Workspace, key: str, include_human: bool) -> Path:
    return _folder(ws) / f"{'with-human' if include_human else 'machines'}-{key}.npz"


def save(ws: Workspace, c: Consensus) -> Path:
    folder = _folder(ws)
    folder.mkdir(parents=True, exist_ok=True)
    path = _file(ws, c.key, c.include_human)
    meta = {"key": c.key, "include_human": c.include_human, "prior": c.prior, "gold": c.gold,
            "computed_at": c.computed_at}
    pn = c.per_node
    arrays = {"meta": np.array(json.dumps(meta)),
              "sample_id": c.posterior.index.to_numpy(dtype=str), "p_good": c.posterior.to_numpy(dtype="float64"),
              "pn_referee": pn["referee"].to_numpy(dtype=str),
              "pn_node": pn["node_id"].fillna("").to_numpy(dtype=str)}
    for col in ("votes", "good", "tp", "tn"):
        arrays[f"pn_{col}"] = pn[col].to_numpy(dtype="float64")
    rel = c.reliability
    arrays["rel_referee"] = rel["referee"].to_numpy(dtype=str)
    for col in ("votes", "sensitivity", "specificity", "accuracy"):
        arrays[f"rel_{col}"] = rel[col].to_numpy(dtype="float64")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    for old in sorted(folder.glob("*.npz"), key=lambda p: p.stat().st_mtime, reverse=True)[KEEP_FILES:]:
        old.unlink(missing_ok=True)
    return path


def load(path: Path) -> Consensus:
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        post = pd.Series(z["p_good"], index=z["sample_id"].astype(object), name="p_good")
        pn = pd.DataFrame({"referee": z["pn_referee"].astype(object), "node_id": z["pn_node"].astype(object),
                           **{c: z[f"pn_{c}"] for c in ("votes", "good", "tp", "tn")}})
        pn["node_id"] = pn["node_id"].replace("", None)
        rel = pd.DataFrame({"referee": z["rel_referee"].astype(object),
                            **{c: z[f"rel_{c}"] for c in ("votes", "sensitivity", "specificity", "accuracy")}})
    rel["votes"] = rel["votes"].astype(int)
    return Consensus(key=meta["key"], include_human=meta["include_human"], posterior=post, reliability=rel,
                     per_node=pn, prior=meta["prior"], gold=meta["gold"], computed_at=meta["computed_at"])


def stored_path(ws: Workspace, key: str, include_human: bool) -> Path | None:
    """Where the fit for this key is stored, if it is."""
    path = _file(ws, key, include_human)
    return path if path.exists() else None


def latest_stored(ws: Workspace, include_human: bool) -> list[Path]:
    """Stored fits of this mode, newest first."""
    pattern = f"{'with-human' if include_human else 'machines'}-*.npz"
    return sorted(_folder(ws).glob(pattern), key=lambda p: p.stat().st_mtime, reverse=True)


def consensus(ws: Workspace, include_human: bool = True, *, compute_missing: bool = True,
              allow_stale: bool = False) -> Consensus | None:
    """The Dawid–Skene consensus of the votes as they are now: loaded when stored under the current key, else
    computed and stored (compute_missing), else the latest stored one marked `stale` (allow_stale), else None."""
    key = consensus_key(ws.store, include_human)
    path = stored_path(ws, key, include_human)
    if path is not None:
        try:
            return load(path)
        except (OSError, ValueError, KeyError):   # a damaged file: compute it again
            path.unlink(missing_ok=True)
    if compute_missing:
        c = compute(ws, include_human, key)
        save(ws, c)
        return c
    if allow_stale:
        for p in latest_stored(ws, include_human):
            try:
                c = load(p)
            except (OSError, ValueError, KeyError):
                continue
            c.stale = True
            return c
    return None


def require(ws: Workspace, include_human: bool = True) -> Consensus:
    """For commands: the consensus, or an error saying there are no votes yet."""
    c = consensus(ws, include_human)
    assert c is not None   # compute_missing: computed when not stored
    if c.posterior.empty:
        raise WorkbenchError("consensus: no valid referee votes on ok samples yet (run `workbench referee WORKSPACE`)")
    return c


def first_level(ws: Workspace) -> dict:
    """node_id -> first-level category name, for every node of the tree (one recursive query: 0.05 s at 22k
    nodes, where building the tree index takes 0.3 s)."""
    rows = ws.store.query(
        "WITH RECURSIVE down(id, category) AS (SELECT id, name FROM nodes WHERE parent_id IS NULL "
        "UNION ALL SELECT n.id, down.category FROM nodes n JOIN down ON n.parent_id = down.id) "
        "SELECT id, category FROM down")
    return {r[0]: r[1] for r in rows}


# -- what a person should look at first ----------------------------------------------------------

def uncertain_queue(ws: Workspace, c: Consensus, n: int = 20) -> pd.DataFrame:
    """The n samples whose posterior is closest to 0.5, leaving out those a person already voted on or flagged:
    sample_id, p_good, uncertainty |p - 0.5|, image_id, node_id, task_type, question, answer, votes."""
    cols = ["sample_id", "p_good", "uncertainty", "image_id", "node_id", "task_type", "question", "answer", "votes"]
    q = c.ranked()
    done = decided_samples(ws)
    if done:
        q = q[~q["sample_id"].isin(list(done))]
    if q.empty or n <= 0:
        return pd.DataFrame(columns=cols)
    out = []
    for chunk in _chunks(q, n):   # a stale result may name samples deleted since: keep reading until n found
        ids = chunk["sample_id"].tolist()
        marks = ",".join("?" * len(ids))
        info = {r["id"]: dict(r) for r in ws.store.query(
            f"SELECT id, image_id, node_id, question, answer FROM samples WHERE status = 'ok' AND id IN ({marks})",
            tuple(ids))}
        votes: dict[str, list[str]] = {}
        for r in ws.store.query(f"SELECT sample_id, referee, vote, valid FROM votes WHERE sample_id IN ({marks}) "
                                "ORDER BY referee", tuple(ids)):
            v = str(r["vote"]) if r["valid"] and r["vote"] is not None else "?"
            votes.setdefault(r["sample_id"], []).append(f"{r['referee']}={v}")
        for row in chunk.itertuples(index=False):
            if row.sample_id in info:
                out.append({**info[row.sample_id], "sample_id": row.sample_id, "p_good": row.p_good,
                            "uncertainty": row.uncertainty, "votes": " ".join(votes.get(row.sample_id, []))})
        if len(out) >= n:
            break
    frame = pd.DataFrame(out[:n], columns=[c for c in cols if c != "task_type"] + ["id"]).drop(columns="id")
    paths = {nid: task_path(ws, nid) for nid in set(frame["node_id"])}   # a few nodes: no whole-tree index
    frame["task_type"] = frame["node_id"].map(paths)
    return frame[cols].reset_index(drop=True)


def task_path(ws: Workspace, node_id: str | None) -> str:
    if not node_id:
        return ""
    try:
        return Taxonomy.of(ws).path(node_id)
    except WorkbenchError:
        return ""


def _chunks(frame: pd.DataFrame, n: int):
    size = max(n, 100)
    for start in range(0, len(frame), size):
        yield frame.iloc[start:start + size]
