"""Prompt files: Jinja2 templates that render to chat messages.

A template renders to text; lines that are exactly `[system]`, `[user]` or `[assistant]` start a
new message of that role (text before the first marker is a user message). Templates use
StrictUndefined, so a misspelt variable is an error naming the file, not an empty string.

Templates render in Jinja2's immutable sandbox: a prompt file may come with a workspace someone sent, and the
dashboard's playground renders what is typed, so a template reaches its variables, filters, tests and loops and
nothing else. Any attribute or item the sandbox deems unsafe (names starting with `_`, function internals such as
`__globals__`, `str.format` walks, mutating methods) raises at once, and the render becomes an
`UnsafeTemplateError` naming the template and the line: nothing is run, nothing is called. The sandbox does not
bound the time a template takes: `range` is capped at 100,000 items and one `*` or `**` at a million items or
bits, but nested loops are not.

Default (bundled) prompts live inside the package, `workbench/prompts/` (the checkout's top-level
`prompts/` is a link to it), so a checkout, an editable install and a wheel read the same files. A stage config
may name a workspace-relative or absolute file instead. The hash of
the template *source* is the prompt's identity in provenance (nodes.prompt_hash,
stage_runs.prompt_hash, llm_calls.prompt_hash), so it is the same from a checkout and a wheel.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from workbench.core.errors import WorkbenchError
from workbench.core.resources import PROMPTS_DIR

DEFAULT_PROMPTS_DIR = PROMPTS_DIR
_ROLE_LINE = re.compile(r"^\[(system|user|assistant)\]\s*$", re.MULTILINE)


class PromptError(WorkbenchError):
    """A prompt file is missing or does not render."""


class UnsafeTemplateError(PromptError):
    """A template tried to reach past its variables (attribute walks to Python internals): refused, not run."""


class _Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, raising at the first unsafe access. Jinja's own sandbox returns an undefined value
    there and fails only when it is used, so `x.__class__ is defined` and `|attr` chains would read as an ordinary
    undefined variable, not as the refusal they are."""

    # `'x' * 10**11` or `2 ** 10**9` would take the process's memory or time in one expression: refused.
    intercepted_binops = frozenset(["*", "**"])
    MAX_PRODUCT = 1_000_000     # items or characters one `*` may make; exponents past this many bits

    def call_binop(self, context, operator, left, right):
        if operator == "**" and isinstance(left, int) and isinstance(right, int) \
                and abs(left) > 1 and right * max(abs(left).bit_length(), 1) > self.MAX_PRODUCT:
            raise jinja2.exceptions.SecurityError(f"too large: '{left} ** {right}'")
        if operator == "*":
            seq, n = (left, right) if isinstance(right, int) else (right, left)
            if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > self.MAX_PRODUCT:
                raise jinja2.exceptions.SecurityError(f"too large: a sequence repeated {n} times")
        return super().call_binop(context, operator, left, right)

    def unsafe_undefined(self, obj, attribute):
        raise jinja2.exceptions.SecurityError(
            f"access to attribute {attribute!r} of a {type(obj).__name__!r} object is unsafe")


def resolve_prompt_path(name_or_path: str | Path, *, workspace_root: Path | None = None) -> Path:
    """An absolute path; a path relative to the workspace; or the name of a default prompt."""
    p = Path(name_or_path).expanduser()
    # A copy in WORKSPACE/prompts/ overrides the bundled prompt of the same name for that workspace.
    candidates = [p] if p.is_absolute() else (
        ([workspace_root / p, workspace_root / "prompts" / p] if workspace_root else [])
        + [Path.cwd() / p, DEFAULT_PROMPTS_DIR / p])
    for c in candidates:
        if c.is_file():
            return c.resolve()
    raise PromptError(f"prompt file {str(name_or_path)!r} not found (looked in: "
                      f"{', '.join(str(c) for c in candidates)}); give a path to a .j2 file")


def template_hash(source: str) -> str:
    return hashlib.sha256(source.encode("utf-8")).hexdigest()[:16]


