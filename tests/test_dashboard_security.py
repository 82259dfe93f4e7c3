"""Issue 30 through the entry points that start servers or Streamlit: a template payload refused on the Batch API
path and in the Prompts page's playground (rerun by rerun, with nothing run), the Gaps page's reference box refusing
server paths (absolute, `../`, a symlink out) while a workspace file, a bundled list and an upload work, and the
dashboard's access token."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest

from conftest import run_cli
from fake_batch_server import FakeBatchServer
from test_template_sandbox import PAYLOADS, UNDEFINED, payload
from workbench.apps.dashboard import reference_box as rb
from workbench.apps.dashboard.serve import TOKEN_ENV
from workbench.core.errors import WorkbenchError

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(180)


def app(root, page: str, monkeypatch, state=None) -> AppTest:
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(root))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=90)
    at.query_params["page"] = page
    for k, v in (state or {}).items():
        at.session_state[k] = v
    return at


def plain(text: str) -> str:
    """Markdown text as a reader sees it: the dashboard escapes user text with backslashes (`text.md`)."""
    return re.sub(r"\\(.)", r"\1", text)


def shown(at) -> str:
    """Every text the page shows (errors, infos, captions, markdown, metrics, tables), for 'never echoed' checks."""
    kinds = ("error", "info", "warning", "caption", "markdown", "success")
    parts = [plain(str(getattr(e, "value", ""))) for kind in kinds for e in getattr(at, kind)]
    parts += [f"{m.label} {m.value}" for m in at.metric]
    parts += [e.proto.spec for e in at.main.get("plotly_chart")]
    parts += [d.value.to_string() for d in at.dataframe]
    return "\n".join(parts)


# -- templates: the Batch API path and the playground ------------------------------------------------------------
def test_a_batch_run_refuses_the_template_before_uploading_anything(tmp_path):
    from test_batch import batch_workspace

    marker = tmp_path / "ran"
    with FakeBatchServer(lambda req: "1") as server:
        ws = batch_workspace(tmp_path, server.base_url)
        ws.prompts_dir.mkdir(parents=True, exist_ok=True)
        evil = ws.prompts_dir / "filter.j2"
        evil.write_text(payload("cycler globals", marker))
        r = run_cli("filter", ws.root, "--batch")
        assert r.code == 2 and r.err.startswith("error: ") and len(r.err.strip().splitlines()) == 1, r.err
        assert str(evil.resolve()) in r.err and "unsafe attribute access" in r.err
        assert server.files == {} and server.created == []
        assert ws.store.scalar("SELECT count(*) FROM llm_batches") == 0
    assert not marker.exists()


def test_playground_text_with_a_payload_shows_a_refusal_on_every_rerun(seeded_ws, tmp_path, monkeypatch):
    """The issue's path: typing into the playground's text area ran the payload on the next rerun, with no button
    pressed. Each payload now shows one st.error naming the playground text, and nothing runs."""
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")     # a dry run: nothing is called
    marker = tmp_path / "ran"
    key = "tr_text_expand:level1_supplement"      # New trial's edited version
    at = app(seeded_ws.root, "prompts", monkeypatch, {"tr_new": True, "tr_stage": "expand:level1_supplement"})
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("Estimate: " in plain(c.value) for c in at.caption)     # the control: the bundled text estimates
    for name in sorted(PAYLOADS):
        at.text_area(key=key).set_value(payload(name, marker)).run()
        assert not at.exception, (name, [e.value for e in at.exception])
        errors = [plain(e.value) for e in at.error]
        assert len(errors) == 1, (name, errors)
        assert errors[0].startswith("the edited version 'edited' (of expand_level1_supplement.j2)"), (name, errors)
        assert ("is undefined" if name in UNDEFINED else "unsafe attribute access") in errors[0], (name, errors)
        assert not any("Estimate" in c.value for c in at.caption)
        assert not marker.exists(), name


# -- the Gaps page's reference box ---------------------------------------------------------------------------------
@pytest.fixture
def gaps_root(ws, tmp_path):
    """A small tree (its sentence embeddings take a second, the seed tree's most of a minute)."""
    from workbench.taxonomy.model import Taxonomy

    for p in ("counting~counting objects", "charts~bar chart reading", "ocr~street sign reading"):
        Taxonomy.of(ws).add_path(p)
    seeded_ws = ws
    outside = tmp_path / "outside.txt"
    outside.write_text("Secrets~OPENAI_API_KEY=sk-do-not-show\n")
    (seeded_ws.root / "link.txt").symlink_to(outside)
    (seeded_ws.root / "lists").mkdir()
    (seeded_ws.root / "lists" / "mine.txt").write_text("Perception~Counting objects\nReasoning~Chart reading\n")
    return seeded_ws.root


def _typed(root, monkeypatch, path: str) -> AppTest:
    at = app(root, "gaps", monkeypatch, {"gaps_section": "reference", "gaps_ref": rb.TYPED})
    at.run()
    at.text_input(key="gaps_ref_file").set_value(path).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.mark.parametrize("path", ["/etc/passwd", "../outside.txt", "lists/../../outside.txt", "link.txt",
                                  "workbench.sqlite", ".env"])
def test_reference_box_refuses_paths_outside_the_workspace_without_echoing_them(gaps_root, monkeypatch, path):
    if path == ".env":
        (gaps_root / ".env").write_text("OPENAI_API_KEY=sk-do-not-show\n")
    at = _typed(gaps_root, monkeypatch, path)
    errors = [plain(e.value) for e in at.error]
    assert len(errors) == 1 and errors[0].startswith("refused:") and "upload" in errors[0], errors
    assert not at.metric and not at.main.get("plotly_chart")
    text = shown(at)
    assert "root:x:0" not in text and "sk-do-not-show" not in text and "Secrets" not in text


def test_reference_box_reads_a_workspace_file_and_a_bundled_list(gaps_root, monkeypatch):
    at = _typed(gaps_root, monkeypatch, "lists/mine.txt")
    assert not at.error, [e.value for e in at.error]
    assert {m.label: m.value for m in at.metric}["reference tasks"] == "2"
    at = app(gaps_root, "gaps", monkeypatch, {"gaps_section": "reference"})
    at.run()
    assert not at.exception and not at.error
    assert at.selectbox(key="gaps_ref").value.endswith("mmbench_abilities.txt")     # the first bundled list
    assert int({m.label: m.value for m in at.metric}["reference tasks"]) > 2


def test_an_upload_is_kept_in_the_workspace_and_offered_next_time(gaps_root, monkeypatch):
    """AppTest cannot drive st.file_uploader, so the upload's keeping is tested on its function and the page is
    checked to offer the kept file."""
    data = b"Perception~Counting objects\n"
    path = rb.save_upload(gaps_root, "../../My list.txt", data)
    assert path.parent == gaps_root / "references" and path.read_bytes() == data
    assert path.name.startswith("My_list-") and rb.save_upload(gaps_root, "My list.txt", data) == path
    with pytest.raises(WorkbenchError, match="not a task list"):
        rb.save_upload(gaps_root, ".env", b"KEY=1")
    at = app(gaps_root, "gaps", monkeypatch, {"gaps_section": "reference", "gaps_ref": str(path)})
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert f"{path.name} (workspace)" in at.selectbox(key="gaps_ref").options
    assert {m.label: m.value for m in at.metric}["reference tasks"] == "1"


# -- the access token ---------------------------------------------------------------------------------------------
def test_a_token_gates_every_page_until_shown_once(seeded_ws, monkeypatch):
    token = "t0ken-" + "x" * 30
    monkeypatch.setenv(TOKEN_ENV, token)
    for given in (None, "wrong", token[:-1]):
        at = app(seeded_ws.root, "overview", monkeypatch)
        if given is not None:
            at.query_params["token"] = given
        at.run()
        assert not at.exception
        assert [e.value for e in at.error] and "access token" in at.error[0].value
        assert not at.title and not at.metric and not at.sidebar.button     # nothing of the workspace was read
    at = app(seeded_ws.root, "overview", monkeypatch)
    at.query_params["token"] = token
    at.run()
    assert not at.exception and not at.error and at.title[0].value == "Overview"
    del at.query_params["token"]                 # the session keeps it: a rerun needs nothing more
    at.query_params["page"] = "coverage"
    at.run()
    assert not at.error and at.title[0].value == "Taxonomy coverage"


def test_no_token_configured_means_no_gate(seeded_ws, monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    at = app(seeded_ws.root, "overview", monkeypatch)
    at.run()
    assert not at.error and at.title[0].value == "Overview"
