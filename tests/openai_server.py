"""A local OpenAI-compatible HTTP server for tests: real HTTP, real client, scripted replies.

Serves `POST /v1/chat/completions` and `GET /v1/models` on 127.0.0.1 at a random port from a
thread (standard library `http.server`, HTTP/1.1 keep-alive). Every reply is decided by a
function of the request, so a test can script answers keyed on message content (text or
image parts) and inject failures:

    from tests.openai_server import OpenAIServer, Reply

    def script(req):                       # req: ChatRequest (see below)
        if "Counting" in req.text:         # all text parts of all messages, joined
            return Reply('["Count people", "Count cars"]')
        if req.images:                     # data URLs of image parts, in order
            return Reply("1")
        if req.attempt == 1:               # first time this exact request body is seen
            return Reply(status=429, headers={"Retry-After": "0.1"})
        return Reply("[]", finish_reason="length", latency=0.05)

    with OpenAIServer(script) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="test")
        ...
        assert len(server.requests) == 3   # every request, failed ones included

A reply may instead be a plain string (an ordinary answer) or a dict used as the whole
response JSON. `Reply(hang=True)` sleeps until the server stops (or `hang_s`), to test
client timeouts. `server.default_latency` adds a delay to every reply.

Transport-level faults (what proxies and flaky servers send):

    Reply(raw='{"id": "x", "choi')                           # a truncated JSON body, status 200
    Reply(raw="<html>502 Bad Gateway</html>", content_type="text/html")   # a proxy's error page
    Reply("answer", trickle_s=0.2)     # the body one byte every 0.2 s (each read is quick; the whole is not)
    Reply("answer", echo_headers=True) # the request's headers echoed into the JSON body under "echo"
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    text: str = ""
    finish_reason: str = "stop"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    latency: float = 0.0
    hang: bool = False
    hang_s: float = 3600.0
    prompt_tokens: int | None = None       # None: a word count of the request
    completion_tokens: int | None = None   # None: a word count of the reply
    body: Any = None                       # a raw JSON body (overrides everything above)
    raw: str | bytes | None = None         # the body sent verbatim (overrides body and text)
    content_type: str = "application/json"
    trickle_s: float = 0.0                 # send the body one byte at a time, this long apart
    echo_headers: bool = False             # add {"echo": {"headers": <request headers>}} to the reply JSON


@dataclass
class ChatRequest:
    body: dict
    headers: dict[str, str]   # lower-case names
    attempt: int        # 1 for the first request with this exact body, 2 for its first retry, ...
    received_at: float

    @property
    def messages(self) -> list[dict]:
        return self.body.get("messages", [])

    @property
    def model(self) -> str:
        return self.body.get("model", "")

    def _parts(self):
        for m in self.messages:
            c = m.get("content")
            if isinstance(c, str):
                yield {"type": "text", "text": c}
            elif isinstance(c, list):
                yield from c

    @property
    def text(self) -> str:
        return "\n".join(p.get("text", "") for p in self._parts() if p.get("type") == "text")

    @property
    def images(self) -> list[str]:
        return [p["image_url"]["url"] for p in self._parts() if p.get("type") == "image_url"]


Script = Callable[[ChatRequest], "Reply | str | dict"]


class OpenAIServer:
    """Context manager; `base_url` ends with /v1. `requests` lists every ChatRequest received."""

    def __init__(self, script: Script | None = None, *, models: tuple[str, ...] = ("test-model",),
                 default_latency: float = 0.0):
        self.script = script or (lambda req: Reply("ok"))
        self.models = models
        self.default_latency = default_latency
        self.requests: list[ChatRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0          # the most requests being answered at once
        self._seen: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> OpenAIServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                if self.path.rstrip("/").endswith("/v1/models"):
                    data = {"object": "list", "data": [{"id": m, "object": "model", "owned_by": "test"}
                                                       for m in server.models]}
                    return self._send(200, data)
                self._send(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                try:
                    body = json.loads(raw)
                except ValueError:
                    return self._send(400, {"error": {"message": "bad JSON"}})
                req = server._record(raw, body, {k.lower(): v for k, v in self.headers.items()})
                try:
                    reply = server.script(req)
                except Exception as exc:  # a broken script is a 500 the test can see
                    reply = Reply(status=500, text=f"script error: {exc!r}")
                if isinstance(reply, str):
                    reply = Reply(reply)
                elif isinstance(reply, dict):
                    reply = Reply(body=reply)
                delay = reply.latency + server.default_latency
                with server._lock:
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    self._reply(req, reply, delay)
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def _reply(self, req, reply, delay):
                if reply.hang:
                    server._stop.wait(reply.hang_s)
                    return
                if delay:
                    time.sleep(delay)

                def send(status, data):
                    return self._send(status, data, reply.headers, content_type=reply.content_type,
                                      trickle_s=reply.trickle_s)

                if reply.raw is not None:
                    raw = reply.raw.encode() if isinstance(reply.raw, str) else reply.raw
                    return send(reply.status, raw)
                if reply.body is not None:
                    return send(reply.status, reply.body)
                if reply.status != 200:
                    err = {"error": {"message": reply.text or f"scripted status {reply.status}",
                                     "type": "scripted", "code": reply.status}}
                    return send(reply.status, err)
                pt = reply.prompt_tokens if reply.prompt_tokens is not None else len(req.text.split())
                ct = reply.completion_tokens if reply.completion_tokens is not None else len(reply.text.split())
                data = {
                    "id": f"chatcmpl-{len(server.requests)}", "object": "chat.completion",
                    "created": int(time.time()), "model": req.model or server.models[0],
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.text},
                                 "finish_reason": reply.finish_reason}],
                    "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct},
                }
                if reply.echo_headers:
                    data["echo"] = {"headers": req.headers}
                send(200, data)

            def _send(self, status, data, headers=None, *, content_type="application/json", trickle_s=0.0):
                payload = data if isinstance(data, bytes) else json.dumps(data).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(payload)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    if not trickle_s:
                        self.wfile.write(payload)
                        return
                    self.wfile.flush()
                    for i in range(len(payload)):
                        if server._stop.is_set():
                            return
                        self.wfile.write(payload[i:i + 1])
                        self.wfile.flush()
                        server._stop.wait(trickle_s)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout); nothing to do

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 256   # many clients connect at once in the benchmarks

        self._httpd = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True, name="openai-test-server")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- state ---------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _record(self, raw: bytes, body: dict, headers: dict) -> ChatRequest:
        with self._lock:
            n = self._seen.get(raw, 0) + 1
            self._seen[raw] = n
            req = ChatRequest(body=body, headers=headers, attempt=n, received_at=time.monotonic())
            self.requests.append(req)
        return req


def main(argv: list[str] | None = None) -> None:
    """Serve from its own process (benchmarks: keeps the server off the client's GIL).

    python tests/openai_server.py --latency 0.2 --reply "a, b, c"   # prints the base URL, serves until killed
    """
    import argparse
    import sys

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--reply", default="ok")
    a = ap.parse_args(argv)
    server = OpenAIServer(lambda req: Reply(a.reply), default_latency=a.latency).start()
    print(server.base_url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        sys.exit(0)


if __name__ == "__main__":
    main()
