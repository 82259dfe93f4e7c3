"""Prompt templates render in a sandbox: every known Jinja2 escape is refused with a product error naming the
template, in every entry point that renders (the render function, `expand --dry-run` on a workspace's prompt file,
the notebook helpers, an engine's dispatch), and nothing the payload would run happens. The Batch API path and the
dashboard's playground are in tests/test_dashboard_security.py (they start servers)."""

from __future__ import annotations

from pathlib import Path

import jinja2
import pytest

from conftest import run_cli
from workbench.core.errors import WorkbenchError
from workbench.llm.prompts import DEFAULT_PROMPTS_DIR, PromptError, PromptTemplate, UnsafeTemplateError

# Each payload would run CMD (or hand out a way to) if it rendered in a plain jinja2.Environment; `undefined`
# marks the globals Jinja does not have (Flask's config/request): refused as undefined variables.
POPEN = "os.popen('CMD').read()"
PAYLOADS = {
    "cycler globals": "{{ cycler.__init__.__globals__." + POPEN + " }}",
    "joiner globals": "{{ joiner.__init__.__globals__." + POPEN + " }}",
    "lipsum globals": "{{ lipsum.__globals__['os'].popen('CMD').read() }}",
    "namespace globals": "{{ namespace.__init__.__globals__." + POPEN + " }}",
    "self globals": "{{ self.__init__.__globals__.__builtins__.__import__('os').popen('CMD').read() }}",
    "self context": "{{ self._TemplateReference__context.cycler.__init__.__globals__." + POPEN + " }}",
    "range globals": "{{ range.__init__.__globals__.__builtins__.__import__('os').popen('CMD').read() }}",
    "config global": "{{ config.__class__.__init__.__globals__['os'].popen('CMD').read() }}",
    "request global": "{{ request.application.__globals__.__builtins__.__import__('os').popen('CMD').read() }}",
    "mro subclasses": ("{% for c in ''.__class__.__mro__[1].__subclasses__() %}{% if c.__name__ == 'Popen' %}"
                       "{{ c('CMD', shell=True).wait() }}{% endif %}{% endfor %}"),
    "item walk": "{{ ''['__class__']['__mro__'][1]['__subclasses__']() }}",
    "format walk": "{{ '{0.__class__.__mro__}'.format('x') }}",
    "format_map walk": "{{ '{a.__class__.__init__}'.format_map({'a': 'x'}) }}",
    "attr filter walk": "{{ (cycler|attr('__init__')|attr('__globals__'))['os'].popen('CMD').read() }}",
    "attr filter on str": "{{ ''|attr('__class__')|attr('__mro__') }}",
    "is defined probe": "{% if cycler.__init__ is defined %}{{ cycler.__init__.__globals__." + POPEN + " }}{% endif %}",
}
UNDEFINED = {"request global"}   # config.__class__ is refused as unsafe before config is found undefined


def payload(name: str, marker: Path) -> str:
    return "[user]\nList first-level task categories.\n" + PAYLOADS[name].replace("CMD", f"touch {marker}") + "\n"


def expect_refusal(exc: BaseException, name: str, where: str) -> None:
    msg = str(exc)
    assert isinstance(exc, PromptError) and isinstance(exc, WorkbenchError), type(exc)
    assert where in msg, msg
    if name in UNDEFINED:
        assert "is undefined" in msg, msg
    else:
        assert isinstance(exc, UnsafeTemplateError), msg
        assert "unsafe attribute access" in msg and "line 3" in msg, msg


def test_the_payloads_are_real_outside_the_sandbox(tmp_path):
    """The list is not a straw man: in a plain Environment (what prompts.py used) the first payload runs."""
    marker = tmp_path / "ran"
    jinja2.Environment().from_string(payload("cycler globals", marker)).render()
    assert marker.exists()


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_render_refuses_every_known_escape(tmp_path, name):
    marker = tmp_path / "ran"
    tpl = PromptTemplate.from_text(payload(name, marker), path=tmp_path / "evil.j2")
    with pytest.raises(PromptError) as info:
        tpl.render(parents=[], sep="~")
    expect_refusal(info.value, name, str(tmp_path / "evil.j2"))
    assert not marker.exists()


def test_the_playground_label_names_the_text_not_a_file(tmp_path):
    tpl = PromptTemplate.from_text(PAYLOADS["lipsum globals"], path=tmp_path / "filter.j2",
                                   label="the playground text (edited filter.j2)")
    with pytest.raises(UnsafeTemplateError, match=r"^the playground text \(edited filter.j2\) \(line 1\): refused"):
        tpl.render_text()


