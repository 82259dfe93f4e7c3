"""Errors a user can act on.

Every mistake a user can make (a bad file, a bad config value, an unknown node id)
raises a WorkbenchError whose message names the file, line or field and says what to do.
The CLI prints that message on one line and exits with status 2; anything else is a bug.
"""

from __future__ import annotations


class WorkbenchError(Exception):
    """A user-facing error: the message is complete and actionable on its own."""


class ConfigError(WorkbenchError):
    """workbench.toml is missing, unreadable or has a bad field."""


class SchemaError(WorkbenchError):
    """The workspace database was written by another version of the workbench."""


class TaxonomyError(WorkbenchError):
    """An edit that would break the tree (cycle, duplicate sibling, unknown id)."""


class ImportProblemsError(WorkbenchError):
    """An import found errors; nothing was changed. `.report` holds every problem."""

    def __init__(self, report):  # report: workbench.taxonomy.io.ImportReport
        self.report = report
        errors = report.errors
        first = errors[0].format() if errors else "unknown problem"
        more = f" (and {len(errors) - 1} more error(s))" if len(errors) > 1 else ""
        super().__init__(
            f"{first}{more}; nothing was imported. Fix the file, or pass --skip-bad to import the good lines."
        )
