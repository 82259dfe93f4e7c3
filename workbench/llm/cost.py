"""Prices and token estimates: a built-in price table per model, overridable per endpoint or in config.

A price is `(input, output)` USD per million tokens, or None when it is unknown. Lookup
(`price_for`): the endpoint's `price_input_per_mtok`/`price_output_per_mtok` > config `[prices]`
> a local endpoint (kind "transformers", or a base URL on localhost/127.x/::1) is free > the
built-in table > unknown. An unknown price is never guessed: `cost_usd` returns None and the
caller says "cost unknown". A local server that forwards to a paid API (a LiteLLM proxy, a
tunnel) must be given its price explicitly, or it is counted as free.

Token counts for dry runs are estimates (about 4 characters per token, plus a fixed charge per
image); real calls record the usage the endpoint reports.
"""

from __future__ import annotations

import ipaddress
import math
from urllib.parse import urlsplit

Price = tuple[float, float]

# USD per million (input, output) tokens, by exact model name. Other models: see price_for.
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


def is_local_url(url: str | None) -> bool:
    """True for a URL whose host is this machine: localhost (or *.localhost), 127.0.0.0/8, ::1, 0.0.0.0."""
    if not url:
        return False
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return False
    if not host:
        return False
    host = host.lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_unspecified


def is_local_endpoint(endpoint, base_url: str | None = None) -> bool:
    """An in-process model (kind "transformers") or a server on this machine."""
    if getattr(endpoint, "kind", None) == "transformers":
        return True
    return is_local_url(base_url if base_url is not None else getattr(endpoint, "base_url", None))


def price_for(model: str, *, endpoint=None, overrides: dict | None = None,
              base_url: str | None = None) -> Price | None:
    """(input, output) USD per million tokens, or None when unknown.

    endpoint setting (one side set: the other is 0) > config [prices] > local endpoint: (0, 0) >
    built-in table > None. `endpoint` is an EndpointConfig; `base_url` the URL it resolves to
    (default: endpoint.base_url), which decides whether it is local.
    """
    if endpoint is not None and (endpoint.price_input_per_mtok is not None
                                 or endpoint.price_output_per_mtok is not None):
        return (float(endpoint.price_input_per_mtok or 0.0), float(endpoint.price_output_per_mtok or 0.0))
    if overrides and model in overrides:
        p = overrides[model]
        return float(p[0]), float(p[1])
    if endpoint is not None and is_local_endpoint(endpoint, base_url):
        return (0.0, 0.0)
    return PRICES.get(model)


def cost_usd(price: Price | None, prompt_tokens: int | None, completion_tokens: int | None) -> float | None:
    """USD for the tokens at `price`; None when the price is unknown."""
    if price is None:
        return None
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
