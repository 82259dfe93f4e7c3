"""Analyses over a workspace: coverage, agreement, projections, duplicates, the plan, audits, discovery.

They read the tables, run stages (the LLM stages they use live in `stages/`) and store only their own derived
results (projections, audits)."""
