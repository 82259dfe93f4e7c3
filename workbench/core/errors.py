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
        if errors:
            first = errors[0]
            lead = f"{first.source}: {len(errors)} error(s), the first at {first.where}: {first.message}"
        else:
            lead = f"{report.source}: unknown problem"
        unreadable = bool(errors) and errors[0].message.startswith("invalid JSON")
        hint = "Fix the file." if unreadable else "Fix the file, or pass --skip-bad to import the good lines."
        super().__init__(f"{lead}; nothing was imported. {hint}")


class ParseFailure(Exception):
    """A parser's one way to say a reply cannot be used: `raise ParseFailure("why")`.

    Not a WorkbenchError: it never reaches the user as an error. The stage base counts it, keeps the raw reply
    and hands the reason to the stage's `record`, which stores it with the rows it concerns."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason
