"""Before/after scenario for two `workbench expand` faults, measured through the CLI only.

The script drives the real CLI (`workbench init`, `taxonomy import`, `expand`) in subprocesses against a
local OpenAI-compatible server it runs itself (asyncio, in a thread of this process; it counts the requests
and decides every reply from the parent name in the prompt). "old" is commit 06ba4b0, before the fixes,
run from a git worktree with PYTHONPATH (each run checks that `workbench.__file__` resolves into it);
"new" is this checkout. Commands and flags used are ones both versions have.

Fault 1: cached unparseable replies stall a resumed run.
    1000 accepted first-level parents; the server answers 5 % of them (the 50 names with the smallest
    sha256) with one prose line that the expansion parser rejects ("I'm sorry, I cannot help with that
    request ..." -- 17 words, over parse_reply's 12-word limit, not JSON: both versions' parsers fail it,
    which the script checks first), the rest with ["alpha task", "beta task"]. Default limits
    (max_failure_rate 0.25, min_calls_before_failure_check 20), max_concurrency 8, 10 ms per reply.
    `workbench expand WS --level 2 --no-progress` is SIGKILLed at 40 % (400 parents answered), then the
    same command is run 5 times, each to its end. After each run: parents with an applied parsed result
    (`expand_results WHERE applied=1 AND status='ok'`), parents with any applied result (`WHERE applied=1`,
    parse errors included), answered calls stored in llm_calls, requests answered, exit status, and
    whether it said "stopped early".
    The kill (--kill settled, the default): after its 400th answer the server holds further requests
    unanswered; once the process has applied all 400 replies it gets SIGKILL. So every run starts from the
    same state (400 parents answered and applied, 17 of them prose), and the figures repeat run to run.
    --kill immediate sends SIGKILL from the server right after the 400th reply instead: what a user's kill
    looks like, but how many answered replies were committed by then varies a lot from run to run (below).
    Old: each resumed run delivers the stored parse failures first and counts them towards the
    failure-rate stop (17 of the first 20), so it stops after the calls already in flight (8-18), and the
    prose replies among those make the next run stop the same way.
Fault 2: keys answered empty every time stall a resumed run (issue 30 part 2).
    Fault 1's setup and kill, but the same 50 parents get an empty reply (stored as a failed call, asked again
    by every run) instead of prose. "old" here is commit 6b94bfb (run with --old-commit 6b94bfb --old-tree
    /tmp/wb-old-main --fault 2), the last one before the fix: its resumed runs asked the 17 parents that had
    failed before the kill first, so 17 of the first 20 calls failed and every run stopped on the failure rate.
    New: keys that failed in an earlier run are asked after every never-tried key and their failures are
    counted apart (they cannot stop the run); the run names each failing row on stderr ("failed again: Task
    type 0123 (key ...): empty reply ..."), counted in the note as "names N failing parent(s)".
    Measured 2026-12 on the shared 2-core machine, 1000 parents (about 140 s for both versions):
    code  killed  re-run 1      re-run 2     re-run 3     re-run 4     re-run 5     requests in all
    old   383     398 S [32]    408 S [28]   414 S [24]   428 S [32]   441 S [31]   547
    new   383     950 [617]     950 [50]     950 [50]     950 [50]     950 [50]     1217
    New re-run 1 exits 0 and names the 50 parents that failed (17 of them "failed again"); later runs ask only
    those 50 (the failed calls are asked again on every run), name them again and exit 1 ("50 of 50 row(s)
    failed (50 call, 0 parse), over limits.max_failure_rate 25%") without stopping early.
Fault 5: two processes running the same stage pay twice.
    A fresh workspace with the same 1000 parents, every reply valid, 20 ms per reply; two
    `workbench expand WS --level 2 --no-progress` processes started together (Popen back to back).
    Counted: requests the server got, distinct parents asked, applied result rows, exit statuses, the first
    stderr line of each.

Measured 2026-05 on the shared 2-core machine (other test runs going), 1000 parents (no scaling down);
the whole script takes about 45 s for both versions.

    Fault 1 -- parents with an applied parsed result, of 1000 (S: "stopped early: failure rate 17/20 [18/20]
    is over 25%", exit 1); answered requests per re-run in brackets
    code  killed  re-run 1     re-run 2      re-run 3     re-run 4     re-run 5     requests in all
    old   383     392 S [9]    409 S [18]    418 S [9]    426 S [8]    435 S [9]    453
    new   383     950 [600]    950 [0]       950 [0]      950 [0]      950 [0]      1000
    (four more old runs: 383 -> 391 -> 399 -> 406 -> 414 -> 422 twice, 383 -> 391 -> 402 -> 410 -> 418
    -> 426, and 383 -> 438 -> 456 -> 464 -> 475 -> 492 in one where 56 calls were answered before the
    first stop took effect; new was the same every time. The issue reported 383 -> 419.)
    New: re-run 1 calls the 600 unanswered parents and ends with exit 0; the 50 parents left are those
    whose stored reply is prose, and every later run reads them from the cache (no calls) and exits 1
    with "expand: 50 of 50 row(s) failed (0 call, 50 parse), over limits.max_failure_rate 25%; ...
    (--refresh-failed asks again ...)" -- not "stopped", but still exit 1.

    Fault 1 with --kill immediate, 4 runs per version (answered / stored in llm_calls / applied at the kill):
    old 402/398/381, 400/124/91, 401/361/307, 400/396/379; new 402/38/35, 400/395/378, 402/349/326,
    401/380/354. Replies answered but still queued in the process at the kill are lost and paid for again
    (up to 364 of 402 here; both versions, as the main thread commits a batch of replies to llm_calls, then
    applies them one transaction each while the next replies wait in its queue). Old re-runs stalled as
    above except in the 400/124 run: only 3 stored parse failures against 30 stored-but-unapplied replies
    that came back from the cache as successes, under 25 %, so it finished (91 -> 950).

    Fault 5 -- two processes at once (four runs each, the same every time)
    code  requests  parents  result rows  exit statuses  stderr
    old   2000      1000     1000         0, 0           nothing from either
    new   1000      1000     1000         2 and 0        the refused one: "error: expand is already running in WS
                                                         (stage run 1, pid N on HOST, started ...); wait for it ..."
    (Old's second process replaces the first's result rows, so nothing is duplicated but the bill; which of the
    two new processes is refused depends on which opens its stage run first.)

Reproduce (from the repository root; creates the worktree /tmp/wb-old at 06ba4b0 if it is missing and
removes it again afterwards if it made it; the workspaces go to a temporary folder that is deleted):

    .venv/bin/python benchmarks/scenario_resume_faults.py                      # both faults, old and new
    .venv/bin/python benchmarks/scenario_resume_faults.py --code new --fault 1  # one version, one fault
    .venv/bin/python benchmarks/scenario_resume_faults.py --fault 2 --old-commit 6b94bfb --old-tree /tmp/wb-old-main
    options: --parents 1000 --reruns 5 --fault 1|2|5|both|all --kill settled|immediate --old-tree /tmp/wb-old
             --old-commit 06ba4b0
             --keep (keep the workspaces)
The old version runs as `PYTHONPATH=/tmp/wb-old python -P -c "...entrypoint()" ARGS`: -P matters, since
without it `python -c` puts the current directory first on sys.path, and from the repository root that
loads the new package instead.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OLD_COMMIT = "06ba4b0"
PROSE = "I'm sorry, I cannot help with that request because it is unclear what you mean by this."
VALID = json.dumps(["alpha task", "beta task"])
MODEL = "m"
KEY_ENV = "WB_SCENARIO_KEY"
CATEGORY = re.compile(r"Category:\s*(.+)")
STOPPED = re.compile(r"stopped early|STOPPED:")
FAILED_ROW = re.compile(r"^\s+failed(?: again)?: (Task type \d+) ", re.M)   # a row the CLI names as failing


# -- the server ---------------------------------------------------------------------------------
class Server:
    """OpenAI-compatible, one asyncio loop in a daemon thread. `bad` names get PROSE, the rest VALID.

    `hold_after` = N: the first N chat requests are answered, later ones are held unanswered (`reached` is
    set) until `release()`, which closes them without a reply. `kill_after` = N with `kill_pid`: SIGKILL
    right after the N-th distinct parent's reply is written."""

    def __init__(self):
        self.latency = 0.0
        self.bad: set[str] = set()
        self.empty: set[str] = set()      # fault 2: these parents get an empty reply, every time
        self.kill_pid: int | None = None
        self.kill_after: int | None = None
        self.killed_at: int | None = None
        self.hold_after: int | None = None
        self.reached = threading.Event()
        self.reset()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="scenario-server")
        self._thread.start()
        self._ready.wait(10)

    def reset(self) -> None:
        self.requests = 0
        self.granted = 0
        self.answered: set[str] = set()
        self.reached.clear()

    def release(self) -> None:
        """Let held requests go (their connections are closed unanswered); stop holding."""
        self.hold_after = None

        def _swap():
            self._held.set()
            self._held = asyncio.Event()
        self._loop.call_soon_threadsafe(_swap)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        self._held = asyncio.Event()
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=256)
        self.port = server.sockets[0].getsockname()[1]
        self._loop = asyncio.get_running_loop()
        self._ready.set()
        async with server:
            await self._stop.wait()

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @staticmethod
    def _http(status: str, payload: dict) -> bytes:
        body = json.dumps(payload).encode()
        return (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                "Connection: keep-alive\r\n\r\n").encode() + body

    def _reply(self, body: bytes) -> tuple[bytes, str | None]:
        parent = None
        try:
            req = json.loads(body)
            text = "\n".join(m["content"] if isinstance(m.get("content"), str)
                             else " ".join(p.get("text", "") for p in m.get("content") or [])
                             for m in req.get("messages", []))
            found = CATEGORY.search(text)
            parent = found.group(1).strip() if found else None
        except (ValueError, AttributeError, KeyError, TypeError):
            pass
        content = "" if parent in self.empty else PROSE if parent in self.bad else VALID
        return self._http("200 OK", {
            "id": f"chatcmpl-{self.requests}", "object": "chat.completion", "created": 0, "model": MODEL,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}), parent

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path = (lines[0].split() + ["", ""])[:2]
                length = 0
                for line in lines[1:]:
                    if line.lower().startswith("content-length:"):
                        length = int(line.split(":", 1)[1])
                body = await reader.readexactly(length) if length else b""
                parent = None
                if method == "GET" and path.rstrip("/").endswith("/models"):
                    out = self._http("200 OK", {"object": "list", "data": [
                        {"id": MODEL, "object": "model", "created": 0, "owned_by": "scenario"}]})
                elif method == "POST" and path.rstrip("/").endswith("/chat/completions"):
                    self.requests += 1
                    if self.hold_after is not None and self.granted >= self.hold_after:
                        self.reached.set()
                        await self._held.wait()
                        return                  # closed unanswered (finally)
                    self.granted += 1
                    if self.latency:
                        await asyncio.sleep(self.latency)
                    out, parent = self._reply(body)
                else:
                    out = self._http("404 Not Found", {"error": {"message": f"no route {method} {path}"}})
                writer.write(out)
                await writer.drain()
                if parent is not None:
                    self.answered.add(parent)
                    if (self.kill_pid is not None and self.kill_after is not None
                            and len(self.answered) >= self.kill_after):
                        os.kill(self.kill_pid, signal.SIGKILL)
                        self.killed_at, self.kill_pid = len(self.answered), None
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


