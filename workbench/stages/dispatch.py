"""Where a stage's heavy work runs: the engine in effect, held in a context variable.

`None` is the local engine (this process). An engine from a higher layer (`workbench.engine`, e.g. Ray) is set
with `using(engine)` around a command, so stages reached through helper functions (run_filter, run_referees, ...)
pick it up from `current()` without every signature growing a parameter. Stages depend only on this seam,
never on an engine's module.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

_current: contextvars.ContextVar[Any] = contextvars.ContextVar("workbench_engine", default=None)


def current() -> Any:
    """The engine set by `using` (None: local)."""
    return _current.get()


@contextlib.contextmanager
def using(engine: Any) -> Iterator[Any]:
    token = _current.set(engine)
    try:
        yield engine
    finally:
        _current.reset(token)
