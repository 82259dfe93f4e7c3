"""`workbench preflight` (workbench/apps/preflight.py): it fails on a seeded near-duplicate and a placeholder
name, naming both, and passes once they are fixed; the other checks name their nodes and fix."""

import pytest

from clip_fixtures import set_config_section
from conftest import run_cli
from workbench.apps.preflight import model_family, preflight
from workbench.core.workspace import Workspace
from workbench.taxonomy.model import Taxonomy


def clean_workspace(tmp_path):
    ws = Workspace.init(tmp_path / "ws")
    tax = Taxonomy.of(ws)
    for path in ("ocr~sign reading", "ocr~handwriting", "counting~people", "counting~vehicles"):
        tax.add_path(path)
    (ws.root / "workbench.toml").write_text((ws.root / "workbench.toml").read_text() + """
[endpoints.default]
base_url = "https://api.example.invalid/v1"
model = "gpt-4o-2024-08-06"
""")
    return Workspace.open(ws.root)


@pytest.mark.timeout(120)
def test_preflight_names_a_duplicate_and_a_placeholder_then_passes(tmp_path):
    ws = clean_workspace(tmp_path)
    tax = Taxonomy.of(ws)
    dup = tax.add("Sign-Reading", tax.find("ocr").id)
    ph = tax.add("subtask 4335", tax.find("counting").id)

    r = run_cli("preflight", str(ws.root), "--offline")
    assert r.code == 1, r.out + r.err
    assert "FAIL near-duplicate siblings" in r.out and "'ocr~Sign-Reading'" in r.out and "'ocr~sign reading'" in r.out
    assert "FAIL names" in r.out and "'counting~subtask 4335' is a placeholder" in r.out
    assert "fix: merge each pair" in r.out and "fix: rename each" in r.out
    assert "ok   pending proposals" in r.out and "endpoints: not probed (--offline)" in r.out

    tax.merge(dup.id, tax.find("ocr~sign reading").id)
    tax.rename(ph.id, "animals")
    r = run_cli("preflight", str(ws.root), "--offline")
    assert r.code == 0, r.out + r.err
    assert "FAIL" not in r.out and "0 failed: ready for the run" in r.out


def test_preflight_checks_name_their_nodes(tmp_path):
    ws = clean_workspace(tmp_path)
    tax = Taxonomy.of(ws)
    tax.add("misc", tax.find("ocr").id, origin="generated", status="proposed")
    tax.add_path("charts~bar charts~bar charts")          # repeats its parent, in a single-child chain
    tax.add("empty category")
    (ws.root / "workbench.toml").write_text((ws.root / "workbench.toml").read_text() + """
[endpoints.j1]
base_url = "https://judge.example.invalid/v1"
model = "Qwen2-VL-7B-Instruct"

[endpoints.j2]
base_url = "https://judge.example.invalid/v1"
model = "Qwen/Qwen2.5-VL-72B-Instruct"

[[referees]]
name = "a"
endpoint = "j1"

[[referees]]
name = "b"
endpoint = "j2"
""")
    ws = Workspace.open(ws.root)
    set_config_section(ws, "limits", budget_usd=0.0001)
    rep = preflight(ws, images=1000, offline=True, embed=False)
    by = {f.check: f for f in rep.findings}
    assert not by["pending proposals"].ok and by["pending proposals"].nodes == ["ocr~misc"]
    assert any("'charts~bar charts~bar charts' repeats its parent" == n for n in by["names"].nodes)
    assert "'ocr~misc' is a placeholder" in by["names"].nodes
    assert not by["single-child chains"].ok and any(n.startswith("'charts'") for n in by["single-child chains"].nodes)
    assert by["empty first-level categories"].nodes == ["empty category"]
    assert not by["prices"].ok and any("referee:a" in n for n in by["prices"].nodes)
    assert not by["referee families"].ok and "fix" not in by["referee families"].message
    assert not by["budget"].ok          # prices unknown with a budget set: the cost cannot be held against it
    assert rep.failed and "fix:" in rep.text()


def test_model_family():
    assert model_family("gpt-4o-mini") == model_family("gpt-4.1") == "gpt"
    assert model_family("OpenGVLab/InternVL2-26B") == model_family("InternVL-Chat-V1-5") == "internvl"
    assert model_family("glm-4v-9b") != model_family("Qwen2-VL-7B-Instruct")
