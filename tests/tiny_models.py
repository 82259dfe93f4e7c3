"""Tiny transformers models with random weights, built offline by the tests (no hub access):
a LLaVA-architecture VLM (CLIP vision tower + Llama text model) and a text-only Llama, each with a
small word-level tokenizer and a chat template, saved with save_pretrained to a folder."""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> "
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for p in m['content'] %}"
    "{% if p['type'] == 'image' %}<image> {% else %}{{ p['text'] }} {% endif %}{% endfor %}{% endif %}"
    "<|end|> {% endfor %}{% if add_generation_prompt %}<|assistant|> {% endif %}")

WORDS = ["0", "1", "yes", "no", "maybe", "score", "the", "is", "a", "image", "task", "question", "answer"]


SMOLVLM_SPECIALS = ["<fake_token_around_image>", "<global-img>", "<end_of_utterance>"]


def _tokenizer(extra_specials=()):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<s>", "</s>", "<image>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>",
                *extra_specials]
    vocab = {t: i for i, t in enumerate(specials + WORDS)}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
                                  eos_token="</s>", additional_special_tokens=["<image>", *extra_specials])
    tok.chat_template = CHAT_TEMPLATE
    return tok


def make_tiny_vlm(folder: Path, seed: int = 0) -> Path:
    import torch
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    torch.manual_seed(seed)
    tok = _tokenizer()
    image_size, patch = 32, 16
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                              image_size=image_size, patch_size=patch, projection_dim=32)
    text = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                       pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_index=tok.convert_tokens_to_ids("<image>"),
                      vision_feature_select_strategy="full", vision_feature_layer=-1)
    model = LlavaForConditionalGeneration(cfg)
    improc = CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size,
                                                                               "width": image_size})
    proc = LlavaProcessor(image_processor=improc, tokenizer=tok, patch_size=patch,
                          vision_feature_select_strategy="full", chat_template=CHAT_TEMPLATE,
                          num_additional_image_tokens=1)
    folder = Path(folder)
    model.save_pretrained(folder)
    proc.save_pretrained(folder)
    return folder



def make_tiny_smolvlm(folder: Path, seed: int = 0) -> Path:
    """SmolVLM's architecture (Idefics3: SigLIP vision tower, pixel-shuffle connector, Llama text model) at a
    tiny size: a 32-px image is 16 patches, 4 image tokens after the 2x pixel shuffle."""
    import torch
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
        LlamaConfig,
    )
    from transformers.models.idefics3.configuration_idefics3 import Idefics3VisionConfig

    torch.manual_seed(seed)
    tok = _tokenizer(SMOLVLM_SPECIALS)
    vision = Idefics3VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                  image_size=32, patch_size=8)
    text = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
                       pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    cfg = Idefics3Config(vision_config=vision.to_dict(), text_config=text.to_dict(), scale_factor=2,
                         image_token_id=tok.convert_tokens_to_ids("<image>"), pad_token_id=tok.pad_token_id)
    model = Idefics3ForConditionalGeneration(cfg)
    improc = Idefics3ImageProcessor(size={"longest_edge": 32}, max_image_size={"longest_edge": 32},
                                    do_image_splitting=False)
    proc = Idefics3Processor(image_processor=improc, tokenizer=tok, image_seq_len=4, chat_template=CHAT_TEMPLATE)
    folder = Path(folder)
    model.save_pretrained(folder)
    proc.save_pretrained(folder)
    return folder


