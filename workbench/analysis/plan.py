"""The run planner: what a run over the current taxonomy and image set (or N images) will cost and take.

For every stage through `through` (expand, embed, match, filter, qa, one row per referee, select, export)
the plan gives the calls, input/output tokens, cost at list and at batch price, and wall time at the
endpoint's concurrency and rate limits; per first-level category the cost of its subtree and the samples
per dollar. Every figure has a range (low..high) and says where its rate came from:

- **measured** (a pilot run in this workspace): tokens, latency per call from `llm_calls` (this stage, the
  configured model; the current prompt's calls when there are enough); candidates per image from
  `matches`; the filter's keep rate and the share of images with any kept task type from
  `filter_decisions`; ok samples per kept pair from `samples`; each referee's pass rate and the share of
  samples passing k-of-N from `votes`. Ranges are 90 % intervals of the measured mean or proportion
  (mean ± 1.645 standard errors), so a small pilot gives a wide range; per-call tokens also show p10-p90.
  Per-category rates are shrunk towards the global rate (a category with few pilot rows borrows it).
- **assumed** (nothing measured): the defaults in `ASSUMED` and `[plan]` in workbench.toml, marked as such.

Batch price is list price x `[batch] price_factor`; an unknown price stays unknown (no cost, no samples per dollar).
With adaptive referees, each referee's share of samples is replayed from the pilot's votes in `[[referees]]` order
(`stages/referee/stage.py`: `decided`, `is_audit`), with the calls it saves against full voting.

**The stages' dry runs, summed.** Each LLM stage's calls on the rows there now (`StagePlan.ready`) are that
stage's own dry run (`LLMStage.run(dry_run=True)`: every row rendered and keyed exactly as a run would, the keys
looked up in the cache), with how many come from which change (`reasons`: new rows, model, prompt or sampling
parameters changed, a task type's text changed, new CLIP candidates...). Calls the upstream stages will cause
(images not matched yet, the filter's new keeps, the Q&A's new samples) are predicted on top from the rates.
Expansion plans the lowest level with an accepted leaf waiting (`expand --level N --dry-run`); match counts the
images its own rule (`match_todo`) would score, stale rows included. Above `[plan] exact_rows` rows a stage is
not rendered: a row counts as answered when a reply from the configured model and prompt is stored, and the row
says it is approximate. Measured input tokens more than 2x from the prompt's estimate give a warning.

Images are counted as the provider counts them: OpenAI tile accounting for gpt-4o-class models (after
workbench's own downscale to `[vision] image_max_side`, the provider fits the image in 2048 px, then
scales its shorter side down to 768 px; 85 + 170 tokens per 512-px tile for gpt-4o), 32-px patches for the
patch-counted models, `[plan] tokens_per_image` otherwise. This matters only without a pilot: measured
prompt tokens already include the images as the endpoint counted them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from workbench.core.errors import WorkbenchError
from workbench.core.workspace import Workspace
from workbench.llm.client import resolve_endpoint
from workbench.llm.cost import estimate_prompt_tokens, is_local_endpoint
from workbench.stages.base import RunReport, why_text
from workbench.stages.embed.stage import current_task_texts
from workbench.stages.expand.stage import ExpandStage, expand
from workbench.stages.filter.stage import FilterStage
from workbench.stages.match.stage import match_todo
from workbench.stages.qa.stage import QAStage
from workbench.stages.referee.stage import RefereeStage, decided, is_audit, run_referees
from workbench.stages.vision import load_prompt
from workbench.taxonomy.model import Taxonomy
from workbench.taxonomy.names import SEP

STAGES = ("expand", "embed", "match", "filter", "qa", "referee", "select", "export")
Z90 = 1.645                      # two-sided 90 % interval
SHRINK_ROWS = 20                 # a category's rate counts as this many rows of the global rate
TOKEN_SAMPLE = 20_000            # per-call token figures read from at most this many recent calls per stage
MIN_PROMPT_CALLS = 5             # calls with the current prompt needed to prefer them over all of the model's

# Rates used when the workspace has measured nothing (shown as assumptions, with these ranges).
ASSUMED = {
    "keep_rate": (0.8, 0.5, 0.95),          # share of CLIP candidates the filter keeps (the paper: ~0.83)
    "samples_per_kept": (0.95, 0.8, 1.0),   # ok Q&A samples per kept (image, task type)
    "referee_pass": (0.7, 0.4, 0.9),        # each referee's share of 1 votes
    "question_tokens": 30, "answer_tokens": 60,
}

# Rough CLIP throughput when no embed run was measured here: forward GFLOPs per image / per text (open_clip's
# model profile) at an effective 150 GFLOP/s on a CPU and 60 TFLOP/s on a data-centre GPU (bf16, batch >= 256).
# Order-of-magnitude figures: an embed run in this workspace replaces them with what it measured.
CLIP_GFLOPS = {"ViT-B-32": (4.4, 2.9), "ViT-B-16": (17.6, 2.9), "ViT-L-14": (81.1, 6.6),
               "ViT-L-14-336": (190.7, 6.6), "ViT-H-14": (167.4, 12.7), "ViT-g-14": (267.0, 12.7)}
CPU_GFLOPS, GPU_GFLOPS = 150.0, 60_000.0
MATCH_CPU_GFLOPS, MATCH_GPU_GFLOPS = 100.0, 50_000.0   # the top-k matmul (2 * images * task types * dim)

# OpenAI image accounting (platform.openai.com/docs/guides/images-vision, "Calculating costs").
# tiles: (base, per 512-px tile); patches: multiplier on 32-px patches (at most 1536).
_TILES = [("gpt-4o-mini", (2833, 5667)), ("gpt-4o", (85, 170)), ("chatgpt-4o", (85, 170)),
          ("gpt-4-turbo", (85, 170)), ("gpt-4-vision", (85, 170)), ("gpt-4.5", (85, 170)),
          ("gpt-4.1-mini", None), ("gpt-4.1-nano", None), ("gpt-4.1", (85, 170)),
          ("o1", (75, 150)), ("o3-mini", None), ("o3", (75, 150)), ("gpt-5-mini", None), ("gpt-5-nano", None),
          ("gpt-5", (70, 140))]
_PATCHES = {"gpt-4.1-mini": 1.62, "gpt-4.1-nano": 2.46, "o4-mini": 1.72, "gpt-5-mini": 1.62, "gpt-5-nano": 2.46}


def image_tokens(model: str, width: int, height: int, *, max_side: int = 0, per_image: int = 765) -> int:
    """Input tokens one image costs on `model`, as the provider counts them (see the module docstring)."""
    w, h = float(max(width, 1)), float(max(height, 1))
    if max_side and max(w, h) > max_side:            # what workbench itself sends (stages/vision.py)
        s = max_side / max(w, h)
        w, h = max(1.0, math.floor(w * s)), max(1.0, math.floor(h * s))
    m = model.lower().rsplit("/", 1)[-1]
    for prefix, mult in _PATCHES.items():
        if m.startswith(prefix):
            return math.ceil(_patches(w, h) * mult)
    for prefix, rule in _TILES:
        if m.startswith(prefix):
            if rule is None:
                break
            base, tile = rule
            s = min(1.0, 2048 / max(w, h))
            w2, h2 = w * s, h * s
            s = min(1.0, 768 / min(w2, h2))
            w2, h2 = w2 * s, h2 * s
            return base + tile * math.ceil(w2 / 512) * math.ceil(h2 / 512)
    return per_image


def _patches(w: float, h: float) -> int:
    n = math.ceil(w / 32) * math.ceil(h / 32)
    if n > 1536:
        s = math.sqrt(32 * 32 * 1536 / (w * h))
        s *= min(math.floor(w * s / 32) / (w * s / 32), math.floor(h * s / 32) / (h * s / 32))
        n = math.ceil(int(w * s) / 32) * math.ceil(int(h * s) / 32)
    return min(n, 1536)


# -- rates -------------------------------------------------------------------------------------------------
@dataclass
class Rate:
    """A rate with its 90 % range; `n` = the rows it was measured on (0: assumed)."""

    value: float
    low: float
    high: float
    n: int = 0
    source: str = "assumed"

    @classmethod
    def assumed(cls, value, low, high) -> Rate:
        return cls(float(value), float(low), float(high), 0, "assumed")

    @classmethod
    def proportion(cls, hits: float, n: float, default: tuple) -> Rate:
        if n <= 0:
            return cls.assumed(*default)
        p = hits / n
        se = math.sqrt(max(p * (1 - p), 0.25 / n) / n)   # never a zero-width range from a small pilot
        return cls(p, max(0.0, p - Z90 * se), min(1.0, p + Z90 * se), int(n), "measured")

    @classmethod
    def mean(cls, values, default: tuple, *, lower: float = 0.0) -> Rate:
        v = np.asarray(values, dtype=float)
        if v.size == 0:
            return cls.assumed(*default)
        m = float(v.mean())
        se = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else m
        return cls(m, max(lower, m - Z90 * se), m + Z90 * se, int(v.size), "measured")

    def pick(self, which: str) -> float:
        return {"value": self.value, "low": self.low, "high": self.high}[which]

    def label(self, fmt: str = "{:.3g}") -> str:
        rng = f" ({fmt.format(self.low)}..{fmt.format(self.high)})" if self.low != self.high else ""
        return f"{fmt.format(self.value)}{rng}, {self.source}" + (f" on {self.n:,}" if self.n else "")


@dataclass
class CallStats:
    """Per-call figures of one stage (tokens, latency) measured from `llm_calls`, or assumed."""

    prompt: Rate
    completion: Rate
    latency: Rate
    p10_p90: dict = field(default_factory=dict)    # {"prompt": (p10, p90), "completion": (p10, p90)}
    note: str = ""
    warning: str = ""                              # measured and estimated tokens per call differ over 2x


# -- the plan ----------------------------------------------------------------------------------------------
@dataclass
class Range:
    value: float = 0.0
    low: float = 0.0
    high: float = 0.0

    def __add__(self, o: Range) -> Range:
        return Range(self.value + o.value, self.low + o.low, self.high + o.high)

    def scale(self, f: float) -> Range:
        return Range(self.value * f, self.low * f, self.high * f)


@dataclass
class StagePlan:
    stage: str                        # expand, embed, match, filter, qa, referee:<name>, select, export
    kind: str                         # 'llm' or 'local'
    endpoint: str | None = None
    model: str | None = None
    items: str = ""                   # what the rows are (images, parents, samples...)
    rows: Range = field(default_factory=Range)        # work items still to do
    done: int = 0                     # already answered / computed (not counted again)
    calls: Range = field(default_factory=Range)
    prompt_tokens: Range = field(default_factory=Range)
    completion_tokens: Range = field(default_factory=Range)
    per_call: dict = field(default_factory=dict)      # mean / p10 / p90 tokens per call, latency
    price: tuple | None = None        # (input, output) USD per M tokens; None: unknown
    cost_usd: Range | None = field(default_factory=Range)         # None: unknown price
    batch_cost_usd: Range | None = None                           # None: unknown price or no batch API
    batch_note: str = ""
    wall_s: Range = field(default_factory=Range)
    wall_bound: str = ""              # what limits the wall time (concurrency, requests/min, tokens/min)
    cpu_s: float | None = None        # local stages (embed, match)
    gpu_s: float | None = None
    calls_saved: Range | None = None  # adaptive referees: calls full voting would make on top
    skipped: str | None = None        # why the stage has nothing to do
    notes: list[str] = field(default_factory=list)
    ready: int | None = None          # calls on the rows there now: its own dry run (None: too many rows)
    reasons: dict = field(default_factory=dict)       # ready calls by the change that makes them (the dry run's)
    warnings: list[str] = field(default_factory=list)


@dataclass
class CategoryPlan:
    node_id: str
    name: str
    task_types: int
    cost_usd: float | None
    batch_cost_usd: float | None
    samples: float                    # new samples expected to pass the referees
    samples_per_usd: float | None     # None: unknown price; inf: free


@dataclass
class Plan:
    images: int                       # the planned image set
    images_registered: int
    task_types: int
    through: str
    stages: list[StagePlan]
    categories: list[CategoryPlan]
    rates: dict[str, Rate]
    assumptions: list[str]
    seconds: float = 0.0
    changes: list[str] = field(default_factory=list)    # what moved it since the last plan (plan_history.py)

    def total(self, what: str) -> Range | None:
        """Sum over LLM stages of calls / prompt_tokens / completion_tokens / cost_usd / batch_cost_usd / wall_s;
        None for a cost when some stage's price is unknown."""
        out = Range()
        for s in self.stages:
            v = getattr(s, what)
            if v is None and what == "batch_cost_usd":
                v = s.cost_usd          # no batch API (a local endpoint): that stage runs live at its price
            if v is None:
                if s.kind == "llm" and s.calls.high:
                    return None
                continue
            out = out + v
        return out

    def as_dict(self) -> dict:
        d = asdict(self)
        d["totals"] = {k: (asdict(v) if v is not None else None) for k, v in
                       ((k, self.total(k)) for k in ("calls", "prompt_tokens", "completion_tokens", "cost_usd",
                                                      "batch_cost_usd", "wall_s"))}
        d["totals"]["batch_note"] = "stages without a batch API (local endpoints) at their live price"
        for c in d["categories"]:
            if c["samples_per_usd"] == math.inf:
                c["samples_per_usd"] = "free"
        return d

    def table(self) -> str:
        return format_plan(self)


