"""Coverage against a reference taxonomy (e.g. a benchmark's task list).

Every reference task (a leaf of the reference file, read with `taxonomy.io.parse_source`) is scored
against every live node of the workspace (a reference task that names one of our categories, "ocr" vs
"optical character recognition", is covered by that category's task types). Features of each pair
(`FEATURES`, sentence embeddings from `textembed`):

    leaf, leaf_path, task   cosines of the reference leaf name vs our node's name, vs our whole path ("a > b
                            > c": the parents disambiguate a shared word), and of "the vision task of <leaf>"
                            on both sides (short names embed poorly alone); their mean is `embedding_score`
    gloss                   the cosine after expanding domain synonyms (`data/coverage_synonyms.txt`:
                            "ocr", "instance" -> "object", "localization" -> "grounding", ...)
    overlap                 the share of the reference leaf's content words (Porter stems, synonyms
                            expanded, generic words such as "recognition" left out) found in our path
    subtree, subtree_overlap  the mean embedding score / overlap over our node and its descendants: a
                            reference task that matches a whole category
    word_min                the reference leaf's worst-matched word: the minimum over its words (synonyms
                            expanded, stop words left out) of the best cosine to any word of our path; low when
                            a word of the reference task has no counterpart ("animated" in "animated character
                            recognition" vs "optical character recognition"). Synonyms expand whole tokens only:
                            "image-text" and "text-to-image" (modalities) are not "text" (text to read)
    describe, subtree_describe  the reference leaf's best cosine to our node's name or to any phrase that
                            describes it (`data/coverage_glosses.txt`: "app screen navigation = deciding which
                            button to press next ..."; written for the seed task types, extendable; a node
                            without a line is described by its name), and its mean over the node's subtree
    standout                how far our node stands out from the whole tree for this reference task: the larger
                            z-score (over all our nodes) of its embedding score and of its describe cosine. A
                            reference name close to everything ("interleaved image-text analysis") has no
                            stand-out candidate, a real match does; a raw cosine cannot tell them apart. On a
                            tree much larger than the seed the z-scores run higher (recheck the threshold)

`score` is a logistic regression over them (constants COEF, INTERCEPT; fitted on the dev split's five
best candidates per task, refit with `benchmarks/eval_coverage_matcher.py --refit`): the estimated
probability that this task type covers the reference task. A reference task is covered when its best score
reaches the threshold (`DEFAULT_THRESHOLD`, chosen on the dev split's leave-one-benchmark-out scores, or
`text_embedding.coverage_threshold` when workbench.toml sets it: on this probability scale).

Measured on `tests/data/coverage_labels.csv` (`evaluate`; `benchmarks/eval_coverage_matcher.py`): dev = MMBench +
SEED-Bench + BLINK + CV-Bench + MathVista + SEED-Bench-2's new dimensions, 77 reference tasks, used to fit and tune
everything (features, glosses, threshold, band, confidence cuts); test = MME + MMStar, 32 tasks, held out at first
but looked at while tuning earlier matchers; heldout2 = MMT-Bench's meta-tasks, MMVP, MM-Vet, LVLM-eHub, Q-Bench,
SEED-Bench-2-Plus, OCRBench and MME-RealWorld, 82 tasks labelled before any tuning and measured once, at the end. At
the shipped threshold 0.44: dev P 0.90 R 0.74 (leave-one-benchmark-out P 0.88 R 0.76), test P 0.90 R 0.64, heldout2
P 0.89 R 0.62 (the previous matcher on heldout2: P 0.80 R 0.67). The goal (P >= 0.85 at R >= 0.75 without an LLM) is
met on dev's cross-validation but not on either held-out split: precision holds, recall does not. Of heldout2's 25
misses, 9 have a right task type as their best candidate but score below the threshold ("webs" -> user interface
understanding 0.08, "3d perception" -> depth ordering 0.10), 16 a wrong one (6 with no right one among the five
best; generic visual question answering first for "document-oriented vqa"). Before (the eight features, no glosses
or standout, at 0.18): dev P 0.76 R 0.76 (cross-validated P 0.76 R 0.76), test P 0.83 R 0.68; the mean of the three
cosines at 0.56: dev P 0.69 R 0.66, test P 0.89 R 0.57, heldout2 P 0.75 R 0.64. The standout feature carries most of
the gain on dev (without glosses: cross-validated P 0.88 at R 0.74); the glosses add about two dev tasks of recall.
Tried on dev and not kept: z-scores of the gloss cosine alone, of the embedding score alone; earlier, the share of
our leaf's words the reference has, the head word, whether our node is a leaf, the reference's own path, the margin
over the runner-up; a larger sentence model, all-mpnet-base-v2 (438 MB, the only larger one found packaged on
PyPI), in place of MiniLM or averaged with it: dev leave-one-benchmark-out P 0.88 R 0.76 either way, MiniLM's own
figure (the dev tasks it misses are missed by both).

With `confirm=` (an endpoint), reference tasks whose best score lies in the uncertain band
(`DEFAULT_BAND`) are decided by an LLM (`coverage_confirm.CoverageConfirmStage`, cached, priced, dry-run):
the best `confirm_top_k` candidates are asked in score order and the first confirmed one covers the task;
none confirmed makes it a gap. Above the band the embedding match stands, below it the task is a gap. With
an oracle answering from the labels (what the band and candidates let through, not a model): dev P 0.98
R 0.93 (rechecked with this matcher: the band and five candidates are still on the dev grid's plateau); the misses
are reference tasks with no labelled task type among the five candidates.

Trust: each row has a `confidence` in its decision (`confidence()`: high outside the uncertain band, the rows
`--confirm` sends to an LLM being the medium and low ones), and each report its `measured` figures
(`measured_quality`): P/R on dev, the earlier test split and the fresh held-out split at its threshold and the
right decisions per confidence level (held-out: heldout2),
read from `data/coverage_eval.json`, which `benchmarks/eval_coverage_matcher.py` writes with its date, split sizes
and settings; another text model or changed constants find no measurement and the report says so.

Embedding cost: `our_texts` lists the texts embedded per task type (one source for `score_matrix` and
`pending_embeddings`, which counts those not yet in the workspace's text-embedding cache): five per task type plus
the tree's distinct words (for word_min) and the glosses' phrases, so a 19k-node tree's first match embeds ~100k
texts, minutes on a CPU, once.

API (also used by the dashboard): `reference_coverage(ws, path, ...) -> CoverageReport` with `.rows`
(`CoverageRow`), `.gaps`, `.gaps_by_reference()`, `.gaps_by_ours()`, `.untested_areas()`,
`.by_reference_category()`, `.to_frame()`, `.to_json()`; `load_labels(csv)` and `evaluate(report, labels)`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from workbench.core.errors import WorkbenchError
from workbench.core.imports import locked_import
from workbench.core.resources import DATA_DIR, PACKAGE_DIR
from workbench.core.workspace import Workspace
from workbench.models.textembed import DEFAULT_MODEL as DEFAULT_TEXT_MODEL
from workbench.models.textembed import embed_texts, uncached, workspace_cache_dir
from workbench.stages.coverage_confirm.stage import ConfirmRow, run_confirm
from workbench.taxonomy.io import parse_source
from workbench.taxonomy.model import TASK_TYPES, Taxonomy
from workbench.taxonomy.names import SEP

# The learned combination: a logistic regression over FEATURES of each (reference task, task type) pair,
# fitted on the dev split's FIT_TOP best candidates per task (by max(embedding, gloss)) with C = FIT_C; refit and
# paste with `benchmarks/eval_coverage_matcher.py --refit`. `score` is its probability.
FEATURES = ("leaf", "leaf_path", "task", "gloss", "overlap", "subtree", "subtree_overlap", "word_min", "describe",
            "subtree_describe", "standout")
COEF = (-1.2637, 0.1641, -0.1061, 0.9192, 0.4046, 0.8790, 2.5231, 1.6522, -0.3557, 1.0189, 0.8340)
INTERCEPT = -5.4042
FIT_C, FIT_TOP = 1.0, 5
DEFAULT_THRESHOLD = 0.44        # on the dev split's leave-one-benchmark-out scores: best F1 averaged over +-0.08
DEFAULT_BAND = (0.05, 0.90)     # scores in [low, high) are sent to the LLM when confirming: tuned on dev
DEFAULT_TOP_K = 3               # candidates kept per reference task
DEFAULT_CONFIRM_TOP_K = 5       # candidates asked about (best first) when confirming: tuned on dev
TASK_TEMPLATE = "the vision task of {}"
SYNONYMS_FILE = DATA_DIR / "coverage_synonyms.txt"
GLOSSES_FILE = DATA_DIR / "coverage_glosses.txt"
# Words every task name uses: a shared one says nothing about the ability tested.
GENERIC_WORDS = frozenset("a an the of and or in on for with to from by as at its their image images visual "
                          "vision task tasks understanding recognition reasoning perception analysis fine "
                          "grained coarse single cross level".split())
LABELS_FILE = PACKAGE_DIR.parent / "tests" / "data" / "coverage_labels.csv"
# What `benchmarks/eval_coverage_matcher.py` measured on the labelled sets (date, split sizes, settings, P/R per
# threshold on dev and held-out test, the share of right decisions per confidence level): reports quote it for the
# settings they use, never a number written here.
EVAL_FILE = DATA_DIR / "coverage_eval.json"
# Confidence of a row's decision: "high" outside the uncertain band (what --confirm sends to an LLM); inside it
# "medium" when the score is at or above MEDIUM_COVERED or below MEDIUM_GAP, else "low". The cuts are tuned on dev
# (`benchmarks/eval_coverage_matcher.py --tune-confidence`: the widest gap in right decisions between medium and low,
# at least 5 dev tasks each).
MEDIUM_GAP, MEDIUM_COVERED = 0.14, 0.50


@dataclass
class CoverageRow:
    reference_path: str
    nearest_id: str | None            # the best-scoring node (embedding)
    nearest_path: str | None
    score: float                      # its combined score
    covered: bool
    reference_category: str = ""      # the reference's own first level
    nearest_category: str | None = None   # our first level of the nearest node
    leaf_score: float = 0.0           # features of the nearest node (see FEATURES): the three cosines,
    leaf_path_score: float = 0.0
    task_score: float = 0.0
    embedding_score: float = 0.0      # their mean (the score of the matcher before the learned one),
    gloss_score: float = 0.0          # the cosine after synonym expansion
    overlap_score: float = 0.0        # and the share of the reference's content words our path has
    runner_up_id: str | None = None
    runner_up_path: str | None = None
    runner_up_score: float | None = None
    candidates: list = field(default_factory=list)   # top-k [{"id", "path", "score"}], best first
    confidence: str = "low"           # of the decision: high (outside the uncertain band), medium, low
    band: str = "gap"                 # "match" (>= high, or >= threshold without confirming), "uncertain", "gap"
    match_id: str | None = None       # the node that covers it (None: a gap); the nearest one unless an LLM
    match_path: str | None = None     # confirmed a runner-up instead
    decided_by: str = "embedding"     # "embedding" or "llm"
    confirmations: list = field(default_factory=list)  # [{"path", "match", "reason", "raw"}] asked of the LLM


@dataclass
class CoverageReport:
    reference: str
    threshold: float
    rows: list[CoverageRow] = field(default_factory=list)
    problems: list = field(default_factory=list)   # taxonomy.io Problems found reading the reference
    our_areas: list[str] = field(default_factory=list)   # our live first-level names
    band: tuple[float, float] | None = None       # set when an LLM confirmed the uncertain band
    confirm_run: object = None                    # the confirmation's RunReport (dry run: estimates only)
    measured: dict | None = None                  # `measured_quality` for these settings (None: not measured)

    def quality_line(self) -> str:
        """How far to trust the report: the P/R measured on the labelled sets for its settings."""
        line = quality_line(self.measured, self.threshold)
        n = sum(r.decided_by == "llm" for r in self.rows)
        return line + (f" (the embedding's figures: {n} row(s) here were decided by the LLM instead)" if n else "")

    @property
    def gaps(self) -> list[CoverageRow]:
        return [r for r in self.rows if not r.covered]

    @property
    def covered_fraction(self) -> float:
        return (len(self.rows) - len(self.gaps)) / len(self.rows) if self.rows else 0.0

    def gaps_by_reference(self) -> dict[str, list[CoverageRow]]:
        """Reference tasks we lack, grouped by the reference's own first level."""
        out: dict[str, list[CoverageRow]] = defaultdict(list)
        for r in self.gaps:
            out[r.reference_category].append(r)
        return dict(out)

    def gaps_by_ours(self) -> dict[str, list[CoverageRow]]:
        """Reference tasks we lack, grouped by our first level nearest to them ("-": empty taxonomy)."""
        out: dict[str, list[CoverageRow]] = defaultdict(list)
        for r in self.gaps:
            out[r.nearest_category or "-"].append(r)
        return dict(out)

    def untested_areas(self) -> list[str]:
        """Our first-level areas that no covered reference task falls into (the reference never tests)."""
        hit = {(r.match_path or "").split(SEP)[0] for r in self.rows if r.covered}
        return [a for a in self.our_areas if a not in hit]

    def by_reference_category(self) -> list[dict]:
        """Per first level of the reference: tasks, covered, gaps."""
        agg: dict[str, list[int]] = {}
        for r in self.rows:
            a = agg.setdefault(r.reference_category, [0, 0])
            a[0] += 1
            a[1] += r.covered
        return [{"category": k, "tasks": n, "covered": c, "gaps": n - c} for k, (n, c) in agg.items()]

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame([asdict(r) for r in self.rows])

    def to_json(self, rows: list[CoverageRow] | None = None) -> dict:
        return {"summary": self.summary(), "threshold": self.threshold, "band": self.band,
                "measured": self.measured, "quality": self.quality_line(),
                "rows": [asdict(r) for r in (self.rows if rows is None else rows)],
                "gaps_by_reference": {k: [r.reference_path for r in v] for k, v in self.gaps_by_reference().items()},
                "gaps_by_ours": {k: [r.reference_path for r in v] for k, v in self.gaps_by_ours().items()},
                "untested_areas": self.untested_areas()}

    def summary(self) -> str:
        s = (f"{self.reference}: {len(self.rows)} reference task(s), {len(self.rows) - len(self.gaps)} covered "
             f"({self.covered_fraction:.0%}) at score >= {self.threshold}")
        if self.band:
            n = sum(r.decided_by == "llm" for r in self.rows)
            s += f", {n} decided by the LLM in [{self.band[0]}, {self.band[1]})"
        return s + f"; {len(self.gaps)} gap(s); {len(self.untested_areas())} of our area(s) untested"