# -- the CLI of one code version ----------------------------------------------------------------
@dataclass
class Code:
    label: str
    tree: Path | None            # None: this checkout
    cwd: Path = field(default_factory=lambda: Path(tempfile.gettempdir()))

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_") and k != "PYTHONPATH"}
        env["PYTHONPATH"] = str(self.tree or REPO)    # this checkout even where another one is installed
        env[KEY_ENV] = "sk-scenario"
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def argv(self, *args: str) -> list[str]:
        # -P: no script/cwd directory in front of sys.path, so PYTHONPATH decides which `workbench` loads.
        return [sys.executable, "-P", "-c",
                "import sys; from workbench.apps.cli.main import entrypoint; sys.argv[0]='workbench'; entrypoint()",
                *args]

    def popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(self.argv(*args), cwd=self.cwd, env=self.env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def run(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        p = subprocess.run(self.argv(*args), cwd=self.cwd, env=self.env(), capture_output=True, text=True,
                           timeout=timeout)
        if check and p.returncode != 0:
            raise SystemExit(f"[{self.label}] workbench {' '.join(args)} -> {p.returncode}\n{p.stdout}\n{p.stderr}")
        return p

    def python(self, code: str) -> str:
        p = subprocess.run([sys.executable, "-P", "-c", code], cwd=self.cwd, env=self.env(), capture_output=True,
                           text=True, timeout=120)
        if p.returncode != 0:
            raise SystemExit(f"[{self.label}] python check failed:\n{p.stderr}")
        return p.stdout.strip()

    def check(self) -> None:
        where = Path(self.python("import workbench; print(workbench.__file__)")).resolve()
        want = (self.tree or REPO).resolve()
        if want not in where.parents:
            raise SystemExit(f"[{self.label}] workbench loads from {where}, not from {want}")
        verdict = self.python(
            "from workbench.core.errors import *\n"
            "try:\n    from workbench.stages.expand.stage import parse_reply, plan, ExpandRow\n"
            "except ImportError:\n    from workbench.stages.expand import parse_reply, plan, ExpandRow\n"
            f"row = ExpandRow('p', 'Task type 0001', 'Task type 0001', 2, [], {{}}, 'child_expand')\n"
            "def verdict(text):\n"
            "    try:\n        r = parse_reply(text, row)\n"
            "    except Exception as e:\n        return type(e).__name__\n"
            "    return type(r).__name__ + ':' + (','.join(r.names) if hasattr(r, 'names') else '')\n"
            f"print(verdict({PROSE!r}), '|', verdict({VALID!r}))")
        bad, good = (s.strip() for s in verdict.split("|"))
        bad = bad.rstrip(":")
        if bad not in ("ParseError", "ParseFailure") or not good.startswith("Parsed:alpha task,beta task"):
            raise SystemExit(f"[{self.label}] parse_reply check: prose -> {bad}, valid -> {good}")
        print(f"[{self.label}] workbench from {where.parent}; parse_reply: prose -> {bad}, valid -> {good}",
              flush=True)


def names(n: int) -> list[str]:
    return [f"Task type {i:04d}" for i in range(1, n + 1)]


def bad_names(all_names: list[str], share: float = 0.05) -> set[str]:
    """The `share` of names with the smallest sha256: deterministic, exactly round(n * share) of them."""
    ranked = sorted(all_names, key=lambda s: hashlib.sha256(s.encode()).hexdigest())
    return set(ranked[:round(len(all_names) * share)])


def make_workspace(code: Code, root: Path, parent_names: list[str], server: Server) -> Path:
    ws = root / f"ws-{code.label}-{len(list(root.iterdir()))}"
    code.run("init", str(ws))
    src = root / f"tasktype-{len(parent_names)}.txt"
    src.write_text("".join(f"{n}\n" for n in parent_names), encoding="utf-8")
    code.run("taxonomy", "import", str(ws), str(src), "--status", "accepted")
    cfg = ws / "workbench.toml"
    text = cfg.read_text(encoding="utf-8")
    # [limits] keeps its defaults (max_failure_rate 0.25 from init, min_calls_before_failure_check 20).
    if not re.search(r"(?m)^max_failure_rate = 0\.25$", text) or "min_calls_before_failure_check" in text:
        raise SystemExit(f"[{code.label}] unexpected [limits] in {cfg}:\n{text}")
    text += (f'\n[endpoints.default]\nbase_url = "{server.base_url}"\nmodel = "{MODEL}"\n'
             f'api_key_env = "{KEY_ENV}"\nmax_concurrency = 8\n'
             "price_input_per_mtok = 0.0\nprice_output_per_mtok = 0.0\n")
    cfg.write_text(text, encoding="utf-8")
    return ws


def applied(ws: Path) -> tuple[int, int, int]:
    """(parents with an applied parsed result, parents with any applied result, stored answered calls)."""
    con = sqlite3.connect(f"file:{ws / 'workbench.sqlite'}?mode=ro", uri=True, timeout=30)
    try:
        ok = con.execute("SELECT count(DISTINCT parent_id) FROM expand_results WHERE applied=1 AND status='ok'")
        ok = ok.fetchone()[0]
        anyr = con.execute("SELECT count(DISTINCT parent_id) FROM expand_results WHERE applied=1").fetchone()[0]
        stored = con.execute("SELECT count(*) FROM llm_calls WHERE stage='expand' AND status='ok'").fetchone()[0]
    finally:
        con.close()
    return ok, anyr, stored


def first_line(text: str) -> str:
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), "")


