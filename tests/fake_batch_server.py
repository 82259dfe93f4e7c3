"""A local fake of OpenAI's `/v1/files` and `/v1/batches` endpoints for tests (real `openai` client, real HTTP).

    from tests.fake_batch_server import FakeBatchServer, EXPIRE

    def script(req):                     # the ChatRequest of one JSONL line (tests/openai_server.py)
        return "1"                       # a reply text, a Reply(...), or EXPIRE (the line expires)

    with FakeBatchServer(script) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="test")
        ...
        server.hold = True               # batches stay in_progress until set back to False
        server.created                   # [(batch id, [custom_id, ...]), ...] in order of creation

Each `GET /v1/batches/{id}` moves a batch one state on: validating -> in_progress -> finalizing -> completed
(or expired, when a line was scripted EXPIRE: its line goes to the error file with code batch_expired, as
OpenAI does). Answers are computed when the batch finishes; the output and error files are then served by
`GET /v1/files/{id}/content`. `POST /v1/batches/{id}/cancel` -> cancelling -> cancelled (no output).
`fail_validation = N` makes the next N batches fail at validation (status failed, errors.data set).
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from openai_server import ChatRequest, Reply

EXPIRE = "__expire__"


class FakeBatchServer:
    def __init__(self, script, *, price_usage: tuple[int, int] | None = None):
        self.script = script
        self.usage = price_usage           # (prompt, completion) tokens per line; None: word counts
        self.files: dict[str, dict] = {}
        self.batches: dict[str, dict] = {}
        self.created: list[tuple[str, list[str]]] = []
        self.lines_answered: list[str] = []    # custom_ids answered (billed), over all batches
        self.retrieves = 0
        self.hold = False
        self.fail_validation = 0
        self._n = 0
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    # -- state machine ---------------------------------------------------------------------------
    def _id(self, prefix: str) -> str:
        with self._lock:
            self._n += 1
            return f"{prefix}_{self._n:04d}"

    def _add_file(self, data: bytes, purpose: str, filename: str) -> dict:
        fid = self._id("file")
        meta = {"id": fid, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                "filename": filename, "purpose": purpose, "status": "processed"}
        self.files[fid] = {"meta": meta, "data": data}
        return meta

    def _advance(self, b: dict) -> None:
        nxt = {"validating": "in_progress", "in_progress": "finalizing", "cancelling": "cancelled"}
        if b["status"] == "validating" and b.get("_fail"):
            b["status"] = "failed"
            b["errors"] = {"object": "list", "data": [{"code": "invalid_request", "message": "scripted validation "
                                                       "failure", "line": 1, "param": None}]}
            b["failed_at"] = int(time.time())
            return
        if b["status"] == "in_progress" and self.hold:
            return
        if b["status"] == "finalizing":
            self._finish(b)
            return
        if b["status"] in nxt:
            b["status"] = nxt[b["status"]]

    def _finish(self, b: dict) -> None:
        out, err, expired = [], [], False
        for raw in self.files[b["input_file_id"]]["data"].decode().splitlines():
            line = json.loads(raw)
            req = ChatRequest(body=line["body"], headers={}, attempt=1, received_at=time.monotonic())
            reply = self.script(req)
            cid = line["custom_id"]
            if reply == EXPIRE:
                expired = True
                err.append({"id": self._id("batch_req"), "custom_id": cid, "response": None,
                            "error": {"code": "batch_expired", "message": "This request could not be executed "
                                      "before the completion window expired."}})
                continue
            reply = Reply(reply) if isinstance(reply, str) else reply
            if reply.status != 200:
                err.append({"id": self._id("batch_req"), "custom_id": cid, "error": None,
                            "response": {"status_code": reply.status, "request_id": "r",
                                         "body": {"error": {"message": reply.text or "scripted error"}}}})
                continue
            pt, ct = self.usage or (len(req.text.split()), len(reply.text.split()))
            body = {"id": self._id("chatcmpl"), "object": "chat.completion", "created": int(time.time()),
                    "model": req.model, "choices": [{"index": 0, "finish_reason": reply.finish_reason,
                                                     "message": {"role": "assistant", "content": reply.text}}],
                    "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}}
            out.append({"id": self._id("batch_req"), "custom_id": cid, "error": None,
                        "response": {"status_code": 200, "request_id": "r", "body": body}})
            self.lines_answered.append(cid)
        if out:
            b["output_file_id"] = self._add_file("".join(json.dumps(x) + "\n" for x in out).encode(),
                                                 "batch_output", "out.jsonl")["id"]
        if err:
            b["error_file_id"] = self._add_file("".join(json.dumps(x) + "\n" for x in err).encode(),
                                                "batch_output", "err.jsonl")["id"]
        b["status"] = "expired" if expired else "completed"
        b["request_counts"] = {"total": len(out) + len(err), "completed": len(out), "failed": len(err)}
        b["completed_at"] = int(time.time())

    # -- HTTP ------------------------------------------------------------------------------------
    def start(self) -> FakeBatchServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, status, data, ctype="application/json"):
                payload = data if isinstance(data, bytes) else json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _public(self, b):
                return {k: v for k, v in b.items() if not k.startswith("_")}

            def do_GET(self):
                path = self.path.split("?")[0].rstrip("/")
                parts = path.split("/")
                if path.endswith("/v1/batches"):
                    data = [self._public(b) for b in reversed(list(server.batches.values()))]
                    return self._send(200, {"object": "list", "data": data, "has_more": False,
                                            "first_id": data[0]["id"] if data else None,
                                            "last_id": data[-1]["id"] if data else None})
                if "batches" in parts:
                    b = server.batches.get(parts[-1])
                    if b is None:
                        return self._send(404, {"error": {"message": "no such batch"}})
                    with server._lock:
                        server.retrieves += 1
                    server._advance(b)
                    return self._send(200, self._public(b))
                if "files" in parts and parts[-1] == "content":
                    f = server.files.get(parts[-2])
                    if f is None:
                        return self._send(404, {"error": {"message": "no such file"}})
                    return self._send(200, f["data"], "application/octet-stream")
                if "files" in parts:
                    f = server.files.get(parts[-1])
                    return self._send(200, f["meta"]) if f else self._send(404, {"error": {"message": "no file"}})
                self._send(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self):
                path = self.path.split("?")[0].rstrip("/")
                raw = self._body()
                if path.endswith("/v1/files"):
                    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                        b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + raw)
                    fields, data, name = {}, b"", "upload.jsonl"
                    for part in msg.iter_parts():
                        if part.get_param("name", header="content-disposition") == "file":
                            data = part.get_payload(decode=True)
                            name = part.get_filename() or name
                        else:
                            fields[part.get_param("name", header="content-disposition")] = part.get_content().strip()
                    return self._send(200, server._add_file(data, fields.get("purpose", ""), name))
                if path.endswith("/v1/batches"):
                    body = json.loads(raw)
                    f = server.files.get(body["input_file_id"])
                    if f is None:
                        return self._send(400, {"error": {"message": "unknown input_file_id"}})
                    ids = [json.loads(x)["custom_id"] for x in f["data"].decode().splitlines() if x.strip()]
                    bid = server._id("batch")
                    b = {"id": bid, "object": "batch", "endpoint": body["endpoint"], "errors": None,
                         "input_file_id": body["input_file_id"], "completion_window": body["completion_window"],
                         "status": "validating", "output_file_id": None, "error_file_id": None,
                         "created_at": int(time.time()), "metadata": body.get("metadata"),
                         "request_counts": {"total": len(ids), "completed": 0, "failed": 0},
                         "_fail": server.fail_validation > 0}
                    server.fail_validation = max(0, server.fail_validation - 1)
                    server.batches[bid] = b
                    server.created.append((bid, ids))
                    return self._send(200, self._public(b))
                if path.endswith("/cancel"):
                    b = server.batches.get(path.split("/")[-2])
                    if b is None:
                        return self._send(404, {"error": {"message": "no such batch"}})
                    b["status"] = "cancelling"
                    return self._send(200, self._public(b))
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        class Server(ThreadingHTTPServer):
            daemon_threads = True

        self._httpd = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
                         name="fake-batch-server").start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FakeBatchServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    @property
    def submitted_ids(self) -> list[str]:
        """Every custom_id in every created batch (a request sent twice appears twice)."""
        return [cid for _, ids in self.created for cid in ids]