def confidence(score: float, band: tuple[float, float] = DEFAULT_BAND) -> str:
    """The confidence of a decision at this score: high outside the uncertain band, medium or low inside it."""
    if score >= band[1] or score < band[0]:
        return "high"
    return "medium" if score >= MEDIUM_COVERED or score < MEDIUM_GAP else "low"


def matcher_settings(model: str | None = None) -> dict:
    """What the measured figures depend on besides the threshold: the text model, the learned combination and
    the synonyms it was fitted with (a change to any needs a new measurement)."""
    syn = hashlib.sha256(SYNONYMS_FILE.read_bytes()).hexdigest()[:12]
    glosses = hashlib.sha256(GLOSSES_FILE.read_bytes()).hexdigest()[:12]
    return {"model": model or DEFAULT_TEXT_MODEL, "features": list(FEATURES), "coef": list(COEF),
            "intercept": INTERCEPT, "synonyms": syn, "glosses": glosses}


def measured_quality(threshold: float, model: str | None = None, band: tuple[float, float] = DEFAULT_BAND,
                     path: Path = EVAL_FILE) -> dict | None:
    """The evaluation's figures for these settings: {"date", "sizes", "threshold", "dev", "test", "heldout",
    "confidence"} ("heldout": the fresh held-out split `heldout2`, measured once; "test": MME + MMStar, held out at
    first but looked at while tuning earlier matchers; the confidence levels' figures only for the band and cuts
    they were measured with); None when the file is missing or was measured with other settings, or the threshold
    was not swept."""
    try:
        ev = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if ev.get("settings") != matcher_settings(model):
        return None
    at = next((t for t in ev.get("thresholds", []) if abs(t["threshold"] - threshold) < 1e-9), None)
    if at is None:
        return None
    conf = ev.get("confidence", {})
    same = conf.get("band") == list(band) and conf.get("cuts") == [MEDIUM_GAP, MEDIUM_COVERED]
    return {"date": ev["date"], "sizes": ev["sizes"], "labels": ev.get("labels"), "threshold": threshold,
            "dev": at["dev"], "test": at["test"], "heldout": at.get("heldout2"),
            "confidence": conf.get("levels", {}) if same else {}}


def quality_line(measured: dict | None, threshold: float) -> str:
    if not measured:
        return (f"precision/recall not measured for these settings (threshold {threshold}, text model, matcher "
                "constants): run benchmarks/eval_coverage_matcher.py")
    d, t, n = measured["dev"], measured["test"], measured["sizes"]
    h, split = (measured.get("heldout"), "heldout2") if measured.get("heldout") else (t, "test")
    s = (f"measured {measured['date']} on the labelled sets at threshold {threshold}: held-out P {h['precision']:.2f} "
         f"R {h['recall']:.2f} ({n[split]} tasks)")
    if split == "heldout2":
        s += f", earlier test split P {t['precision']:.2f} R {t['recall']:.2f} ({n['test']} tasks, looked at before)"
    s += f", dev P {d['precision']:.2f} R {d['recall']:.2f} ({n['dev']} tasks)"
    conf = measured.get("confidence", {})
    if conf:
        s += "; decisions right by confidence (held-out): " + ", ".join(
            f"{k} {v[split]['right']}/{v[split]['tasks']}" for k, v in conf.items() if v.get(split, {}).get("tasks"))
    return s


def default_threshold(ws: Workspace) -> float:
    cfg = ws.config.text_embedding
    # The config's value only when workbench.toml sets it: its built-in default predates this matcher.
    return float(cfg.coverage_threshold) if cfg.coverage_threshold is not None else DEFAULT_THRESHOLD


