"""Per-stage throughput of the `small` model profile on this CPU, with random weights of the real
architectures and configurations (the cost of a forward pass does not depend on the weights' values),
built offline; nothing is downloaded.

Stages and what one unit is:
- CLIP ViT-B-32 (open_clip `laion2b_s34b_b79k` architecture): images/s (224 px, batch 32) and task texts/s.
- VLM SmolVLM-256M-Instruct (Idefics3: SigLIP 512 px + SmolLM2-135M), one 512-px tile = 64 image tokens:
  a filter/referee-like call (64 image + 250 text tokens in, N tokens out) at batch 1 and batch 4.
  `--vlm-500m` adds SmolVLM-500M (SmolLM2-360M text model), `--qwen2vl` adds Qwen2-VL-2B-Instruct (448 px =
  256 image tokens) for the choice of the profile's VLM.
- LLM SmolLM2-360M-Instruct (expansion): 300 tokens in, N out, batch 1 and 4.
Ratios printed: batch 4 vs batch 1 (rows/s), and each model vs the 256M VLM. From these the demo's time is
estimated for its row counts (printed at the end).

    .venv/bin/python benchmarks/bench_local_models.py [--new-tokens 32] [--vlm-500m] [--qwen2vl]

On a shared machine the figures move with the load (check `uptime`): run it when the cores are idle, and
compare only figures from the same run.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def smollm2(size: str):
    from transformers import LlamaConfig

    dims = {"135m": (576, 1536, 30, 9, 3), "360m": (960, 2560, 32, 15, 5)}[size]
    h, inter, layers, heads, kv = dims
    return LlamaConfig(vocab_size=49280, hidden_size=h, intermediate_size=inter, num_hidden_layers=layers,
                       num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=8192,
                       rope_theta=100000.0, tie_word_embeddings=True, pad_token_id=2, eos_token_id=2, bos_token_id=1)


def smolvlm(text_size: str):
    from transformers import Idefics3Config
    from transformers.models.idefics3.configuration_idefics3 import Idefics3VisionConfig

    vision = Idefics3VisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                  num_attention_heads=12, image_size=512, patch_size=16)
    return Idefics3Config(vision_config=vision.to_dict(), text_config=smollm2(text_size).to_dict(), scale_factor=4,
                          image_token_id=49190, pad_token_id=2)


def timed_generate(model, inputs, new_tokens):
    import torch

    with torch.inference_mode():
        t0 = time.perf_counter()
        model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                       pad_token_id=2)
        return time.perf_counter() - t0


def bench_text(model, batch, n_in, new_tokens):
    import torch

    ids = torch.randint(100, 49000, (batch, n_in))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    timed_generate(model, {k: v[:, :16] for k, v in inputs.items()}, 2)   # warm-up
    prefill = timed_generate(model, inputs, 1)
    total = timed_generate(model, inputs, new_tokens)
    return prefill, total


def bench_idefics3(model, cfg, batch, n_text, new_tokens):
    import torch

    n_img = (cfg.vision_config.image_size // cfg.vision_config.patch_size) ** 2 // cfg.scale_factor ** 2
    ids = torch.randint(100, 49000, (batch, n_text + n_img))
    ids[:, 5:5 + n_img] = cfg.image_token_id
    side = cfg.vision_config.image_size
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
              "pixel_values": torch.randn(batch, 1, 3, side, side),
              "pixel_attention_mask": torch.ones(batch, 1, side, side, dtype=torch.bool)}
    timed_generate(model, inputs, 1)   # warm-up
    prefill = timed_generate(model, inputs, 1)
    total = timed_generate(model, inputs, new_tokens)
    return prefill, total, n_img


def bench_qwen2vl(new_tokens):
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    cfg = Qwen2VLConfig(
        text_config={"vocab_size": 151936, "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
                         "num_attention_heads": 12, "num_key_value_heads": 2, "max_position_embeddings": 32768,
                         "rope_theta": 1000000.0, "tie_word_embeddings": True, "rope_scaling": {"type": "mrope",
                                                                                       "mrope_section": [16, 24, 24]}},
        vision_config={"depth": 32, "embed_dim": 1280, "hidden_size": 1536, "num_heads": 16, "patch_size": 14,
                           "spatial_merge_size": 2, "in_chans": 3, "temporal_patch_size": 2},
        image_token_id=151655, vision_start_token_id=151652, vision_end_token_id=151653)
    model = Qwen2VLForConditionalGeneration(cfg).eval()
    grid = 448 // 14
    n_img = grid * grid // 4
    ids = torch.randint(100, 150000, (1, 250 + n_img + 2))
    ids[0, 4] = cfg.vision_start_token_id
    ids[0, 5:5 + n_img] = cfg.image_token_id
    ids[0, 5 + n_img] = cfg.vision_end_token_id
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
              "pixel_values": torch.randn(grid * grid, 3 * 2 * 14 * 14),
              "image_grid_thw": torch.tensor([[1, grid, grid]])}
    prefill = timed_generate(model, inputs, 1)
    total = timed_generate(model, inputs, new_tokens)
    return prefill, total, n_img


def bench_clip():
    import open_clip
    import torch

    model = open_clip.create_model("ViT-B-32", pretrained=None).eval()
    tok = open_clip.get_tokenizer("ViT-B-32")
    x = torch.randn(32, 3, 224, 224)
    texts = tok(["optical character recognition~scene text recognition~street sign reading"] * 64)
    with torch.inference_mode():
        model.encode_image(x[:4])
        t0 = time.perf_counter()
        model.encode_image(x)
        img_s = 32 / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        model.encode_text(texts)
        txt_s = 64 / (time.perf_counter() - t0)
    return img_s, txt_s


def per_row(prefill: float, total: float, batch: int, n: int, tokens: int) -> float:
    """Seconds per row for a call producing `tokens` new tokens at this batch size (prefill + decode steps)."""
    step = max(total - prefill, 0.0) / max(n - 1, 1)
    return (prefill + step * max(tokens - 1, 0)) / batch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--vlm-500m", action="store_true")
    ap.add_argument("--qwen2vl", action="store_true")
    args = ap.parse_args()
    import torch
    from transformers import Idefics3ForConditionalGeneration, LlamaForCausalLM

    from workbench.llm.local import preferred_dtype

    torch.manual_seed(0)
    n = args.new_tokens
    print(f"torch threads: {torch.get_num_threads()}, cpu capability: {torch.backends.cpu.get_cpu_capability()}, "
          f"local dtype: {preferred_dtype('cpu')}")
    img_s, txt_s = bench_clip()
    print(f"CLIP ViT-B-32: {img_s:.1f} images/s (encoder only, batch 32), {txt_s:.0f} task texts/s (77 tokens)")

    m = {}
    vlms = [("SmolVLM-256M", "135m")] + ([("SmolVLM-500M", "360m")] if args.vlm_500m else [])
    for name, size in vlms:
        cfg = smolvlm(size)
        model = Idefics3ForConditionalGeneration(cfg).eval()
        for b in (1, 4):
            prefill, total, n_img = bench_idefics3(model, cfg, b, 250, n)
            m[(name, b)] = (prefill, total, b)
            print(f"{name} batch {b}: {n_img} image + 250 text tokens in, {n} out: prefill {prefill:.2f}s, "
                  f"call {total:.2f}s -> {b / total:.3f} rows/s")
        print(f"  batch 4 vs batch 1: {m[(name, 1)][1] * 4 / m[(name, 4)][1]:.2f}x rows/s")
        del model
    if args.qwen2vl:
        prefill, total, n_img = bench_qwen2vl(n)
        print(f"Qwen2-VL-2B batch 1: {n_img} image + 250 text tokens in, {n} out: prefill {prefill:.2f}s, call "
              f"{total:.2f}s -> {m[('SmolVLM-256M', 1)][1] / total:.2f}x the rows/s of SmolVLM-256M")
    llm = LlamaForCausalLM(smollm2("360m")).eval()
    for b in (1, 4):
        prefill, total = bench_text(llm, b, 300, n)
        m[("SmolLM2-360M", b)] = (prefill, total, b)
        print(f"SmolLM2-360M batch {b}: 300 tokens in, {n} out: prefill {prefill:.2f}s, call {total:.2f}s -> "
              f"{b / total:.3f} rows/s")
    print(f"  batch 4 vs batch 1: {m[('SmolLM2-360M', 1)][1] * 4 / m[('SmolLM2-360M', 4)][1]:.2f}x rows/s")

    # The demo's local run: 6 expansion calls (~120 tokens each), 4 images: filter (~30 tokens), Q&A (~150),
    # two referees on ~2 samples per image (~3 tokens); the faster batch size of each model.
    def row(name, tokens):
        return min(per_row(*m[(name, b)][:2], b, n, tokens) for b in (1, 4))
    est = {"expand": 6 * row("SmolLM2-360M", 120), "filter": 4 * row("SmolVLM-256M", 30),
           "qa": 4 * row("SmolVLM-256M", 150), "referees": 2 * 8 * row("SmolVLM-256M", 3),
           "clip": 17 / img_s + 100 / txt_s}
    print("estimated local stage times of the demo (s): " + ", ".join(f"{k} {v:.0f}" for k, v in est.items())
          + f"; total ~{sum(est.values()) / 60:.1f} min, plus loading the models (~10 s) and the offline steps")


if __name__ == "__main__":
    main()
