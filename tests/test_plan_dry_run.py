"""The plan is the stages' dry runs, summed (workbench/analysis/plan.py): after every kind of edit a curator
makes, each LLM stage's calls on the rows there now equal what that stage's own `--dry-run` says, and the plan
says which change makes them; stale match rows count as work.

One workspace is run through match, filter, Q&A and two referees against the scripted server (tests/test_plan.py's
script), copied once per edit, edited, then planned and dry-run stage by stage.
"""

import shutil

import pytest

from clip_fixtures import set_config_section
from openai_server import OpenAIServer
from test_plan import make_images, make_workspace, run_all, script
from workbench.analysis.plan import make_plan
from workbench.core.workspace import Workspace
from workbench.stages.expand.stage import expand
from workbench.stages.filter.stage import run_filter
from workbench.stages.qa.stage import run_qa
from workbench.stages.referee.stage import run_referees
from workbench.taxonomy.model import Taxonomy

N = 12


@pytest.fixture(scope="module")
def pilot(tmp_path_factory):
    from workbench.stages.images.register import register_images

    tmp = tmp_path_factory.mktemp("pilot")
    with OpenAIServer(script, models=("vlm", "vlm-2", "judge-a", "judge-b")) as server:
        ws = make_workspace(tmp, server.base_url)
        register_images(ws, [make_images(tmp / "images", 0, N)])
        run_all(ws)
        ws.store.close()
        yield tmp / "ws", tmp


def leaf(ws, path):
    return Taxonomy.of(ws).find(path)


def edit_rename(ws, tmp):
    Taxonomy.of(ws).rename(busiest_leaf(ws), "renamed task type")


def edit_move(ws, tmp):
    node = busiest_leaf(ws)
    other = next(r for r in Taxonomy.of(ws).children(None) if r.id != leaf_parent(ws, node))
    Taxonomy.of(ws).move(node, other.id)


def edit_merge(ws, tmp):
    a = busiest_leaf(ws)
    b = next(n for n, _ in Taxonomy.of(ws).leaves() if n.id != a and n.parent_id == leaf_parent(ws, a))
    Taxonomy.of(ws).merge(a, b.id)


def edit_delete(ws, tmp):
    Taxonomy.of(ws).delete(busiest_leaf(ws))


def edit_reject(ws, tmp):
    Taxonomy.of(ws).reject([busiest_leaf(ws)])


def edit_new_proposals(ws, tmp):
    tax = Taxonomy.of(ws)
    tax.add("proposed child", busiest_leaf(ws), origin="generated", status="proposed")
    tax.add("category 9", None, origin="generated", status="proposed")


def edit_accept(ws, tmp):
    tax = Taxonomy.of(ws)
    node = tax.add("new leaf", leaf(ws, "category 1").id, origin="generated", status="proposed")
    tax.accept([node.id])


def edit_new_images(ws, tmp):
    from workbench.stages.images.register import register_images
    from workbench.stages.match.stage import match

    register_images(ws, [make_images(tmp / "more", N, N + 5)])
    match(ws)


def edit_prompt(ws, tmp):
    from workbench.core.resources import PROMPTS_DIR

    text = (PROMPTS_DIR / "filter.j2").read_text()
    (ws.root / "my_filter.j2").write_text(text + "\nBe strict.\n")
    set_config_section(ws, "filter", endpoint="vlm", prompt="my_filter.j2")


def edit_model(ws, tmp):
    cfg = (ws.root / "workbench.toml").read_text()
    (ws.root / "workbench.toml").write_text(cfg.replace('model = "vlm"\n', 'model = "vlm-2"\n', 1))


EDITS = {"rename": edit_rename, "move": edit_move, "merge": edit_merge, "delete": edit_delete,
         "accept": edit_accept, "reject": edit_reject, "new_proposals": edit_new_proposals,
         "new_images": edit_new_images, "prompt": edit_prompt, "model": edit_model}


def busiest_leaf(ws) -> str:
    """The task type kept for the most images (so that an edit to it touches every stage)."""
    return ws.store.scalar("SELECT node_id FROM samples WHERE status='ok' GROUP BY node_id ORDER BY count(*) DESC, "
                           "node_id LIMIT 1")


def leaf_parent(ws, node_id):
    return Taxonomy.of(ws).get(node_id).parent_id