# -- building it -------------------------------------------------------------------------------------------
def make_plan(ws: Workspace, *, images: int | None = None, through: str = "export") -> Plan:
    """The plan for the current taxonomy and image set, or for `images` images (pilot rates scaled up)."""
    import time

    t0 = time.perf_counter()
    if through not in STAGES:
        raise WorkbenchError(f"--through must be one of {', '.join(STAGES)}; got {through!r}")
    if images is not None and images < 0:
        raise WorkbenchError(f"--images must be 0 or more; got {images}")
    wanted = STAGES[:STAGES.index(through) + 1]
    p = _Planner(ws, images)
    stages: list[StagePlan] = []
    for name in wanted:
        stages.extend(getattr(p, f"plan_{name}")())
    cats = p.categories(stages) if p.flow else []     # only once the vision stages are planned
    plan = Plan(images=p.target, images_registered=p.registered, task_types=len(p.leaf_cat), through=through,
                stages=stages, categories=cats, rates=p.rates, assumptions=p.assumptions)
    plan.seconds = time.perf_counter() - t0
    return plan


class _Planner:
    def __init__(self, ws: Workspace, images: int | None):
        self.ws, self.cfg, self.s = ws, ws.config, ws.store
        self.assumptions: list[str] = []
        self.rates: dict[str, Rate] = {}
        self.refs = list(self.cfg.referees)
        self.k_votes = self.cfg.select.min_votes
        # The vote patterns are the longest read (1.2M votes at paper scale): a thread with its own connection
        # reads them while the rest is measured (sqlite releases the GIL).
        self._patterns = _Background(self._read_patterns)
        idx = Taxonomy.of(ws).index()
        self.idx = idx
        self.leaf_cat: dict[str, str] = {}       # live task type -> its first-level category id
        for root in idx.roots():
            for nid in idx.subtree(root.id):
                if idx.is_leaf(nid):
                    self.leaf_cat[nid] = root.id
        self.cat_names = {r.id: r.name for r in idx.roots()}
        self.path_node = {p: n for n, p in idx.paths.items()}
        self.registered = int(self.s.scalar("SELECT count(*) FROM images"))
        self.target = self.registered if images is None else int(images)
        # The registered images in the plan (all, or a proportional share when --images is smaller) and new ones.
        self.f_reg = 1.0 if self.registered == 0 else min(1.0, self.target / self.registered)
        self.new_images = max(0, self.target - self.registered)
        self._measure()
        # Per-category flows for cost attribution: category -> Range of pairs per stage.
        self.flow: dict[str, dict[str, Range]] = {}

    # ---- measured rates ----------------------------------------------------------------------------------
    def _by_cat(self, rows) -> dict[str, np.ndarray]:
        """{category: summed columns} from rows of (node_id, *numbers)."""
        out: dict[str, np.ndarray] = {}
        for r in rows:
            cat = self.leaf_cat.get(r[0])
            if cat is None:
                continue
            vals = np.asarray(r[1:], dtype=float)
            out[cat] = out.get(cat, 0) + vals
        return out

    def _measure(self) -> None:
        s = self.s
        k_cfg = self.cfg.match.k
        matched = s.one("SELECT count(DISTINCT image_id), count(*) FROM matches")
        self.matched_images, match_pairs = int(matched[0]), int(matched[1])
        self.match_by_cat = self._by_cat(s.query("SELECT node_id, count(*) FROM matches GROUP BY node_id"))
        if self.matched_images:
            self.rates["candidates_per_image"] = Rate(match_pairs / self.matched_images, match_pairs /
                                                      self.matched_images, match_pairs / self.matched_images,
                                                      self.matched_images, "measured")
        else:
            k_cfg = min(k_cfg, len(self.leaf_cat)) or k_cfg
            self.rates["candidates_per_image"] = Rate.assumed(k_cfg, k_cfg, k_cfg)
            self.assumptions.append(f"every image gets {k_cfg} CLIP candidates ([match] k, at most the task types; "
                                    "nothing matched yet)")
        fil = s.query("SELECT node_id, sum(kept), count(*) FROM filter_decisions WHERE node_id IS NOT NULL "
                      "GROUP BY node_id")
        self.filter_by_cat = self._by_cat(fil)
        self.rates["keep_rate"] = Rate.proportion(float(sum(r[1] for r in fil)), float(sum(r[2] for r in fil)),
                                                  ASSUMED["keep_rate"])
        kr = self.rates["keep_rate"]
        c = self.rates["candidates_per_image"].value
        any_default = tuple(1 - (1 - x) ** max(c, 1) for x in (kr.value, kr.low, kr.high))
        imgs = s.one("SELECT count(*), sum(k > 0) FROM (SELECT sum(kept) AS k FROM filter_decisions WHERE node_id IS "
                     "NOT NULL GROUP BY image_id)")
        self.rates["images_with_kept"] = Rate.proportion(float(imgs[1] or 0), float(imgs[0] or 0), any_default)
        # ok samples per kept pair, on images the Q&A stage has answered
        qa_kept = s.query("SELECT d.node_id, count(*) FROM filter_decisions d WHERE d.kept = 1 AND d.node_id IS NOT "
                          "NULL AND d.image_id IN (SELECT DISTINCT image_id FROM samples) GROUP BY d.node_id")
        ok = s.query("SELECT node_id, count(*) FROM samples WHERE status='ok' GROUP BY node_id")
        self.qa_kept_by_cat, self.ok_by_cat = self._by_cat(qa_kept), self._by_cat(ok)
        n_kept = sum(float(v[0]) for v in self.qa_kept_by_cat.values())
        n_ok = sum(float(v[0]) for v in self.ok_by_cat.values())
        if n_kept:
            sp = n_ok / n_kept
            se = math.sqrt(max(sp * abs(1 - sp), 0.25 / n_kept) / n_kept)
            self.rates["samples_per_kept"] = Rate(sp, max(0.0, sp - Z90 * se), sp + Z90 * se, int(n_kept), "measured")
        else:
            self.rates["samples_per_kept"] = Rate.assumed(*ASSUMED["samples_per_kept"])
        # referees: pass rate each, k-of-N passing share, and the adaptive order's calls (from vote patterns)
        self._vote_patterns()

    def _read_patterns(self):
        """(node_ids, votes [rows x referees]: 1 / 0 / -1 invalid / NaN not asked, n) per (task type, pattern)
        of the configured referees' votes (analysis/agreement.py's pattern query, for these names)."""
        names = [r.name for r in self.refs]
        if not names:
            return [], np.zeros((0, 0)), np.zeros(0)
        cols = ", ".join(f"max(CASE WHEN v.referee = ?{i + 1} THEN (CASE WHEN v.valid = 1 AND v.vote IS NOT NULL "
                         f"THEN v.vote ELSE -1 END) END) AS r{i}" for i in range(len(names)))
        q = ",".join(f"?{i + 1}" for i in range(len(names)))
        rc = ", ".join(f"p.r{i}" for i in range(len(names)))
        try:
            rows = self.s.query(f"SELECT s.node_id, {rc}, count(*) FROM (SELECT v.sample_id, {cols} FROM votes v "
                                f"WHERE v.referee IN ({q}) GROUP BY v.sample_id) p "
                                f"JOIN samples s ON s.id = p.sample_id GROUP BY s.node_id, {rc}", tuple(names))
        finally:
            self.s.close()      # this thread's connection
        nodes = [r[0] for r in rows]
        votes = np.array([[np.nan if x is None else x for x in r[1:-1]] for r in rows], dtype=float)
        return nodes, votes.reshape(len(rows), len(names)), np.array([r[-1] for r in rows], dtype=float)

    def _vote_patterns(self) -> None:
        """From the pilot's vote patterns: each referee's pass rate, the share of samples passing k-of-N (overall
        and per category) and the share each referee is asked under adaptive voting (`[[referees]]` order)."""
        names = [r.name for r in self.refs]
        self.pass_by_cat: dict[str, np.ndarray] = {}
        self.asked = {n: Rate.assumed(1.0, 1.0, 1.0) for n in names}
        nodes, votes, n = self._patterns.result()
        for i, name in enumerate(names):
            col = votes[:, i] if len(n) else np.zeros(0)
            valid = (col == 0) | (col == 1)
            self.rates[f"pass:{name}"] = Rate.proportion(float(n[col == 1].sum()), float(n[valid].sum()),
                                                         ASSUMED["referee_pass"])
        # every configured referee has voted on something
        if len(n) and not np.isnan(votes).all(axis=0).any():
            # Every sample counts: under adaptive voting a referee's vote is missing exactly where the others
            # had decided, so the outcome read from the votes present is the k-of-N outcome.
            pos = np.nansum(votes == 1, axis=1)
            passed = pos >= self.k_votes
            for nid, c_pass, c_n in zip(nodes, passed, n):
                cat = self.leaf_cat.get(nid)
                if cat is not None:
                    self.pass_by_cat[cat] = self.pass_by_cat.get(cat, 0) + np.array([c_pass * c_n, c_n])
            self.rates["samples_passing"] = Rate.proportion(float((passed * n).sum()), float(n.sum()), (0, 0, 0))
            # Adaptive voting replayed on the pilot's votes: ask in order, stop once k-of-N is decided.
            yes = np.zeros(len(votes))
            for i, name in enumerate(names):
                undecided = (yes < self.k_votes) & (yes + (len(names) - i) >= self.k_votes)
                self.asked[name] = Rate.proportion(float((undecided * n).sum()), float(n.sum()), (1, 1, 1))
                yes += (votes[:, i] == 1) & undecided
            return
        if not names:
            return
        # Nothing (or not every referee) measured: independent referees at their pass rates.
        ps = [self.rates[f"pass:{n}"] for n in names]
        vals = {w: _k_of_n([p.pick(w) for p in ps], self.k_votes) for w in ("value", "low", "high")}
        self.rates["samples_passing"] = Rate(vals["value"], vals["low"], vals["high"], 0,
                                             "from referee pass rates")
        asked = _asked_independent([p.value for p in ps], self.k_votes)
        for name, a in zip(names, asked):
            self.asked[name] = Rate(a, a, a, 0, "independent referees at their pass rates")
        if any(p.source == "assumed" for p in ps) and names:
            lo, va, hi = ASSUMED["referee_pass"]
            self.assumptions.append(f"each referee votes 1 on {va:.0%} of samples ({lo:.0%}..{hi:.0%}): "
                                    "no votes measured")

    # ---- cache awareness -----------------------------------------------------------------------------------
    def _done_sql(self, table: str, key_col: str, stage: str, model: str, prompt_hash: str,
                  extra: str = "", params: tuple = ()) -> tuple[str, tuple] | None:
        """SQL selecting `key_col` of `table` rows answered by `model` with `prompt_hash`; None if none can be."""
        any_call = self.s.scalar("SELECT 1 FROM llm_calls WHERE stage=? AND status='ok' AND model=? AND "
                                 "prompt_hash=? LIMIT 1", (stage, model, prompt_hash))
        if not any_call:
            return None
        return (f"SELECT DISTINCT t.{key_col} FROM {table} t JOIN llm_calls c ON c.key = t.call_key WHERE "
                f"c.status='ok' AND c.model=? AND c.prompt_hash=?{extra}", (model, prompt_hash, *params))

    # ---- per-call figures ------------------------------------------------------------------------------------
    def call_stats(self, stage: str, model: str, prompt_hash: str | None, default_prompt: float,
                   default_completion: float) -> CallStats:
        q = ("SELECT prompt_tokens, completion_tokens, latency_s FROM llm_calls WHERE stage=? AND status='ok' "
             "AND prompt_tokens IS NOT NULL{} ORDER BY rowid DESC LIMIT ?")
        rows, note = [], ""
        if prompt_hash:
            rows = self.s.query(q.format(" AND model=? AND prompt_hash=?"), (stage, model, prompt_hash, TOKEN_SAMPLE))
            note = "calls with the current prompt"
        if len(rows) < MIN_PROMPT_CALLS:
            rows = self.s.query(q.format(" AND model=?"), (stage, model, TOKEN_SAMPLE))
            note = f"calls of {model}"
        if not rows:
            other = self.s.query(q.format(""), (stage, TOKEN_SAMPLE))
            if other:
                rows, note = other, f"calls of other models ({model} has none)"
        lat_default = self.cfg.plan.latency_s
        if not rows:
            self.assumptions.append(f"{stage}: no calls measured; ~{default_prompt:,.0f} input + "
                                    f"{default_completion:,.0f} output tokens per call (estimated from the "
                                    f"prompt), {lat_default:g} s per call ([plan] latency_s)")
            return CallStats(Rate.assumed(default_prompt, default_prompt * 0.8, default_prompt * 1.25),
                             Rate.assumed(default_completion, default_completion * 0.5, default_completion * 1.5),
                             Rate.assumed(lat_default, lat_default * 0.5, lat_default * 2), note="assumed")
        arr = np.array([(r[0], r[1] or 0, np.nan if r[2] is None else r[2]) for r in rows], dtype=float)
        lat = arr[:, 2][~np.isnan(arr[:, 2])]
        stats = CallStats(Rate.mean(arr[:, 0], (default_prompt,) * 3), Rate.mean(arr[:, 1], (default_completion,) * 3),
                          Rate.mean(lat, (lat_default, lat_default * 0.5, lat_default * 2)), note=note)
        stats.p10_p90 = {"prompt": tuple(np.percentile(arr[:, 0], [10, 90]).tolist()),
                         "completion": tuple(np.percentile(arr[:, 1], [10, 90]).tolist())}
        if not lat.size:
            self.assumptions.append(f"{stage}: no latency recorded; {lat_default:g} s per call ([plan] latency_s)")
        ratio = stats.prompt.value / default_prompt if default_prompt else 1.0
        if ratio > 2 or ratio < 0.5:
            stats.warning = (f"measured input tokens per call ({stats.prompt.value:,.0f}, {note}) are "
                             f"{_times(ratio)} the estimate from the prompt ({default_prompt:,.0f}); the plan uses "
                             "the measured figure")
        return stats

    def image_token_mean(self, model: str) -> float:
        rows = self.s.query("SELECT width, height, count(*) FROM images WHERE width > 0 GROUP BY width, height")
        cfg = self.cfg
        if not rows:
            return float(image_tokens(model, 1024, 768, max_side=cfg.vision.image_max_side,
                                      per_image=cfg.plan.tokens_per_image))
        tot = sum(image_tokens(model, r[0], r[1], max_side=cfg.vision.image_max_side,
                               per_image=cfg.plan.tokens_per_image) * r[2] for r in rows)
        return tot / sum(r[2] for r in rows)

    # ---- an LLM stage's figures ------------------------------------------------------------------------------
    def llm_stage(self, name: str, ep, stats: CallStats, calls: Range, rows: Range, done: int, items: str
                  ) -> StagePlan:
        sp = StagePlan(stage=name, kind="llm", endpoint=ep.name, model=ep.model, items=items, rows=rows, done=done,
                       calls=calls, price=ep.price)
        pt = Range(calls.value * stats.prompt.value, calls.low * stats.prompt.low, calls.high * stats.prompt.high)
        ct = Range(calls.value * stats.completion.value, calls.low * stats.completion.low,
                   calls.high * stats.completion.high)
        sp.prompt_tokens, sp.completion_tokens = pt, ct
        if stats.warning:
            sp.warnings.append(stats.warning)
        sp.per_call = {"prompt_tokens": stats.prompt.label("{:,.0f}"),
                       "completion_tokens": stats.completion.label("{:,.0f}"),
                       "latency_s": stats.latency.label("{:.2f}"), "measured_on": stats.note,
                       **{f"{k}_p10_p90": v for k, v in stats.p10_p90.items()}}
        if ep.price is None:
            sp.cost_usd = None
            sp.notes.append(f"no price for {ep.model}: set price_input_per_mtok/price_output_per_mtok on "
                            f"[endpoints.{ep.name}] or [prices]")
        else:
            cost = lambda a, b: (a * ep.price[0] + b * ep.price[1]) / 1e6
            sp.cost_usd = Range(cost(pt.value, ct.value), cost(pt.low, ct.low), cost(pt.high, ct.high))
            sp.batch_cost_usd, sp.batch_note = self._batch(ep, sp.cost_usd)
        # wall time: concurrency x latency, requests/min, tokens/min (whichever binds)
        c = ep.config.max_concurrency
        rpm, tpm = ep.config.requests_per_minute, ep.config.tokens_per_minute
        walls = {}
        for w in ("value", "low", "high"):
            n = getattr(calls, w)
            tok = getattr(pt, w) + getattr(ct, w)
            # the range runs low..high: fewer calls at a lower latency .. more at a higher one
            bounds = {f"concurrency {c} x {stats.latency.pick(w):.2f} s": n * stats.latency.pick(w) / c}
            if rpm:
                bounds[f"{rpm:g} requests/min"] = n * 60.0 / rpm
            if tpm:
                bounds[f"{tpm:g} tokens/min"] = tok * 60.0 / tpm
            walls[w] = max(bounds.items(), key=lambda kv: kv[1])
        sp.wall_s = Range(walls["value"][1], walls["low"][1], walls["high"][1])
        sp.wall_bound = walls["value"][0]
        return sp

    def _batch(self, ep, cost: Range) -> tuple[Range | None, str]:
        if is_local_endpoint(ep.config, ep.base_url):
            return None, "local endpoint: no batch API"
        factor = getattr(getattr(self.cfg, "batch", None), "price_factor", 0.5)
        return cost.scale(factor), f"batch price = list x {factor:g} ([batch] price_factor)"

    def _endpoint(self, name: str):
        return resolve_endpoint(self.cfg, name)

    # ---- stages ------------------------------------------------------------------------------------------------
    def plan_expand(self) -> list[StagePlan]:
        """The next level actually waiting: the lowest level whose parents include an accepted leaf not yet
        expanded with this prompt and model; its calls are `expand --level N --dry-run`'s."""
        cfg = self.cfg.expand
        ep = self._endpoint(cfg.endpoint)
        out = StagePlan(stage="expand", kind="llm", endpoint=ep.name, model=ep.model, items="parents",
                        price=ep.price, cost_usd=Range() if ep.price is not None else None)
        level, rep = self._waiting_level(ep)
        if rep is None:
            out.skipped = (f"nothing waiting: no accepted leaf above level {self.cfg.plan.max_depth} ([plan] "
                           "max_depth) waits for expansion with this prompt and model")
            return [out]
        n = rep.to_call
        est = rep.est_prompt_tokens / n if n else 0.0
        stats = self.call_stats("expand", ep.model, None, est, min(cfg.max_tokens or 10**9,
                                                                    ExpandStage.expected_output_tokens))
        sp = self.llm_stage("expand", ep, stats, Range(n, n, n), Range(n, n, n), rep.cached,
                            f"level-{level - 1} parents (proposing level {level})")
        self._ready(sp, rep, "expand")
        sp.notes.append("new task types from this expansion are not in the later stages' figures (the plan is for "
                        "the current task types)")
        return [sp]

    def _waiting_level(self, ep):
        """(level, its dry run) of the lowest level with a waiting leaf parent; (0, None) when none waits."""
        nodes = [n for n in self.idx.nodes.values() if n.status == "accepted"]
        if not nodes:
            return 1, _expand_dry(self.ws, 1, ep)
        leaves = {n.level for n in nodes if self.idx.is_leaf(n.id)}
        for level in range(2, self.cfg.plan.max_depth + 1):
            if level - 1 not in leaves:
                continue
            rep = _expand_dry(self.ws, level, ep)
            if rep is not None and rep.to_call:
                return level, rep
        return 0, None

    def plan_embed(self) -> list[StagePlan]:
        cfg = self.cfg.clip
        s = self.s
        texts = current_task_texts(self.ws)
        tset = s.one("SELECT key FROM embedding_sets WHERE kind='text' AND model=? AND coalesce(pretrained,'')=? "
                     "AND template=? ORDER BY n_rows DESC LIMIT 1", (cfg.model, cfg.pretrained or "", cfg.template))
        have = {}
        if tset is not None:
            have = {r[0]: r[1] for r in s.query("SELECT item_id, input_hash FROM embedding_rows WHERE set_key=?",
                                                (tset[0],))}
        text_todo = sum(1 for nid, _, h in texts if have.get(nid) != h)
        iset = s.one("SELECT key FROM embedding_sets WHERE kind='image' AND model=? AND coalesce(pretrained,'')=? "
                     "ORDER BY n_rows DESC LIMIT 1", (cfg.model, cfg.pretrained or ""))
        img_done = 0
        if iset is not None:
            img_done = int(s.scalar("SELECT count(*) FROM embedding_rows r JOIN images i ON i.id = r.item_id "
                                    "WHERE r.set_key=?", (iset[0],)))
        img_todo = (self.registered - img_done) * self.f_reg + self.new_images
        out = []
        for kind, n, done, col in (("text", text_todo, len(texts) - text_todo, 1), ("image", img_todo,
                                                                                   img_done, 0)):
            sp = StagePlan(stage=f"embed:{kind}", kind="local", model=cfg.model, items="task types" if kind == "text"
                           else "images", rows=Range(n, n, n), done=int(done), cost_usd=None)
            measured = self._measured_rate(f"embed_{kind}")
            if measured:
                sp.wall_s = Range(n / measured, n / measured, n / measured)
                sp.wall_bound = f"{measured:,.1f} {sp.items}/s measured here (stage embed_{kind})"
            gf = CLIP_GFLOPS.get(cfg.model)
            if gf:
                sp.cpu_s, sp.gpu_s = n * gf[col] / CPU_GFLOPS, n * gf[col] / GPU_GFLOPS
                sp.notes.append(f"CPU/GPU figures: {gf[col]} GFLOPs per item at {CPU_GFLOPS:g} GFLOP/s (CPU) / "
                                f"{GPU_GFLOPS:,.0f} GFLOP/s (GPU), order of magnitude")
            elif not measured:
                sp.notes.append(f"no throughput known for {cfg.model}: run `workbench embed` on a few images")
            out.append(sp)
        return out

    def _measured_rate(self, stage: str) -> float | None:
        import json

        for r in self.s.query("SELECT summary FROM stage_runs WHERE stage=? AND status='done' ORDER BY id DESC "
                              "LIMIT 20", (stage,)):
            try:
                d = json.loads(r[0] or "{}")
            except ValueError:
                continue
            if d.get("computed") and d.get("seconds"):
                return float(d["computed"]) / float(d["seconds"])
        return None

    def plan_match(self) -> list[StagePlan]:
        n_task = len(self.leaf_cat)
        # Against the stored matches' key: computing the current config's key would load open_clip (seconds);
        # a changed [clip] model or weights re-matches every image, which the note says.
        key = self.s.scalar("SELECT match_key FROM match_targets LIMIT 1")
        todo = match_todo(self.ws, match_key=key) if key else None
        if todo is None:
            full, merge, stale = float(self.registered - self.matched_images), 0, 0
        else:
            full, merge, stale = float(todo.full), todo.merge, todo.stale
        n_img = (full + merge) * self.f_reg + self.new_images
        dim = self.s.scalar("SELECT dim FROM embedding_sets WHERE kind='image' ORDER BY n_rows DESC LIMIT 1") or 768
        flops = 2.0 * (full * self.f_reg + self.new_images) * n_task * int(dim)
        if merge and todo is not None:
            flops += 2.0 * merge * todo.new_targets * int(dim)
        sp = StagePlan(stage="match", kind="local", model=self.cfg.clip.model, items="images",
                       rows=Range(n_img, n_img, n_img), done=max(0, self.matched_images - stale), cost_usd=None,
                       cpu_s=flops / MATCH_CPU_GFLOPS / 1e9, gpu_s=flops / MATCH_GPU_GFLOPS / 1e9)
        if todo is not None:
            sp.ready = int(full) + merge
            sp.reasons = {k: v for k, v in (("stale rows: a task type's text changed or it is gone", stale),
                                            ("not matched yet", int(full) - stale),
                                            ("new or changed task types to score", merge)) if v}
        if key:
            sp.notes.append("against the stored matches' CLIP model and weights: a changed [clip] model re-matches "
                            "every image")
        sp.notes.append(f"{n_img - merge * self.f_reg:,.0f} image(s) scored against all {n_task:,} task types"
                        + (f"; {merge:,} get only the {todo.new_targets:,} new or changed task types"
                           if merge and todo is not None else ""))
        return [sp]

    def _ratio_by_cat(self, num: dict, den: dict, idx_num: int, idx_den: int, glob: Rate) -> dict[str, Range]:
        """A per-category rate, shrunk towards the global rate (SHRINK_ROWS pseudo-rows)."""
        out = {}
        for cat in self.cat_names:
            n = float(den[cat][idx_den]) if cat in den else 0.0
            x = float(num[cat][idx_num]) if cat in num else 0.0
            out[cat] = Range(*((x + SHRINK_ROWS * glob.pick(w)) / (n + SHRINK_ROWS) for w in ("value", "low", "high")))
        return out

    def _cat_share(self, counts: dict) -> dict[str, float]:
        """Each category's share of `counts` (category -> array, first column), else its share of task types."""
        tot = sum(float(v[0]) for v in counts.values())
        if tot:
            return {c: float(counts[c][0]) / tot if c in counts else 0.0 for c in self.cat_names}
        n = max(len(self.leaf_cat), 1)
        per = {}
        for cat in self.leaf_cat.values():
            per[cat] = per.get(cat, 0) + 1.0 / n
        return {c: per.get(c, 0.0) for c in self.cat_names}

    def _exact(self, count_sql: str) -> bool:
        """Whether a stage with this many rows is planned from its own dry run ([plan] exact_rows)."""
        return int(self.s.scalar(count_sql) or 0) <= self.cfg.plan.exact_rows

    def plan_filter(self) -> list[StagePlan]:
        s = self.s
        ep = self._endpoint(self.cfg.filter.endpoint)

        prompt = load_prompt(self.ws, self.cfg.filter.prompt, "filter.j2")
        done = self._done_sql("filter_decisions", "image_id", "filter", ep.model, prompt.hash)
        self.filter_done_sql = done
        self.filter_pending: set[str] | None = None
        rep = None
        if self._exact("SELECT count(DISTINCT image_id) FROM matches"):
            rep = _dry(FilterStage(self.ws), self.ws) or RunReport("filter", ep.name, ep.model)
            self.filter_pending = {r.image_id for r in rep.pending}
            pend_n, n_done = rep.to_call, rep.cached
            pend_cand: dict[str, np.ndarray] = {}
            for r in rep.pending:
                for nid, _ in r.candidates:
                    c = self.leaf_cat.get(nid)
                    if c is not None:
                        pend_cand[c] = pend_cand.get(c, 0) + np.array([1.0])
        else:
            not_done = f"WHERE image_id NOT IN ({done[0]})" if done else ""
            args = done[1] if done else ()
            pend_n = int(s.scalar(f"SELECT count(DISTINCT image_id) FROM matches {not_done}", args))
            pend_cand = self._by_cat(s.query(f"SELECT node_id, count(*) FROM matches {not_done} GROUP BY node_id",
                                             args))
            n_done = self.matched_images - pend_n
        unmatched = (self.registered - self.matched_images) * self.f_reg + self.new_images
        self.filter_images = pend_n * self.f_reg + unmatched   # images the filter will see
        cpi = self.rates["candidates_per_image"].value
        share = self._cat_share(self.match_by_cat)
        # candidate pairs per category: exact for matched images, the pilot's category mix for the rest
        cand = {c: (float(pend_cand[c][0]) if c in pend_cand else 0.0) * self.f_reg + unmatched * cpi * share[c]
                for c in self.cat_names}
        self.flow = {c: {"filter": Range(v, v, v)} for c, v in cand.items()}
        kr = self.rates["keep_rate"]
        keep = self._ratio_by_cat(self.filter_by_cat, self.filter_by_cat, 0, 1, kr)
        for c in self.cat_names:
            self.flow[c]["kept_new"] = Range(cand[c] * keep[c].value, cand[c] * keep[c].low, cand[c] * keep[c].high)
        n = self.filter_images
        txt = self._filter_prompt_tokens(prompt, ep.model)
        stats = self.call_stats("filter", ep.model, prompt.hash, txt, 60.0)
        sp = self.llm_stage("filter", ep, stats, Range(n, n, n), Range(n, n, n), n_done, "images")
        self._ready(sp, rep, "filter")
        if self.new_images or unmatched:
            sp.notes.append(f"{unmatched:,.0f} image(s) not matched yet: {cpi:.2f} candidates each assumed")
        return [sp]

    def _ready(self, sp: StagePlan, rep: RunReport | None, command: str) -> None:
        """The stage's dry run on the plan's row: its calls, why, and a warning where its token estimate and the
        measured tokens per call differ by more than 2x."""
        if rep is None:
            sp.notes.append(f"approximate: more rows than [plan] exact_rows ({self.cfg.plan.exact_rows:,}); a row "
                            f"counts as answered when a reply from this model and prompt is stored (`workbench "
                            f"{command} --dry-run` renders every row)")
            return
        sp.ready, sp.reasons = rep.to_call, dict(rep.reasons)

    def _filter_prompt_tokens(self, prompt, model: str) -> float:
        k = max(1, round(self.rates["candidates_per_image"].value))
        paths = [self.idx.paths[n] for n in list(self.leaf_cat)[:k]] or ["task"] * k
        msgs = prompt.render(images=[], candidates=paths, sep=SEP)
        return estimate_prompt_tokens(msgs) + self.image_token_mean(model)

    def plan_qa(self) -> list[StagePlan]:
        s = self.s
        ep = self._endpoint(self.cfg.qa.endpoint)

        prompt = load_prompt(self.ws, self.cfg.qa.prompt, "qa.j2")
        if not hasattr(self, "filter_done_sql"):
            self.plan_filter()                        # the flows the Q&A figures continue from
        done = self._done_sql("samples", "image_id", "qa", ep.model, prompt.hash)
        self.qa_done_sql = done
        fdone = self.filter_done_sql
        exact_imgs, exact_kept, n_done = 0, {}, 0
        rep = None
        if self._exact("SELECT count(DISTINCT image_id) FROM filter_decisions WHERE kept=1"):
            rep = _dry(QAStage(self.ws), self.ws) or RunReport("qa", ep.name, ep.model)
            n_done = rep.cached
            # rows whose image the filter calls again are counted with the filter's images below
            later = self.filter_pending or set()
            own = [r for r in rep.pending if r.image_id not in later]
            exact_imgs = len(own)
            for r in own:
                for nid, _ in r.task_types:
                    c = self.leaf_cat.get(nid)
                    if c is not None:
                        exact_kept[c] = exact_kept.get(c, 0) + np.array([1.0])
            self.qa_pending = {r.image_id for r in rep.pending} | later
        elif fdone:
            cond, args = f"d.image_id IN ({fdone[0]})", list(fdone[1])
            if done:
                cond += f" AND d.image_id NOT IN ({done[0]})"
                args += list(done[1])
            exact_imgs = int(s.scalar(f"SELECT count(DISTINCT d.image_id) FROM filter_decisions d WHERE d.kept=1 AND "
                                      f"d.node_id IS NOT NULL AND {cond}", tuple(args)))
            exact_kept = self._by_cat(s.query(f"SELECT d.node_id, count(*) FROM filter_decisions d WHERE d.kept=1 "
                                              f"AND d.node_id IS NOT NULL AND {cond} GROUP BY d.node_id", tuple(args)))
        if done and rep is None:
            n_done = int(s.scalar(f"SELECT count(*) FROM ({done[0]})", done[1]))
        anyk = self.rates["images_with_kept"]
        fi = self.filter_images
        calls = Range(exact_imgs * self.f_reg + fi * anyk.value, exact_imgs * self.f_reg + fi * anyk.low,
                      exact_imgs * self.f_reg + fi * anyk.high)
        spk = self.rates["samples_per_kept"]
        sp_cat = self._ratio_by_cat(self.ok_by_cat, self.qa_kept_by_cat, 0, 0, spk)
        for c in self.cat_names:
            ex = (float(exact_kept[c][0]) if c in exact_kept else 0.0) * self.f_reg
            kept = self.flow[c]["kept_new"] + Range(ex, ex, ex)
            self.flow[c]["qa"] = kept
            self.flow[c]["samples_new"] = Range(kept.value * sp_cat[c].value, kept.low * sp_cat[c].low,
                                                kept.high * sp_cat[c].high)
        k_img = max(1, round(self.rates["candidates_per_image"].value * self.rates["keep_rate"].value))
        txt = self._qa_prompt_tokens(prompt, ep.model, k_img)

        stats = self.call_stats("qa", ep.model, prompt.hash, txt, QAStage.expected_output_tokens)
        sp = self.llm_stage("qa", ep, stats, calls, calls, n_done, "images with a kept task type")
        self._ready(sp, rep, "qa")
        return [sp]

    def _qa_prompt_tokens(self, prompt, model: str, k: int) -> float:
        paths = [self.idx.paths[n] for n in list(self.leaf_cat)[:k]] or ["task"] * k
        return estimate_prompt_tokens(prompt.render(images=[], task_types=paths, sep=SEP)) + \
            self.image_token_mean(model)

    def plan_referee(self) -> list[StagePlan]:
        if not self.refs:
            return [StagePlan(stage="referee", kind="llm", items="samples", cost_usd=None,
                              skipped="no [[referees]] configured")]
        if not hasattr(self, "qa_done_sql"):
            self.plan_qa()

        qdone = self.qa_done_sql
        vcfg = getattr(self.cfg, "referee", None)
        adaptive = bool(getattr(vcfg, "adaptive", False))
        audit = float(getattr(vcfg, "audit_fraction", 0.0))
        reps = None
        if self._exact(f"SELECT count(*) * {len(self.refs)} FROM samples WHERE status='ok'"):
            reps = _referee_dry(self.ws, adaptive)
            if not hasattr(self, "qa_pending"):
                self.qa_pending = set()
        out = []
        order = [r.name for r in self.refs]
        for i, ref in enumerate(self.refs):
            ep = self._endpoint(ref.endpoint)
            prompt = load_prompt(self.ws, ref.prompt, "referee_answer_aware.j2" if ref.answer_aware else "referee.j2")
            stage = f"referee:{ref.name}"
            a = self.asked[ref.name]
            share = {w: (audit + (1 - audit) * a.pick(w)) if adaptive else 1.0 for w in ("value", "low", "high")}
            exact: dict[str, Range] = {}          # samples this referee will be asked about (expected)
            exact_full: dict[str, float] = {}     # ... under full voting
            n_done = 0
            rep = None
            if reps is not None:
                rep = reps.get(stage) or RunReport(stage, ep.name, ep.model)
                n_done = rep.cached
                for row in rep.pending:
                    if row.image_id in self.qa_pending:
                        continue                  # the Q&A writes it again: counted with the new samples
                    cat = self.leaf_cat.get(self.path_node.get(row.task_type, ""))
                    if cat is not None:
                        exact[cat] = exact.get(cat, Range()) + Range(1, 1, 1)
                        exact_full[cat] = exact_full.get(cat, 0.0) + 1
            elif qdone:
                exact, exact_full, n_done = self._referee_from_sql(i, ref, ep, prompt, stage, qdone, adaptive, audit,
                                                                   share, order)
            samples = Range()
            for c in self.cat_names:
                f = self.f_reg
                new = self.flow[c]["samples_new"]
                asked_c = Range(new.value * share["value"], new.low * share["low"], new.high * share["high"])
                asked_c = asked_c + exact.get(c, Range()).scale(f)
                self.flow[c][f"ref:{ref.name}"] = asked_c
                ex = exact_full.get(c, 0.0) * f
                self.flow[c]["voted"] = new + Range(ex, ex, ex)
                samples = samples + asked_c
            full = Range()
            for c in self.cat_names:
                full = full + self.flow[c]["voted"]
            ctx_tokens = self._referee_prompt_tokens(prompt, ep.model)
            stats = self.call_stats(stage, ep.model, prompt.hash, ctx_tokens, RefereeStage.expected_output_tokens)
            sp = self.llm_stage(stage, ep, stats, samples, full, n_done, "ok samples")
            self._ready(sp, rep if reps is not None else None, "referee")
            if adaptive:
                ends = sorted((full.low - samples.low, full.high - samples.high))
                sp.calls_saved = Range(full.value - samples.value, max(0.0, ends[0]), ends[1])
                sp.notes.append(f"adaptive voting ([referee] adaptive): asked on {a.value:.0%} of samples "
                                f"({a.source}), plus the {audit:.0%} audit share")
            out.append(sp)
        return out

    def _referee_from_sql(self, i, ref, ep, prompt, stage, qdone, adaptive, audit, share, order):
        """Without a dry run (too many rows): the samples `ref` is asked about from stored votes, by category."""
        s = self.s
        exact: dict[str, Range] = {}
        exact_full: dict[str, float] = {}
        n_done = 0
        cond, args = f"s.image_id IN ({qdone[0]})", list(qdone[1])
        vdone = self._done_sql("votes", "sample_id", stage, ep.model, prompt.hash, " AND t.referee=?",
                               (ref.name,))
        if vdone:
            cond += f" AND s.id NOT IN ({vdone[0]})"
            args += list(vdone[1])
            n_done = int(s.scalar(f"SELECT count(*) FROM ({vdone[0]})", vdone[1]))
        q = ",".join("?" * len(order))
        earlier = order[:i]
        e = ",".join("?" * len(earlier)) or "NULL"
        # Adaptive voting asks about a sample only while k-of-N is open given the votes present
        # (stages/referee/stage.py: decided, is_audit); where an earlier referee has not voted yet,
        # the replayed share applies.
        rows = s.query(
            f"SELECT s.id, s.node_id, coalesce(sum(v.vote = 1), 0), count(v.sample_id), "
            f"count(CASE WHEN v.referee IN ({e}) THEN 1 END) FROM samples s LEFT JOIN votes v ON "
            f"v.sample_id = s.id AND v.referee IN ({q}) AND v.referee <> ? WHERE s.status='ok' AND {cond} "
            f"GROUP BY s.id", (*earlier, *order, ref.name, *args))
        for sid, nid, yes, heard, heard_earlier in rows:
            cat = self.leaf_cat.get(nid)
            if cat is None:
                continue
            exact_full[cat] = exact_full.get(cat, 0.0) + 1
            if not adaptive:
                w = Range(1, 1, 1)
            elif heard_earlier == len(earlier):
                one = float(is_audit(sid, audit) or not decided(yes, heard, len(order), self.k_votes))
                w = Range(one, one, one)
            else:
                w = Range(share["value"], share["low"], share["high"])
            exact[cat] = exact.get(cat, Range()) + w
        return exact, exact_full, n_done

    def _referee_prompt_tokens(self, prompt, model: str) -> float:
        if not hasattr(self, "_qa_lengths"):
            self._qa_lengths = self.s.one("SELECT avg(length(question)), avg(length(answer)) FROM samples "
                                          "WHERE status='ok'")
        row = self._qa_lengths
        q = int(row[0]) if row and row[0] else ASSUMED["question_tokens"] * 4
        a = int(row[1]) if row and row[1] else ASSUMED["answer_tokens"] * 4
        path = next(iter(self.idx.paths[n] for n in self.leaf_cat), "task")
        msgs = prompt.render(images=[], task_type=path, question="x" * q, answer="x" * a)
        return estimate_prompt_tokens(msgs) + self.image_token_mean(model)

    def _voted(self) -> Range:
        """Samples that reach selection: those the referees vote on (or the new samples, with no referees)."""
        return sum((f.get("voted", f.get("samples_new", Range())) for f in self.flow.values()), Range())

    def plan_select(self) -> list[StagePlan]:
        n = self._voted()
        return [StagePlan(stage="select", kind="local", items="voted samples", rows=n, cost_usd=None,
                          notes=["one grouped SQL pass over votes: seconds"])]

    def plan_export(self) -> list[StagePlan]:
        p = self.rates.get("samples_passing") if self.refs else None
        n = self._voted()
        rows = Range(n.value * p.value, n.low * p.low, n.high * p.high) if p else n
        return [StagePlan(stage="export", kind="local", items="selected samples (before caps)", rows=rows,
                          cost_usd=None)]

    # ---- per category ---------------------------------------------------------------------------------------
    def categories(self, stages: list[StagePlan]) -> list[CategoryPlan]:
        """Cost per first-level subtree: each stage's cost split by its rows' categories (filter: candidate
        pairs; Q&A: kept pairs; a referee: the samples it votes on), and new passing samples per dollar."""
        keys = {"filter": "filter", "qa": "qa"}
        keys.update({f"referee:{r.name}": f"ref:{r.name}" for r in self.refs})
        tot = {}
        for sp in stages:
            k = keys.get(sp.stage)
            if k:
                tot[sp.stage] = sum(f.get(k, Range()).value for f in self.flow.values())
        passing = self.rates.get("samples_passing")
        pass_cat = self._ratio_by_cat(dict(self.pass_by_cat.items()),
                                      dict(self.pass_by_cat.items()), 0, 1,
                                      passing) if passing else {}
        tasks = {}
        for cat in self.leaf_cat.values():
            tasks[cat] = tasks.get(cat, 0) + 1
        out = []
        for cat, name in self.cat_names.items():
            flow = self.flow.get(cat, {})
            cost, bcost = 0.0, 0.0
            for sp in stages:
                k = keys.get(sp.stage)
                if not k or not tot.get(sp.stage):
                    continue
                share = flow.get(k, Range()).value / tot[sp.stage]
                cost = None if cost is None or sp.cost_usd is None else cost + sp.cost_usd.value * share
                bcost = None if bcost is None or sp.batch_cost_usd is None else bcost + sp.batch_cost_usd.value * share
            # through qa (or with no referees): every new ok sample counts
            voted = flow.get("voted", flow.get("samples_new", Range())).value
            new = voted * (pass_cat[cat].value if cat in pass_cat else 0.0) if "voted" in flow else voted
            spd = None if cost is None else new / cost if cost else (math.inf if new else 0.0)
            out.append(CategoryPlan(cat, name, tasks.get(cat, 0), cost, bcost, new, spd))
        out.sort(key=lambda c: -(c.cost_usd or 0.0))
        return out


