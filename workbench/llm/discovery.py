"""Finding a local OpenAI-compatible server where practitioners usually run one.

Probes `GET /v1/models` on 127.0.0.1 at the usual ports (Ollama 11434, llama.cpp server 8080,
vLLM 8000, LM Studio 1234) with a short timeout. Loopback only; nothing else is contacted.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass

LOCAL_SERVERS = [("ollama", 11434), ("llama.cpp", 8080), ("vllm", 8000), ("lm-studio", 1234)]


@dataclass
class LocalServer:
    kind: str
    base_url: str
    models: list[str]


def probe(base_url: str, timeout: float = 0.5, api_key: str | None = None) -> list[str] | None:
    """The model ids an OpenAI-compatible server lists, or None if it does not answer as one."""
    req = urllib.request.Request(base_url.rstrip("/") + "/models",
                                 headers={"Authorization": f"Bearer {api_key}"} if api_key else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            data = json.loads(resp.read(1_000_000))
    except (urllib.error.URLError, OSError, ValueError, TimeoutError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        return None
    return [str(m.get("id")) for m in data["data"] if isinstance(m, dict) and m.get("id")]


def find_local_server(timeout: float = 0.3) -> LocalServer | None:
    if os.environ.get("WORKBENCH_NO_LOCAL_PROBE"):
        return None
    for kind, port in LOCAL_SERVERS:
        base = f"http://127.0.0.1:{port}/v1"
        models = probe(base, timeout=timeout)
        if models is not None:
            return LocalServer(kind, base, models)
    return None