def test_bundled_prompts_render_as_in_a_plain_environment():
    """The sandbox changes nothing for the shipped prompts: same text as the unsandboxed environment."""
    ctx = {"candidates": ["a~b", "c~d"], "nearest": [{"path": "a~b", "score": 0.5}], "existing": ["x", "y"],
           "parents": ["p~q"], "task_types": ["a~b", "c~d"], "siblings": ["s1", "s2"], "answer": "42",
           "instruction": "count", "parent": "q", "parent_path": "p~q", "question": "how many?",
           "reference": "MMBench", "reference_task": "Perception~Counting", "sep": "~", "size": 7,
           "task_name": "counting", "task_path": "a~counting", "task_type": "a~counting"}
    plain = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    plain.filters["tojson_list"] = lambda xs: __import__("json").dumps(list(xs), ensure_ascii=False)
    files = sorted(DEFAULT_PROMPTS_DIR.glob("*.j2"))
    assert len(files) >= 10
    for f in files:
        source = f.read_text(encoding="utf-8")
        assert PromptTemplate.load(f).render_text(**ctx) == plain.from_string(source).render(**ctx), f.name


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_expand_dry_run_on_a_workspace_prompt_refuses_with_one_error_line(seeded_ws, tmp_path, name):
    """A workspace someone sent: its prompts/ copy of a bundled prompt holds the payload."""
    marker = tmp_path / "ran"
    ws = seeded_ws
    ws.prompts_dir.mkdir(parents=True, exist_ok=True)
    evil = ws.prompts_dir / "expand_level1_supplement.j2"
    evil.write_text(payload(name, marker), encoding="utf-8")
    r = run_cli("expand", ws.root, "--level", "1", "--dry-run")
    assert r.code == 2, (r.out, r.err)
    lines = [ln for ln in r.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.err
    assert "Traceback" not in r.err
    expect_refusal(PromptError(lines[0]) if name in UNDEFINED else UnsafeTemplateError(lines[0]), name,
                   str(evil.resolve()))
    assert not marker.exists()


def test_notebook_preview_refuses_a_draft(seeded_ws, tmp_path):
    from workbench.apps import notebooks as nb

    marker = tmp_path / "ran"
    draft = nb.save_draft(seeded_ws, "expand_level1_supplement.j2", payload("cycler globals", marker))
    with pytest.raises(UnsafeTemplateError, match="unsafe attribute access") as info:
        nb.preview_version(seeded_ws, "expand_level1_supplement.j2", draft, None)
    assert str(draft.path) in str(info.value)
    assert not marker.exists()


class Recorder:
    """An engine in effect (what `--engine ray` installs): records every plan it is handed, calls nothing."""

    name = "recorder"

    def __init__(self):
        self.plans = []

    def dispatch(self, plan) -> None:
        self.plans.append(plan)
        plan.not_run(plan.pending)


def test_engines_get_rendered_messages_so_a_refusal_comes_before_any_dispatch(seeded_ws, tmp_path):
    """Ray renders nothing itself: the stage renders every row before the plan reaches the engine in effect,
    so the refusal above covers `--engine ray`. The engine module does not touch templates."""
    from workbench.engine import using
    from workbench.stages.expand.stage import expand

    source = (Path(__file__).resolve().parent.parent / "workbench" / "engine" / "ray_engine.py").read_text()
    assert "jinja2" not in source and "PromptTemplate" not in source and ".render(" not in source
    ws, engine, marker = seeded_ws, Recorder(), tmp_path / "ran"
    with using(engine):
        expand(ws, level=1, progress=False)
    assert len(engine.plans) == 1 and engine.plans[0].pending        # the control: the engine is reached
    ws.prompts_dir.mkdir(parents=True, exist_ok=True)
    (ws.prompts_dir / "expand_level1_supplement.j2").write_text(payload("cycler globals", marker))
    with using(engine), pytest.raises(UnsafeTemplateError):
        expand(ws, level=1, progress=False, again=True)
    assert len(engine.plans) == 1 and not marker.exists()


@pytest.mark.parametrize("source", ["{{ 'x' * 10**11 }}", "{{ 10**11 * 'x' }}", "{{ [0] * 5000000 }}",
                                    "{{ 7 ** 9999999 }}"])
def test_a_template_cannot_build_a_huge_value(source):
    # One expression that would take the process's memory or minutes of CPU is refused before it is computed.
    with pytest.raises(UnsafeTemplateError, match="past the sandbox's limit"):
        PromptTemplate.from_text(source, label="the playground text").render_text()


def test_ordinary_arithmetic_and_repetition_still_render():
    assert PromptTemplate.from_text("{{ '-' * 3 }} {{ 2 ** 10 }} {{ 3 * 4 }} {{ [1] * 2 }}").render_text() \
        == "--- 1024 12 [1, 1]"
