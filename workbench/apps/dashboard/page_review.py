"""Not a page: the Review page is screens/review.py. This name is kept only because tests/test_review_log.py (not
the dashboard branch's file to edit) imports `word_diff` from here; delete it once that import names
`workbench.apps.dashboard.screens.review`."""

from workbench.apps.dashboard.screens.review import word_diff

__all__ = ["word_diff"]
