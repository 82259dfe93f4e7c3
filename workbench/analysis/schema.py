"""The analysis layer's tables, one component each (a component's version is the number of its migrations
applied, kept in `meta`; `core/store.py` registers this module).

- `analysis`: stored projections (UMAP etc.), reloaded instead of recomputed.
- `audit`: audits of existing SFT datasets (`analysis/audit.py`), one row per audited dataset, and the LLM labels of
  a sample of their items (`audit_labels`). The per-item assignments live under `arrays/audit/<name>/` (one .npz
  per chunk: top-k task-type columns and scores, the text vectors and the tasks key, resumable; `items.jsonl`: id,
  instruction, image and own label per item); the table holds what was audited, how far it got, and the summary
  figures.
- `discovery`: bottom-up discovery (analysis/discovery.py): one row per cluster of unfit images that was named.
- `trials`: prompt trials (analysis/trials/): named test sets, prompt versions with a name and a note, each trial
  (versions x test set) with every output and failure, and each promotion. A trial writes only these tables.
"""

_PROJECTIONS = [
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

_AUDIT = [
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
_AUDIT.append(
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

_DISCOVERY = [
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

_TRIALS = [
    """
    CREATE TABLE trial_test_sets (
        name        TEXT PRIMARY KEY,
        stage       TEXT NOT NULL,                  -- filter, qa, referee:<name>, expand:<template>, ...
        items       TEXT NOT NULL,                  -- JSON list of item keys (parent id, image id, sample id, ...)
        how         TEXT NOT NULL,                  -- JSON: how the items were chosen (hand, filter, random+seed)
        assertions  TEXT NOT NULL DEFAULT '[]',     -- JSON list of assertion specs
        created_by  TEXT,
        created_at  TEXT NOT NULL
    );
    CREATE TABLE trial_versions (
        hash        TEXT PRIMARY KEY,               -- the template's hash (llm/prompts.py template_hash)
        name        TEXT NOT NULL,
        note        TEXT,
        path        TEXT,                           -- where the text came from
        text        TEXT NOT NULL,
        created_at  TEXT NOT NULL
    );
    CREATE TABLE trials (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        stage       TEXT NOT NULL,
        test_set    TEXT NOT NULL,                  -- its name (the items are copied below: the trial is frozen)
        items       TEXT NOT NULL,                  -- JSON list of item keys, in row order
        versions    TEXT NOT NULL,                  -- JSON list of hashes, in column order
        assertions  TEXT NOT NULL DEFAULT '[]',
        who         TEXT,
        created_at  TEXT NOT NULL,
        finished_at TEXT,
        status      TEXT NOT NULL,                  -- running | done | stopped | failed
        endpoint    TEXT,
        model       TEXT,
        stage_runs  TEXT,                           -- JSON: version hash -> stage_runs.id of its calls
        summary     TEXT,                           -- JSON: version hash -> the run report
        error       TEXT                            -- why the trial failed, when it did
    );
    CREATE TABLE trial_outputs (
        trial_id    INTEGER NOT NULL REFERENCES trials(id) ON DELETE CASCADE,
        item        TEXT NOT NULL,
        version     TEXT NOT NULL,
        label       TEXT,                           -- the item as a person reads it (parent path, question...)
        image_id    TEXT,
        status      TEXT NOT NULL,                  -- ok | parse_failed | call_failed | not_run
        call_key    TEXT,                           -- llm_calls.key
        raw         TEXT,                           -- the raw reply, kept beside what was parsed
        parsed      TEXT,                           -- JSON of the parsed value
        shown       TEXT,                           -- the parsed value as a person reads it
        error       TEXT,
        prompt_tokens     INTEGER,
        completion_tokens INTEGER,
        cost_usd    REAL,
        latency_s   REAL,
        cached      INTEGER NOT NULL DEFAULT 0,
        checks      TEXT,                           -- JSON: assertion -> passed (1/0)
        PRIMARY KEY (trial_id, item, version)
    );
    CREATE TABLE trial_promotions (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        stage       TEXT NOT NULL,
        version     TEXT NOT NULL,
        previous    TEXT,
        file        TEXT NOT NULL,
        who         TEXT,
        created_at  TEXT NOT NULL
    );
    """,
]

COMPONENTS = {"analysis": _PROJECTIONS, "audit": _AUDIT, "discovery": _DISCOVERY, "trials": _TRIALS}
