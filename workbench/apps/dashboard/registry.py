"""The dashboard's pages: one `Page` record each, in sidebar order, in `PAGES` (the one list the shell's
`st.navigation`, the background prewarm and the launch head start read).

A page is drawn by a module of `screens/` (its key names the module). That module is imported when one of its
functions is first called (`Lazy`), not when this list is: importing all ten pages takes ~0.17 s on 2 cores
(their own imports: review, consensus, projection, PIL...), which the first page's render would otherwise pay. The
background prewarm imports the others after the first page has rendered (perf/prewarm.py).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

SCREENS = f"{__package__}.screens"
Kinds = tuple[str, ...]   # lazily loaded element kinds ("plotly", "table", "vega"): see perf/primer.py


@dataclass(frozen=True)
class Lazy:
    """The function `name` of the module `module`, imported at the first call (then Python's module cache)."""
    module: str
    name: str

    def load(self) -> ModuleType:
        return importlib.import_module(self.module)

    def __call__(self, *args):
        return getattr(self.load(), self.name)(*args)


def _screen(key: str, name: str) -> Lazy:
    return Lazy(f"{SCREENS}.{key}", name)


@dataclass(frozen=True)
class Page:
    """One page: its URL key (`?page=KEY`, the path /KEY), sidebar title (also its heading) and icon; `render(root,
    ws)` draws it; `first_screen` is what its first screen draws of the element kinds the browser loads lazily, sent
    ahead of the page's work by the primer: fixed kinds, or a function of the session (a page whose first screen
    depends on a widget's value); `prewarm(root)` fills its caches in the background once the first page has rendered,
    `prewarm_late(root)` its slower extras after every page's prewarm (perf/prewarm.py)."""
    key: str
    title: str
    render: Lazy
    first_screen: Kinds | Callable[[], Kinds] = ()
    prewarm: Callable[[str], None] | None = None
    prewarm_late: Callable[[str], None] | None = None
    icon: str | None = None

    def kinds(self) -> Kinds:
        """The element kinds this run's first screen draws."""
        return self.first_screen() if callable(self.first_screen) else self.first_screen

    def load(self) -> ModuleType:
        """Import the page's module now (the launch head start does, for the first page)."""
        return self.render.load()


PAGES: tuple[Page, ...] = (
    Page("overview", "Overview", _screen("overview", "render"), ("vega", "table"),
         prewarm=_screen("overview", "prewarm")),
    Page("coverage", "Taxonomy coverage", _screen("coverage", "render"), _screen("coverage", "first_screen"),
         prewarm=_screen("coverage", "prewarm"), prewarm_late=_screen("coverage", "prewarm_late")),
    Page("images", "Images per task", _screen("images", "render"), ("vega",), prewarm=_screen("images", "prewarm")),
    Page("map", "Embedding map", _screen("map", "render"), _screen("map", "first_screen"),
         prewarm=_screen("map", "prewarm"), prewarm_late=_screen("map", "prewarm_late")),
    Page("referees", "Referees", _screen("referees", "render"), ("vega", "table"),
         prewarm=_screen("referees", "prewarm")),
    Page("adjudicate", "Adjudicate", _screen("adjudicate", "render"), ("table",),
         prewarm=_screen("adjudicate", "prewarm"), prewarm_late=_screen("adjudicate", "prewarm_late")),
    Page("prompts", "Prompts", _screen("prompts", "render"), ("table",),
         prewarm=_screen("prompts", "prewarm"), prewarm_late=_screen("prompts", "prewarm_late")),
    Page("plan", "Plan", _screen("plan", "render"), ("table", "vega"), prewarm=_screen("plan", "prewarm")),
    Page("review", "Review", _screen("review", "render")),
    Page("gaps", "Gaps", _screen("gaps", "render"), ("table",),
         prewarm=_screen("gaps", "prewarm"), prewarm_late=_screen("gaps", "prewarm_late")),
)
BY_KEY: dict[str, Page] = {p.key: p for p in PAGES}
