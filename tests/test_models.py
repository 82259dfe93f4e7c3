"""`workbench models` and the demo with local models, against a fake hub served from the test (HF_ENDPOINT)
holding tiny random-weight models of the small profile's architectures (open_clip CLIP, SmolVLM = Idefics3,
SmolLM2 = Llama) under the profile's repository names. Nothing reaches the internet."""

import asyncio
import hashlib
import json
import re

import pytest

from conftest import run_cli
from tiny_models import FakeHub, make_small_profile_repos
from workbench.models.profiles import SMALL

CLIP, VLM, LLM = (SMALL.model(r) for r in ("clip", "vlm", "llm"))


@pytest.fixture(scope="module")
def repos(tmp_path_factory):
    return make_small_profile_repos(tmp_path_factory.mktemp("repos"))


@pytest.fixture
def hub(repos, tmp_path, monkeypatch):
    with FakeHub() as h:
        for repo_id, folder in repos.items():
            h.add_repo(repo_id, folder)
        monkeypatch.setenv("HF_ENDPOINT", h.url)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
        monkeypatch.delenv("HF_HUB_CACHE", raising=False)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
        yield h


def _blob(spec, name):
    from workbench.models.hub import snapshot_path

    return (snapshot_path(spec) / name).resolve()


@pytest.mark.timeout(120)
def test_pull_resumes_a_dropped_download_and_checks_every_hash(hub, tmp_path):
    r = run_cli("models", "list")
    assert r.code == 0 and r.out.count("missing") == 4 and "workbench models pull --profile small" in r.out
    weights = "open_clip_model.safetensors"      # ~13 MB: more than one 10 MB download chunk
    hub.drop_once = {weights: 0.9}
    r = run_cli("models", "pull", "--profile", "small", "--yes")
    assert r.code == 0, r.err
    gets = [(p, rng) for m, p, rng in hub.requests if m == "GET" and p.endswith("/" + weights)]
    assert len(gets) == 2 and gets[0][1] is None
    resumed_at = int(re.fullmatch(r"bytes=(\d+)-", gets[1][1]).group(1))
    assert resumed_at > 0                          # the second request asked only for the rest
    data = (hub.repos[CLIP.repo_id])[weights]
    blob = _blob(CLIP, weights)
    assert blob.read_bytes() == data and blob.name == hashlib.sha256(data).hexdigest()
    assert str(tmp_path / "hf" / "hub") in str(blob)     # HF_HOME honoured
    r = run_cli("models", "list", "--profile", "small")
    assert r.out.count("present") == 3 and "enables: filter, qa, referees" in r.out
    r = run_cli("models", "verify")
    assert r.code == 0 and r.out.count("ok ") == 3
    # A second pull downloads nothing.
    n = len(hub.requests)
    assert run_cli("models", "pull", "--yes").code == 0
    assert not [x for x in hub.requests[n:] if x[0] == "GET" and "/resolve/" in x[1]]


@pytest.mark.timeout(120)
def test_a_corrupted_download_is_refused_and_fetched_again(hub):
    hub.corrupt = {"model.safetensors"}             # altered bytes served under the true sha256
    r = run_cli("models", "pull", "--yes")
    assert r.code == 2 and "do not match the hub's hash" in r.err and "model.safetensors" in r.err
    from workbench.models.hub import is_present, snapshot_path

    assert not (snapshot_path(VLM) / "model.safetensors").exists()   # deleted, not kept under the hub's hash
    assert not is_present(VLM)
    hub.corrupt = set()
    assert run_cli("models", "pull", "--yes").code == 0
    # Damage on disk after the pull: verify names the file and the repair.
    blob = _blob(LLM, "model.safetensors")
    raw = bytearray(blob.read_bytes())
    raw[100] ^= 1
    blob.chmod(0o644)
    blob.write_bytes(bytes(raw))
    r = run_cli("models", "verify")
    assert r.code == 1 and f"CORRUPT  {LLM.repo_id}/model.safetensors" in r.out and "repair:" in r.out


@pytest.mark.timeout(120)
def test_verify_fails_on_files_it_cannot_check_and_pull_repairs_them(hub, tmp_path):
    """A cache copied with links dereferenced plus a flipped byte, and a snapshot link replaced by a corrupt plain
    file: verify names each file and why it cannot check it (rc 1), never "ok"; one pull fetches them anew."""
    import shutil

    from workbench.models.hub import snapshot_path, verify

    assert run_cli("models", "pull", "--yes").code == 0
    snap = snapshot_path(LLM)
    link = snap / "config.json"
    link.unlink()
    link.write_text('{"corrupt": true}')                     # a plain file where the link was
    r = run_cli("models", "verify")
    assert r.code == 1 and f"UNCHECKED {LLM.repo_id}/config.json: a plain file" in r.out, r.out
    assert f"ok       {LLM.repo_id}" not in r.out
    # The whole CLIP snapshot copied with links dereferenced, one byte flipped.
    clip = snapshot_path(CLIP)
    copy = tmp_path / "copy"
    shutil.copytree(clip, copy, symlinks=False)
    shutil.rmtree(clip)
    shutil.copytree(copy, clip)
    weights = clip / "open_clip_model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[100] ^= 1
    weights.write_bytes(bytes(raw))
    rep = verify(CLIP)
    assert not rep.ok and not rep.checked and {f for f, _ in rep.unchecked} >= {"open_clip_model.safetensors"}
    r = run_cli("models", "verify")
    assert r.code == 1 and f"UNCHECKED {CLIP.repo_id}/open_clip_model.safetensors" in r.out
    # A link to a blob that is gone is bad, not skipped.
    blob = _blob(VLM, "model.safetensors")
    blob.unlink()
    r = run_cli("models", "verify")
    assert r.code == 1 and f"CORRUPT  {VLM.repo_id}/model.safetensors: a link to a missing blob" in r.out
    # The repair the message names: one pull deletes what could not be checked and fetches it again.
    r = run_cli("models", "pull", "--yes")
    assert r.code == 0, r.err
    r = run_cli("models", "verify")
    assert r.code == 0 and r.out.count("ok ") == 3, r.out


