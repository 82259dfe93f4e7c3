"""Component `llm`: the durable cache of every LLM/VLM call, raw response included."""

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