def load_synonyms(path: Path = SYNONYMS_FILE) -> dict[str, str]:
    """{word: expansion} of a synonyms file (`word = expansion` lines, `#` comments)."""
    out = {}
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        line = line.split("#")[0].strip()
        if not line:
            continue
        word, eq, expansion = line.partition("=")
        if not eq or not word.strip() or not expansion.strip():
            raise WorkbenchError(f"{path}: line {n}: need `word = expansion`")
        out[word.strip().lower()] = expansion.strip().lower()
    return out


def load_glosses(path: Path = GLOSSES_FILE) -> dict[str, list[str]]:
    """{task type name: [phrases]} of a glosses file (`name = phrase; phrase` lines, `#` comments)."""
    out: dict[str, list[str]] = {}
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        line = line.split("#")[0].strip()
        if not line:
            continue
        name, eq, text = line.partition("=")
        phrases = [x.strip().lower() for x in text.split(";") if x.strip()]
        if not eq or not name.strip() or not phrases:
            raise WorkbenchError(f"{path}: line {n}: need `task type name = phrase; phrase`")
        out.setdefault(name.strip().lower(), []).extend(phrases)
    return out


def describe_phrases(our_paths: list[tuple[str, ...]], glosses: dict[str, list[str]]) -> list[list[str]]:
    """Per task type of ours: its own name and the phrases `coverage_glosses.txt` describes it with."""
    return [[p[-1], *glosses.get(p[-1].lower(), ())] for p in our_paths]


