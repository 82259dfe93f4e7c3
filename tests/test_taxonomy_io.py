import json
import random
import time

import pytest

from workbench.core.errors import ImportProblemsError, WorkbenchError
from workbench.taxonomy.io import export_taxonomy, import_taxonomy, parse_source
from workbench.taxonomy.model import LIVE, Taxonomy

GOOD = """\
ocr~environmental text ocr~public information boards reading
ocr~environmental text ocr~shop sign reading
ocr~handwriting recognition
logical reasoning~visual puzzle solving
image captioning
"""


def write(tmp_path, text, name="tasktype.txt"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def snapshot(ws):
    return [tuple(r) for r in ws.store.query("SELECT id, parent_id, name, status FROM nodes ORDER BY id")]


def test_txt_round_trips_byte_for_byte(ws, tmp_path):
    src = write(tmp_path, GOOD)
    report = import_taxonomy(Taxonomy.of(ws), src)
    assert report.created == 8 and report.entries == 5 and not report.problems
    out = tmp_path / "out.txt"
    assert export_taxonomy(Taxonomy.of(ws), out) == 5
    assert out.read_text() == GOOD
    # Importing again changes nothing.
    again = import_taxonomy(Taxonomy.of(ws), out)
    assert again.created == 0 and again.existing == 8


@pytest.mark.parametrize("fmt,dest", [("json", "t.json"), ("folder", "tree")])
def test_json_and_folder_round_trip(ws, tmp_path, fmt, dest):
    from workbench.core.workspace import Workspace

    import_taxonomy(Taxonomy.of(ws), write(tmp_path, GOOD))
    Taxonomy.of(ws).set_status("ocr~handwriting recognition", "proposed")
    out = tmp_path / dest
    export_taxonomy(Taxonomy.of(ws), out, fmt=fmt)
    other = Workspace.init(tmp_path / "other")
    import_taxonomy(Taxonomy.of(other), out, fmt=fmt)
    # The export writes the live nodes (a proposal too; a folder tree carries no status).
    assert sorted(p for _, p in Taxonomy.of(other).leaves(LIVE)) == sorted(p for _, p in Taxonomy.of(ws).leaves(LIVE))
    if fmt == "json":  # JSON keeps ids, status and origin
        assert snapshot(other) == snapshot(ws)
        export_taxonomy(Taxonomy.of(other), tmp_path / "again.json")
        assert (tmp_path / "again.json").read_text() == out.read_text()


def test_folder_tree_as_the_paper_builds_it(ws, tmp_path):
    root = tmp_path / "tree"
    for p in ["OCR/scene text", "OCR/handwriting", "counting"]:
        (root / p).mkdir(parents=True)
    (root / "OCR" / "notes.txt").write_text("files are ignored")
    report = import_taxonomy(Taxonomy.of(ws), root)
    assert report.format == "folder"
    assert sorted(p for _, p in Taxonomy.of(ws).leaves()) == ["OCR~handwriting", "OCR~scene text", "counting"]


def test_lookalike_separators_are_read_as_tilde_with_a_warning(ws, tmp_path):
    src = write(tmp_path, "ocr\u223cscene text\nocr\uff5ehandwriting\n")
    report = import_taxonomy(Taxonomy.of(ws), src)
    assert [p.severity for p in report.problems] == ["warning", "warning"]
    assert report.problems[0].where == "line 1" and "U+223C" in report.problems[0].message
    assert sorted(p for _, p in Taxonomy.of(ws).leaves()) == ["ocr~handwriting", "ocr~scene text"]


BAD = """\
ocr~scene text
ocr~scene/text
ocr~~handwriting
ocr~scene text
counting\x07objects

ocr ~ Scene  Text
captioning
"""


def test_bad_file_reports_every_line_and_changes_nothing(ws, tmp_path):
    Taxonomy.of(ws).add_path("existing~node")
    before = snapshot(ws)
    src = write(tmp_path, BAD)
    with pytest.raises(ImportProblemsError) as info:
        import_taxonomy(Taxonomy.of(ws), src)
    errors = {p.where: p.message for p in info.value.report.errors}
    assert set(errors) == {"line 2", "line 3", "line 4", "line 5", "line 7"}
    assert "'/'" in errors["line 2"]
    assert "empty level" in errors["line 3"]
    assert "duplicate of line 1" in errors["line 4"] and "duplicate of line 1" in errors["line 7"]
    assert "control character U+0007" in errors["line 5"]
    msg = str(info.value)
    assert str(src) in msg and "line 2" in msg and "--skip-bad" in msg
    assert snapshot(ws) == before


def test_skip_bad_imports_the_good_lines(ws, tmp_path):
    report = import_taxonomy(Taxonomy.of(ws), write(tmp_path, BAD), skip_bad=True)
    assert report.skipped == 5
    assert sorted(p for _, p in Taxonomy.of(ws).leaves()) == ["captioning", "ocr~scene text"]


def test_skip_bad_with_every_line_bad_is_an_error(ws, tmp_path):
    with pytest.raises(ImportProblemsError, match="every entry has an error, so --skip-bad left none to import"):
        import_taxonomy(Taxonomy.of(ws), write(tmp_path, "a/b\nx~~y\n"), skip_bad=True)
    assert not Taxonomy.of(ws).leaves()


def test_non_utf8_and_bad_json_name_their_location(ws, tmp_path):
    p = tmp_path / "latin1.txt"
    p.write_bytes("ocr~caf\xe9 menus\n".encode("latin-1"))
    with pytest.raises(ImportProblemsError, match="line 1.*not UTF-8"):
        import_taxonomy(Taxonomy.of(ws), p)
    j = write(tmp_path, '[{"name": "ocr", "children": [{"name": "a/b"}]}]', "t.json")
    with pytest.raises(ImportProblemsError, match=r"\$\[0\]\.children\[0\]"):
        import_taxonomy(Taxonomy.of(ws), j)
    j2 = write(tmp_path, '[{"name": "ocr",\n  "children": [}', "broken.json")
    with pytest.raises(ImportProblemsError, match="line 2 column"):
        import_taxonomy(Taxonomy.of(ws), j2)
    assert Taxonomy.of(ws).count() == 0


def test_json_mapping_form_and_statuses(ws, tmp_path):
    j = write(tmp_path, json.dumps({"ocr": {"scene text": {}, "handwriting": None}, "counting": {}}), "m.json")
    import_taxonomy(Taxonomy.of(ws), j)
    assert sorted(p for _, p in Taxonomy.of(ws).leaves()) == ["counting", "ocr~handwriting", "ocr~scene text"]


def test_prefix_line_is_a_warning(ws, tmp_path):
    report = import_taxonomy(Taxonomy.of(ws), write(tmp_path, "ocr\nocr~scene text\n"))
    assert [p.where for p in report.warnings] == ["line 1"]


def test_export_refuses_to_overwrite_and_unknown_format(ws, tmp_path):
    import_taxonomy(Taxonomy.of(ws), write(tmp_path, GOOD))
    out = write(tmp_path, "x", "exists.txt")
    with pytest.raises(WorkbenchError, match="--overwrite"):
        export_taxonomy(Taxonomy.of(ws), out)
    with pytest.raises(WorkbenchError, match="--format"):
        export_taxonomy(Taxonomy.of(ws), tmp_path / "t.xml")
    with pytest.raises(WorkbenchError, match="no such file"):
        parse_source(tmp_path / "missing.txt")


def make_paths(n_leaves: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = ["text", "chart", "scene", "object", "reasoning", "counting", "table", "face", "map", "diagram",
             "menu", "sign", "plant", "animal", "vehicle", "document", "screen", "art", "food", "sport"]
    out, i = [], 0
    for l1 in range(40):
        for l2 in range(25):
            for l3 in range(20):
                if i >= n_leaves:
                    return out
                out.append(f"{words[l1 % 20]} task {l1}~{words[(l1 + l2) % 20]} sub {l2}~"
                           f"{rng.choice(words)} {rng.choice(words)} leaf {l3}")
                i += 1
    return out


@pytest.mark.timeout(120)
def test_20k_leaf_import_and_export_give_the_same_paths(ws, tmp_path):
    lines = make_paths(20_000)
    src = write(tmp_path, "\n".join(lines) + "\n")
    t0 = time.perf_counter()
    report = import_taxonomy(Taxonomy.of(ws), src)
    took = time.perf_counter() - t0
    assert report.entries == 20_000 and report.created == 20_000 + 40 * 25 + 40
    out = tmp_path / "out.txt"
    assert export_taxonomy(Taxonomy.of(ws), out) == 20_000
    assert out.read_text().splitlines() == lines
    print(f"20k-leaf import took {took:.2f}s")


def test_folder_import_ignores_hidden_folders(ws, tmp_path):
    root = tmp_path / "tree"
    for p in ["OCR/scene text", ".git/objects", "OCR/.ipynb_checkpoints"]:
        (root / p).mkdir(parents=True)
    report = import_taxonomy(Taxonomy.of(ws), root)
    assert sorted(p for _, p in Taxonomy.of(ws).leaves()) == ["OCR~scene text"]
    assert {w.message for w in report.warnings} == {"hidden folder ignored"}


def test_import_counts_only_what_it_inserted_when_another_writer_commits_first(ws, tmp_path, monkeypatch):
    """Another process commits nodes between this import's parse and its write transaction: the report
    counts what this import's own transaction inserted, never the other writer's nodes."""
    from workbench.core.store import Store
    from workbench.taxonomy.model import Taxonomy

    other = Store(ws.store.path)            # its own connection, as another process would have
    real_begin = Store._begin_immediate
    fired = []

    def begin(conn, path):
        if not fired:
            fired.append(True)
            Taxonomy(other).add_path("ocr~scene text")   # commits 'ocr' and 'ocr~scene text'
        real_begin(conn, path)

    monkeypatch.setattr(Store, "_begin_immediate", staticmethod(begin))
    report = import_taxonomy(Taxonomy.of(ws), write(tmp_path, GOOD))
    other.close()
    assert fired
    assert (report.created, report.existing) == (7, 1)     # 'ocr' was already there when it wrote
    assert Taxonomy.of(ws).count() == 2 + 7