# -- the two faults -----------------------------------------------------------------------------
def settle_then_kill(proc: subprocess.Popen, ws: Path, server: Server, timeout: float = 120) -> str:
    """Wait until the server holds further requests and the process has applied every answered reply
    (one expand_results row per answered parent, or a stored failed call for an empty reply), then SIGKILL it:
    a kill with nothing in transit."""
    deadline = time.monotonic() + timeout
    while not server.reached.wait(0.05):
        if proc.poll() is not None or time.monotonic() > deadline:
            return "NOT KILLED (the server's hold was not reached)"
    want, rows = server.granted, -1     # no more are granted once the hold is reached
    while len(server.answered) < want and time.monotonic() < deadline:
        time.sleep(0.01)
    while time.monotonic() < deadline and proc.poll() is None:
        con = sqlite3.connect(f"file:{ws / 'workbench.sqlite'}?mode=ro", uri=True, timeout=30)
        try:
            rows = con.execute("SELECT count(DISTINCT parent_id) FROM expand_results").fetchone()[0] + \
                con.execute("SELECT count(*) FROM llm_calls WHERE status='error'").fetchone()[0]  # fault 2
        finally:
            con.close()
        if rows >= want:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    return f"SIGKILL with {want} parents answered, {rows} applied, the next requests held"