def _times(ratio: float) -> str:
    return f"{ratio:.1f}x" if ratio >= 1 else f"1/{1 / ratio:.1f} of"


def _referee_dry(ws: Workspace, adaptive: bool) -> dict[str, RunReport]:
    """Each referee's dry run as `workbench referee --dry-run` makes it (adaptive: later referees counted as if
    the earlier ones had not voted yet)."""
    try:
        return {r.stage: r for r in run_referees(ws, dry_run=True, progress=False, batch=False, adaptive=adaptive)}
    except WorkbenchError:
        return {}


def _expand_dry(ws: Workspace, level: int, ep):
    try:
        return expand(ws, level=level, endpoint=ep, dry_run=True, progress=False).run
    except WorkbenchError:
        return None


def _dry(stage, ws: Workspace, rows=None):
    """The stage's own dry run over its rows (or `rows`); None when it has no rows (its run would say why)."""
    try:
        return stage.run(ws, rows, dry_run=True, progress=False, batch=False)
    except WorkbenchError:
        return None


class _Background:
    """Run `fn` in a thread now; `result()` waits for it and re-raises its exception."""

    def __init__(self, fn):
        import threading

        self._out, self._exc = None, None

        def work():
            try:
                self._out = fn()
            except BaseException as exc:  # handed to the caller of result()
                self._exc = exc

        self._thread = threading.Thread(target=work, name="plan-votes", daemon=True)
        self._thread.start()

    def result(self):
        self._thread.join()
        if self._exc is not None:
            raise self._exc
        return self._out