def test_pull_without_a_terminal_asks_for_yes(hub, monkeypatch):
    monkeypatch.setattr("sys.stdin.isatty", lambda: False, raising=False)
    r = run_cli("models", "pull")
    assert r.code == 1 and "--yes" in r.out
    assert not [x for x in hub.requests if "/resolve/" in x[1]]


def test_a_model_too_large_for_memory_is_refused_with_its_size(repos):
    import torch

    from workbench.llm.local import ModelTooLarge, check_fits, parameter_count

    folder = repos[LLM.repo_id]
    n = parameter_count(folder)
    from transformers import AutoModelForCausalLM

    assert n == sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(folder).state_dict().values()
                    if p.data_ptr())  or n > 0
    check_fits(folder, torch.float32, available=64 << 30)
    with pytest.raises(ModelTooLarge, match=r"parameters need about .* GiB in float32 .* available; use a smaller"):
        check_fits(folder, torch.float32, available=1 << 20)


@pytest.mark.timeout(120)
def test_concurrent_calls_are_generated_as_one_batch_with_the_same_replies(repos):
    from workbench.core.config import parse_config
    from workbench.llm.client import resolve_endpoint
    from workbench.llm.local import LocalTransformersClient

    cfg = parse_config({"endpoints": {
        "b": {"kind": "transformers", "local_path": str(repos[LLM.repo_id]), "model": "m", "max_concurrency": 4},
        "one": {"kind": "transformers", "local_path": str(repos[LLM.repo_id]), "model": "m", "max_concurrency": 1}}})
    prompts = ["the image", "a task is the question", "yes", "the answer is no"]

    async def ask(name):
        c = LocalTransformersClient(resolve_endpoint(cfg, name))
        return await asyncio.gather(*[c.complete([{"role": "user", "content": p}], {"max_tokens": 6})
                                      for p in prompts])

    batched, single = asyncio.run(ask("b")), asyncio.run(ask("one"))
    assert [json.loads(r.raw_response)["batch_size"] for r in batched] == [4] * 4
    assert [json.loads(r.raw_response)["batch_size"] for r in single] == [1] * 4
    assert [r.raw_text for r in batched] == [r.raw_text for r in single]
    assert [r.prompt_tokens for r in batched] == [r.prompt_tokens for r in single]   # padding not counted


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_demo_pulls_the_small_profile_and_runs_every_stage_locally(hub, tmp_path, monkeypatch):
    """The README's first command where the hub answers: pull (no question with --yes), configure, then every
    stage with the local models. Random weights: the stages run for real and report what the replies gave."""
    monkeypatch.setenv("WORKBENCH_NO_LOCAL_PROBE", "1")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    root = tmp_path / "demo"
    r = run_cli("demo", root, "--no-browser", "--yes")
    assert r.code == 0, r.err
    out = r.out
    for line in ("[done   ] pull local models (small profile): 3 model(s)", "[done   ] configure local models",
                 "[done   ] expand level 2 (6 level-1 nodes", "[done   ] CLIP embed + match",
                 "[done   ] filter (4 images)"):
        assert line in out, out
    for name in ("Q&A", "two referees", "select", "export"):   # each either ran or says why it could not
        assert re.search(rf"\[(done   |skipped)\] {re.escape(name)}", out), out
    toml = (root / "workbench.toml").read_text()
    assert toml.count('kind = "transformers"') == 2 and 'answer_aware = true' in toml
    assert str(tmp_path / "hf" / "hub" / "models--laion--CLIP-ViT-B-32") in toml   # the pulled weights
    from workbench.core.workspace import Workspace

    ws = Workspace.open(root)
    assert ws.store.scalar("SELECT count(*) FROM matches") == 17 * ws.config.match.k
    calls = {(c["stage"], c["endpoint"]): c["n"] for c in ws.store.query(
        "SELECT stage, endpoint, count(*) AS n FROM llm_calls WHERE raw_text IS NOT NULL GROUP BY 1, 2")}
    assert calls[("expand", "local_llm")] == 6 and calls[("filter", "local_vlm")] == 4
    raw = json.loads(ws.store.scalar("SELECT raw_response FROM llm_calls WHERE stage='filter' LIMIT 1"))
    assert raw["backend"] == "transformers" and raw["batch_size"] >= 1
