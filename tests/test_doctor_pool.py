"""`workbench doctor` on an endpoint pool: every member is probed at its own URL and reported on its own line."""

import re

import pytest

from openai_server import OpenAIServer
from workbench.apps.doctor import check_endpoints
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
        # What `workbench doctor WS` prints for endpoints (the whole command also imports torch & co: slow).
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
