"""Core tables: metadata, stage runs, the taxonomy (nodes) and merge aliases.

Tables of later stages reference `nodes(id)` with ON DELETE CASCADE so that deleting a
node never leaves orphans; `Taxonomy.merge` re-points every such reference to the
survivor by reading the foreign keys from the database, so new tables need no extra code.
"""

COMPONENT = "core"

MIGRATIONS = [
    """
    CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

    CREATE TABLE stage_runs (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        stage       TEXT NOT NULL,
        started_at  TEXT NOT NULL,
        finished_at TEXT,
        status      TEXT NOT NULL DEFAULT 'running',   -- running | done | stopped | failed | interrupted
        params      TEXT NOT NULL DEFAULT '{}',        -- JSON
        prompt_file TEXT,
        prompt_hash TEXT,
        model       TEXT,
        summary     TEXT NOT NULL DEFAULT '{}'         -- JSON
    );

    CREATE TABLE nodes (
        id           TEXT PRIMARY KEY,
        parent_id    TEXT REFERENCES nodes(id) ON DELETE CASCADE,
        name         TEXT NOT NULL,
        name_key     TEXT NOT NULL,
        level        INTEGER NOT NULL CHECK (level >= 1),
        position     INTEGER NOT NULL DEFAULT 0,
        origin       TEXT NOT NULL CHECK (origin IN ('seed', 'generated', 'imported', 'manual')),
        status       TEXT NOT NULL CHECK (status IN ('proposed', 'accepted', 'rejected')),
        created_at   TEXT NOT NULL,
        updated_at   TEXT NOT NULL,
        stage_run_id INTEGER REFERENCES stage_runs(id) ON DELETE SET NULL,
        prompt_file  TEXT,
        prompt_hash  TEXT,
        model        TEXT,
        note         TEXT
    );
    CREATE UNIQUE INDEX nodes_sibling_name ON nodes (coalesce(parent_id, ''), name_key);
    CREATE INDEX nodes_parent ON nodes (parent_id);
    CREATE INDEX nodes_status ON nodes (status);

    -- An id that was merged away keeps resolving to its survivor.
    CREATE TABLE node_aliases (
        old_id    TEXT PRIMARY KEY,
        node_id   TEXT NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
        reason    TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    """,
]

# Migration 2: who runs a stage. A run left 'running' by a process that is gone (SIGKILL, power loss) is
# marked 'interrupted' on the next open (core/runs.py); `lock_key` lets a second writer of the same stage
# find the first.
MIGRATIONS.append(
    """
    ALTER TABLE stage_runs ADD COLUMN host TEXT;
    ALTER TABLE stage_runs ADD COLUMN pid INTEGER;
    ALTER TABLE stage_runs ADD COLUMN proc_start TEXT;    -- the process's start time (pid reuse guard)
    ALTER TABLE stage_runs ADD COLUMN lock_key TEXT;
    CREATE INDEX stage_runs_status ON stage_runs (status, lock_key);
    """
)

# Migration 3: two more origins, 'discovered' (bottom-up discovery, analysis/discovery.py) and 'reference' (a gap
# of a reference task list added from the Gaps page). A CHECK constraint can only change by rebuilding the table
# (SQLite's procedure: foreign keys off, copy, drop, rename; store.py checks foreign keys after). Tables that
# reference nodes(id) keep working: they name the table, and the name is unchanged.
MIGRATIONS.append(
    """-- requires: foreign_keys=off
    CREATE TABLE nodes_new (
        id           TEXT PRIMARY KEY,
        parent_id    TEXT REFERENCES nodes(id) ON DELETE CASCADE,
        name         TEXT NOT NULL,
        name_key     TEXT NOT NULL,
        level        INTEGER NOT NULL CHECK (level >= 1),
        position     INTEGER NOT NULL DEFAULT 0,
        origin       TEXT NOT NULL CHECK (origin IN ('seed', 'generated', 'imported', 'manual', 'discovered',
                                                     'reference')),
        status       TEXT NOT NULL CHECK (status IN ('proposed', 'accepted', 'rejected')),
        created_at   TEXT NOT NULL,
        updated_at   TEXT NOT NULL,
        stage_run_id INTEGER REFERENCES stage_runs(id) ON DELETE SET NULL,
        prompt_file  TEXT,
        prompt_hash  TEXT,
        model        TEXT,
        note         TEXT
    );
    INSERT INTO nodes_new (id, parent_id, name, name_key, level, position, origin, status, created_at, updated_at,
                           stage_run_id, prompt_file, prompt_hash, model, note)
        SELECT id, parent_id, name, name_key, level, position, origin, status, created_at, updated_at,
               stage_run_id, prompt_file, prompt_hash, model, note FROM nodes;
    DROP TABLE nodes;
    ALTER TABLE nodes_new RENAME TO nodes;
    CREATE UNIQUE INDEX nodes_sibling_name ON nodes (coalesce(parent_id, ''), name_key);
    CREATE INDEX nodes_parent ON nodes (parent_id);
    CREATE INDEX nodes_status ON nodes (status);
    """
)
