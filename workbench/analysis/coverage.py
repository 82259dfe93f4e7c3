"""Coverage of the taxonomy by images and samples: per-node counts, tree-chart slices, the paper's bins.

Pure functions over pandas frames (no Streamlit), so notebooks and tests use them directly.
Counts attach to task types (leaves) through `matches` (images CLIP put under a task type),
`samples` (Q&A with status ok) and `selections`; inner nodes get the totals of their subtree.

Tree charts: `tree_slice` cuts the focus node's subtree `depth` levels deep, reducing the depth to stay within
`MAX_CHART_NODES` (2,000) and folding the smallest children into "(n more)" when one level is wider; `partition`
lays a slice out as bands for an icicle or a sunburst, `treemap` as nested squarified rectangles. Also the paper's
bins (0, 1-10, 11-20, 21-40, ...), long-tail figures and the CLIP token counts of task paths.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from workbench.taxonomy.model import TreeIndex

MEASURES = ("task_types", "images", "samples", "selected")
MAX_CHART_NODES = 2000   # measured: tree charts beyond ~2k nodes cost seconds to ship and draw (12–16 s for 21k nodes)


def load_counts(store) -> pd.DataFrame:
    """Per-node counts read from the stage tables: index node_id, columns images, samples, selected."""
    frames = {
        "images": "SELECT node_id, count(*) AS n FROM matches GROUP BY node_id",
        "samples": "SELECT node_id, count(*) AS n FROM samples WHERE status='ok' GROUP BY node_id",
        # IN (subquery) builds one in-memory index: ~2x faster than a join on the text key at 400k rows.
        "selected": ("SELECT node_id, count(*) AS n FROM samples WHERE id IN "
                     "(SELECT sample_id FROM selections WHERE selected=1) GROUP BY node_id"),
    }
    out = {}
    cur = store.conn.cursor()
    cur.row_factory = None   # plain tuples: sqlite3.Row costs more than the query at this size
    for name, sql in frames.items():
        out[name] = pd.Series(dict(cur.execute(sql).fetchall()), dtype="int64")
    df = pd.DataFrame(out).fillna(0).astype("int64")
    df.index.name = "node_id"
    return df


def node_frame(idx: TreeIndex, counts: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per live node with subtree totals and coverage.

    Columns: id, parent_id, name, path, level, status, origin, is_leaf, category (first-level name),
    task_types, images, samples, selected (subtree sums), with_images / with_samples (task types in
    the subtree having at least one), cov_images / cov_samples (those as a share of task_types).
    """
    order = idx.dfs()
    n = len(order)
    pos = {nid: i for i, nid in enumerate(order)}
    parent = np.full(n, -1, dtype=np.int64)
    is_leaf = np.zeros(n, dtype=bool)
    rows = []
    category = []
    for i, nid in enumerate(order):
        node = idx.nodes[nid]
        if node.parent_id is not None:
            parent[i] = pos[node.parent_id]
        is_leaf[i] = idx.is_leaf(nid)
        category.append(node.name if parent[i] < 0 else category[parent[i]])
        rows.append((nid, node.parent_id, node.name, idx.paths[nid], node.level, node.status, node.origin))
    df = pd.DataFrame(rows, columns=["id", "parent_id", "name", "path", "level", "status", "origin"])
    df["is_leaf"] = is_leaf
    df["category"] = category
    own = {}
    for col in ("images", "samples", "selected"):
        if counts is not None and col in counts and len(counts):
            own[col] = df["id"].map(counts[col]).fillna(0).to_numpy(dtype=np.int64)
        else:
            own[col] = np.zeros(n, dtype=np.int64)
    totals = {
        "task_types": is_leaf.astype(np.int64),
        "images": own["images"].copy(),
        "samples": own["samples"].copy(),
        "selected": own["selected"].copy(),
        "with_images": (is_leaf & (own["images"] > 0)).astype(np.int64),
        "with_samples": (is_leaf & (own["samples"] > 0)).astype(np.int64),
    }
    # Children come after their parent in DFS order: one reverse pass sums every subtree.
    for i in range(n - 1, -1, -1):
        p = parent[i]
        if p >= 0:
            for arr in totals.values():
                arr[p] += arr[i]
    for col, arr in totals.items():
        df[col] = arr
    with np.errstate(invalid="ignore", divide="ignore"):
        df["cov_images"] = np.where(df["task_types"] > 0, df["with_images"] / df["task_types"], 0.0)
        df["cov_samples"] = np.where(df["task_types"] > 0, df["with_samples"] / df["task_types"], 0.0)
    return df


