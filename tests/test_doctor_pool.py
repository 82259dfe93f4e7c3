"""`workbench doctor`: on an endpoint pool every member is probed at its own URL and reported on its own line; the
probes run at once; packages are found without importing them; CLIP tags are read from open_clip's source."""

import re
import threading

import pytest

from openai_server import OpenAIServer
from workbench.apps.doctor import check_endpoints
from workbench.core.config import Config, EndpointConfig
from workbench.core.workspace import Workspace

pytestmark = pytest.mark.timeout(60)


def test_doctor_probes_each_pool_member_and_names_the_one_down(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_NO_LOCAL_PROBE", "1")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    down = OpenAIServer(models=("served",)).start()
    down_url = down.base_url
    down.stop()                                   # a member whose server is gone
    with OpenAIServer(models=("served",)) as up:
        up_url = up.base_url
        ws = Workspace.init(tmp_path / "ws")
        (ws.root / "workbench.toml").write_text((ws.root / "workbench.toml").read_text() + f"""
[endpoints.gpu0]
base_url = "{up.base_url}"

[endpoints.gpu1]
base_url = "{down_url}"

[endpoints.judges]
model = "served"
pool = ["gpu0", "gpu1"]
""")
        # What `workbench doctor WS` prints for endpoints.
        lines = [c.line() for c in check_endpoints(Workspace.open(ws.root).config)]
    member = {m: next((ln for ln in lines if re.search(rf"endpoint\s+judges/{m}\b", ln)), None)
              for m in ("gpu0", "gpu1")}
    assert member["gpu0"] and member["gpu0"].startswith("ok ") and f"served at {up_url}: reachable" \
        in member["gpu0"]
    assert member["gpu1"] and member["gpu1"].startswith("-- ") and f"{down_url}: not reachable" in member["gpu1"]
    assert "member 'gpu1' of pool 'judges'" in member["gpu1"]
    pool = next(ln for ln in lines if re.search(r"endpoint\s+judges\s", ln))
    assert pool.startswith("ok ") and "pool of 2 for served: 1 answer, not reachable: gpu1" in pool
    # The members are not reported a second time as stand-alone endpoints (with the wrong model).
    assert not any(re.search(r"endpoint\s+gpu[01]\s", ln) for ln in lines)


def test_the_endpoints_are_probed_at_once(monkeypatch):
    """Three endpoints, three probes that each wait until all three are waiting: they pass only when the probes
    run at the same time (one after the other, the first would wait out the barrier's timeout and fail)."""
    from workbench.apps import doctor

    barrier = threading.Barrier(3)

    def probe(url, timeout, api_key=None):
        barrier.wait(timeout=30)
        return ["m"]

    monkeypatch.setattr(doctor, "probe", probe)
    config = Config(endpoints={name: EndpointConfig(base_url=f"http://127.0.0.1:9/{name}", model="m")
                               for name in ("a", "b", "c")})
    lines = [c.line() for c in check_endpoints(config)]
    assert len(lines) == 3 and all(ln.startswith("ok ") and ": reachable" in ln for ln in lines), lines


def test_packages_are_found_installed_without_importing_them(monkeypatch):
    from workbench.apps import doctor

    monkeypatch.setattr(doctor, "PACKAGES", [("typer", "typer", "the CLI"),
                                             ("no_such_module_xq", "typer", "a module typer lacks"),
                                             ("no_such_module_xq", "no-such-dist-xq", "nothing")])
    ok, no_module, missing = doctor.check_packages()
    assert ok.ok and ok.detail.endswith(" installed")
    assert not no_module.ok and "installed but has no module 'no_such_module_xq'" in no_module.detail
    assert not missing.ok and missing.detail.startswith("not installed")
    assert doctor.check_packages(imports=True)[0].detail.endswith(" installed, imports")


def test_the_clip_tags_read_from_open_clips_source_are_open_clips():
    """`workbench doctor` reads open_clip's pretrained table from its source (importing open_clip imports torch);
    every entry it reads there is the one open_clip returns, and the ones it cannot read fall back to open_clip."""
    open_clip = pytest.importorskip("open_clip")
    from workbench.apps.doctor import open_clip_pretrained_cfg

    read = 0
    for model, tag in open_clip.list_pretrained():
        got = open_clip_pretrained_cfg(model, tag)
        if got is None:
            continue
        read += 1
        real = open_clip.get_pretrained_cfg(model, tag)
        assert all(got.get(k, "") == real.get(k, "") for k in ("url", "hf_hub", "file")), (model, tag, got)
    assert read > len(open_clip.list_pretrained()) // 2
    assert open_clip_pretrained_cfg("ViT-L-14", "OpenAI")["hf_hub"].startswith("timm/")
    assert open_clip_pretrained_cfg("ViT-L-14", "no-such-tag") is None
