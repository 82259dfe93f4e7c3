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

    def __init__(self, report, *, all_bad: bool = False):  # report: workbench.taxonomy.io.ImportReport
        self.report = report
        errors = report.errors
        if errors:
            first = errors[0]
            lead = f"{first.source}: {len(errors)} error(s), the first at {first.where}: {first.message}"
        else:
            lead = f"{report.source}: unknown problem"
        unreadable = bool(errors) and errors[0].message.startswith("invalid JSON")
        hint = "Fix the file." if unreadable else "Fix the file, or pass --skip-bad to import the good lines."
        if all_bad:     # --skip-bad given, but there was no good entry to import
            lead = f"{lead}; every entry has an error, so --skip-bad left none to import"
            hint = "Fix the file."
        super().__init__(f"{lead}; nothing was imported. {hint}")


class ParseFailure(Exception):
    """A parser's one way to say a reply cannot be used: `raise ParseFailure("why")`.

    Not a WorkbenchError: it never reaches the user as an error. The stage base counts it, keeps the raw reply
    and hands the reason to the stage's `record`, which stores it with the rows it concerns."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def sqlite_hint(error: str) -> str:
    """What to do about a sqlite error, from its text: only a full disk says to free space."""
    text = error.lower()
    if "disk is full" in text or "disk i/o" in text:
        return "Free some disk space (or check the disk) and run it again."
    if "readonly" in text or "read-only" in text:
        return "The database file or its folder is read-only: make both writable and run it again."
    if "locked" in text or "busy" in text:
        return "Another process holds the database: wait for it (or close it) and run it again."
    return ("If this workspace was made or changed by another program, restore a copy (workbench.sqlite.bak-*) "
            "or report the message.")
