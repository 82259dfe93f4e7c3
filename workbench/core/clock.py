"""Timestamps as stored in the workspace: UTC, ISO 8601, milliseconds."""

from __future__ import annotations

import datetime as _dt


def utcnow() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")