def _best_phrase(r: np.ndarray, phrases: list[list[str]], vecs: np.ndarray) -> np.ndarray:
    """(len(r), len(phrases)): per reference row, the best cosine to any phrase of each of our nodes (`vecs`: the
    phrases' embeddings, flattened in order)."""
    starts = np.cumsum([0] + [len(ph) for ph in phrases[:-1]])
    return np.maximum.reduceat(r @ vecs.T, starts, axis=1)


def _words(text: str) -> list[str]:
    return re.findall(r"[^\W_]+", text.lower())


def _tokens(text: str) -> list[str]:
    """Words with hyphenated compounds kept whole, for synonym lookup: "image-text" and "text-to-image" name a
    pairing of modalities, not text to read, so `text = ...` does not expand them."""
    return re.findall(r"[^\W_]+(?:-[^\W_]+)*", text.lower())


@lru_cache(maxsize=1)
def _stemmer():
    PorterStemmer = locked_import("nltk.stem").PorterStemmer

    return lru_cache(maxsize=200_000)(PorterStemmer().stem)   # a taxonomy repeats its words


def gloss(text: str, synonyms: dict[str, str]) -> str:
    """The text with each word that has a synonym replaced by its expansion ("instance location" ->
    "object grounding"); the text itself when none has (its embedding is then already cached)."""
    words = _tokens(text)
    if not any(w in synonyms for w in words):
        return text
    return " ".join(synonyms.get(w, w) for w in words)


def content_stems(text: str, synonyms: dict[str, str]) -> set[str]:
    """Porter stems of the text's words and of their expansions, generic task words left out."""
    stem = _stemmer()
    words = _words(text) + [x for w in _tokens(text) if w in synonyms for x in _words(synonyms[w])]
    return {stem(w) for w in words if w not in GENERIC_WORDS}


def _overlap(ref_stems: list[set], our_stems: list[set]) -> np.ndarray:
    """Share of each reference leaf's content stems found in each of our paths (0 when it has none)."""
    vocab = {s: k for k, s in enumerate(sorted(set().union(*ref_stems)))}
    a = np.zeros((len(ref_stems), len(vocab)), np.float32)
    b = np.zeros((len(our_stems), len(vocab)), np.float32)
    for i, st in enumerate(ref_stems):
        a[i, [vocab[s] for s in st]] = 1
    for j, st in enumerate(our_stems):
        b[j, [vocab[s] for s in st if s in vocab]] = 1
    return (a @ b.T) / np.maximum(a.sum(1, keepdims=True), 1)


def _standardized(m: np.ndarray) -> np.ndarray:
    """Each row (a reference task) as z-scores over our nodes: how far a task type stands out from the whole
    tree for this reference task. A reference name close to everything ("interleaved image-text analysis")
    has no stand-out candidate; a raw cosine cannot tell it from a real match."""
    return (m - m.mean(1, keepdims=True)) / m.std(1, keepdims=True).clip(min=1e-6)


def _subtree_mean(m: np.ndarray, our_paths: list[tuple[str, ...]]) -> np.ndarray:
    """Per column (one of our nodes): the mean over the node and its descendants among `our_paths`."""
    pos = {p: j for j, p in enumerate(our_paths)}
    pairs = np.array([(pos[p[:k]], j) for j, p in enumerate(our_paths) for k in range(1, len(p) + 1)
                      if p[:k] in pos], dtype=np.int64).reshape(-1, 2)
    total = np.zeros_like(m)
    np.add.at(total.T, pairs[:, 0], m.T[pairs[:, 1]])
    return total / np.bincount(pairs[:, 0], minlength=len(our_paths))[None, :].clip(min=1)


