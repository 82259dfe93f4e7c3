"""Filter → Q&A → referees → select → export against a local OpenAI-compatible server (real client, real HTTP)."""

import base64
import json
import re

import pytest
from PIL import Image

from conftest import run_cli
from openai_server import OpenAIServer
from workbench.analysis.funnel import funnel, rejections
from workbench.core.workspace import Workspace
from workbench.taxonomy.model import Taxonomy


def make_workspace(tmp_path, base_url, *, n_images=6):
    ws = Workspace.init(tmp_path / "ws")
    t = Taxonomy.of(ws)
    paths = ["ocr~street sign reading", "counting~people counting", "captioning~brief caption",
             "charts~bar chart reading"]
    ids = [t.add_path(p).id for p in paths]
    img_dir = tmp_path / "imgs"
    img_dir.mkdir()
    with ws.store.write() as c:
        for i in range(n_images):
            Image.new("RGB", (40 + i, 30), (i * 30, 80, 160)).save(img_dir / f"im{i}.png")
            c.execute("INSERT INTO images(id, path, root, source, width, height, format, added_at) "
                      "VALUES (?, ?, ?, 'test', ?, 30, 'PNG', 'now')", (f"img{i}", f"im{i}.png", str(img_dir), 40 + i))
            for r, nid in enumerate(ids[:3], 1):
                c.execute("INSERT INTO matches(image_id, node_id, rank, score, match_key) VALUES (?,?,?,?, 'k')",
                          (f"img{i}", nid, r, 0.3))
    cfg = (ws.root / "workbench.toml").read_text()
    cfg += f"""
[endpoints.default]
base_url = "{base_url}"
model = "vlm"
max_retries = 2
timeout_s = 10

[endpoints.judge_a]
base_url = "{base_url}"
model = "judge-a"

[endpoints.judge_b]
base_url = "{base_url}"
model = "judge-b"

[endpoints.judge_c]
base_url = "{base_url}"
model = "judge-c"

[[referees]]
name = "a"
endpoint = "judge_a"

[[referees]]
name = "b"
endpoint = "judge_b"

[[referees]]
name = "c"
endpoint = "judge_c"
answer_aware = true
"""
    (ws.root / "workbench.toml").write_text(cfg)
    return Workspace.open(ws.root)


def image_index(req):
    """Which test image a request carries: its width is 40 + i."""
    import io

    url = req.images[0]
    data = base64.b64decode(url.split(",", 1)[1])
    return Image.open(io.BytesIO(data)).size[0] - 40


def script(req):
    i = image_index(req)
    if "candidate task types" in req.text:
        return {0: '["ocr~street sign reading", "counting~people counting"]',
                1: "```json\n[\"people counting\", \"made-up task\"]\n```",
                2: "None of them fit.",
                3: "this is not a list of labels ~~~ at all",
                4: "1. ocr~street sign reading\n2. captioning~brief caption",
                5: '["captioning~brief caption"]'}[i]
    if "write one complex question" in req.text:
        kinds = re.findall(r"^- (.+)$", req.text, re.M)
        if i == 4:
            return "Sorry, I cannot do that."
        items = [{"task_type": k, "question": f"What about {k} in image {i}?",
                  "answer": "" if (i == 1) else f"Answer {i}"} for k in kinds]
        if i == 0:
            items.append({"task_type": "weather recognition", "question": "Is it sunny?", "answer": "Yes"})
        return json.dumps(items)
    # referees
    votes = {"judge-a": ["1", "Score: 1", "yes", "0", "1", "1"],
             "judge-b": ["1", "0", "The score is 1", "maybe", "", "perhaps"],
             "judge-c": ["1", "1", "0", "0", "no", "1"]}
    if req.model == "judge-c":
        assert "Answer:" in req.text  # the answer-aware referee sees the answer
    else:
        assert "Answer:" not in req.text
    return votes[req.model][i]