def dry_runs(ws) -> dict[str, int]:
    out = {}
    for name, fn in (("filter", run_filter), ("qa", run_qa)):
        try:
            out[name] = fn(ws, dry_run=True, progress=False).to_call
        except Exception as exc:   # a stage with no rows says so; the plan must then plan none
            out[name] = 0 if "no " in str(exc) else exc
    for rep in run_referees(ws, dry_run=True, progress=False, adaptive=ws.config.referee.adaptive):
        out[rep.stage] = rep.to_call
    return out


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", list(EDITS))
def test_plan_equals_the_stages_dry_runs(pilot, tmp_path, kind):
    root, tmp = pilot
    shutil.copytree(root, tmp_path / "ws")
    ws = Workspace.open(tmp_path / "ws")
    before = {s.stage: s for s in make_plan(ws).stages}
    assert all(before[s].ready == 0 for s in ("filter", "qa", "referee:a", "referee:b")), before

    EDITS[kind](ws, tmp)
    ws = Workspace.open(ws.root)
    plan = make_plan(ws)
    st = {s.stage: s for s in plan.stages}
    want = dry_runs(ws)
    for stage, n in want.items():
        assert st[stage].ready == n, (kind, stage, st[stage].ready, n, st[stage].reasons)
        assert sum(st[stage].reasons.values()) == n, (stage, st[stage].reasons)
        assert st[stage].calls.value >= n
    if kind == "new_proposals":   # proposals are not task types until accepted: no stage (and so no plan) sees them
        assert sum(want.values()) == 0 and not st["match"].ready, (want, st["match"])
    else:   # every other edit makes work: LLM calls, or (a new task type accepted) CLIP matching first
        assert sum(want.values()) > 0 or st["match"].ready, kind
    # Expansion: the level the plan picked, dry-run by the stage itself.
    exp = st["expand"]
    if exp.ready is not None:
        level = int(exp.items.split("proposing level ")[1].rstrip(")"))
        assert expand(ws, level=level, dry_run=True, progress=False).run.to_call == exp.ready
    text = plan.table()
    if kind == "rename":
        assert st["match"].ready and "stale rows" in " ".join(st["match"].reasons), st["match"]
        assert "text changed" in " ".join(st["filter"].reasons), st["filter"].reasons
        assert "text changed" in text
        # The stage's own dry run says the same, in its one line.
        assert "why: " in run_filter(ws, dry_run=True, progress=False).summary()
    if kind == "prompt":
        assert st["filter"].reasons == {"prompt changed": want["filter"]}
    if kind == "model":
        assert list(st["filter"].reasons) == ["model changed (vlm -> vlm-2)"]
        assert list(st["qa"].reasons) == ["model changed (vlm -> vlm-2)"]
    if kind == "new_images":
        assert st["filter"].reasons == {"new": 5}


def test_expand_plans_the_level_that_waits(tmp_path):
    """New level-2 leaves wait for level 3 even when level 3 already has nodes elsewhere."""
    ws = Workspace.init(tmp_path / "ws")
    tax = Taxonomy.of(ws)
    tax.add_path("a~b~c")
    tax.add_path("d~e")            # a new level-2 leaf: level 3 waits for it (and for b, if not expanded)
    st = {s.stage: s for s in make_plan(ws, through="expand").stages}
    assert "proposing level 3" in st["expand"].items, st["expand"]
    assert st["expand"].ready == expand(ws, level=3, dry_run=True, progress=False).run.to_call == 2


def test_a_dry_runs_image_reference_is_the_real_calls(tmp_path):
    """Dry runs key images by content without reading a file sent as is; the key is the real call's."""
    from PIL import Image

    from workbench.llm.cache import _image_ref
    from workbench.stages.images.register import register_images
    from workbench.stages.vision import image_data_url, image_ref

    ws = Workspace.init(tmp_path / "ws")
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.new("RGB", (24, 16), (10, 20, 30)).save(folder / "small.png")
    Image.new("RGB", (3000, 200), (200, 20, 30)).save(folder / "wide.jpg")      # over image_max_side: re-encoded
    Image.new("CMYK", (20, 20), (1, 2, 3, 4)).save(folder / "cmyk.jpg")         # a mode VLMs mis-read: re-encoded
    register_images(ws, [folder])
    ids = [r[0] for r in ws.store.query("SELECT id FROM images")]
    assert len(ids) == 3
    for i in ids:
        assert image_ref(ws, i) == _image_ref(image_data_url(ws, i))
