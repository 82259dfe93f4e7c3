"""The bottom layer: the workspace, its SQLite store and schema, workbench.toml, stage-run records, errors, the
clock and the package's own files. It imports nothing of the package above it (no taxonomy: `Taxonomy.of(ws)`)."""
