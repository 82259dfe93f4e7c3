"""Issue 27/30: task names and model text hold Markdown and HTML (LLMs write them): every page shows them as typed.

A small generated workspace gets task types, a first-level category and a pending proposal named with `~`-free
Markdown (`*`, `_`, `$`, `<`, `>`, backticks, `[ ]( )`, a backslash; their `~` paths add strikethrough). Every page
is run by AppTest; no Markdown element (text, captions, alerts, metric labels, radio options, tabs, expanders) may
hold a name raw, and the names that are shown are there in `md`'s escaped form."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest

from workbench.apps.dashboard.registry import PAGES
from workbench.apps.dashboard.text import md, plotly_text
from workbench.core.workspace import Workspace
from workbench.taxonomy.model import Taxonomy

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(300)
NAMES = ["x*y* _z_", "$5$ cost", "<b>bold", "`code` span", "[link](x)", "a\\b"]
QUESTION, ANSWER = "What costs $5$ *here*?", "<i>This</i> [one](x) ~~no~~"   # model text on every sample


def test_md_escapes_every_markdown_character_and_nothing_else():
    assert md("a~~b~~") == r"a\~\~b\~\~" and md("$5$") == r"\$5\$" and md("<b>") == r"\<b\>"
    assert md("[l](u) *x* _y_ `c` # | ! + - . \\") == r"\[l\]\(u\) \*x\* \_y\_ \`c\` \# \| \! \+ \- \. \\"
    assert md("plain words 12 é") == "plain words 12 é" and md(None) == "" and md(3) == "3"
    assert md("two\nlines") == "two  \nlines"   # a hard break, not a paragraph or a list
    assert plotly_text("<b>50%{x}") == "&lt;b&gt;50&#37;{x}"


@pytest.fixture(scope="module")
def odd(tmp_path_factory):
    from test_dashboard_app import _generator

    gen = _generator()
    root = tmp_path_factory.mktemp("dash_md") / "ws"
    gen.build(root, gen.SMALL, log=lambda *a: None)
    with Workspace.open(root) as ws:
        tax = Taxonomy.of(ws)
        leaves = [n for n in tax.nodes() if not tax.children(n.id)][:len(NAMES) - 1]
        for node, name in zip(leaves, NAMES):
            tax.rename(node.id, name)
        first = next(n for n in tax.nodes() if n.parent_id is None)
        tax.rename(first.id, "*cat* $1$")
        tax.add(NAMES[-1], leaves[0].parent_id, origin="generated", status="proposed")
        with ws.store.write() as conn:
            conn.execute("UPDATE samples SET question = ?, answer = ?", (QUESTION, ANSWER))
    return root


def _markdown_sources(at) -> list[str]:
    out = []
    for kind in ("markdown", "caption", "info", "success", "warning", "error", "title", "header", "subheader",
                 "toast"):
        out += [str(e.value) for e in getattr(at, kind)]
    out += [str(m.label) for m in at.metric]
    out += [str(o) for r in at.radio for o in r.options]
    out += [str(e.label) for e in at.expander] + [str(t.label) for t in at.tabs]
    return out


@pytest.mark.parametrize("page", [p.key for p in PAGES])
def test_every_page_shows_markdown_names_as_typed(odd, page):
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.query_params["page"] = page
    os.environ["WORKBENCH_WORKSPACE"] = str(odd)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    sources = _markdown_sources(at)
    for name in NAMES + ["*cat* $1$", QUESTION, ANSWER]:
        raw = [s for s in sources if name in s]
        assert not raw, (page, name, raw)
    if page in ("referees", "adjudicate"):   # the sample shown: its question and answer as the model wrote them
        assert any(md(QUESTION) in s for s in sources) and any(md(ANSWER) in s for s in sources), page
    # (the Prompts page shows children only in an opened trial's matrix, as plain text: see test_trials_browser)
    if page == "review":   # the pending proposal's row, its path escaped (`~` included)
        assert any(re.search(re.escape(md(NAMES[-1])), s) for s in sources)
        assert any("\\~" + md(NAMES[-1]) in s for s in sources)
