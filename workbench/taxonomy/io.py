"""Import and export of taxonomies: the paper's `tasktype.txt`, a folder tree, nested JSON.

Import is two-phase: parse and check the whole source first, collecting every problem
with its file and line (or JSON location); only if there is no error (or the user asked to
skip bad entries) is anything written, in one transaction. The report's `created` counts what that
transaction inserted (right under concurrent imports).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from workbench.core.errors import ImportProblemsError, WorkbenchError
from workbench.core.resources import DATA_DIR
from workbench.taxonomy.model import LIVE, Provenance, StatusArg, Taxonomy, TreeIndex
from workbench.taxonomy.names import SEP, NameProblem, check_name, name_key, replace_lookalikes, split_path

Format = Literal["txt", "folder", "json"]
FORMATS = ("txt", "folder", "json")
JSON_FORMAT_TAG = "taskgalaxy-taxonomy"


@dataclass
class Problem:
    severity: Literal["error", "warning"]
    source: str
    where: str          # "line 12", "$[0].children[3]", a folder path
    message: str

    def format(self) -> str:
        return f"{self.source}: {self.where}: {self.severity}: {self.message}"


@dataclass
class ImportReport:
    source: str
    format: str
    entries: int = 0            # paths read (lines, leaf folders, JSON nodes)
    created: int = 0
    existing: int = 0           # paths that were already in the workspace
    skipped: int = 0            # bad entries left out (with skip_bad)
    problems: list[Problem] = field(default_factory=list)
    seconds: float = 0.0
    dry_run: bool = False

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    def summary(self) -> str:
        verb = "would create" if self.dry_run else "created"
        s = (f"{self.source}: read {self.entries} path(s) as {self.format}; {verb} {self.created} node(s), "
             f"{self.existing} already present")
        if self.skipped:
            s += f", skipped {self.skipped} bad entr{'y' if self.skipped == 1 else 'ies'}"
        if self.warnings:
            s += f"; {len(self.warnings)} warning(s)"
        return s + f" ({self.seconds:.2f}s)"


@dataclass
class _Entry:
    names: list[str]
    where: str
    status: str | None = None
    origin: str | None = None


# -- format detection ----------------------------------------------------------------------------
def detect_format(path: Path) -> Format:
    path = Path(path)
    if path.is_dir():
        return "folder"
    suffix = path.suffix.lower()
    if suffix == ".json":
        return "json"
    if suffix in (".txt", ".tsv", ".list", ""):
        return "txt"
    raise WorkbenchError(f"{path}: cannot tell the format from the name; pass --format txt, folder or json")


# -- parsing ---------------------------------------------------------------------------------------
def _parse_path(raw: str, source: str, where: str, problems: list[Problem]) -> list[str] | None:
    text, found = replace_lookalikes(raw)
    for desc in found:
        problems.append(Problem("warning", source, where, f"look-alike separator {desc} read as '~'"))
    try:
        return split_path(text)
    except NameProblem as exc:
        problems.append(Problem("error", source, where, str(exc)))
        return None


def parse_txt(path: Path) -> tuple[list[_Entry], list[Problem]]:
    """One `~` path per line; blank lines and lines starting with '#' are ignored."""
    source = str(path)
    problems: list[Problem] = []
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise WorkbenchError(f"{path}: cannot read ({exc.strerror})") from None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    entries: list[_Entry] = []
    for lineno, raw_line in enumerate(data.split(b"\n"), 1):
        try:
            line = raw_line.decode("utf-8")
        except UnicodeDecodeError as exc:
            problems.append(Problem("error", source, f"line {lineno}",
                                    f"not UTF-8 (byte 0x{raw_line[exc.start]:02x} at column {exc.start + 1}); "
                                    "save the file as UTF-8"))
            continue
        line = line.removesuffix("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        names = _parse_path(line, source, f"line {lineno}", problems)
        if names is not None:
            entries.append(_Entry(names, f"line {lineno}"))
    return entries, problems


def parse_folder(root: Path) -> tuple[list[_Entry], list[Problem]]:
    """One folder per node below `root` (root itself is not a node); files and hidden folders are ignored."""
    source = str(root)
    problems: list[Problem] = []
    entries: list[_Entry] = []

    def walk(folder: Path, names: list[str]) -> None:
        try:
            subs = sorted((e for e in os.scandir(folder) if e.is_dir(follow_symlinks=False)), key=lambda e: e.name)
            for e in subs:
                if e.name.startswith("."):  # .git, .ipynb_checkpoints, ...: not task types
                    problems.append(Problem("warning", source, str(Path(e.path).relative_to(root)),
                                            "hidden folder ignored"))
            subs = [e for e in subs if not e.name.startswith(".")]
        except OSError as exc:
            problems.append(Problem("error", source, str(folder), f"cannot list folder ({exc.strerror})"))
            return
        if not subs and names:
            entries.append(_Entry(list(names), str(folder.relative_to(root))))
        for e in subs:
            rel = str(Path(e.path).relative_to(root))
            raw, found = replace_lookalikes(e.name)
            for desc in found:
                problems.append(Problem("warning", source, rel, f"look-alike separator {desc} read as '~'"))
            try:
                parts = split_path(raw)
            except NameProblem as exc:
                problems.append(Problem("error", source, rel, str(exc)))
                continue
            if len(parts) > 1:
                problems.append(Problem("error", source, rel,
                                        "a folder name may not contain '~'; make one folder per level"))
                continue
            walk(Path(e.path), names + parts)

    if not Path(root).is_dir():
        raise WorkbenchError(f"{root}: not a folder")
    walk(Path(root), [])
    return entries, problems


def parse_json(path: Path) -> tuple[list[_Entry], list[Problem]]:
    """Nested JSON: a list of {name, children?, status?, origin?, id?}, optionally wrapped as
    {"format": "taskgalaxy-taxonomy", "nodes": [...]}; also a plain {name: {children...}} mapping."""
    source = str(path)
    problems: list[Problem] = []
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except OSError as exc:
        raise WorkbenchError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise WorkbenchError(f"{path}: not UTF-8; save the file as UTF-8") from None
    except json.JSONDecodeError as exc:
        raise ImportProblemsError(ImportReport(source, "json", problems=[
            Problem("error", source, f"line {exc.lineno} column {exc.colno}", f"invalid JSON: {exc.msg}")])) from exc
    if isinstance(doc, dict) and "nodes" in doc and isinstance(doc.get("nodes"), list):
        nodes, base = doc["nodes"], "$.nodes"
    else:
        nodes, base = doc, "$"
    entries: list[_Entry] = []

    def visit(items, names: list[str], loc: str) -> None:
        if isinstance(items, dict):  # {name: children} mapping form
            items = [{"name": k, "children": v} for k, v in items.items()]
            mapping = True
        elif isinstance(items, list):
            mapping = False
        elif items is None:
            return
        else:
            problems.append(Problem("error", source, loc, "expected a list of nodes or a {name: children} mapping"))
            return
        for i, item in enumerate(items):
            where = f"{loc}[{json.dumps(item['name'])}]" if mapping else f"{loc}[{i}]"
            if isinstance(item, str):
                item = {"name": item}
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                problems.append(Problem("error", source, where, "each node needs a string 'name'"))
                continue
            unknown = set(item) - {"name", "children", "status", "origin", "id", "path", "note"}
            if unknown:
                problems.append(Problem("warning", source, where, f"ignored unknown key(s): {sorted(unknown)}"))
            raw, found = replace_lookalikes(item["name"])
            for desc in found:
                problems.append(Problem("warning", source, where, f"look-alike separator {desc} read as '~'"))
            try:
                name = check_name(raw)
            except NameProblem as exc:
                problems.append(Problem("error", source, where, str(exc)))
                continue
            status = item.get("status")
            if status is not None and status not in ("proposed", "accepted", "rejected"):
                problems.append(Problem("error", source, where + ".status",
                                        f"status must be proposed, accepted or rejected; got {status!r}"))
                continue
            origin = item.get("origin")
            if origin is not None and origin not in ("seed", "generated", "imported", "manual"):
                problems.append(Problem("error", source, where + ".origin",
                                        f"origin must be seed, generated, imported or manual; got {origin!r}"))
                continue
            entries.append(_Entry(names + [name], where, status, origin))
            visit(item.get("children"), names + [name], where + ".children")

    visit(nodes, [], base)
    return entries, problems


def parse_source(path: Path, fmt: Format | None = None) -> tuple[Format, list[_Entry], list[Problem]]:
    path = Path(path)
    if not path.exists():
        raise WorkbenchError(f"{path}: no such file or folder")
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise WorkbenchError(f"unknown format {fmt!r}; use txt, folder or json")
    if fmt == "folder" and not path.is_dir():
        raise WorkbenchError(f"{path}: --format folder needs a folder")
    if fmt != "folder" and path.is_dir():
        raise WorkbenchError(f"{path}: is a folder; use --format folder (or give a file)")
    parser = {"txt": parse_txt, "folder": parse_folder, "json": parse_json}[fmt]
    entries, problems = parser(path)
    return fmt, entries, problems


def _check_duplicates(entries: list[_Entry], source: str, problems: list[Problem], fmt: str) -> list[_Entry]:
    """Flag repeated paths (after normalisation) and, in a txt file, a line that is another's prefix."""
    seen: dict[tuple[str, ...], _Entry] = {}
    kept = []
    for e in entries:
        key = tuple(name_key(n) for n in e.names)
        first = seen.get(key)
        if first is not None:
            problems.append(Problem("error", source, e.where,
                                    f"duplicate of {first.where} ({SEP.join(e.names)!r}); remove one of them"))
            e.names = []  # marks it bad
            continue
        seen[key] = e
        kept.append(e)
    if fmt == "txt":
        prefixes = set()
        for key in seen:
            for i in range(1, len(key)):
                prefixes.add(key[:i])
        for key, e in seen.items():
            if key in prefixes:
                problems.append(Problem("warning", source, e.where,
                                        f"{SEP.join(e.names)!r} also has children on other lines, so it is not a "
                                        "task type (leaf); an export will not list it on its own line"))
    return kept


