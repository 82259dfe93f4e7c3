"""Where the heavy work of a stage runs: `local` (this process, the default) or `ray` (a Ray cluster).

The engine only computes; the driver (this process) still owns the workspace: workers return rows
(embeddings keyed by image id, top-k blocks, CallRecords) and the stage commits them through the same
code paths the local engine uses, so resumability and the call cache behave identically.

`current()` is the engine in effect (a context variable of `stages.dispatch`, the seam engines plug into):
the CLI sets it with `session(...)` / `using(engine)` around a command. For LLM calls an engine is a
`stages.dispatch.Dispatcher` (`RayEngine.dispatch(plan)`); `None` leaves them to the local dispatcher.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from workbench.core.errors import WorkbenchError
from workbench.engine.ray_engine import RayEngine
from workbench.stages.dispatch import current, using

__all__ = ["ENGINES", "current", "make_engine", "session", "using"]

ENGINES = ("local", "ray")


def make_engine(name: str = "local", address: str | None = None) -> RayEngine | None:
    """An engine by name: None for `local` (today's code paths), a RayEngine for `ray`."""
    name = (name or "local").lower()
    if name not in ENGINES:
        raise WorkbenchError(f"--engine must be one of {', '.join(ENGINES)}; got {name!r}")
    if name == "local":
        if address:
            raise WorkbenchError("--address joins a Ray cluster: add --engine ray (or drop --address)")
        return None

    return RayEngine(address=address)


@contextlib.contextmanager
def session(name: str = "local", address: str | None = None) -> Iterator[RayEngine | None]:
    """`--engine NAME [--address ADDR]` for one command: the engine in effect inside, disconnected after."""
    engine = make_engine(name, address)
    try:
        with using(engine):
            yield engine
    finally:
        if engine is not None:
            engine.shutdown()