STOP_WORDS = frozenset("a an the of and or in on for with to from by as at its their".split())


def name_words(text: str, synonyms: dict[str, str]) -> list[str]:
    """The words of a name (synonyms expanded, stop words left out) that `word_min` aligns."""
    return [w for w in _words(gloss(text, synonyms)) if w not in STOP_WORDS] or _words(text)


def _word_min(ref_words: list[list[str]], our_words: list[list[str]], vec: dict[str, np.ndarray],
              block: int = 2048) -> np.ndarray:
    """Per (reference leaf, our path): the worst-matched word of the reference leaf, i.e. the minimum over its
    words of the best cosine to any word of our path. Every word of a reference task should have a counterpart:
    "animated" in "animated character recognition" has none in "optical character recognition"."""
    rv = sorted({w for ws in ref_words for w in ws})
    rpos = {w: k for k, w in enumerate(rv)}
    ov = sorted({w for ws in our_words for w in ws})
    opos = {w: k for k, w in enumerate(ov)}
    sim = np.stack([vec[w] for w in rv]) @ np.stack([vec[w] for w in ov]).T
    sim = np.concatenate([sim, np.full((len(rv), 1), -1.0, sim.dtype)], 1)   # the padding: never the best match
    width = max(map(len, our_words))
    idx = np.full((len(our_words), width), len(ov))
    for j, ws in enumerate(our_words):
        idx[j, :len(ws)] = [opos[w] for w in ws]
    out = np.empty((len(ref_words), len(our_words)), np.float32)
    rows = [[rpos[w] for w in ws] for ws in ref_words]
    for b in range(0, len(our_words), block):               # (ref words, block, width): bounded memory
        best = sim[:, idx[b:b + block]].max(-1)
        out[:, b:b + block] = np.stack([best[r].min(0) for r in rows])
    return out


OUR_TEXTS = ("leaf", "path", "task", "gloss_leaf", "gloss_path")


def our_texts(our_paths: list[tuple[str, ...]], synonyms: dict[str, str],
              glosses: dict[str, list[str]] | None = None) -> dict[str, list[str]]:
    """The texts embedded per task type of ours (`OUR_TEXTS`): what a new tree costs to match the first time."""
    phrases = describe_phrases(our_paths, load_glosses() if glosses is None else glosses)
    return {"leaf": [p[-1] for p in our_paths], "path": [" > ".join(p) for p in our_paths],
            "describe": [t for ph in phrases for t in ph[1:]],        # the glosses' phrases (names: in "leaf")
            "task": [TASK_TEMPLATE.format(p[-1]) for p in our_paths],
            "gloss_leaf": [gloss(p[-1], synonyms) for p in our_paths],
            "gloss_path": [" > ".join(gloss(x, synonyms) for x in p) for p in our_paths],   # mostly cache hits
            "words": sorted({w for p in our_paths for w in name_words(" ".join(p), synonyms)})}   # shared: few


def pending_embeddings(ws: Workspace, statuses=TASK_TYPES) -> int:
    """How many of our task types' texts are not yet in the workspace's text-embedding cache: 0 means matching
    any reference takes seconds; a large number means minutes of embedding first (about 100-500 texts/s on a
    CPU), which `reference_coverage` (or `workbench taxonomy coverage`) does once and keeps."""
    idx = Taxonomy.of(ws).index(statuses)
    paths = [tuple(idx.paths[i].split(SEP)) for i in idx.dfs()]
    texts = [t for group in our_texts(paths, load_synonyms()).values() for t in group]
    return uncached(texts, ws.config.text_embedding.model, workspace_cache_dir(ws))


