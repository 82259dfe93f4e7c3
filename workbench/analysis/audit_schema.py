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

# Which text backend made the vectors (analysis/audit_embed.py: minilm, onnx-<hash>, static-<hash>); NULL: an
# audit from before backends (minilm). Label-sample choices of an LLM (analysis/audit_label.py), per item.
MIGRATIONS.append(
    """
    ALTER TABLE audit_datasets ADD COLUMN text_backend TEXT;
    CREATE TABLE audit_labels (
        audit        TEXT NOT NULL REFERENCES audit_datasets(name) ON DELETE CASCADE,
        item         INTEGER NOT NULL,         -- the item's position in the dataset (0-based)
        seed         INTEGER NOT NULL,         -- the sample's seed
        instruction  TEXT NOT NULL,
        candidates   TEXT NOT NULL,            -- JSON: the task-type node ids offered (the item's top-k)
        label        TEXT,                     -- the chosen node id; NULL: "none" or unreadable
        status       TEXT NOT NULL,            -- labelled, none, unreadable
        reason       TEXT,
        prompt_hash  TEXT,
        model        TEXT,
        created_at   TEXT NOT NULL,
        PRIMARY KEY (audit, item)
    );
    """
)
