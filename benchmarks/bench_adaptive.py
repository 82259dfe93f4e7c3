"""Adaptive referees benchmark (about 20 s): referee calls saved against full voting, on a scripted run.

A local scripted server (`tests/openai_server.py`) plays N referees; referee i votes 1 on a sample with its
given pass rate (a fixed hash of referee and sample, independent across referees). The same samples are voted
twice in two workspaces through `run_referees`: fully (every referee, every sample) and adaptively (k-of-N in
order, stopping once decided, `--audit` of the samples always fully voted). Printed: calls made by each,
calls saved (share of full), the expectation for independent referees, and whether the two selections agree
(they must).

    .venv/bin/python benchmarks/bench_adaptive.py [--samples 500] [--pass-rates 0.8,0.7,0.6] [--k 2] [--audit 0.05]
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
import tempfile
from pathlib import Path

from workbench.taxonomy.model import Taxonomy

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from PIL import Image

from openai_server import OpenAIServer
from workbench.core.workspace import Workspace
from workbench.stages.referee.stage import expected_calls, run_referees
from workbench.stages.select.stage import select


def make_workspace(root: Path, url: str, n: int, models: list[str], k: int, audit: float) -> Workspace:
    ws = Workspace.init(root)
    node = Taxonomy.of(ws).add_path("counting~people counting").id
    (root / "imgs").mkdir()
    Image.new("RGB", (16, 16), (5, 5, 5)).save(root / "imgs" / "a.png")
    with ws.store.write() as c:
        c.execute("INSERT INTO images(id, path, root, source, width, height, format, added_at) "
                  "VALUES ('img', 'a.png', ?, 'bench', 16, 16, 'PNG', 'now')", (str(root / "imgs"),))
        c.executemany("INSERT INTO samples(id, image_id, node_id, question, answer, status, created_at) "
                      "VALUES (?, 'img', ?, ?, 'yes', 'ok', 'now')",
                      [(f"s{i:06d}", node, f"Sample {i} asks what?") for i in range(n)])
    cfg = (root / "workbench.toml").read_text().replace("[select]\nmin_votes = 2", f"[select]\nmin_votes = {k}")
    for i, m in enumerate(models):
        cfg += (f'\n[endpoints.r{i}]\nbase_url = "{url}"\nmodel = "{m}"\nmax_concurrency = 16\n'
                f'\n[[referees]]\nname = "r{i}"\nendpoint = "r{i}"\n')
    cfg += f"\n[referee]\naudit_fraction = {audit}\n"
    (root / "workbench.toml").write_text(cfg)
    return Workspace.open(root)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--pass-rates", default="0.8,0.7,0.6")
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--audit", type=float, default=0.05)
    a = ap.parse_args()
    rates = [float(x) for x in a.pass_rates.split(",")]
    models = [f"judge-{i}" for i in range(len(rates))]
    rate_of = dict(zip(models, rates))

    def script(req):
        q = re.search(r"Sample (\d+) asks", req.text).group(1)
        h = int(hashlib.sha256(f"{req.model}|{q}".encode()).hexdigest()[:8], 16) / 16 ** 8
        return "1" if h < rate_of[req.model] else "0"

    with OpenAIServer(script, models=tuple(models)) as server, tempfile.TemporaryDirectory() as tmp:
        full = make_workspace(Path(tmp) / "full", server.base_url, a.samples, models, a.k, a.audit)
        run_referees(full, adaptive=False, progress=False)
        full_calls = len(server.requests)
        ada = make_workspace(Path(tmp) / "adaptive", server.base_url, a.samples, models, a.k, a.audit)
        run_referees(ada, adaptive=True, progress=False)
        ada_calls = len(server.requests) - full_calls
        select(full)
        select(ada)
        same = [tuple(r) for r in full.store.query("SELECT sample_id, selected FROM selections ORDER BY 1")] == \
               [tuple(r) for r in ada.store.query("SELECT sample_id, selected FROM selections ORDER BY 1")]
        exp = expected_calls(rates, a.k)
        exp_with_audit = a.samples * (a.audit * len(rates) + (1 - a.audit) * exp)
        print(f"{a.samples} samples, {len(rates)} referees with pass rates {rates}, {a.k}-of-{len(rates)}, "
              f"audit fraction {a.audit:g}")
        print(f"full voting:     {full_calls:6d} calls")
        print(f"adaptive voting: {ada_calls:6d} calls (expected for independent referees: {exp_with_audit:.0f})")
        print(f"calls saved: {full_calls - ada_calls} = {(full_calls - ada_calls) / full_calls:.1%} of full voting; "
              f"adaptive / full = {ada_calls / full_calls:.3f}")
        print(f"selections identical: {same}")


if __name__ == "__main__":
    main()