def _asked_independent(ps: list[float], k: int) -> list[float]:
    """P(referee i is asked) under adaptive k-of-N voting with independent referees asked in order."""
    import itertools

    asked = [0.0] * len(ps)
    for outcome in itertools.product((0, 1), repeat=len(ps)):
        p = float(np.prod([q if v else 1 - q for v, q in zip(outcome, ps)]))
        yes = 0
        for i, v in enumerate(outcome):
            if yes >= k or yes + len(ps) - i < k:
                break
            asked[i] += p
            yes += v
    return asked


def _k_of_n(ps: list[float], k: int) -> float:
    """P(at least k of independent Bernoulli(p_i) are 1)."""
    dist = np.zeros(len(ps) + 1)
    dist[0] = 1.0
    for p in ps:
        dist[1:] = dist[1:] * (1 - p) + dist[:-1] * p
        dist[0] *= 1 - p
    return float(dist[k:].sum()) if k <= len(ps) else 0.0


# -- text ----------------------------------------------------------------------------------------------------
def _num(r: Range, fmt: str = "{:,.0f}") -> str:
    if r.low == r.high == r.value:
        return fmt.format(r.value)
    return f"{fmt.format(r.value)} ({fmt.format(r.low)}..{fmt.format(r.high)})"


def _usd(r: Range | None) -> str:
    return "unknown" if r is None else _num(r, "${:,.2f}")