# -- import ----------------------------------------------------------------------------------------
def import_taxonomy(taxonomy: Taxonomy, path: Path | str, *, fmt: Format | None = None, skip_bad: bool = False,
                    origin: str = "imported", status: str = "accepted", dry_run: bool = False,
                    provenance: Provenance | None = None) -> ImportReport:
    """Import a taxonomy file or folder into the workspace.

    Raises ImportProblemsError (and changes nothing) if any entry has an error, unless
    `skip_bad`, in which case the good entries are imported and the bad ones counted.
    """
    t0 = time.perf_counter()
    path = Path(path)
    fmt, entries, problems = parse_source(path, fmt)
    bad_wheres = {p.where for p in problems if p.severity == "error"}
    report = ImportReport(str(path), fmt, problems=problems, dry_run=dry_run)
    entries = _check_duplicates(entries, str(path), problems, fmt)
    report.entries = len(entries) + sum(1 for p in problems if p.severity == "error")
    if report.errors and not skip_bad:
        raise ImportProblemsError(report)
    report.skipped = len({p.where for p in report.errors} | bad_wheres)
    if not entries:
        if not report.errors:
            raise WorkbenchError(f"{path}: no task paths found (empty file or folder?)")
        raise ImportProblemsError(report, all_bad=True)      # --skip-bad with nothing good: not a success

    # Consecutive runs with the same (status, origin) become one bulk insert each, in file
    # order, so a parent is always created (with its own status) before its children.
    groups: list[tuple[tuple[str, str], list[list[str]]]] = []
    for e in entries:
        key = (e.status or status, e.origin or origin)
        if not groups or groups[-1][0] != key:
            groups.append((key, []))
        groups[-1][1].append(e.names)
    if dry_run:
        existing_keys = _existing_path_keys(taxonomy)
        new = set()
        for e in entries:
            for i in range(1, len(e.names) + 1):
                k = tuple(name_key(n) for n in e.names[:i])
                if k not in existing_keys:
                    new.add(k)
        report.created = len(new)
    else:
        # Count what this import inserts, inside its own transaction: a node count taken before and after
        # would include what another process wrote meanwhile (and make "already present" negative).
        created = 0
        with taxonomy.store.write():
            for (st, org), paths in groups:
                created += taxonomy.ensure_paths(paths, origin=org, status=st, provenance=provenance)[1]
        report.created = created
    all_prefixes = {tuple(name_key(n) for n in e.names[:i]) for e in entries for i in range(1, len(e.names) + 1)}
    report.existing = len(all_prefixes) - report.created
    report.seconds = time.perf_counter() - t0
    return report


