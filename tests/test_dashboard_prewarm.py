"""The dashboard's background prewarm: every page's prewarm steps run on a workspace without error, and the
loop stops between steps at exit (the suite turns the thread itself off)."""

from __future__ import annotations

import logging

import pytest

pytest.importorskip("streamlit")

from tests.test_dashboard_app import _generator


def test_every_page_prewarms_and_the_thread_stops_between_steps(tmp_path, monkeypatch, caplog):
    from workbench.apps.dashboard.perf import prewarm
    from workbench.apps.dashboard.registry import PAGES, Page

    gen = _generator()
    root = tmp_path / "ws"
    gen.build(root, gen.SMALL, log=lambda *a: None)
    with caplog.at_level(logging.WARNING, logger=prewarm.__name__):
        took = prewarm.prewarm_all(str(root))
    assert took is not None and took >= 0
    assert not [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]   # no page failed

    calls = []

    class Recorded(Page):
        def load(self):
            calls.append(self.key)

    pages = tuple(Recorded(p.key, p.title, p.render, p.first_screen, p.prewarm, p.prewarm_late) for p in PAGES)
    prewarm._STOP_PREWARM.set()   # as at exit: the loop ends before its next step
    try:
        assert prewarm.prewarm_all(str(root), pages) is None and calls == []
    finally:
        prewarm._STOP_PREWARM.clear()


def test_every_page_prewarms_on_a_workspace_with_only_a_taxonomy(seeded_ws, caplog):
    """A fresh workspace (seed tasks, no images, no votes): no page's prewarm fails (the Referees page's summary
    needs votes; its prewarm stops where the page shows its empty state)."""
    from workbench.apps.dashboard.perf import prewarm

    with caplog.at_level(logging.WARNING, logger=prewarm.__name__):
        prewarm.prewarm_all(str(seeded_ws.root))
    assert not [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]


def test_every_page_of_the_registry_has_its_functions():
    """Each Page's functions exist in its screens module (they are looked up by name when first called)."""
    from workbench.apps.dashboard.registry import PAGES, Lazy

    assert len({p.key for p in PAGES}) == len(PAGES)
    for page in PAGES:
        module = page.load()
        assert module.__name__.endswith(f".screens.{page.key}")
        for fn in (page.render, page.first_screen, page.prewarm, page.prewarm_late):
            if isinstance(fn, Lazy):
                assert fn.module == module.__name__ and callable(getattr(module, fn.name)), (page.key, fn.name)
