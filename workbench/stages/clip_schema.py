"""Component `clip`: embedding sets (arrays on disk, row order here) and top-k matches."""

COMPONENT = "clip"

MIGRATIONS = [
    """
    -- One set per (kind, model, pretrained, template): its rows live in arrays/<array_file>.
    CREATE TABLE embedding_sets (
        key        TEXT PRIMARY KEY,
        kind       TEXT NOT NULL CHECK (kind IN ('image', 'text')),
        model      TEXT NOT NULL,
        pretrained TEXT,
        template   TEXT,
        dim        INTEGER NOT NULL,
        array_file TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    -- Row `row` of the set's array holds the embedding of item_id (an image id or a node id).
    CREATE TABLE embedding_rows (
        set_key    TEXT NOT NULL REFERENCES embedding_sets(key) ON DELETE CASCADE,
        row        INTEGER NOT NULL,
        item_id    TEXT NOT NULL,
        input_hash TEXT,                     -- what was embedded (text or file hash), to detect changes
        truncated  INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (set_key, row),
        UNIQUE (set_key, item_id)
    );
    CREATE TABLE matches (
        image_id  TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        node_id   TEXT NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
        rank      INTEGER NOT NULL,          -- 1 = best
        score     REAL NOT NULL,             -- cosine similarity
        match_key TEXT NOT NULL,             -- hash of the image and text embedding sets used
        PRIMARY KEY (image_id, node_id)
    );
    CREATE INDEX matches_node ON matches (node_id);
    CREATE INDEX matches_rank ON matches (image_id, rank);
    """,
]