def _existing_path_keys(taxonomy: Taxonomy) -> set[tuple[str, ...]]:
    idx = taxonomy.index(statuses=None)
    return {tuple(name_key(n) for n in p.split(SEP)) for p in idx.paths.values()}


# -- export ----------------------------------------------------------------------------------------
def export_taxonomy(taxonomy: Taxonomy, dest: Path | str, *, fmt: Format | None = None,
                    statuses: StatusArg = LIVE, overwrite: bool = False) -> int:
    """Write the taxonomy (restricted to `statuses`) to `dest`. Returns the number of task types written."""
    dest = Path(dest)
    if fmt is None:
        if dest.suffix.lower() == ".json":
            fmt = "json"
        elif dest.suffix.lower() in (".txt", ".list"):
            fmt = "txt"
        elif dest.is_dir() or not dest.suffix:
            fmt = "folder"
        else:
            raise WorkbenchError(f"{dest}: cannot tell the format from the name; pass --format txt, folder or json")
    if dest.exists() and not overwrite and not (fmt == "folder" and dest.is_dir() and not any(dest.iterdir())):
        raise WorkbenchError(f"{dest}: already exists; choose another name or pass --overwrite")
    idx = taxonomy.index(statuses)
    leaves = idx.leaves()
    if fmt == "txt":
        dest.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(dest, "".join(idx.paths[n.id] + "\n" for n in leaves))
    elif fmt == "json":
        dest.parent.mkdir(parents=True, exist_ok=True)

        def node_json(nid: str) -> dict:
            n = idx.nodes[nid]
            d: dict[str, Any] = {"id": n.id, "name": n.name, "status": n.status, "origin": n.origin}
            kids = idx.children.get(nid, [])
            if kids:
                d["children"] = [node_json(k) for k in kids]
            return d

        doc = {"format": JSON_FORMAT_TAG, "version": 1, "nodes": [node_json(r) for r in idx.children.get(None, [])]}
        _atomic_write(dest, json.dumps(doc, ensure_ascii=False, indent=1) + "\n")
    elif fmt == "folder":
        for n in leaves:
            folder = dest.joinpath(*idx.path_names(n.id))
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise WorkbenchError(f"{folder}: cannot create ({exc.strerror}); export as txt or json instead") \
                    from None
    else:
        raise WorkbenchError(f"unknown format {fmt!r}; use txt, folder or json")
    return len(leaves)