@dataclass
class TreeSlice:
    frame: pd.DataFrame    # rows to draw: id, parent (chart parent, "" for the top), label, value, colour...
    depth: int             # levels below the focus actually shown
    truncated: bool        # some children were folded into "(n more)" nodes to stay under max_nodes


def tree_slice(nodes: pd.DataFrame, focus: str | None, depth: int, size: str, colour: str,
               max_nodes: int = MAX_CHART_NODES) -> TreeSlice:
    """The part of the tree a chart draws: `focus`'s subtree `depth` levels deep (None: all roots).

    Depth is reduced until the slice fits `max_nodes`; if even one level does not fit, the
    smallest children are folded into one "(n more)" node. Values are subtree totals, so
    plotly's branchvalues="total" holds.
    """
    if size not in MEASURES:
        raise ValueError(f"size must be one of {MEASURES}")
    by_parent = nodes.groupby(nodes["parent_id"].fillna(""), sort=False).indices
    frame_idx = nodes.reset_index(drop=True)

    def collect(d: int) -> list[tuple[int, str]]:
        out: list[tuple[int, str]] = []
        if focus:
            top = np.flatnonzero(frame_idx["id"].to_numpy() == focus)
            level = [(int(i), "") for i in top]
        else:
            level = [(int(i), "") for i in by_parent.get("", [])]
        out.extend(level)
        for _ in range(d if focus else d - 1):
            nxt = []
            for i, _p in level:
                for c in by_parent.get(frame_idx.at[i, "id"], []):
                    nxt.append((int(c), frame_idx.at[i, "id"]))
            out.extend(nxt)
            level = nxt
            if not level:
                break
        return out

    chosen_depth = max(1, depth)
    picked = collect(chosen_depth)
    while len(picked) > max_nodes and chosen_depth > 1:
        chosen_depth -= 1
        picked = collect(chosen_depth)
    truncated = False
    rows = frame_idx.iloc[[i for i, _ in picked]].copy()
    rows["chart_parent"] = [p for _, p in picked]
    if len(rows) > max_nodes:
        # Even one level is too wide: keep the biggest children, fold the rest per parent.
        truncated = True
        is_top = rows["chart_parent"] == ""
        keep_top, rest = (rows[is_top], rows[~is_top]) if focus else (rows.iloc[:0], rows)
        rest = rest.sort_values(size, ascending=False, kind="stable")
        room = max(1, max_nodes - len(keep_top) - rest["chart_parent"].nunique())
        kept, folded = rest.iloc[:room], rest.iloc[room:]
        others = []
        sums = ["task_types", "images", "samples", "selected", "with_images", "with_samples"]
        for parent_id, grp in folded.groupby("chart_parent", sort=False):
            other = {"id": f"__more__{parent_id}", "name": f"({len(grp)} more)", "path": "",
                     "chart_parent": parent_id, "level": int(grp["level"].iloc[0]), "is_leaf": True,
                     "category": grp["category"].iloc[0]}
            other.update({c: int(grp[c].sum()) for c in sums})
            others.append(other)
        rows = pd.concat([keep_top, kept, pd.DataFrame(others)], ignore_index=True)
        tt = rows["task_types"].clip(lower=1)
        rows["cov_images"] = np.where(rows["task_types"] > 0, rows["with_images"] / tt, 0.0)
        rows["cov_samples"] = np.where(rows["task_types"] > 0, rows["with_samples"] / tt, 0.0)
    rows = rows.rename(columns={"chart_parent": "parent"})
    rows["value"] = rows[size]
    rows["colour"] = rows[colour]
    return TreeSlice(rows.reset_index(drop=True), chosen_depth, truncated)


def _drawn_tree(slice_frame: pd.DataFrame):
    """The nodes of a slice that take room (value > 0), siblings biggest first as plotly orders them: the frame,
    the values, each row's child rows and the top rows (whose parent is not in the slice)."""
    f = slice_frame[slice_frame["value"] > 0].sort_values("value", ascending=False, kind="stable")
    row_of = {nid: i for i, nid in enumerate(f["id"].tolist())}
    children: dict[int, list[int]] = {}
    tops = []
    for i, p in enumerate(f["parent"].fillna("").tolist()):
        if p in row_of:
            children.setdefault(row_of[p], []).append(i)
        else:
            tops.append(i)
    return f, f["value"].to_numpy(dtype=float), children, tops


