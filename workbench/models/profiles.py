"""Model profiles: which hub repositories the workbench pulls, what each enables, how it is run.

`small` runs every stage on a laptop CPU (the demo's profile). `paper` is the paper's CLIP plus the
vLLM commands that serve open VLM referees of the paper's kind behind OpenAI-compatible endpoints;
the workbench never starts GPU servers itself.

Why these small models (speed: `benchmarks/bench_local_models.py`, random weights of the real configurations
on 2 CPU cores, which cost what the real weights cost; quality: the model cards):
- CLIP ViT-B-32 `laion2b_s34b_b79k` (open_clip's hub repository): 151M parameters, 66.6% ImageNet zero-shot;
  ~15 images/s on 2 cores. ViT-L-14 (the paper's) is ~4.5x the compute per image: the `paper` profile.
- SmolVLM-256M-Instruct (Idefics3: SigLIP-93M + SmolLM2-135M): the smallest instruct VLM that takes a chat
  prompt with an image. Processed as one 512-px tile (64 image tokens, `do_image_splitting` off) a filter
  call (~250 text tokens in, ~30 out) takes ~4-5 s here. SmolVLM-500M costs ~2x per call; Qwen2-VL-2B (the
  better model: MMMU 41 vs ~29 for SmolVLM-256M, published) is ~9x the parameters and 256 image tokens at
  448 px: a GPU model, or a long CPU run (`--qwen2vl` in the benchmark measures it).
- SmolLM2-360M-Instruct for expansion: the 135M model restated the prompt's examples (README); the 360M
  instruct model scores IFEval 41.0 vs 31.6 for Qwen2.5-0.5B-Instruct in the SmolLM2 model card, at fewer
  parameters.
Replies of such small models are weak; the demo shows the whole pipeline running, not paper-quality data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from workbench.core.errors import WorkbenchError


@dataclass(frozen=True)
class ModelSpec:
    role: str                       # "clip", "vlm", "llm"
    repo_id: str
    revision: str = "main"
    allow_patterns: tuple[str, ...] = ()
    ignore_patterns: tuple[str, ...] = ()
    required: tuple[str, ...] = ()  # globs that must each match a file for the model to count as present
    params_m: int = 0               # parameters, millions (memory check and `models list`)
    download_mb: int = 0            # approximate size of the pulled files
    enables: str = ""
    note: str = ""
    processor_kwargs: tuple[tuple[str, object], ...] = ()   # passed to the processor by the local backend
    batch_size: int = 1             # rows per local generate() call (written as the endpoint's max_concurrency)


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    models: tuple[ModelSpec, ...]
    served: tuple[str, ...] = field(default=())   # documented commands for endpoints the workbench does not start

    def model(self, role: str) -> ModelSpec | None:
        return next((m for m in self.models if m.role == role), None)


_HF_TEXT = ("*.json", "*.safetensors", "*.txt", "*.jinja", "tokenizer.model")
_NO_EXPORTS = ("onnx/*", "*.onnx", "*.gguf", "runs/*", "*.msgpack", "*.h5", "*.pth", "*.bin")

SMALL = Profile(
    name="small",
    description="runs every stage on a laptop CPU (about 2 GB to download)",
    models=(
        ModelSpec("clip", "laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
                  allow_patterns=("open_clip_config.json", "open_clip_model.safetensors"),
                  required=("open_clip_config.json", "open_clip_model.safetensors"),
                  params_m=151, download_mb=605, enables="embed, match",
                  note="open_clip ViT-B-32 laion2b_s34b_b79k"),
        ModelSpec("vlm", "HuggingFaceTB/SmolVLM-256M-Instruct", allow_patterns=_HF_TEXT, ignore_patterns=_NO_EXPORTS,
                  required=("config.json", "*.safetensors", "tokenizer*", "*processor_config.json"),
                  params_m=256, download_mb=520, enables="filter, qa, referees",
                  # one 512-px tile (64 image tokens) instead of up to 16 tiles + a global view: ~10x less prefill
                  processor_kwargs=(("do_image_splitting", False),),
                  # prefill-bound (64 image + ~250 text tokens): a batch of 4 was no faster per row on 2 cores
                  batch_size=1),
        ModelSpec("llm", "HuggingFaceTB/SmolLM2-360M-Instruct", allow_patterns=_HF_TEXT, ignore_patterns=_NO_EXPORTS,
                  required=("config.json", "*.safetensors", "tokenizer*"),
                  params_m=362, download_mb=730, enables="expand",
                  batch_size=4),   # decode-bound: one decoding step for 4 rows costs little more than for 1
    ),
)

PAPER = Profile(
    name="paper",
    description="the paper's CLIP (ViT-L/14); referees are served by vLLM on a GPU (commands below)",
    models=(
        ModelSpec("clip", "timm/vit_large_patch14_clip_224.openai",
                  allow_patterns=("open_clip_config.json", "open_clip_model.safetensors"),
                  required=("open_clip_config.json", "open_clip_model.safetensors"),
                  params_m=428, download_mb=1710, enables="embed, match", note="open_clip ViT-L-14 openai"),
    ),
    served=(
        "# referees of the paper's kind, each behind an OpenAI-compatible endpoint (one GPU box; not started by "
        "the workbench)",
        "vllm serve THUDM/glm-4v-9b --trust-remote-code --port 8001 --max-model-len 8192 --served-model-name glm-4v-9b",
        "vllm serve OpenGVLab/InternVL2-26B --trust-remote-code --port 8002 --max-model-len 8192 "
        "--served-model-name internvl2   # InternVL2-8B on a 24 GB GPU",
        "# then in workbench.toml:",
        "[endpoints.glm4v]  base_url = \"http://GPU-BOX:8001/v1\"  model = \"glm-4v-9b\"",
        "[endpoints.internvl]  base_url = \"http://GPU-BOX:8002/v1\"  model = \"internvl2\"",
        "[[referees]] name = \"glm4v\" endpoint = \"glm4v\"     "
        "[[referees]] name = \"internvl\" endpoint = \"internvl\"",
    ),
)

PROFILES = {p.name: p for p in (SMALL, PAPER)}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise WorkbenchError(f"unknown model profile {name!r}; pick one of: {', '.join(PROFILES)}") from None


def pull_command(profile: str = "small") -> str:
    return f"workbench models pull --profile {profile}"


def spec_for_path(path) -> ModelSpec | None:
    """The profile model whose hub-cache folder holds `path` (a pulled snapshot), if any."""
    text = str(path)
    for prof in PROFILES.values():
        for m in prof.models:
            if "models--" + m.repo_id.replace("/", "--") in text:
                return m
    return None