@pytest.mark.timeout(120)
def test_full_vision_pipeline(tmp_path):
    with OpenAIServer(script, models=("vlm", "judge-a", "judge-b", "judge-c")) as server:
        ws = make_workspace(tmp_path, server.base_url)
        from workbench.stages.filter.stage import run_filter
        from workbench.stages.qa.stage import run_qa
        from workbench.stages.referee.stage import run_referees

        dry = run_filter(ws, dry_run=True)
        assert dry.to_call == 6 and dry.est_prompt_tokens > 0 and len(server.requests) == 0
        rep = run_filter(ws, progress=False)
        assert rep.called == 6 and rep.parse_failed == 0
        kept = ws.store.query("SELECT image_id, label FROM filter_decisions WHERE kept=1 ORDER BY image_id, label")
        assert [(r[0], r[1]) for r in kept] == [
            ("img0", "counting~people counting"), ("img0", "ocr~street sign reading"),
            ("img1", "counting~people counting"), ("img4", "captioning~brief caption"),
            ("img4", "ocr~street sign reading"),
            ("img5", "captioning~brief caption")]
        reasons = {(r[0], r[1]): r[2] for r in ws.store.query("SELECT image_id, label, reason FROM filter_decisions")}
        assert reasons[("img1", "made-up task")] == "not a candidate"
        assert reasons[("img2", "ocr~street sign reading")] == "not chosen"
        # img3's reply was read as labels that are not candidates: recorded, nothing kept
        assert all(r[0] == 0 for r in ws.store.query("SELECT kept FROM filter_decisions WHERE image_id='img3'"))
        # Every raw reply is kept beside the parse.
        assert ws.store.scalar("SELECT count(*) FROM llm_calls WHERE stage='filter' AND raw_text IS NOT NULL") == 6

        rep = run_qa(ws, progress=False)
        assert rep.called == 4 and rep.parse_failed == 1   # img4 answered with prose
        ok = ws.store.query("SELECT image_id, answer FROM samples WHERE status='ok' ORDER BY image_id, id")
        assert [r[0] for r in ok] == ["img0", "img0", "img5"]
        rej = {r[0]: r[1] for r in ws.store.query("SELECT coalesce(label, image_id), reason FROM samples "
                                                  "WHERE status='rejected'")}
        assert rej["weather recognition"] == "task type was not requested"
        assert rej["img1"] == "empty answer"
        assert rej["img4"].startswith("parse error")

        reps = run_referees(ws, progress=False)
        assert [r.called for r in reps] == [3, 3, 3]
        votes = ws.store.query("SELECT s.image_id, v.referee, v.vote, v.valid FROM votes v JOIN samples s "
                               "ON s.id = v.sample_id ORDER BY s.image_id, v.referee")
        assert len(votes) == 9

        # Re-running everything calls nothing: all answers come from the cache.
        before = len(server.requests)
        run_filter(ws, progress=False)
        run_qa(ws, progress=False)
        run_referees(ws, progress=False)
        assert len(server.requests) == before
        assert ws.store.scalar("SELECT count(*) FROM votes") == 9

        # CLI: select, funnel, export.
        r = run_cli("select", ws.root)
        assert r.code == 0, r.err
        r = run_cli("funnel", ws.root)
        assert r.code == 0 and "matched" in r.out
        f = funnel(ws)
        assert f["count"].tolist()[:3] == [18, 6, 3]
        out = tmp_path / "llava.json"
        r = run_cli("export", ws.root, "--out", out)
        assert r.code == 0, r.err
        recs = json.loads(out.read_text())
        assert len(recs) == f["count"].tolist()[4] and all(x["conversations"][0]["value"].startswith("<image>\n")
                                                            for x in recs)
        assert set(rejections(ws)["stage"]) >= {"filter", "qa", "referee"}


def test_image_data_urls_resend_files_only_when_vlm_safe(tmp_path):
    import io

    from workbench.stages.vision import image_data_url

    ws = Workspace.init(tmp_path / "ws")
    Image.new("RGB", (30, 20), (10, 20, 30)).save(tmp_path / "rgb.jpg")
    Image.new("CMYK", (30, 20), (10, 20, 30, 0)).save(tmp_path / "cmyk.jpg")
    Image.new("RGB", (3000, 100), (10, 20, 30)).save(tmp_path / "wide.png")
    with ws.store.write() as c:
        for iid, name, mode, w, h, fmt in [("a", "rgb.jpg", "RGB", 30, 20, "JPEG"), ("b", "cmyk.jpg", "CMYK", 30, 20,
                                           "JPEG"), ("c", "wide.png", "RGB", 3000, 100, "PNG")]:
            c.execute("INSERT INTO images(id, path, root, source, width, height, format, mode, added_at) "
                      "VALUES (?,?,?, 't', ?,?,?,?, 'now')", (iid, name, str(tmp_path), w, h, fmt, mode))

    def decoded(url):
        return base64.b64decode(url.split(",", 1)[1])

    assert decoded(image_data_url(ws, "a")) == (tmp_path / "rgb.jpg").read_bytes()   # sent as is
    cmyk = Image.open(io.BytesIO(decoded(image_data_url(ws, "b"))))
    assert cmyk.mode == "RGB"
    wide = Image.open(io.BytesIO(decoded(image_data_url(ws, "c"))))
    assert max(wide.size) == 1024 and wide.format == "JPEG"