def _depths(n: int, children: dict[int, list[int]], tops: list[int]) -> np.ndarray:
    depth = np.zeros(n, dtype=int)
    todo = list(tops)
    while todo:
        i = todo.pop()
        for c in children.get(i, []):
            depth[c] = depth[i] + 1
            todo.append(c)
    return depth


def partition(slice_frame: pd.DataFrame) -> pd.DataFrame:
    """An icicle's or a sunburst's layout of a `tree_slice` frame: one band per node, `depth` levels below the
    slice's top (0 = the focus, or the first-level categories) and a span [y0, y1] in 0..1 inside its parent's
    span, proportional to `value` (subtree totals, as plotly's branchvalues="total"). Nodes of value 0 take no
    room and are left out."""
    f, values, children, tops = _drawn_tree(slice_frame)
    y0, y1 = np.zeros(len(f)), np.zeros(len(f))

    def lay(members: list[int], lo: float, hi: float, room: float) -> None:
        cur = lo
        for i in members:
            y0[i] = cur
            cur += (hi - lo) * values[i] / room
            y1[i] = cur

    lay(tops, 0.0, 1.0, values[tops].sum() if tops else 1.0)
    todo = list(tops)
    while todo:   # parents before children
        i = todo.pop()
        kids = children.get(i, [])
        if kids:
            # The children's room is the parent's value (the rest is its own share) unless they add up to more.
            lay(kids, y0[i], y1[i], max(values[i], values[kids].sum()))
            todo.extend(kids)
    out = f.assign(depth=_depths(len(f), children, tops), y0=y0, y1=y1)
    return out.sort_values(["depth", "y0"], kind="stable").reset_index(drop=True)


def treemap(slice_frame: pd.DataFrame, width: float, height: float, header: float = 16.0,
            pad: float = 1.5) -> pd.DataFrame:
    """A nested squarified treemap of a `tree_slice` frame in a width x height canvas: columns x0, x1, y0, y1
    (y down) and depth. Each node's children fill its rectangle below a `header` strip for its name (when the
    rectangle is tall enough), inset by `pad`; areas are proportional to `value` among siblings."""
    import squarify  # the dashboard extra's; the layout itself is squarify's (Bruls et al.)

    f, values, children, tops = _drawn_tree(slice_frame)
    x0, x1, y0, y1 = (np.zeros(len(f)) for _ in range(4))

    def fill(members: list[int], x: float, y: float, w: float, h: float) -> None:
        if w <= 0 or h <= 0:   # no room left at this depth: the members stay zero-sized
            for i in members:
                x0[i], y0[i] = x1[i], y1[i] = max(x, 0), max(y, 0)
            return
        rects = squarify.squarify(squarify.normalize_sizes(values[members].tolist(), w, h), x, y, w, h)
        for i, r in zip(members, rects):
            x0[i], y0[i], x1[i], y1[i] = r["x"], r["y"], r["x"] + r["dx"], r["y"] + r["dy"]

    fill(tops, 0.0, 0.0, width, height)
    todo = list(tops)
    while todo:
        i = todo.pop()
        kids = children.get(i, [])
        if kids:
            w, h = x1[i] - x0[i], y1[i] - y0[i]
            top = header if h > 2.5 * header and w > 3 * header else pad
            fill(kids, x0[i] + pad, y0[i] + top, w - 2 * pad, h - top - pad)
            todo.extend(kids)
    out = f.assign(depth=_depths(len(f), children, tops), x0=x0, x1=x1, y0=y0, y1=y1)
    return out.sort_values("depth", kind="stable").reset_index(drop=True)   # parents drawn under their children


# -- the paper's bins: 1-10, 11-20, 21-40, 41-80, ... (doubling), plus 0 --------------------------

def paper_bins(max_value: int) -> list[tuple[int, int, str]]:
    """(low, high, label) bins covering 0..max_value: 0, 1–10, 11–20, 21–40, 41–80, ..."""
    bins = [(0, 0, "0"), (1, 10, "1–10")]
    hi = 10
    while hi < max_value:
        lo, hi = hi + 1, hi * 2
        bins.append((lo, hi, f"{lo}–{hi}"))
    return bins


