"""Reviewing proposed task types: shared by the notebooks and the dashboard.

`decisions` (no widget imports): `pending_proposals`, `Decision`, `apply_decisions`, `DecisionResult`.
`widgets`: `ReviewTable`, the notebooks' ipywidgets table (ipywidgets is imported only when it is used).
"""

from workbench.review.decisions import (  # noqa: F401
    ACTIONS,
    Decision,
    DecisionResult,
    apply_decisions,
    count_outcomes,
    pending_proposals,
)


def __getattr__(name):
    if name in ("ReviewTable", "ReviewRow"):
        from workbench.review import widgets  # lazy: ipywidgets, only for notebooks

        return getattr(widgets, name)
    raise AttributeError(f"module 'workbench.review' has no attribute {name!r}")
