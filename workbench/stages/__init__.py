"""Pipeline stages: each reads the workspace and writes its results under deterministic keys."""