def _atomic_write(dest: Path, text: str) -> None:
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, dest)


def seed_file() -> Path:
    return DATA_DIR / "seed_tasks.txt"


def load_seed(taxonomy: Taxonomy) -> ImportReport:
    return import_taxonomy(taxonomy, seed_file(), fmt="txt", origin="seed")


def tree_lines(idx: TreeIndex, *, max_depth: int | None = None, root: str | None = None,
               show_ids: bool = True) -> list[str]:
    """An indented text rendering for `taxonomy show`."""
    out = []
    start = [root] if root else idx.children.get(None, [])
    base = idx.nodes[root].level - 1 if root else 0
    stack = [(nid, 0) for nid in reversed(start)]
    while stack:
        nid, depth = stack.pop()
        n = idx.nodes[nid]
        if max_depth is not None and n.level - base > max_depth:
            continue
        mark = {"accepted": "", "proposed": " [proposed]", "rejected": " [rejected]"}[n.status]
        kids = idx.children.get(nid, [])
        hidden = f"  (+{len(kids)} children)" if kids and max_depth is not None and n.level - base >= max_depth else ""
        ident = f"{n.id}  " if show_ids else ""
        out.append(f"{ident}{'  ' * depth}{n.name}{mark}{hidden}")
        for k in reversed(kids):
            stack.append((k, depth + 1))
    return out
