"""People's votes beside the machines': a person's vote is a `votes` row under the referee name `human:<name>`
(machine referee names come from `[[referees]] name`, which never holds ':'), and a flag is a `sample_flags` row.
Selection, consensus and the figures tell the two apart with these names; `review/adjudication.py` writes them."""

from __future__ import annotations

from workbench.core.workspace import Workspace

HUMAN_PREFIX = "human:"
HUMAN_SQL = "referee LIKE 'human:%'"          # a person's vote, as an SQL condition on `votes`
MACHINE_SQL = "referee NOT LIKE 'human:%'"    # a machine referee's vote


def decided_samples(ws: Workspace) -> set[str]:
    """Samples a person has voted on or flagged (taken out of the uncertainty queue)."""
    rows = ws.store.query(f"SELECT sample_id FROM votes WHERE {HUMAN_SQL} UNION SELECT sample_id FROM sample_flags")
    return {r[0] for r in rows}
