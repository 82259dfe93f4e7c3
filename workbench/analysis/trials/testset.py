"""A trial's test set: the items (parents, images, samples, ...) a prompt trial runs on, chosen by hand, by a
filter (a subtree, a referee disagreement, a filter gap) or at random with a seed, named and stored in
`trial_test_sets` with how they were chosen and the assertions to check on every output."""

from __future__ import annotations

import getpass
import json
import random
from dataclasses import dataclass, field

import pandas as pd

from workbench.analysis.trials.assertions import check_specs
from workbench.analysis.trials.stages import candidates, check_stage, resolve
from workbench.core.clock import utcnow
from workbench.core.errors import WorkbenchError
from workbench.core.workspace import Workspace


@dataclass
class TestSet:
    """Items of one stage, in order. `how` says how they were chosen (stored with them)."""

    __test__ = False          # not a pytest test class

    stage: str
    items: list[str]
    name: str = ""
    how: dict = field(default_factory=dict)
    assertions: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.items = list(dict.fromkeys(self.items))
        check_specs(self.assertions)
        if not self.name:
            self.name = f"{self.stage} {self.how.get('by', 'hand')} {utcnow()}"

    # -- making one ----------------------------------------------------------------------------------
    @classmethod
    def of(cls, ws: Workspace, stage: str, items: list[str], *, name: str = "",
           assertions: list[str] | None = None) -> TestSet:
        """Items chosen by hand (checked against the workspace now)."""
        stage = check_stage(ws, stage)
        resolve(ws, stage, list(items))
        return cls(stage, list(items), name, {"by": "hand"}, list(assertions or []))

    @classmethod
    def random(cls, ws: Workspace, stage: str, rows: int = 5, seed: int = 0, *, name: str = "",
               level: int | None = None, subtree: str | None = None, disagreement: bool = False,
               gap: bool = False, assertions: list[str] | None = None, pool: list[str] | None = None) -> TestSet:
        """`rows` items drawn with `seed` from the stage's items, narrowed first by the filters (see `candidates`);
        rows=0: every item the filters leave. `pool`: the items to draw from, when the caller has listed them."""
        stage = check_stage(ws, stage)
        if pool is None:
            pool = candidates(ws, stage, level=level, subtree=subtree, disagreement=disagreement, gap=gap)
        filters = {k: v for k, v in (("level", level), ("subtree", subtree), ("disagreement", disagreement),
                                     ("gap", gap)) if v}
        if not pool:
            what = ", ".join(f"{k}={v}" for k, v in filters.items()) or "no filter"
            raise WorkbenchError(f"no items for a {stage} test set ({what}); run the stage's inputs first "
                                 "(e.g. `workbench qa` before a referee trial) or loosen the filter")
        picked = pool if not rows or rows >= len(pool) else random.Random(seed).sample(pool, rows)
        how = {"by": "filter" if filters and not rows else "random", "rows": rows, "seed": seed, **filters}
        return cls(stage, picked, name, how, list(assertions or []))

    # -- storing -------------------------------------------------------------------------------------
    def save(self, ws: Workspace, *, who: str | None = None) -> TestSet:
        with ws.store.write() as conn:
            conn.execute("INSERT INTO trial_test_sets(name, stage, items, how, assertions, created_by, created_at) "
                         "VALUES (?,?,?,?,?,?,?) ON CONFLICT(name) DO UPDATE SET stage=excluded.stage, "
                         "items=excluded.items, how=excluded.how, assertions=excluded.assertions",
                         (self.name, self.stage, json.dumps(self.items), json.dumps(self.how),
                          json.dumps(self.assertions), who or getpass.getuser(), utcnow()))
        return self

    @classmethod
    def load(cls, ws: Workspace, name: str) -> TestSet:
        r = ws.store.one("SELECT * FROM trial_test_sets WHERE name=?", (name,))
        if r is None:
            known = ", ".join(list_test_sets(ws)["name"].tolist()[:10]) or "none yet"
            raise WorkbenchError(f"no test set named {name!r}; stored: {known}")
        return cls(r["stage"], json.loads(r["items"]), r["name"], json.loads(r["how"]), json.loads(r["assertions"]))


def list_test_sets(ws: Workspace) -> pd.DataFrame:
    rows = ws.store.query("SELECT name, stage, json_array_length(items) AS items, how, assertions, created_by, "
                          "created_at FROM trial_test_sets ORDER BY created_at DESC")
    return pd.DataFrame([dict(r) for r in rows],
                        columns=["name", "stage", "items", "how", "assertions", "created_by", "created_at"])
