"""Component `images`: the image registry, files that could not be registered, imported datasets."""

COMPONENT = "images"

MIGRATIONS = [
    """
    CREATE TABLE images (
        id        TEXT PRIMARY KEY,          -- sha256 of the file's bytes
        path      TEXT NOT NULL,             -- relative to root
        root      TEXT NOT NULL,             -- absolute folder the path is relative to
        source    TEXT NOT NULL,             -- folder or dataset name it was registered from
        width     INTEGER NOT NULL,
        height    INTEGER NOT NULL,
        format    TEXT NOT NULL,
        mode      TEXT,
        bytes     INTEGER,
        added_at  TEXT NOT NULL
    );
    CREATE INDEX images_source ON images (source);

    CREATE TABLE image_problems (
        root       TEXT NOT NULL,
        path       TEXT NOT NULL,
        source     TEXT NOT NULL,
        reason     TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (root, path)
    );

    -- Rows of an imported instruction dataset (LLaVA JSON/JSONL): kept to show its coverage.
    CREATE TABLE dataset_items (
        source    TEXT NOT NULL,
        item_id   TEXT NOT NULL,
        image_id  TEXT REFERENCES images(id) ON DELETE CASCADE,
        task_name TEXT,
        question  TEXT,
        answer    TEXT,
        conversations TEXT,                  -- JSON as given
        PRIMARY KEY (source, item_id)
    );
    CREATE INDEX dataset_items_image ON dataset_items (image_id);
    """,
    """
    -- The file's mtime (ns) when it was registered; with `bytes`, a cheap check that the file at
    -- root/path is still the content its id names (NULL: registered before this column existed).
    ALTER TABLE images ADD COLUMN mtime_ns INTEGER;
    -- Re-registering a folder looks each path up to find files changed since registration.
    CREATE INDEX images_path ON images (root, path);
    """,
]
