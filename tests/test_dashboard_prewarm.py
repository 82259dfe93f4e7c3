"""The dashboard's background prewarm: every page's prewarm steps run on a workspace without error, and the
loop stops between steps at exit (the suite turns the thread itself off)."""

from __future__ import annotations

import logging

import pytest

pytest.importorskip("streamlit")

from tests.test_dashboard_app import _generator


def test_every_page_prewarms_and_the_thread_stops_between_steps(tmp_path, monkeypatch, caplog):
    from workbench.apps.dashboard import main

    gen = _generator()
    root = tmp_path / "ws"
    gen.build(root, gen.SMALL, log=lambda *a: None)
    with caplog.at_level(logging.WARNING, logger="workbench.apps.dashboard.main"):
        took = main.prewarm_all(str(root))
    assert took is not None and took >= 0
    assert not [r.getMessage() for r in caplog.records if "prewarm" in r.getMessage()]   # no page failed

    calls = []
    monkeypatch.setattr(main, "_page_module", lambda name: calls.append(name))
    main._STOP_PREWARM.set()   # as at exit: the loop ends before its next step
    try:
        assert main.prewarm_all(str(root)) is None and calls == []
    finally:
        main._STOP_PREWARM.clear()