_ENV = _Sandbox(undefined=jinja2.StrictUndefined, keep_trailing_newline=False,
               trim_blocks=True, lstrip_blocks=True, autoescape=False)
_ENV.filters["tojson_list"] = lambda xs: __import__("json").dumps(list(xs), ensure_ascii=False)


@dataclass
class PromptTemplate:
    path: Path
    source: str
    hash: str
    _template: jinja2.Template | None = field(repr=False, default=None)   # set by from_text (load uses it)
    label: str | None = None      # how errors name a template that is not a file ("the edited version 'x'")

    @classmethod
    def load(cls, name_or_path: str | Path, *, workspace_root: Path | None = None) -> PromptTemplate:
        path = resolve_prompt_path(name_or_path, workspace_root=workspace_root)
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PromptError(f"{path}: cannot read prompt file ({exc})") from None
        return cls.from_text(source, path=path)

    @classmethod
    def from_text(cls, source: str, *, path: Path | str = "<string>", label: str | None = None) -> PromptTemplate:
        try:
            tpl = _ENV.from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise PromptError(f"{label or path}: line {exc.lineno}: template error: {exc.message}") from None
        return cls(Path(path), source, template_hash(source), tpl, label)

    @property
    def where(self) -> str:
        return self.label or str(self.path)

    @property
    def display_path(self) -> str:
        """How provenance names the file: relative to the default prompts folder when it is a default."""
        try:
            return "prompts/" + str(self.path.relative_to(DEFAULT_PROMPTS_DIR))
        except ValueError:
            return str(self.path)

    def render_text(self, **context) -> str:
        assert self._template is not None   # every PromptTemplate is made by from_text
        try:
            return self._template.render(**context)
        except jinja2.exceptions.SecurityError as exc:
            raise UnsafeTemplateError(self._refusal(exc)) from None
        except jinja2.UndefinedError as exc:
            raise PromptError(f"{self.where}: {exc.message}; variables available: "
                              f"{', '.join(sorted(context))}") from None
        except jinja2.TemplateError as exc:
            raise PromptError(f"{self.where}: cannot render: {exc}") from None

    def _refusal(self, exc: jinja2.exceptions.SecurityError) -> str:
        # Jinja rewrites the traceback so that the template's own frames carry its line numbers.
        tb, line = exc.__traceback__, None
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == "<template>":
                line = tb.tb_lineno
            tb = tb.tb_next
        at = f" (line {line})" if line else ""
        if exc.message and exc.message.startswith("too large"):
            return (f"{self.where}{at}: refused: the template would build a value past the sandbox's limit "
                    f"({exc.message}, over {_Sandbox.MAX_PRODUCT:,} items or bits); nothing was "
                    "run. Write the text out instead of multiplying it")
        return (f"{self.where}{at}: refused: the template tried unsafe attribute access ({exc.message}); nothing "
                "was run. A prompt template may use its variables, filters and loops only: remove the access "
                "(names starting with '_' and Python internals are never allowed)")

    def render(self, images: list[str] | None = None, **context) -> list[dict]:
        """Chat messages; `images` (data URLs) are appended to the last user message."""
        messages = split_messages(self.render_text(**context))
        if images:
            users = [m for m in messages if m["role"] == "user"]
            if not users:
                messages.append({"role": "user", "content": ""})
                users = messages[-1:]
            last = users[-1]
            last["content"] = ([{"type": "text", "text": last["content"]}] if last["content"] else []) + [
                {"type": "image_url", "image_url": {"url": u}} for u in images]
        return messages


def split_messages(text: str) -> list[dict]:
    messages: list[dict] = []
    pos, role = 0, "user"
    for m in _ROLE_LINE.finditer(text):
        chunk = text[pos:m.start()].strip()
        if chunk:
            messages.append({"role": role, "content": chunk})
        role, pos = m.group(1), m.end()
    chunk = text[pos:].strip()
    if chunk:
        messages.append({"role": role, "content": chunk})
    return messages
