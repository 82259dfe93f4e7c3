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
    """
    -- Rows ever allocated in a set (dead rows of changed texts included): the next row number.
    ALTER TABLE embedding_sets ADD COLUMN n_rows INTEGER NOT NULL DEFAULT 0;
    -- The input hash of the task text a match was scored against: a renamed or merged task
    -- type makes the rows that used its old text stale (see match.py for the incremental rule).
    ALTER TABLE matches ADD COLUMN target_hash TEXT;
    -- The task types (and their text hashes) the stored matches of `match_key` cover.
    CREATE TABLE match_targets (
        match_key  TEXT NOT NULL,
        node_id    TEXT NOT NULL,            -- no FK on purpose: a deleted/merged target must stay visible
        input_hash TEXT NOT NULL,
        PRIMARY KEY (match_key, node_id)
    );
    CREATE INDEX matches_score ON matches (rank, score);
    """,
]
