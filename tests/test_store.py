import sqlite3
import subprocess
import sys
import textwrap

import pytest

from workbench.core.errors import ConfigError, SchemaError, WorkbenchError
from workbench.core.store import registered_schemas
from workbench.core.workspace import Workspace
from workbench.taxonomy.model import Taxonomy


def test_init_creates_config_database_and_folders(tmp_path):
    ws = Workspace.init(tmp_path / "w")
    root = tmp_path / "w"
    assert (root / "workbench.toml").is_file()
    assert (root / "workbench.sqlite").is_file()
    for sub in ("arrays", "exports", "prompts"):
        assert (root / sub).is_dir()
    assert ws.store.scalar("PRAGMA journal_mode") == "wal"
    assert ws.store.versions() == {c: len(m) for c, m in registered_schemas().items()}
    assert ws.config.match.k == 5


def test_init_refuses_existing_workspace_and_open_refuses_non_workspace(tmp_path):
    Workspace.init(tmp_path / "w")
    with pytest.raises(WorkbenchError, match="already a workspace"):
        Workspace.init(tmp_path / "w")
    with pytest.raises(WorkbenchError, match="not a workspace"):
        Workspace.open(tmp_path)
    with pytest.raises(WorkbenchError, match="no such workspace"):
        Workspace.open(tmp_path / "nope")


def test_newer_schema_is_refused_with_instructions(tmp_path):
    Workspace.init(tmp_path / "w").close()
    con = sqlite3.connect(tmp_path / "w" / "workbench.sqlite")
    con.execute("UPDATE meta SET value='99' WHERE key='schema.core'")
    con.commit()
    con.close()
    with pytest.raises(SchemaError, match=r"schema 'core' v99 .* upgrade the workbench"):
        Workspace.open(tmp_path / "w")


def test_older_schema_is_migrated_after_a_backup(tmp_path):
    Workspace.init(tmp_path / "w").close()
    db = tmp_path / "w" / "workbench.sqlite"
    con = sqlite3.connect(db)
    con.execute("DROP TABLE projections")
    con.execute("DELETE FROM meta WHERE key='schema.analysis'")
    con.commit()
    con.close()
    ws = Workspace.open(tmp_path / "w")
    assert ws.store.scalar("SELECT count(*) FROM sqlite_master WHERE name='projections'") == 1
    assert ws.store.versions()["analysis"] == len(registered_schemas()["analysis"])
    backups = list((tmp_path / "w").glob("workbench.sqlite.bak-*"))
    assert len(backups) == 1
    assert sqlite3.connect(backups[0]).execute(
        "SELECT count(*) FROM sqlite_master WHERE name='projections'").fetchone()[0] == 0


def test_write_transaction_is_all_or_nothing(ws):
    with pytest.raises(RuntimeError):
        with ws.store.write() as conn:
            Taxonomy.of(ws).add("ocr")
            conn.execute("INSERT INTO meta(key, value) VALUES ('x', '1')")
            raise RuntimeError("boom")
    assert Taxonomy.of(ws).count() == 0
    assert ws.store.scalar("SELECT count(*) FROM meta WHERE key='x'") == 0


@pytest.mark.parametrize("toml,field", [
    ("[clip]\nk = 3\n", "clip.k: unknown setting"),
    ("[match]\nk = 'five'\n", "match.k"),
    ("[endpoints.default]\nbse_url = 'http://x'\n", "endpoints.default.bse_url: unknown setting"),
    ("[match\nk=1", "invalid TOML"),
])
def test_bad_config_names_the_field(tmp_path, toml, field):
    Workspace.init(tmp_path / "w").close()
    (tmp_path / "w" / "workbench.toml").write_text(toml)
    with pytest.raises(ConfigError) as info:
        Workspace.open(tmp_path / "w")
    assert "workbench.toml" in str(info.value) and field in str(info.value)


WRITER = textwrap.dedent("""
    import sys
    from workbench.core.workspace import Workspace
    from workbench.taxonomy.model import Taxonomy
    ws = Workspace.open(sys.argv[1])
    tag = sys.argv[2]
    for i in range(150):
        Taxonomy.of(ws).add_path(f"{tag}~branch {i % 10}~leaf {i}")
    print("done", tag)
""")

READER = textwrap.dedent("""
    import sys, time
    from workbench.core.workspace import Workspace
    from workbench.taxonomy.model import Taxonomy
    ws = Workspace.open(sys.argv[1])
    seen = []
    deadline = time.time() + 60
    while time.time() < deadline:
        n = Taxonomy.of(ws).count()
        leaves = len(Taxonomy.of(ws).leaves())
        seen.append(n)
        if n >= 2 * (1 + 10 + 150):
            break
        time.sleep(0.02)
    print(min(seen), max(seen), leaves)
""")


