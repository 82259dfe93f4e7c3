"""Coverage against a reference taxonomy (e.g. a benchmark's task list).

Every reference task (a leaf of the reference file, read with `taxonomy.io.parse_source`) is
mapped to its nearest task type (a live leaf of the workspace) by cosine similarity of sentence
embeddings of the leaf names; those below the threshold (config
`text_embedding.coverage_threshold`) are the gaps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


from workbench.errors import WorkbenchError
from workbench.taxonomy.model import LIVE
from workbench.taxonomy.names import SEP


@dataclass
class CoverageRow:
    reference_path: str
    nearest_id: str | None
    nearest_path: str | None
    score: float
    covered: bool


@dataclass
class CoverageReport:
    reference: str
    threshold: float
    rows: list[CoverageRow] = field(default_factory=list)
    problems: list = field(default_factory=list)   # taxonomy.io Problems found reading the reference

    @property
    def gaps(self) -> list[CoverageRow]:
        return [r for r in self.rows if not r.covered]

    @property
    def covered_fraction(self) -> float:
        return (len(self.rows) - len(self.gaps)) / len(self.rows) if self.rows else 0.0

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame([r.__dict__ for r in self.rows])

    def summary(self) -> str:
        return (f"{self.reference}: {len(self.rows)} reference task(s), {len(self.rows) - len(self.gaps)} covered "
                f"({self.covered_fraction:.0%}) at similarity >= {self.threshold}; {len(self.gaps)} gap(s)")


def reference_coverage(ws, reference_path: str | Path, fmt: str | None = None,
                       threshold: float | None = None, statuses=LIVE) -> CoverageReport:
    from workbench.taxonomy.io import parse_source
    from workbench.textembed import embed_texts, workspace_cache_dir

    cfg = ws.config.text_embedding
    threshold = cfg.coverage_threshold if threshold is None else float(threshold)
    fmt_used, entries, problems = parse_source(Path(reference_path), fmt)
    paths = list(dict.fromkeys(tuple(e.names) for e in entries if e.names))
    prefixes = {p[:i] for p in paths for i in range(1, len(p))}
    ref_leaves = [p for p in paths if p not in prefixes]
    if not ref_leaves:
        errs = "; ".join(p.format() for p in problems[:3])
        raise WorkbenchError(f"{reference_path}: no reference tasks read{(': ' + errs) if errs else ''}")
    report = CoverageReport(str(reference_path), threshold, problems=problems)
    ours = ws.taxonomy.leaves(statuses)
    cache = workspace_cache_dir(ws)
    ref_vecs = embed_texts([p[-1] for p in ref_leaves], cfg.model, cache_dir=cache)
    if not ours:
        report.rows = [CoverageRow(SEP.join(p), None, None, 0.0, False) for p in ref_leaves]
        return report
    # Compare with every node, not only the leaves: a reference task that names one of our categories
    # ("ocr" vs "optical character recognition") is covered by that category's task types.
    idx = ws.taxonomy.index(statuses)
    cand = [(idx.nodes[i], idx.paths[i]) for i in idx.dfs()]
    our_vecs = embed_texts([n.name for n, _ in cand], cfg.model, cache_dir=cache)
    sims = ref_vecs @ our_vecs.T
    best = sims.argmax(axis=1)
    for i, p in enumerate(ref_leaves):
        j = int(best[i])
        score = float(sims[i, j])
        report.rows.append(CoverageRow(SEP.join(p), cand[j][0].id, cand[j][1], round(score, 4), score >= threshold))
    return report
