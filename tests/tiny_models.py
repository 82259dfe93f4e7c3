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


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<s>", "</s>", "<image>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"]
    vocab = {t: i for i, t in enumerate(specials + WORDS)}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
                                  eos_token="</s>", additional_special_tokens=["<image>"])
    tok.chat_template = CHAT_TEMPLATE
    return tok


def make_tiny_vlm(folder: Path, seed: int = 0) -> Path:
    import torch
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)

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
