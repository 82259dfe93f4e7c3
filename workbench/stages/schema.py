"""Component `vision`: the tables the vision stages share — filter decisions, Q&A samples, referee votes, flags
and the selection."""

COMPONENT = "vision"

MIGRATIONS = [
    """
    -- One row per (image, candidate task type) the filter saw; kept=1 if the VLM chose it.
    -- A label the VLM returned that was not a candidate is recorded with node_id NULL.
    CREATE TABLE filter_decisions (
        image_id  TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        node_id   TEXT REFERENCES nodes(id) ON DELETE CASCADE,
        label     TEXT NOT NULL,             -- the label as the VLM wrote it (or the candidate path)
        kept      INTEGER NOT NULL,
        reason    TEXT,                      -- why not kept: 'not chosen', 'not a candidate', 'parse error: ...'
        call_key  TEXT,                      -- llm_calls.key holding the raw response
        stage_run_id INTEGER REFERENCES stage_runs(id) ON DELETE SET NULL
    );
    CREATE UNIQUE INDEX filter_decisions_key ON filter_decisions (image_id, label);
    CREATE INDEX filter_decisions_node ON filter_decisions (node_id);

    -- One Q&A per (image, task type); status 'ok' or 'rejected' with a reason. A pair for a task
    -- type that was not requested is kept as rejected with node_id NULL and the label as written.
    CREATE TABLE samples (
        id        TEXT PRIMARY KEY,          -- hash(image_id, node_id or label, question)
        image_id  TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        node_id   TEXT REFERENCES nodes(id) ON DELETE CASCADE,
        label     TEXT,                      -- the task type as the model wrote it
        question  TEXT,
        answer    TEXT,
        status    TEXT NOT NULL CHECK (status IN ('ok', 'rejected')),
        reason    TEXT,
        call_key  TEXT,
        stage_run_id INTEGER REFERENCES stage_runs(id) ON DELETE SET NULL,
        created_at TEXT NOT NULL
    );
    CREATE INDEX samples_image_node ON samples (image_id, node_id);
    CREATE INDEX samples_node ON samples (node_id);

    -- One vote per (sample, referee): vote 1/0, or NULL with valid=0 when the output was ambiguous.
    CREATE TABLE votes (
        sample_id TEXT NOT NULL REFERENCES samples(id) ON DELETE CASCADE,
        referee   TEXT NOT NULL,
        vote      INTEGER CHECK (vote IN (0, 1)),
        valid     INTEGER NOT NULL,
        raw_text  TEXT,
        call_key  TEXT,
        prompt_hash TEXT,
        stage_run_id INTEGER REFERENCES stage_runs(id) ON DELETE SET NULL,
        PRIMARY KEY (sample_id, referee)
    );

    CREATE TABLE selections (
        sample_id TEXT PRIMARY KEY REFERENCES samples(id) ON DELETE CASCADE,
        selected  INTEGER NOT NULL,
        reason    TEXT,
        stage_run_id INTEGER REFERENCES stage_runs(id) ON DELETE SET NULL
    );
    """,
    # A covering index for per-sample vote sums (funnel, overview, selection): the GROUP BY reads the
    # index alone (0.8 s -> 0.2 s at 1.2M votes).
    """
    CREATE INDEX votes_cover ON votes (sample_id, valid, vote);
    """,
    # Human adjudication (review/adjudication.py). A person's vote is a `votes` row of referee `human:<name>`
    # (voted_at: when; machine votes have their stage run). A flagged sample is never selected nor exported.
    # The covering index gains `referee`, so the consensus (stages/select/consensus.py) reads every vote with its
    # referee from the index alone.
    """
    ALTER TABLE votes ADD COLUMN voted_at TEXT;
    DROP INDEX votes_cover;
    CREATE INDEX votes_cover ON votes (sample_id, valid, vote, referee);
    CREATE TABLE sample_flags (
        sample_id  TEXT PRIMARY KEY REFERENCES samples(id) ON DELETE CASCADE,
        reason     TEXT NOT NULL,
        reviewer   TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    """,
    # People's votes are a few among millions: a partial index finds them without reading every vote (the
    # dashboard reads them after each commit: 0.14 s -> ~1 ms at 1.2 M votes). Queries name it with INDEXED BY
    # (the planner prefers the covering index for a GROUP BY); their WHERE must be exactly this one.
    """
    CREATE INDEX votes_human ON votes (referee, sample_id) WHERE referee LIKE 'human:%';
    """,
    # What people had decided on each sample when `select` read the votes (stages/select/stage.py
    # `people_state`: their votes, and whether it was flagged; '' none, NULL: selected before this column), so
    # `export` can refuse a selection that people's votes changed since (`people_changed`).
    """
    ALTER TABLE selections ADD COLUMN people TEXT;
    """,
]
