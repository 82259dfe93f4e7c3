"""Prices and token estimates: a built-in price table per model, overridable per endpoint or in config.

Token counts for dry runs are estimates (about 4 characters per token, plus a fixed charge per
image); real calls record the usage the endpoint reports.
"""

from __future__ import annotations

import math

# USD per million (input, output) tokens. Unknown models cost 0 (a local server) unless configured.
PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-2024-05-13": (5.0, 15.0),
    "gpt-4o-2024-08-06": (2.5, 10.0),
    "gpt-4o": (2.5, 10.0),
    "gpt-4o-mini": (0.15, 0.6),
    "gpt-4.1": (2.0, 8.0),
    "gpt-4.1-mini": (0.4, 1.6),
    "gpt-4.1-nano": (0.1, 0.4),
}
CHARS_PER_TOKEN = 4.0
TOKENS_PER_IMAGE = 765      # a 512x512-ish image at high detail in OpenAI's accounting
TOKENS_PER_MESSAGE = 4


def price_for(model: str, *, endpoint=None, overrides: dict | None = None) -> tuple[float, float]:
    """(input, output) USD per million tokens: endpoint setting > config [prices] > built-in table > 0."""
    if endpoint is not None and (endpoint.price_input_per_mtok is not None
                                 or endpoint.price_output_per_mtok is not None):
        return (endpoint.price_input_per_mtok or 0.0, endpoint.price_output_per_mtok or 0.0)
    if overrides and model in overrides:
        p = overrides[model]
        return float(p[0]), float(p[1])
    return PRICES.get(model, (0.0, 0.0))


def cost_usd(price: tuple[float, float], prompt_tokens: int | None, completion_tokens: int | None) -> float:
    return ((prompt_tokens or 0) * price[0] + (completion_tokens or 0) * price[1]) / 1e6


def estimate_prompt_tokens(messages: list[dict]) -> int:
    chars, images = 0, 0
    for m in messages:
        c = m.get("content")
        if isinstance(c, str):
            chars += len(c)
        elif isinstance(c, list):
            for p in c:
                if p.get("type") == "text":
                    chars += len(p.get("text", ""))
                elif p.get("type") == "image_url":
                    images += 1
    return math.ceil(chars / CHARS_PER_TOKEN) + images * TOKENS_PER_IMAGE + TOKENS_PER_MESSAGE * len(messages)
