"""Tables of bottom-up discovery (analysis/discovery.py): one row per cluster of unfit images that was named."""

COMPONENT = "discovery"

MIGRATIONS = [
    """
    CREATE TABLE discoveries (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        stage_run_id INTEGER REFERENCES stage_runs(id) ON DELETE SET NULL,
        cluster      INTEGER NOT NULL,              -- the HDBSCAN label within that run
        cluster_key  TEXT NOT NULL,                 -- hash of the member image ids
        size         INTEGER NOT NULL,
        cohesion     REAL NOT NULL,                 -- mean cosine of members to their centroid
        image_ids    TEXT NOT NULL,                 -- JSON list: the previously unfit images of the cluster
        exemplar_ids TEXT NOT NULL,                 -- JSON list: the images sent to the VLM
        nearest      TEXT NOT NULL,                 -- JSON list of {node_id, path, score}
        parent_id    TEXT REFERENCES nodes(id) ON DELETE SET NULL,   -- the parent the node went under
        name         TEXT,                          -- the name the VLM gave
        node_id      TEXT REFERENCES nodes(id) ON DELETE SET NULL,   -- the proposed node (status 'proposed')
        status       TEXT NOT NULL,                 -- proposed | duplicate | unreadable
        duplicate_of TEXT,                          -- the sibling a 'duplicate' name repeats
        note         TEXT,
        call_key     TEXT,                          -- llm_calls.key: the raw reply
        raw          TEXT,
        prompt_file  TEXT,
        prompt_hash  TEXT,
        model        TEXT,
        created_at   TEXT NOT NULL
    );
    CREATE INDEX discoveries_node ON discoveries (node_id);
    """,
]