def make_tiny_llm(folder: Path, seed: int = 0) -> Path:
    """SmolLM2's architecture (Llama) at a tiny size, with the word-level tokenizer and chat template."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    tok = _tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
                      pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    folder = Path(folder)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def make_tiny_open_clip_repo(folder: Path, seed: int = 0) -> Path:
    """An open_clip hub repository (open_clip_config.json + open_clip_model.safetensors) holding the tiny CLIP
    (random weights, ~13 MB), loadable as `local-dir:` like the real ViT-B-32 repository."""
    import json

    import open_clip
    import torch
    from safetensors.torch import save_file

    from workbench.stages.embed.clip import TINY_MODEL_CONFIG

    torch.manual_seed(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"model_cfg": TINY_MODEL_CONFIG,
           "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711],
                              "interpolation": "bicubic", "resize_mode": "shortest"}}
    (folder / "open_clip_config.json").write_text(json.dumps(cfg, indent=1))
    model = open_clip.CLIP(**TINY_MODEL_CONFIG)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    return folder


def make_small_profile_repos(root: Path) -> dict[str, Path]:
    """Tiny stand-ins for every repository of the `small` profile, keyed by repo id."""
    from workbench.models.profiles import SMALL

    makers = {"clip": make_tiny_open_clip_repo, "vlm": make_tiny_smolvlm, "llm": make_tiny_llm}
    return {m.repo_id: makers[m.role](Path(root) / m.role) for m in SMALL.models}


# --- a fake model hub ---------------------------------------------------------------------------------------
# Serves folders as hub repositories over HTTP with the endpoints `snapshot_download` / `hf_hub_download`
# use: repo info (`/api/models/{repo}/revision/{rev}`), the file tree (`/api/models/{repo}/tree/{rev}`), and
# `HEAD`/`GET /{repo}/resolve/{rev}/{file}` with ETag (sha256 for LFS files, git blob sha1 otherwise),
# X-Repo-Commit, X-Linked-Etag/-Size, Content-Length and Range. Faults: `drop_once` (send part of a file,
# then close the connection, once per file) and `corrupt` (serve altered bytes under the true hash).

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LFS_SUFFIXES = (".safetensors", ".bin", ".pt")


def _git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    def __init__(self):
        self.repos: dict[str, dict[str, bytes]] = {}
        self.requests: list[tuple[str, str, str | None]] = []   # (method, path, Range header)
        self.drop_once: dict[str, float] = {}   # file -> share of its body sent before the connection drops
        self.corrupt: set[str] = set()
        self._dropped: set[str] = set()

    def add_repo(self, repo_id: str, folder) -> None:
        folder = Path(folder)
        self.repos[repo_id] = {str(p.relative_to(folder)): p.read_bytes()
                               for p in sorted(folder.rglob("*")) if p.is_file()}

    def commit(self, repo_id: str) -> str:
        h = hashlib.sha1()
        for name, data in sorted(self.repos[repo_id].items()):
            h.update(name.encode() + hashlib.sha256(data).digest())
        return h.hexdigest()

    def __enter__(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _json(self, obj, code=200):
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _route(self):
                path = self.path.split("?", 1)[0]
                hub.requests.append((self.command, path, self.headers.get("Range")))
                for repo in hub.repos:
                    if path in (f"/api/models/{repo}", ) or path.startswith(f"/api/models/{repo}/revision/"):
                        files = hub.repos[repo]
                        return self._json({"id": repo, "modelId": repo, "sha": hub.commit(repo),
                                           "siblings": [{"rfilename": n} for n in files]})
                    if path.startswith(f"/api/models/{repo}/tree/"):
                        out = []
                        for n, data in hub.repos[repo].items():
                            e = {"type": "file", "path": n, "size": len(data), "oid": _git_sha1(data)}
                            if n.endswith(LFS_SUFFIXES):
                                e["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data),
                                            "pointerSize": 134}
                            out.append(e)
                        return self._json(out)
                    m = re.fullmatch(rf"/{re.escape(repo)}/resolve/[^/]+/(.+)", path)
                    if m:
                        return self._file(repo, m.group(1))
                return self._json({"error": "Repository not found"}, 404)

            def _file(self, repo, name):
                data = hub.repos[repo].get(name)
                if data is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                lfs = name.endswith(LFS_SUFFIXES)
                etag = hashlib.sha256(data).hexdigest() if lfs else _git_sha1(data)
                if name in hub.corrupt:
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                start = 0
                rng = self.headers.get("Range")
                if rng and self.command == "GET":
                    start = int(re.match(r"bytes=(\d+)-", rng).group(1))
                body = data[start:]
                self.send_response(206 if start else 200)
                self.send_header("ETag", f'"{etag}"')
                self.send_header("X-Repo-Commit", hub.commit(repo))
                if lfs:
                    self.send_header("X-Linked-Etag", f'"{etag}"')
                    self.send_header("X-Linked-Size", str(len(data)))
                self.send_header("Accept-Ranges", "bytes")
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command == "HEAD":
                    return
                if name in hub.drop_once and name not in hub._dropped and len(body) > 1:
                    hub._dropped.add(name)
                    self.wfile.write(body[: int(len(body) * hub.drop_once[name])])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.wfile.write(body)

            do_GET = do_HEAD = _route

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
