"""Component `llm`: the durable cache of every LLM/VLM call, raw response included (`llm_calls`); expansion
results and every proposed line's outcome (`expand_results`, `expand_proposals`); Batch API batches and their
requests (`llm_batches`, `llm_batch_requests`); every prompt template's text by hash (`prompt_texts`)."""

COMPONENT = "llm"

MIGRATIONS = [
    """
    CREATE TABLE llm_calls (
        key               TEXT PRIMARY KEY,      -- hash(model, rendered messages, sampling params)
        stage             TEXT NOT NULL,
        endpoint          TEXT NOT NULL,
        model             TEXT NOT NULL,
        stage_run_id      INTEGER REFERENCES stage_runs(id) ON DELETE SET NULL,
        prompt_file       TEXT,
        prompt_hash       TEXT,
        request           TEXT NOT NULL,         -- JSON: messages (images by content hash) + params
        status            TEXT NOT NULL CHECK (status IN ('ok', 'error')),
        raw_text          TEXT,                  -- the model's text exactly as returned
        raw_response      TEXT,                  -- the full response JSON
        finish_reason     TEXT,
        error             TEXT,
        prompt_tokens     INTEGER,
        completion_tokens INTEGER,
        cost_usd          REAL,
        latency_s         REAL,
        attempts          INTEGER NOT NULL DEFAULT 1,
        created_at        TEXT NOT NULL
    );
    CREATE INDEX llm_calls_stage ON llm_calls (stage, status);
    CREATE INDEX llm_calls_run ON llm_calls (stage_run_id);
    """,
]

# Migration 2: expansion results (stages/expand/stage.py). One row per parent and reply; every
# proposed line is kept with what became of it (added, already there, or dropped and why).
MIGRATIONS.append(
    """
    CREATE TABLE expand_results (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        parent_id    TEXT REFERENCES nodes(id) ON DELETE CASCADE,   -- NULL: the first level
        call_key     TEXT NOT NULL,                                 -- llm_calls.key (raw reply)
        stage_run_id INTEGER REFERENCES stage_runs(id) ON DELETE SET NULL,
        template     TEXT NOT NULL,      -- level1_supplement | child_supplement | child_expand | custom
        prompt_file  TEXT,
        prompt_hash  TEXT NOT NULL,
        model        TEXT NOT NULL,
        applied      INTEGER NOT NULL,   -- 1: proposals became nodes; 0: recorded only (prompt A/B)
        status       TEXT NOT NULL CHECK (status IN ('ok', 'parse_error')),
        error        TEXT,
        n_proposed   INTEGER NOT NULL DEFAULT 0,
        n_added      INTEGER NOT NULL DEFAULT 0,
        n_dropped    INTEGER NOT NULL DEFAULT 0,
        created_at   TEXT NOT NULL
    );
    CREATE INDEX expand_results_parent ON expand_results (parent_id, prompt_hash, model);
    CREATE INDEX expand_results_key ON expand_results (call_key);

    CREATE TABLE expand_proposals (
        result_id INTEGER NOT NULL REFERENCES expand_results(id) ON DELETE CASCADE,
        position  INTEGER NOT NULL,
        line      TEXT NOT NULL,          -- the reply line or JSON item as given
        name      TEXT,                   -- the cleaned name (NULL when dropped before cleaning)
        outcome   TEXT NOT NULL CHECK (outcome IN ('added', 'new', 'existing', 'dropped')),
        reason    TEXT,
        node_id   TEXT REFERENCES nodes(id) ON DELETE SET NULL,
        PRIMARY KEY (result_id, position)
    );
    """
)

# Migration 3: the OpenAI Batch API (llm/batch.py). One row per batch this workspace submitted (before the
# provider knows it: status 'submitting', with a random token sent as metadata so a restarted process finds a
# batch whose id it never stored), and one per request in it. A restarted run resumes polling the live batches
# that hold its keys instead of submitting them again; `ingested_at` marks a batch whose results are in
# `llm_calls`.
MIGRATIONS.append(
    """
    CREATE TABLE llm_batches (
        id             INTEGER PRIMARY KEY AUTOINCREMENT,
        token          TEXT NOT NULL UNIQUE,     -- sent as metadata {"workbench": token}
        batch_id       TEXT UNIQUE,              -- the provider's id; NULL until created
        endpoint       TEXT NOT NULL,
        model          TEXT NOT NULL,
        stage          TEXT NOT NULL,
        stage_run_id   INTEGER REFERENCES stage_runs(id) ON DELETE SET NULL,
        attempt        INTEGER NOT NULL DEFAULT 1,   -- 2: expired/failed lines of an earlier batch, sent again
        input_file_id  TEXT,
        output_file_id TEXT,
        error_file_id  TEXT,
        status         TEXT NOT NULL,            -- submitting, then the provider's: validating, in_progress,
                                                 -- finalizing, completed, expired, failed, cancelling, cancelled
        n_requests     INTEGER NOT NULL,
        n_completed    INTEGER NOT NULL DEFAULT 0,
        n_failed       INTEGER NOT NULL DEFAULT 0,
        bytes          INTEGER,
        error          TEXT,
        created_at     TEXT NOT NULL,
        updated_at     TEXT NOT NULL,
        ingested_at    TEXT                      -- results written to llm_calls
    );
    CREATE TABLE llm_batch_requests (
        batch       INTEGER NOT NULL REFERENCES llm_batches(id) ON DELETE CASCADE,
        key         TEXT NOT NULL,               -- llm_calls.key, the line's custom_id
        request     TEXT NOT NULL,               -- as llm_calls.request
        prompt_file TEXT,
        prompt_hash TEXT,
        outcome     TEXT,                        -- NULL: waiting; ok, error, resubmitted, cancelled
        PRIMARY KEY (batch, key)
    );
    CREATE INDEX llm_batch_requests_key ON llm_batch_requests (key, outcome);
    """
)

# Migration 4: every prompt template's text, once per hash (analysis/prompt_history.py). Written when a stage run
# starts, for each template its rows use, so every `llm_calls.prompt_hash`, `stage_runs.prompt_hash` and
# `nodes.prompt_hash` can be shown as the exact text that produced it, and two versions diffed.
MIGRATIONS.append(
    """
    CREATE TABLE prompt_texts (
        hash       TEXT PRIMARY KEY,      -- llm/prompts.py template_hash(text)
        name       TEXT NOT NULL,         -- the file name (expand_child_expand.j2), the version history's key
        path       TEXT,                  -- display path when first seen
        text       TEXT NOT NULL,
        first_seen TEXT NOT NULL
    );
    CREATE INDEX prompt_texts_name ON prompt_texts (name, first_seen);
    """
)