def fault1(code: Code, root: Path, server: Server, n: int, reruns: int, kill: str = "settled",
           empty: bool = False) -> list[dict]:
    """Fault 1 (prose replies that do not parse), or with `empty` fault 2 (the same parents answered empty)."""
    parent_names = names(n)
    server.bad, server.empty = (set(), bad_names(parent_names)) if empty else (bad_names(parent_names), set())
    server.latency = 0.01
    ws = make_workspace(code, root, parent_names, server)
    cmd = ("expand", str(ws), "--level", "2", "--no-progress")
    rows = []

    server.reset()
    t0 = time.monotonic()
    if kill == "settled":
        server.hold_after = round(n * 0.4)
        proc = code.popen(*cmd)
        note = settle_then_kill(proc, ws, server)
        out, err = proc.communicate(timeout=600)
        server.release()
    else:   # "immediate": SIGKILL from the server thread right after the 40 % reply; replies in transit are lost
        proc = code.popen(*cmd)
        server.kill_after, server.kill_pid, server.killed_at = round(n * 0.4), proc.pid, None
        out, err = proc.communicate(timeout=600)
        server.kill_pid = None
        note = (f"SIGKILL right after the {server.killed_at}th parent's reply" if server.killed_at
                else "NOT KILLED")
    if proc.returncode != -signal.SIGKILL:
        note += f"; {first_line(err)}"
    ok, anyr, stored = applied(ws)
    rows.append({"run": "killed", "rc": proc.returncode, "calls": server.granted, "ok": ok, "any": anyr,
                 "stored": stored, "stopped": bool(STOPPED.search(out + err)), "s": time.monotonic() - t0,
                 "note": note})
    for i in range(1, reruns + 1):
        server.reset()
        t0 = time.monotonic()
        p = code.run(*cmd, check=False)
        ok, anyr, stored = applied(ws)
        stop = STOPPED.search(p.stdout + p.stderr)
        note = ""
        if stop:
            m = re.search(r"failure rate [^;]*?is over \d+%", p.stdout + p.stderr)
            note = m.group(0) if m else first_line(p.stderr)
        elif p.returncode != 0:
            note = next((ln for ln in p.stderr.splitlines() if ln.startswith("error:")), first_line(p.stderr))
            note = re.sub(r";.*", "", note)
        named = {m.group(1) for m in FAILED_ROW.finditer(p.stderr)}
        if named:
            note = (note + "; " if note else "") + f"names {len(named)} failing parent(s)"
        rows.append({"run": f"re-run {i}", "rc": p.returncode, "calls": server.granted, "ok": ok, "any": anyr,
                     "stored": stored,
                     "stopped": bool(stop), "s": time.monotonic() - t0, "note": note})
    return rows


def fault5(code: Code, root: Path, server: Server, n: int) -> dict:
    parent_names = names(n)
    server.bad, server.latency = set(), 0.02
    ws = make_workspace(code, root, parent_names, server)
    cmd = ("expand", str(ws), "--level", "2", "--no-progress")
    server.reset()
    t0 = time.monotonic()
    procs = [code.popen(*cmd), code.popen(*cmd)]
    outs = [p.communicate(timeout=600) for p in procs]
    ok, _, _ = applied(ws)
    con = sqlite3.connect(f"file:{ws / 'workbench.sqlite'}?mode=ro", uri=True, timeout=30)
    try:
        results = con.execute("SELECT count(*) FROM expand_results WHERE applied=1").fetchone()[0]
    finally:
        con.close()
    return {"calls": server.requests, "parents": len(server.answered), "ok": ok, "results": results,
            "s": time.monotonic() - t0,
            "rc": [p.returncode for p in procs], "stderr": [first_line(e) for _, e in outs]}


# -- main ---------------------------------------------------------------------------------------
def ensure_old_tree(tree: Path, commit: str) -> bool:
    """Make the worktree if missing; True if this call made it (and should remove it)."""
    if (tree / "workbench" / "__init__.py").exists():
        return False
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), commit], check=True,
                   capture_output=True, text=True)
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--code", choices=("old", "new", "both"), default="both")
    ap.add_argument("--parents", type=int, default=1000)
    ap.add_argument("--reruns", type=int, default=5)
    ap.add_argument("--fault", choices=("1", "2", "5", "both", "all"), default="both",
                    help="both: faults 1 and 5; all: 1, 2 and 5")
    ap.add_argument("--kill", choices=("settled", "immediate"), default="settled",
                    help="fault 1's SIGKILL: once every answered reply is applied and further requests are held "
                         "(reproducible), or right after the 40 %% reply (what a user sees; varies run to run)")
    ap.add_argument("--old-tree", type=Path, default=Path("/tmp/wb-old"))
    ap.add_argument("--old-commit", default=OLD_COMMIT)
    ap.add_argument("--keep", action="store_true", help="keep the workspaces (their folder is printed)")
    a = ap.parse_args()

    labels = ["old", "new"] if a.code == "both" else [a.code]
    made_tree = ensure_old_tree(a.old_tree, a.old_commit) if "old" in labels else False
    root = Path(tempfile.mkdtemp(prefix="wb-scenario-"))
    server = Server()
    results = {}
    t_all = time.monotonic()
    try:
        for label in labels:
            code = Code(label, a.old_tree if label == "old" else None, cwd=root)
            code.check()
            f1 = f2 = f5 = None
            if a.fault in ("1", "both", "all"):
                t0 = time.monotonic()
                f1 = fault1(code, root, server, a.parents, a.reruns, a.kill)
                print(f"[{label}] fault 1 done in {time.monotonic() - t0:.0f}s", flush=True)
            if a.fault in ("2", "all"):
                t0 = time.monotonic()
                f2 = fault1(code, root, server, a.parents, a.reruns, a.kill, empty=True)
                print(f"[{label}] fault 2 done in {time.monotonic() - t0:.0f}s", flush=True)
            if a.fault in ("5", "both", "all"):
                t0 = time.monotonic()
                f5 = fault5(code, root, server, a.parents)
                print(f"[{label}] fault 5 done in {time.monotonic() - t0:.0f}s", flush=True)
            results[label] = (f1, f5, f2)
    finally:
        server.close()
        if a.keep:
            print(f"workspaces kept in {root}")
        else:
            subprocess.run(["rm", "-rf", str(root)], check=False)
        if made_tree:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(a.old_tree)], check=False)

    n = a.parents
    if a.fault in ("1", "both", "all"):
        print_fault1(results, n, a.kill)
    if a.fault in ("2", "all"):
        print_fault1(results, n, a.kill, empty=True)
    if a.fault in ("5", "both", "all"):
        print_fault5(results, n)
    print(f"\ntotal {time.monotonic() - t_all:.0f}s")