@pytest.mark.timeout(120)
def test_two_writers_and_a_reader_share_one_workspace(tmp_path):
    Workspace.init(tmp_path / "w").close()
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path / "w"), tag],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for tag in ("alpha", "beta")]
    reader = subprocess.Popen([sys.executable, "-c", READER, str(tmp_path / "w")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for p in procs:
        out, err = p.communicate(timeout=100)
        assert p.returncode == 0, err
    out, err = reader.communicate(timeout=100)
    assert reader.returncode == 0, err
    lo, hi, leaves = map(int, out.split())
    assert hi == 2 * 161 and leaves == 300
    ws = Workspace.open(tmp_path / "w")
    assert Taxonomy.of(ws).count() == 322
    assert len(Taxonomy.of(ws).leaves()) == 300


def test_non_integer_schema_version_is_a_schema_error_naming_file_and_key(tmp_path):
    Workspace.init(tmp_path / "w").close()
    db = tmp_path / "w" / "workbench.sqlite"
    con = sqlite3.connect(db)
    con.execute("UPDATE meta SET value='abc' WHERE key='schema.core'")
    con.commit()
    con.close()
    with pytest.raises(SchemaError) as info:
        Workspace.open(tmp_path / "w")
    msg = str(info.value)
    assert str(db) in msg and "schema.core" in msg and "'abc'" in msg
    assert "UPDATE meta" in msg and "this workbench has" in msg   # what to do: repair the value


def test_empty_database_file_is_refused_on_open_not_recreated(tmp_path):
    Workspace.init(tmp_path / "w").close()
    db = tmp_path / "w" / "workbench.sqlite"
    for extra in ("-wal", "-shm"):
        (tmp_path / "w" / ("workbench.sqlite" + extra)).unlink(missing_ok=True)
    db.write_bytes(b"")
    (tmp_path / "w" / "workbench.sqlite.bak-core1").write_bytes(b"x")
    with pytest.raises(SchemaError) as info:
        Workspace.open(tmp_path / "w")
    msg = str(info.value)
    assert str(db) in msg and "empty" in msg and "truncated" in msg
    assert "workbench.sqlite.bak-core1" in msg
    assert db.stat().st_size == 0            # left as it was: nothing recreated over it
    # `init` of a new folder still creates its database from nothing.
    Workspace.init(tmp_path / "fresh").close()
    assert Taxonomy.of(Workspace.open(tmp_path / "fresh")).count() == 0


def test_a_file_that_is_not_sqlite_is_a_one_line_error_naming_it(tmp_path):
    from conftest import run_cli

    Workspace.init(tmp_path / "w").close()
    db = tmp_path / "w" / "workbench.sqlite"
    for extra in ("-wal", "-shm"):
        (tmp_path / "w" / ("workbench.sqlite" + extra)).unlink(missing_ok=True)
    db.write_bytes(b"this is not a database, just some text that replaced it\n" * 100)
    with pytest.raises(SchemaError, match="not a SQLite database") as info:
        Workspace.open(tmp_path / "w")
    assert str(db) in str(info.value)
    r = run_cli("taxonomy", "stats", tmp_path / "w")
    assert r.code == 2 and r.err.startswith("error: ") and len(r.err.strip().splitlines()) == 1
    assert str(db) in r.err and "Traceback" not in r.err


def test_migration_scripts_split_with_comments_after_semicolons():
    from workbench.core.store import _split_sql

    script = """
    ALTER TABLE t ADD COLUMN a TEXT;    -- the process's start time
    ALTER TABLE t ADD COLUMN b TEXT;
    INSERT INTO t(a) VALUES ('x;y');    -- a ';' in a string does not cut
    CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; END;
    -- a trailing comment
    """
    stmts = _split_sql(script)
    assert len(stmts) == 4 and all(sqlite3.complete_statement(s) for s in stmts)
    assert stmts[2].endswith("VALUES ('x;y');") and stmts[3].endswith("END;")


def _fill(con, table, **values):
    """Insert one row giving every NOT NULL column without a default a value (tests only)."""
    for col in con.execute(f"PRAGMA table_info({table})").fetchall():
        _, name, typ, notnull, default, pk = col
        if name not in values and notnull and default is None and not pk:
            values[name] = 0 if "INT" in (typ or "").upper() or "REAL" in (typ or "").upper() else "x"
    cols = ", ".join(values)
    con.execute(f"INSERT INTO {table} ({cols}) VALUES ({', '.join('?' * len(values))})", list(values.values()))


def test_nodes_rebuild_migration_keeps_rows_indexes_and_references(tmp_path, monkeypatch):
    """Core migration 3 rebuilds `nodes` (wider origin CHECK) with foreign keys off: a workspace made before it
    keeps every node, match and sample pointing at nodes; nothing cascades; the indexes are back."""
    import workbench.core.store as store_mod

    full = registered_schemas()
    old = {c: (m[:2] if c == "core" else m) for c, m in full.items()}
    monkeypatch.setattr(store_mod, "registered_schemas", lambda: old)
    ws = Workspace.init(tmp_path / "w")
    assert ws.store.versions()["core"] == 2
    now = "2026-01-01T00:00:00"
    with ws.store.write() as c:
        with pytest.raises(sqlite3.IntegrityError):
            c.execute("INSERT INTO nodes(id, name, name_key, level, origin, status, created_at, updated_at) "
                      "VALUES ('z', 'Z', 'z', 1, 'discovered', 'proposed', ?, ?)", (now, now))
        for nid, parent, level in (("a", None, 1), ("b", "a", 2), ("c", "b", 3)):
            c.execute("INSERT INTO nodes(id, parent_id, name, name_key, level, origin, status, created_at, "
                      "updated_at) VALUES (?, ?, ?, ?, ?, 'seed', 'accepted', ?, ?)",
                      (nid, parent, nid.upper(), nid, level, now, now))
        _fill(c, "images", id="img1", path="p.png")
        _fill(c, "matches", image_id="img1", node_id="c", rank=1, score=0.5)
        _fill(c, "samples", id="s1", image_id="img1", node_id="c", status="ok")
    ws.close()
    monkeypatch.setattr(store_mod, "registered_schemas", lambda: full)
    ws = Workspace.open(tmp_path / "w")
    assert ws.store.versions()["core"] == len(full["core"]) >= 3
    assert [r[0] for r in ws.store.query("SELECT id FROM nodes ORDER BY id")] == ["a", "b", "c"]
    assert ws.store.scalar("SELECT count(*) FROM matches WHERE node_id='c'") == 1
    assert ws.store.scalar("SELECT count(*) FROM samples WHERE node_id='c'") == 1
    idx = {r[0] for r in ws.store.query("SELECT name FROM sqlite_master WHERE type='index' AND tbl_name='nodes'")}
    assert {"nodes_sibling_name", "nodes_parent", "nodes_status"} <= idx
    assert ws.store.scalar("PRAGMA foreign_keys") == 1
    assert ws.store.query("PRAGMA foreign_key_check") == []
    # the wider CHECK, and the foreign keys still act: deleting a node cascades to what references it
    Taxonomy.of(ws).add("Found", "b", origin="discovered", status="proposed")
    with ws.store.write() as c:
        c.execute("DELETE FROM nodes WHERE id='b'")
    assert ws.store.scalar("SELECT count(*) FROM nodes") == 1
    assert ws.store.scalar("SELECT count(*) FROM matches") == 0 and ws.store.scalar("SELECT count(*) FROM samples") == 0
    ws.close()


def test_fk_off_migration_refuses_when_references_would_break(tmp_path, monkeypatch):
    import workbench.core.store as store_mod

    full = registered_schemas()
    ws = Workspace.init(tmp_path / "w")
    ws.close()
    bad = dict(full, core=full["core"] + ["-- requires: foreign_keys=off\n"
                                          "CREATE TABLE t (x TEXT REFERENCES nodes(id));\n"
                                          "INSERT INTO t VALUES ('missing');"])
    monkeypatch.setattr(store_mod, "registered_schemas", lambda: bad)
    with pytest.raises(SchemaError, match="broken reference"):
        Workspace.open(tmp_path / "w")
    monkeypatch.setattr(store_mod, "registered_schemas", lambda: full)
    ws = Workspace.open(tmp_path / "w")
    assert ws.store.scalar("SELECT count(*) FROM sqlite_master WHERE name='t'") == 0
    assert ws.store.scalar("PRAGMA foreign_keys") == 1
    ws.close()


def test_init_writes_a_folder_name_with_a_quote_and_a_backslash_as_valid_toml(tmp_path):
    folder = tmp_path / 'tax "v2" \\ draft'
    ws = Workspace.init(folder)
    assert ws.config.workspace.name == 'tax "v2" \\ draft'
    ws.close()
    assert Workspace.open(folder).config.workspace.name == 'tax "v2" \\ draft'


def test_a_failed_upgrade_of_an_older_workspace_names_the_step_not_the_disk(tmp_path, monkeypatch):
    """An older workspace whose upgrade fails (here: the column the next vision migration adds is already there)
    gets one error naming the component, the step and sqlite's reason; no talk of a full disk."""
    import workbench.core.store as store_mod
    from conftest import run_cli

    full = registered_schemas()
    old = dict(full, vision=full["vision"][:-1])
    monkeypatch.setattr(store_mod, "registered_schemas", lambda: old)
    ws = Workspace.init(tmp_path / "w")
    with ws.store.write() as c:
        c.execute("ALTER TABLE selections ADD COLUMN people TEXT")     # what the last vision migration adds
    ws.close()
    monkeypatch.setattr(store_mod, "registered_schemas", lambda: full)
    n = len(full["vision"])
    with pytest.raises(SchemaError, match=rf"schema 'vision' from v{n - 1} \(migration {n}\) failed: sqlite: "
                                          "duplicate column name: people; that step was rolled back"):
        Workspace.open(tmp_path / "w")
    r = run_cli("taxonomy", "stats", tmp_path / "w")
    assert r.code == 2 and "duplicate column name" in r.err and "disk" not in r.err
    assert len(r.err.strip().splitlines()) == 1

