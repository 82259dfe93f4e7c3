"""Component `analysis`: stored projections (UMAP etc.), reloaded instead of recomputed."""

COMPONENT = "analysis"

MIGRATIONS = [
    """
    CREATE TABLE projections (
        key        TEXT PRIMARY KEY,         -- hash of the inputs (embedding sets, rows) and parameters
        method     TEXT NOT NULL,
        params     TEXT NOT NULL,            -- JSON
        array_file TEXT NOT NULL,            -- arrays/<file>.npy, rows in the order of `items`
        items      TEXT NOT NULL,            -- JSON list of [kind, item_id]
        created_at TEXT NOT NULL
    );
    """,
]