def print_fault1(results: dict, n: int, kill: str, empty: bool = False) -> None:
    what = ("Fault 2: keys answered empty every time stall resume" if empty
            else "Fault 1: cached unparseable replies stall resume")
    print(f"\n{what} ({n} parents, {len(bad_names(names(n)))} get {'empty replies' if empty else 'prose'}; "
          f"SIGKILL ({kill}) at {round(n * 0.4)} answered; default limits; concurrency 8)")
    print("ok = parents with an applied parsed result; any = with any applied result (parse errors included); "
          "calls = requests the server answered in that run; stored = answered calls in llm_calls after it; "
          "S = the run said it stopped early")
    print(f"{'code':5} {'run':9} {'rc':>4} {'calls':>6} {'stored':>6} {'ok':>6} {'any':>6} {'S':>2} {'secs':>5}  note")
    part = 2 if empty else 0
    for label, got in results.items():
        for r in got[part]:
            print(f"{label:5} {r['run']:9} {r['rc']:>4} {r['calls']:>6} {r['stored']:>6} {r['ok']:>6} {r['any']:>6} "
                  f"{'S' if r['stopped'] else '':>2} {r['s']:>5.1f}  {r['note']}")
    for label, got in results.items():
        f1 = got[part]
        print(f"  {label}: applied parsed results {' -> '.join(str(r['ok']) for r in f1)} of {n}; "
              f"{sum(r['calls'] for r in f1)} requests in all")


def print_fault5(results: dict, n: int) -> None:
    print(f"\nFault 5: two `workbench expand` processes started together ({n} parents, 20 ms per reply)")
    print("requests = requests the server got; parents = distinct parents asked; results = applied expand_results "
          "rows; ok = parents with a parsed result")
    print(f"{'code':5} {'requests':>8} {'parents':>7} {'results':>7} {'ok':>6} {'rc':>6} {'secs':>5}  "
          "stderr first lines")
    for label, (_, f5, _) in results.items():
        print(f"{label:5} {f5['calls']:>8} {f5['parents']:>7} {f5['results']:>7} {f5['ok']:>6} "
              f"{','.join(map(str, f5['rc'])):>6} "
              f"{f5['s']:>5.1f}  {' | '.join(s[:110] or '(nothing)' for s in f5['stderr'])}")


if __name__ == "__main__":
    main()
