"""config.edit_section: the one editor of workbench.toml (escaping, comments kept, sections added and replaced,
marked blocks, nothing written on an error)."""

from __future__ import annotations

import stat
import tomllib

import pytest

from workbench.core.config import (
    DEFAULT_CONFIG_TOML,
    MarkedBlock,
    edit_section,
    edit_sections,
    load_config,
    read_block,
    toml_literal,
)
from workbench.core.errors import ConfigError

BLOCK = MarkedBlock("# >>> tool block >>>", "# <<< tool block <<<", note="written by the tool",
                    hint="set it in the tool instead")


@pytest.fixture
def cfg(tmp_path):
    path = tmp_path / "workbench.toml"
    path.write_text(DEFAULT_CONFIG_TOML.format(name=toml_literal("t")), encoding="utf-8")
    return path


def test_strings_are_escaped_quote_backslash_and_control_characters(cfg):
    url = 'http://h/"quoted"\\back\\slash'
    model = 'a "model"\twith\nodd\x7f characters'
    assert edit_section(cfg, "endpoints.default", {"base_url": url, "model": model})
    ep = load_config(cfg).endpoints["default"]
    assert (ep.base_url, ep.model) == (url, model)
    for value in ("", "'", '"""', "\\u0041", "ü ∼ 🙂", "\x00\x1f"):
        assert tomllib.loads(f"k = {toml_literal(value)}")["k"] == value
    assert toml_literal(True) == "true" and toml_literal(3) == "3" and toml_literal(0.25) == "0.25"
    assert tomllib.loads(f"k = {toml_literal(['a', 1, float('inf')])}")["k"] == ["a", 1, float("inf")]


def test_comments_and_other_lines_are_kept_and_a_key_is_replaced_in_place(cfg):
    before = cfg.read_text().splitlines()
    assert edit_section(cfg, "clip", {"model": "ViT-B-32", "batch_size": 8})
    after = cfg.read_text().splitlines()
    assert len(after) == len(before)
    changed = [(a, b) for a, b in zip(before, after) if a != b]
    assert changed == [('model = "ViT-L-14"', 'model = "ViT-B-32"'), ("batch_size = 64", "batch_size = 8")]
    assert [ln for ln in after if ln.startswith("#")] == [ln for ln in before if ln.startswith("#")]
    assert not edit_section(cfg, "clip", {"model": "ViT-B-32"})          # the same value: the file is untouched


def test_a_trailing_comment_is_kept_and_a_key_removed(tmp_path):
    path = tmp_path / "workbench.toml"
    path.write_text('# top\n[match]\nk = 5   # five\n# about chunks\nchunk_size = 10\n\n[select]\nmin_votes = 1\n')
    edit_section(path, "match", {"k": 7, "chunk_size": None, "memory_mb": 64})
    assert path.read_text() == ('# top\n[match]\nk = 7  # five\n# about chunks\nmemory_mb = 64\n\n'
                                '[select]\nmin_votes = 1\n')


def test_a_missing_section_is_added_at_the_end(cfg):
    text = cfg.read_text()
    assert edit_section(cfg, "endpoints.local", {"kind": "transformers", "local_path": "/m", "max_concurrency": 2})
    new = cfg.read_text()
    assert new.startswith(text)
    assert new[len(text):] == '\n[endpoints.local]\nkind = "transformers"\nlocal_path = "/m"\nmax_concurrency = 2\n'
    assert load_config(cfg).endpoints["local"].max_concurrency == 2


def test_an_array_of_tables_is_written_whole(cfg):
    entries = [{"name": "a", "endpoint": "e"}, {"name": "b", "endpoint": "e", "answer_aware": True}]
    edit_sections(cfg, {"endpoints.e": {"model": "m"}, "referees": entries})
    assert [(r.name, r.answer_aware) for r in load_config(cfg).referees] == [("a", False), ("b", True)]
    assert "# [[referees]]" in cfg.read_text()                          # the commented example stays
    edit_section(cfg, "referees", entries[1:])
    assert [r.name for r in load_config(cfg).referees] == ["b"]