def bin_labels(values: np.ndarray, bins: list[tuple[int, int, str]]) -> np.ndarray:
    values = np.asarray(values)
    highs = np.array([b[1] for b in bins])
    where = np.searchsorted(highs, values, side="left")
    return np.array([b[2] for b in bins], dtype=object)[np.minimum(where, len(bins) - 1)]


def histogram(leaves: pd.DataFrame, measure: str, by_category: bool = False) -> tuple[pd.DataFrame, list]:
    """Task types per paper bin of `measure` (images or samples per task type).

    Returns (frame with columns bin, [category,] task_types; bins in order)."""
    values = leaves[measure].to_numpy()
    bins = paper_bins(int(values.max()) if len(values) else 0)
    labels = bin_labels(values, bins)
    frame = pd.DataFrame({"bin": labels, "category": leaves["category"].to_numpy()})
    keys = ["bin", "category"] if by_category else ["bin"]
    out = frame.groupby(keys, sort=False).size().rename("task_types").reset_index()
    order = {b[2]: i for i, b in enumerate(bins)}
    out = out.sort_values(by=["bin"] + (["category"] if by_category else []),
                          key=lambda s: s.map(order) if s.name == "bin" else s).reset_index(drop=True)
    if not by_category:  # every bin shown, empty ones too
        out = (pd.DataFrame({"bin": [b[2] for b in bins]}).merge(out, on="bin", how="left")
               .fillna({"task_types": 0}).astype({"task_types": "int64"}))
    return out, bins


def long_tail(values) -> dict:
    """Figures of how unevenly `values` (per task type) are spread."""
    v = np.sort(np.asarray(values, dtype=np.float64))[::-1]
    n = len(v)
    total = float(v.sum())
    if n == 0:
        return {"task_types": 0, "total": 0, "zero": 0, "at_most_10": 0, "median": 0.0, "max": 0,
                "top10pct_share": 0.0, "gini": 0.0}
    top = max(1, math.ceil(n * 0.1))
    asc = v[::-1]
    gini = float((2 * np.arange(1, n + 1) - n - 1).dot(asc) / (n * total)) if total > 0 else 0.0
    return {
        "task_types": n, "total": int(total), "zero": int((v == 0).sum()), "at_most_10": int((v <= 10).sum()),
        "median": float(np.median(v)), "max": int(v[0]),
        "top10pct_share": float(v[:top].sum() / total) if total else 0.0, "gini": gini,
    }


# -- CLIP text-encoder context -------------------------------------------------------------------

@dataclass
class TokenReport:
    tokenizer: str | None      # what counted the tokens (None: open_clip not importable)
    context_length: int
    lengths: np.ndarray        # tokens per text including start/end tokens
    too_long: np.ndarray       # bool per text


def clip_token_lengths(texts: list[str], model_name: str | None = None) -> TokenReport:
    """Count CLIP text tokens per text with open_clip's tokenizer; context 77 unless the model says so."""
    try:
        import open_clip
        from open_clip.tokenizer import SimpleTokenizer
    except ImportError:
        return TokenReport(None, 77, np.zeros(len(texts), dtype=np.int64), np.zeros(len(texts), dtype=bool))
    tok = None
    if model_name:
        try:
            tok = open_clip.get_tokenizer(model_name)
        except Exception:  # a hub tokenizer offline, an unknown name: fall back to CLIP's BPE
            tok = None
    if not isinstance(tok, SimpleTokenizer):
        ctx = int(getattr(tok, "context_length", 77) or 77)
        tok, name = SimpleTokenizer(), "open_clip SimpleTokenizer"
    else:
        ctx, name = int(tok.context_length), f"open_clip tokenizer of {model_name}"
    lengths = np.fromiter((len(tok.encode(t)) + 2 for t in texts), dtype=np.int64, count=len(texts))
    return TokenReport(name, ctx, lengths, lengths > ctx)


def template_texts(paths: list[str], template: str) -> list[str]:
    """What the CLIP stage embeds for each task path ({path}, {leaf} as in the config)."""
    return [template.format(path=p, leaf=p.rsplit("~", 1)[-1]) for p in paths]
