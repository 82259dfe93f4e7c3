"""Component `review`: the log of curators' decisions on the taxonomy (review/decisions.py writes it).

One row per node change (a bulk accept of a subtree is one row per node, sharing a `batch`): who, when, what, the
value before and after. `undo` reverses whole batches, newest first, and marks them undone (never deletes a row).
`node_id` deliberately has no foreign key to nodes: `Taxonomy.merge` re-points every such column and a delete
cascades, and the log must keep saying which node a decision was about.
"""

COMPONENT = "review"

MIGRATIONS = [
    """
    CREATE TABLE review_log (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        batch       INTEGER NOT NULL,          -- one per apply/bulk call: the unit `undo` reverses
        at          TEXT NOT NULL,             -- clock.utcnow()
        reviewer    TEXT NOT NULL,
        source      TEXT NOT NULL,             -- 'dashboard', 'cli', 'notebook', 'library'
        action      TEXT NOT NULL CHECK (action IN ('accept', 'reject', 'rename', 'move', 'merge')),
        node_id     TEXT NOT NULL,             -- no FK on purpose (see the module docstring)
        path        TEXT,                      -- the node's `~` path before the decision
        old_value   TEXT,                      -- status / name / parent id ('' = first level) / victim path
        new_value   TEXT,                      -- status / name / parent id / survivor id
        undone_at   TEXT,
        undone_by   TEXT
    );
    CREATE INDEX review_log_batch ON review_log (batch);
    CREATE INDEX review_log_node ON review_log (node_id);
    """,
]