def test_multi_line_values_are_one_statement(tmp_path):
    path = tmp_path / "workbench.toml"
    path.write_text('[workspace]\ndescription = """\n[not a header]\nname = "no key"\n"""\nname = "x"\n'
                    '[endpoints.p]\npool = [\n  "a",\n]\n[endpoints.a]\n')
    edit_section(path, "workspace", {"name": "y"})
    edit_section(path, "endpoints.p", {"pool": ["a"], "model": "m"})
    cfg = load_config(path)
    assert cfg.workspace.name == "y" and cfg.workspace.description == '[not a header]\nname = "no key"\n'
    assert cfg.endpoints["p"].pool == ["a"] and cfg.endpoints["p"].model == "m"


def test_a_result_that_does_not_load_is_not_written(cfg):
    text = cfg.read_text()
    with pytest.raises(ConfigError, match=r"match\.k.*nothing was written"):
        edit_section(cfg, "match", {"k": 0})
    with pytest.raises(ConfigError, match="unknown setting"):
        edit_section(cfg, "clip", {"bse_url": "x"})
    assert cfg.read_text() == text
    assert [p.name for p in cfg.parent.iterdir()] == ["workbench.toml"]    # no temporary file left


def test_the_write_is_a_rename_that_keeps_the_mode(cfg):
    cfg.chmod(0o640)
    inode = cfg.stat().st_ino
    edit_section(cfg, "match", {"k": 3})
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o640 and cfg.stat().st_ino != inode
    assert load_config(cfg).match.k == 3


def test_a_marked_block_is_created_rewritten_and_guarded(cfg):
    text = cfg.read_text()
    assert read_block(cfg, BLOCK) == {}
    edit_sections(cfg, {"endpoints.default": {"model": "m1"}, "endpoints.r1": {"model": "j1"},
                        "referees": [{"name": "1-j1", "endpoint": "r1"}]}, block=BLOCK)
    assert cfg.read_text() == text + ('\n# >>> tool block >>>\n# written by the tool\n[endpoints.default]\n'
                                      'model = "m1"\n\n[endpoints.r1]\nmodel = "j1"\n\n[[referees]]\nname = "1-j1"\n'
                                      'endpoint = "r1"\n# <<< tool block <<<\n')
    assert read_block(cfg, BLOCK)["endpoints"]["r1"] == {"model": "j1"}
    same = {"endpoints.default": {"model": "m1"}, "endpoints.r1": {"model": "j1"},
            "referees": [{"name": "1-j1", "endpoint": "r1"}]}
    assert not edit_sections(cfg, same, block=BLOCK)                       # idempotent
    assert edit_sections(cfg, {"endpoints.r1": None, "referees": []}, block=BLOCK)
    assert cfg.read_text() == text + ('\n# >>> tool block >>>\n# written by the tool\n[endpoints.default]\n'
                                      'model = "m1"\n# <<< tool block <<<\n')
    # A section the user wrote outside the block is theirs: an error naming its line, and nothing written.
    cfg.write_text(cfg.read_text() + '\n[[referees]]\nname = "mine"\nendpoint = "default"\n')
    lines = cfg.read_text()
    with pytest.raises(ConfigError, match=r"line \d+ already configures referees; set it in the tool instead"):
        edit_sections(cfg, {"endpoints.default": {"model": "m2"}, "referees": [{"name": "x", "endpoint": "d"}]},
                      block=BLOCK)
    assert cfg.read_text() == lines
    assert edit_section(cfg, "endpoints.default", {"model": "m2"}, block=BLOCK)
    assert load_config(cfg).endpoints["default"].model == "m2" and len(load_config(cfg).referees) == 1
    # A table defined twice makes the file itself invalid: the clash is still what is reported.
    cfg.write_text(cfg.read_text() + '\n[endpoints.default]\nmodel = "mine"\n')
    n = len(cfg.read_text().splitlines()) - 1
    with pytest.raises(ConfigError, match=rf"line {n} already configures endpoints.default"):
        edit_section(cfg, "endpoints.default", {"model": "m3"}, block=BLOCK)


def test_a_damaged_block_is_refused(cfg):
    cfg.write_text(cfg.read_text() + "# >>> tool block >>>\n[endpoints.default]\n")
    with pytest.raises(ConfigError, match="damaged"):
        edit_section(cfg, "endpoints.default", {"model": "m"}, block=BLOCK)