def _dur(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def format_plan(plan: Plan) -> str:
    lines = [f"plan: {plan.images:,} image(s) ({plan.images_registered:,} registered), {plan.task_types:,} task "
             f"types, through {plan.through}; ranges are 90 % intervals of the measured rates"]
    for s in plan.stages:
        head = f"{s.stage:<16}"
        if s.skipped and not s.calls.high:
            lines.append(f"{head} skipped: {s.skipped}")
            continue
        if s.kind == "local":
            t = []
            if s.wall_s.value:
                t.append(f"~{_dur(s.wall_s.value)} ({s.wall_bound})")
            if s.cpu_s is not None:
                t.append(f"CPU ~{_dur(s.cpu_s)}, GPU ~{_dur(s.gpu_s)}")
            lines.append(f"{head} {_num(s.rows)} {s.items} to do, {s.done:,} done" + (f"; {'; '.join(t)}" if t else ""))
        else:
            batch_gap = "unknown" if s.cost_usd is None else "n/a"
            lines.append(
                f"{head} {_num(s.calls)} calls ({s.done:,} {s.items} already answered) on {s.endpoint} ({s.model}); "
                f"tokens in {_num(s.prompt_tokens)}, out {_num(s.completion_tokens)}; cost {_usd(s.cost_usd)}, batch "
                f"{_usd(s.batch_cost_usd) if s.batch_cost_usd is not None else batch_gap}"
                f"; wall ~{_dur(s.wall_s.value)} ({_dur(s.wall_s.low)}..{_dur(s.wall_s.high)}, {s.wall_bound})")
            if s.ready is not None:
                lines.append(f"{'':<16}   {s.ready:,} of them on the rows there now (the stage's --dry-run)"
                             + (f": {why_text(s.reasons)}" if s.reasons else ""))
            pc = s.per_call
            if pc:
                lines.append(f"{'':<16}   per call: in {pc['prompt_tokens']}, out {pc['completion_tokens']}, "
                             f"latency {pc['latency_s']} s [{pc['measured_on']}]")
            if s.calls_saved is not None:
                lines.append(f"{'':<16}   adaptive voting saves {_num(s.calls_saved)} calls against full voting")
        if s.kind == "local" and s.reasons:
            lines.append(f"{'':<16}   why: {why_text(s.reasons)}")
        for w in s.warnings:
            lines.append(f"{'':<16}   WARNING: {w}")
        for n in s.notes:
            lines.append(f"{'':<16}   note: {n}")
    tc, tb = plan.total("cost_usd"), plan.total("batch_cost_usd")
    lines.append(f"{'total':<16} {_num(plan.total('calls'))} calls; tokens in {_num(plan.total('prompt_tokens'))}, "
                 f"out {_num(plan.total('completion_tokens'))}; cost {_usd(tc)}, with batch pricing {_usd(tb)} (local "
                 f"endpoints live); "
                 f"LLM wall time ~{_dur(plan.total('wall_s').value)} (stages one after another)")
    lines.append("rates: " + "; ".join(f"{k} {v.label()}" for k, v in plan.rates.items()))
    if plan.categories:
        lines.append("per first-level category (cost of its subtree; new samples, after the referees when planned):")
        for c in plan.categories[:40]:
            cost = "unknown" if c.cost_usd is None else f"${c.cost_usd:,.2f}"
            spd = ("unknown" if c.samples_per_usd is None else "free" if c.samples_per_usd == math.inf
                   else f"{c.samples_per_usd:,.1f}/$")
            lines.append(f"  {c.name[:40]:<40} {c.task_types:>6,} task types  {cost:>12}  {c.samples:>10,.0f} samples"
                         f"  {spd}")
        if len(plan.categories) > 40:
            lines.append(f"  ... {len(plan.categories) - 40} more (--json has all)")
    lines.extend(plan.changes)
    if plan.assumptions:
        lines.append("assumptions (nothing measured for these):")
        lines.extend(f"  - {a}" for a in plan.assumptions)
    return "\n".join(lines)