@pytest.mark.timeout(120)
def test_cli_dry_runs_spend_nothing_and_mistakes_are_one_line(tmp_path):
    with OpenAIServer(script, models=("vlm",)) as server:
        ws = make_workspace(tmp_path, server.base_url)
        r = run_cli("filter", ws.root, "--dry-run")
        assert r.code == 0 and "dry run (filter" in r.out and "6 call(s) to make" in r.out
        assert len(server.requests) == 0
        r = run_cli("qa", ws.root)
        assert r.code == 2 and r.err.startswith("error: qa: no image has a kept task type yet")
        r = run_cli("filter", ws.root, "--endpoint", "nope")
        assert r.code == 2 and "no [endpoints.nope]" in r.err
        r = run_cli("export", ws.root)
        assert r.code == 2 and "no selected samples" in r.err
        r = run_cli("rejections", ws.root, "--stage", "bogus")
        assert r.code == 2 and "--stage must be" in r.err
    bare = Workspace.init(tmp_path / "bare")
    r = run_cli("referee", bare.root)
    assert r.code == 2 and "no Q&A samples yet" in r.err


@pytest.mark.timeout(120)
def test_failed_replies_exit_1_explain_and_can_be_asked_again(tmp_path):
    state = {"qa_ok": False}

    def flaky(req):
        if "candidate task types" in req.text:
            return '["ocr~street sign reading"]'
        if "write one complex question" in req.text:
            if not state["qa_ok"]:
                return "Sorry, I can't help with that."
            return json.dumps([{"task_type": "ocr~street sign reading", "question": "What does it say?",
                                "answer": "STOP"}])
        return "1"

    with OpenAIServer(flaky, models=("vlm",)) as server:
        ws = make_workspace(tmp_path, server.base_url, n_images=3)
        assert run_cli("filter", ws.root).code == 0
        r = run_cli("qa", ws.root)
        assert r.code == 1 and "3 of 3 row(s) failed" in r.err and "--refresh-failed" in r.err
        r = run_cli("referee", ws.root)
        assert r.code == 2 and "all 3 were rejected" in r.err and "rejections" in r.err
        state["qa_ok"] = True
        n = len(server.requests)
        r = run_cli("qa", ws.root)                      # cached bad replies: no call, same result
        assert r.code == 1 and len(server.requests) == n
        r = run_cli("qa", ws.root, "--refresh-failed")  # asks again, and the new replies replace the old
        assert r.code == 0, r.err
        assert len(server.requests) == n + 3
        assert ws.store.scalar("SELECT count(*) FROM samples WHERE status='ok'") == 3
        assert ws.store.scalar("SELECT count(*) FROM samples WHERE status='rejected'") == 0


def test_help_shows_config_section_names():
    r = run_cli("filter", "--help")
    assert r.code == 0 and "[filter] prompt" in r.out and "--refresh-failed" in r.out


def test_a_prompt_copied_into_the_workspace_overrides_the_bundled_one(tmp_path):
    from workbench.llm.prompts import DEFAULT_PROMPTS_DIR
    from workbench.stages.filter.stage import FilterStage

    ws = Workspace.init(tmp_path / "ws")
    bundled = FilterStage(ws).prompt
    assert bundled.path == (DEFAULT_PROMPTS_DIR / "filter.j2").resolve()
    edited = bundled.source.replace("Choose every candidate", "Pick each candidate")
    (ws.prompts_dir / "filter.j2").write_text(edited)
    mine = FilterStage(ws).prompt
    assert mine.path == (ws.prompts_dir / "filter.j2").resolve() and mine.hash != bundled.hash
