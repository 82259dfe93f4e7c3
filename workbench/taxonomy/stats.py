"""Shape statistics of a taxonomy: what a curator checks before a paid expansion run."""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import asdict, dataclass

from workbench.taxonomy.model import TASK_TYPES, StatusArg, Taxonomy, TreeIndex


@dataclass
class LevelStats:
    level: int
    nodes: int
    leaves: int
    with_children: int
    branching_mean: float     # children per node that has children
    branching_median: float
    branching_max: int


@dataclass
class TaxonomyStats:
    nodes: int
    leaves: int
    max_depth: int
    by_status: dict[str, int]
    by_origin: dict[str, int]
    levels: list[LevelStats]
    leaf_depths: dict[int, int]           # depth -> number of leaves at that depth
    largest_subtree: str | None           # the first-level node with the most leaves
    largest_subtree_leaves: int
    largest_subtree_share: float          # of all leaves

    def as_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        if not self.nodes:
            return ["empty taxonomy: no nodes with these statuses (`workbench taxonomy import` or `init --seed`)"]
        out = [
            f"nodes: {self.nodes}   task types (leaves): {self.leaves}   max depth: {self.max_depth}",
            "status: " + ", ".join(f"{k} {v}" for k, v in sorted(self.by_status.items())),
            "origin: " + ", ".join(f"{k} {v}" for k, v in sorted(self.by_origin.items())),
            "",
            f"{'level':>5} {'nodes':>7} {'leaves':>7} {'inner':>7} {'branch mean':>11} {'median':>7} {'max':>5}",
        ]
        for lv in self.levels:
            out.append(f"{lv.level:>5} {lv.nodes:>7} {lv.leaves:>7} {lv.with_children:>7} "
                       f"{lv.branching_mean:>11.2f} {lv.branching_median:>7.1f} {lv.branching_max:>5}")
        out.append("")
        out.append("leaf depth histogram: " + ", ".join(f"depth {d}: {n}" for d, n in sorted(self.leaf_depths.items())))
        if self.largest_subtree:
            out.append(f"largest first-level subtree: {self.largest_subtree!r} with {self.largest_subtree_leaves} "
                       f"leaves ({self.largest_subtree_share:.1%} of all)")
        return out


def compute_stats(taxonomy: Taxonomy, statuses: StatusArg = TASK_TYPES) -> TaxonomyStats:
    """Figures over the tree restricted to `statuses` (default: the task types)."""
    statuses = taxonomy.resolve_statuses(statuses)
    all_nodes = taxonomy.nodes(None)
    idx = TreeIndex.build([n for n in all_nodes if statuses is None or n.status in statuses])
    return stats_from_index(idx, all_nodes)


def stats_from_index(idx: TreeIndex, all_nodes=None) -> TaxonomyStats:
    nodes = list(idx.nodes.values())
    leaves = [n for n in nodes if idx.is_leaf(n.id)]
    by_level: dict[int, list] = {}
    for n in nodes:
        by_level.setdefault(n.level, []).append(n)
    levels = []
    for level in sorted(by_level):
        group = by_level[level]
        fan = [len(idx.children.get(n.id, [])) for n in group]
        inner = [f for f in fan if f]
        levels.append(LevelStats(
            level=level, nodes=len(group), leaves=sum(1 for f in fan if not f), with_children=len(inner),
            branching_mean=round(statistics.fmean(inner), 3) if inner else 0.0,
            branching_median=float(statistics.median(inner)) if inner else 0.0,
            branching_max=max(inner) if inner else 0))
    leaf_depths = dict(sorted(Counter(n.level for n in leaves).items()))
    # Leaves per first-level subtree.
    per_root: Counter = Counter()
    root_of: dict[str, str] = {}
    for nid in idx.dfs():
        n = idx.nodes[nid]
        root_of[nid] = nid if n.parent_id is None else root_of[n.parent_id]
        if idx.is_leaf(nid):
            per_root[root_of[nid]] += 1
    largest, largest_n = (per_root.most_common(1)[0] if per_root else (None, 0))
    src = all_nodes if all_nodes is not None else nodes
    return TaxonomyStats(
        nodes=len(nodes), leaves=len(leaves), max_depth=max(by_level) if by_level else 0,
        by_status=dict(Counter(n.status for n in src)), by_origin=dict(Counter(n.origin for n in src)),
        levels=levels, leaf_depths=leaf_depths,
        largest_subtree=idx.nodes[largest].name if largest else None, largest_subtree_leaves=largest_n,
        largest_subtree_share=(largest_n / len(leaves)) if leaves else 0.0)
