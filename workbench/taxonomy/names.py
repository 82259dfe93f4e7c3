"""Task-type names and `~` paths: normalisation and validation (ARCHITECTURE.md, "The taxonomy").

A name is stored in its normalised display form (NFKC, whitespace collapsed, trimmed);
names are *compared* case-insensitively through `name_key`.
"""

from __future__ import annotations

import re
import unicodedata

SEP = "~"
# Characters that look like the separator. U+FF5E becomes "~" under NFKC anyway; U+223C does not.
LOOKALIKE_SEPARATORS = {"\u223c": "∼ (U+223C TILDE OPERATOR)", "\uff5e": "～ (U+FF5E FULLWIDTH TILDE)"}
MAX_NAME_CHARS = 200

_WS = re.compile(r"\s+")


class NameProblem(ValueError):
    """Why a name is not acceptable; the message is a short reason."""


def normalize_name(raw: str) -> str:
    """NFKC, collapse runs of whitespace to one space, strip."""
    return _WS.sub(" ", unicodedata.normalize("NFKC", raw)).strip()


def name_key(name: str) -> str:
    """The comparison key: normalised and case-folded."""
    return normalize_name(name).casefold()


def _is_control(ch: str) -> bool:
    return unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") and ch not in ("\u200d",)


def check_name(raw: str) -> str:
    """Return the normalised name or raise NameProblem saying what is wrong with it."""
    if "\n" in raw or "\r" in raw:
        raise NameProblem("a name may not contain a newline")
    bad = [ch for ch in raw if _is_control(ch) and ch not in " \t"]
    if bad:
        raise NameProblem(f"a name may not contain control character U+{ord(bad[0]):04X}")
    if "/" in raw:
        raise NameProblem(f"a name may not contain '/' (found in {raw.strip()!r}); use another word or '-'")
    name = normalize_name(raw)
    if not name:
        raise NameProblem("empty name")
    if SEP in name or any(c in name for c in LOOKALIKE_SEPARATORS):
        raise NameProblem(f"a name may not contain the level separator '~' (found in {name!r})")
    if len(name) > MAX_NAME_CHARS:
        raise NameProblem(f"name is {len(name)} characters long; the limit is {MAX_NAME_CHARS}")
    return name


def loose_key(name: str) -> str:
    """Case, accents' width forms, punctuation, hyphens and spacing ignored (near-duplicate names compare equal)."""
    s = unicodedata.normalize("NFKC", name).casefold()
    return re.sub(r"[\W_]+", "", s)


def replace_lookalikes(text: str) -> tuple[str, list[str]]:
    """Read look-alike separators as '~'. Returns the text and descriptions of what was replaced."""
    found = [desc for ch, desc in LOOKALIKE_SEPARATORS.items() if ch in text]
    for ch in LOOKALIKE_SEPARATORS:
        text = text.replace(ch, SEP)
    return text, found


def split_path(path: str) -> list[str]:
    """Split a `~` path into normalised names; raises NameProblem for empty levels or bad names.

    Look-alike separators must already have been replaced (see `replace_lookalikes`).
    """
    parts = path.split(SEP)
    names = []
    for i, part in enumerate(parts, 1):
        if not part.strip():
            where = "first" if i == 1 else "last" if i == len(parts) else f"level {i}"
            raise NameProblem(f"empty level ({where}) in path {path.strip()!r}")
        names.append(check_name(part))
    return names
