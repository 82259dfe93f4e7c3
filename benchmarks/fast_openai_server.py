"""A minimal asyncio OpenAI-compatible server for throughput benchmarks: one event loop, no threads,
a fixed reply after a fixed latency. `tests/openai_server.py` (threads, scripting, failure injection) is
what the tests use; this one exists so that a benchmark of the client side is not capped by the server.

    python benchmarks/fast_openai_server.py --latency 0.2 --reply "a, b, c"   # prints its base URL
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys


def _response(reply: str, model: str) -> bytes:
    body = json.dumps({"id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": model,
                       "choices": [{"index": 0, "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": reply}}],
                       "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}}).encode()
    head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: keep-alive\r\n\r\n").encode()
    return head + body


async def serve(latency: float, reply: str, port: int = 0) -> None:
    ok = _response(reply, "bench-model")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if length:
                    await reader.readexactly(length)
                await asyncio.sleep(latency)
                writer.write(ok)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    print(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--reply", default="ok")
    ap.add_argument("--port", type=int, default=0)
    a = ap.parse_args()
    try:
        asyncio.run(serve(a.latency, a.reply, a.port))
    except KeyboardInterrupt:
        sys.exit(0)