def score_matrix(ref_paths: list[tuple[str, ...]], our_paths: list[tuple[str, ...]], model: str | None = None,
                 cache_dir: Path | None = None, synonyms: dict[str, str] | None = None) -> dict[str, np.ndarray]:
    """(len(ref), len(ours)) matrices: the features (`FEATURES`), `embedding` (the mean of the three
    cosines) and `score` (the learned combination, a probability)."""
    syn = load_synonyms() if synonyms is None else synonyms

    def emb(texts):
        return embed_texts(texts, model, cache_dir=cache_dir)

    glosses = load_glosses()
    ours = our_texts(our_paths, syn, glosses)
    o_leaf, o_path, o_task, o_gloss_leaf, o_gloss_path = (emb(ours[k]) for k in OUR_TEXTS)
    ref_words = [name_words(p[-1], syn) for p in ref_paths]
    vocab = sorted(set(ours["words"]).union(*ref_words))
    vec = dict(zip(vocab, emb(vocab)))
    r_leaf = emb([p[-1] for p in ref_paths])
    r_task = emb([TASK_TEMPLATE.format(p[-1]) for p in ref_paths])
    m = {"leaf": r_leaf @ o_leaf.T, "leaf_path": r_leaf @ o_path.T, "task": r_task @ o_task.T}
    m["embedding"] = (m["leaf"] + m["leaf_path"] + m["task"]) / 3
    r_gloss = emb([gloss(p[-1], syn) for p in ref_paths])
    m["gloss"] = (r_gloss @ o_gloss_path.T + r_gloss @ o_gloss_leaf.T) / 2
    m["overlap"] = _overlap([content_stems(p[-1], syn) for p in ref_paths],
                            [content_stems(" ".join(p), syn) for p in our_paths])
    m["subtree"] = _subtree_mean(m["embedding"], our_paths)
    m["subtree_overlap"] = _subtree_mean(m["overlap"], our_paths)
    phrases = describe_phrases(our_paths, glosses)
    vecs = emb([t for ph in phrases for t in ph])
    m["describe"] = np.maximum(_best_phrase(r_leaf, phrases, vecs), _best_phrase(r_gloss, phrases, vecs))
    m["subtree_describe"] = _subtree_mean(m["describe"], our_paths)
    m["standout"] = np.maximum(_standardized(m["embedding"]), _standardized(m["describe"]))
    m["word_min"] = _word_min(ref_words, [name_words(" ".join(p), syn) for p in our_paths], vec)
    z = np.stack([m[f] for f in FEATURES], -1) @ np.asarray(COEF) + INTERCEPT
    m["score"] = 1 / (1 + np.exp(-z))
    return m


def read_reference(reference_path: str | Path, fmt: str | None = None):
    """(reference leaves as name tuples, problems) of a reference file."""
    _, entries, problems = parse_source(Path(reference_path), fmt)
    paths = list(dict.fromkeys(tuple(e.names) for e in entries if e.names))
    prefixes = {p[:i] for p in paths for i in range(1, len(p))}
    leaves = [p for p in paths if p not in prefixes]
    if not leaves:
        errs = "; ".join(p.format() for p in problems[:3])
        raise WorkbenchError(f"{reference_path}: no reference tasks read{(': ' + errs) if errs else ''}")
    return leaves, problems


def reference_coverage(ws: Workspace, reference_path: str | Path, fmt: str | None = None,
                       threshold: float | None = None, statuses=TASK_TYPES, *, top_k: int = DEFAULT_TOP_K, confirm=None,
                       band: tuple[float, float] = DEFAULT_BAND, confirm_top_k: int = DEFAULT_CONFIRM_TOP_K,
                       prompt: str | Path | None = None,
                       dry_run: bool = False, budget_usd: float | None = None,
                       progress: bool | None = None) -> CoverageReport:
    """Map every reference task to its best and runner-up task types; `confirm`: an endpoint (name or
    `Endpoint`) that decides the uncertain band, asking about the best `confirm_top_k` candidates (rows
    then keep max(top_k, confirm_top_k) candidates; see the module docstring)."""
    threshold = default_threshold(ws) if threshold is None else float(threshold)
    ref_leaves, problems = read_reference(reference_path, fmt)
    idx = Taxonomy.of(ws).index(statuses)
    order = list(idx.dfs())
    report = CoverageReport(str(reference_path), threshold, problems=problems,
                            our_areas=[idx.nodes[i].name for i in order if SEP not in idx.paths[i]],
                            measured=measured_quality(threshold, ws.config.text_embedding.model, band))
    if not order:
        report.rows = [CoverageRow(SEP.join(p), None, None, 0.0, False, reference_category=p[0])
                       for p in ref_leaves]
        return report
    our_paths = [tuple(idx.paths[i].split(SEP)) for i in order]
    m = score_matrix(ref_leaves, our_paths, ws.config.text_embedding.model, workspace_cache_dir(ws))
    sims = m["score"]
    k = max(1, min(max(top_k, confirm_top_k) if confirm is not None else top_k, len(order)))
    top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    for i, p in enumerate(ref_leaves):
        cands = [{"id": order[j], "path": idx.paths[order[j]], "score": round(float(sims[i, j]), 4)} for j in top[i]]
        j = int(top[i][0])
        score = float(sims[i, j])
        covered = score >= threshold
        row = CoverageRow(SEP.join(p), order[j], idx.paths[order[j]], round(score, 4), covered,
                          reference_category=p[0], nearest_category=idx.paths[order[j]].split(SEP)[0],
                          leaf_score=round(float(m["leaf"][i, j]), 4),
                          leaf_path_score=round(float(m["leaf_path"][i, j]), 4),
                          task_score=round(float(m["task"][i, j]), 4),
                          embedding_score=round(float(m["embedding"][i, j]), 4),
                          gloss_score=round(float(m["gloss"][i, j]), 4),
                          overlap_score=round(float(m["overlap"][i, j]), 4), candidates=cands,
                          band="match" if covered else "gap", confidence=confidence(score, band))
        if len(cands) > 1:
            row.runner_up_id, row.runner_up_path, row.runner_up_score = (cands[1]["id"], cands[1]["path"],
                                                                         cands[1]["score"])
        if covered:
            row.match_id, row.match_path = row.nearest_id, row.nearest_path
        report.rows.append(row)
    if confirm is not None:
        _confirm(ws, report, confirm, band, confirm_top_k, prompt, dry_run, budget_usd, progress)
    return report


