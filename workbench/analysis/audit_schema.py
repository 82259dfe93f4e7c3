"""Component `audit`: audits of existing SFT datasets (`analysis/audit.py`), one row per audited dataset.

The per-item assignments live under `arrays/audit/<name>/` (one .npz per chunk: top-k task-type columns
and scores, resumable); this table holds what was audited, how far it got, and the summary figures.
"""

COMPONENT = "audit"

MIGRATIONS = [
    """
    CREATE TABLE audit_datasets (
        name         TEXT PRIMARY KEY,
        source       TEXT NOT NULL,            -- the dataset file or folder as given
        format       TEXT NOT NULL,            -- llava-json, jsonl, parquet, hf-datasets
        items        INTEGER NOT NULL,         -- items read
        done         INTEGER NOT NULL,         -- items assigned so far (a stopped audit resumes from here)
        chunk_size   INTEGER NOT NULL,
        top_k        INTEGER NOT NULL,
        model        TEXT NOT NULL,            -- the sentence-embedding model
        tasks_key    TEXT NOT NULL,            -- hash of the task types assigned to (a changed tree re-audits)
        task_field   TEXT,                     -- the dataset's own task field, when it has one
        array_dir    TEXT NOT NULL,            -- arrays/audit/<dir>
        status       TEXT NOT NULL,            -- running, done
        summary      TEXT,                     -- JSON: figures of `audit.summarise`
        created_at   TEXT NOT NULL,
        updated_at   TEXT NOT NULL
    );
    """,
]