def _confirm(ws: Workspace, report: CoverageReport, endpoint, band, n_ask, prompt, dry_run, budget_usd,
             progress) -> None:
    low, high = float(band[0]), float(band[1])
    if not 0 <= low <= high <= 1:
        raise WorkbenchError(f"--band {low} {high}: need 0 <= low <= high <= 1")
    asked = [r for r in report.rows if low <= r.score < high]
    n_ask = max(1, int(n_ask))
    pairs = [ConfirmRow(r.reference_path, c["path"]) for r in asked for c in r.candidates[:n_ask] if c["score"] >= low]
    run, answers = run_confirm(ws, pairs, endpoint=endpoint, prompt=prompt, dry_run=dry_run,
                               budget_usd=budget_usd, progress=progress)
    report.confirm_run = run
    if dry_run:
        return
    report.band = (low, high)
    for r in report.rows:
        r.confidence = confidence(r.score, (low, high))
        if r.score >= high:
            r.band = "match"
            r.covered, r.match_id, r.match_path = True, r.nearest_id, r.nearest_path
        elif r.score < low:
            r.band = "gap"
            r.covered, r.match_id, r.match_path = False, None, None
    for r in asked:
        r.band = "uncertain"
        got = [(c, answers.get((r.reference_path, c["path"]))) for c in r.candidates[:n_ask] if c["score"] >= low]
        r.confirmations = [{"path": c["path"], **a} for c, a in got if a is not None]
        if any(a is None or a.get("match") is None for _, a in got):
            continue   # not every candidate answered (stopped, failed): the embedding decision stands
        hit = next((c for c, a in got if a["match"]), None)
        r.decided_by = "llm"
        r.covered = hit is not None
        r.match_id, r.match_path = (hit["id"], hit["path"]) if hit else (None, None)


# -- measuring the matcher ---------------------------------------------------------------------------

def load_labels(path: str | Path = LABELS_FILE) -> dict:
    """{"pairs": {(reference_path, task_type_path): bool}, "split": {reference_path: split}} of a labels CSV
    (columns benchmark, split, reference_path, task_type_path, match; `#` lines are comments)."""
    path = Path(path)
    pairs, split = {}, {}
    with path.open(encoding="utf-8") as f:
        lines = [ln for ln in f if not ln.startswith("#")]
    for n, rec in enumerate(csv.DictReader(lines), start=2):
        m = (rec.get("match") or "").strip().lower()
        if m not in ("yes", "no") or not rec.get("reference_path") or not rec.get("task_type_path"):
            raise WorkbenchError(f"{path}: data row {n - 1}: need reference_path, task_type_path and match yes/no")
        pairs[(rec["reference_path"], rec["task_type_path"])] = m == "yes"
        split[rec["reference_path"]] = rec.get("split") or ""
    return {"pairs": pairs, "split": split}


def evaluate(rows: list[CoverageRow], labels: dict, split: str | None = None) -> dict:
    """Precision and recall of the coverage decision per reference task, against labels (closed world: an
    unlisted pair is no). Precision: of the tasks reported covered, the share whose covering task type is
    labelled yes. Recall: of the tasks with any yes label, the share reported covered by a yes task type."""
    pairs = labels["pairs"]
    coverable = {r for (r, _), v in pairs.items() if v}
    tp = fp = fn = tn = n = 0
    for row in rows:
        if row.reference_path not in labels["split"] or (split and labels["split"][row.reference_path] != split):
            continue
        n += 1
        ok = row.covered and pairs.get((row.reference_path, row.match_path), False)
        tp += ok
        fp += row.covered and not ok
        fn += row.reference_path in coverable and not ok
        tn += not row.covered and row.reference_path not in coverable
    return {"precision": tp / (tp + fp) if tp + fp else 0.0, "recall": tp / (tp + fn) if tp + fn else 0.0,
            "tp": tp, "fp": fp, "fn": fn, "true_gaps": tn, "tasks": n}
