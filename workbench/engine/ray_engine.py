"""The Ray engine: embedding (Ray Data), top-k blocks and VLM calls on a Ray cluster.

Workers never touch the workspace's SQLite: every function here *returns* rows, and the caller (the
stage, in the driver) commits them with the local engine's own writers. So an interrupted Ray run
resumes exactly as a local one (committed embedding blocks are skipped, cached calls are not made again),
and a stage run on Ray and then locally calls nothing twice.

- `embed_images`: Ray Data reads the (image id, path) list, decodes + preprocesses in parallel tasks
  (the local `ImageDataset`), and an actor pool holds the CLIP model (`map_batches`): GPU actors when the
  cluster has GPUs, else fractional-CPU actors (on 2 CPUs, whole-CPU actors starve the read tasks).
  Blocks stream back to the driver, which commits each one (durable chunk file, then its rows).
- `topk_blocks`: the task-type matrix is broadcast once (`ray.put`); image blocks are scored in remote
  tasks (`topk_cosine`, the local function) with a bounded window in flight; results come back in order.
- `dispatch`: the engine is the stage seam's `Dispatcher` (stages/dispatch.py) for LLM calls: the plan's
  rendered requests (key, messages) fan out to remote tasks that call the endpoint (or pool) with the
  workbench's own client and return CallRecords; the driver stamps and commits them to the cache
  (`plan.commit`) and delivers each to the stage's `record`, under the same `RunGuard` as the local loop.

Images must be readable from the workers at their registered paths (a shared mount); endpoints must be
reachable from the workers, with their API key variables set in the workers' environment.
"""

from __future__ import annotations

import asyncio
import collections
import os
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from workbench.core.errors import WorkbenchError
from workbench.llm.client import make_client
from workbench.stages.dispatch import CallPlan, Dispatcher
from workbench.stages.embed.stage import ImageDataset
from workbench.stages.match.stage import topk_cosine

INSTALL_HINT = "pip install 'taskgalaxy-workbench[ray]'  (or: pip install 'ray[data]')"
WINDOW_PER_CPU = 2          # remote tasks in flight per cluster CPU (bounded memory, steady pipeline)
START_ATTEMPTS = 3          # a loaded machine can miss Ray's fixed 30 s node start-up wait; the retry is warm
CALLS_PER_TASK = 16         # requests per remote LLM task


def _ray():
    try:
        import ray
    except ImportError:
        raise WorkbenchError(f"--engine ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


class RayEngine(Dispatcher):
    """A connection to Ray: a private local Ray bound to loopback (no address) or an existing cluster."""

    name = "ray"

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None, temp_dir: str | None = None):
        self.address, self.num_cpus, self.temp_dir = address, num_cpus, temp_dir
        self._started = False

    def describe(self) -> str:
        return f"ray ({self.address or 'local, loopback only'})"

    def start(self) -> None:
        ray = _ray()
        if ray.is_initialized():
            self._started = True
            return
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")   # no phoning home from a workbench run
        if self.address:
            try:
                ray.init(address=self.address, log_to_driver=False, configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise WorkbenchError(f"--address {self.address}: cannot join the Ray cluster ({exc}); start one "
                                     "with `ray start --head` and pass its address (host:6379 or ray://host:10001)"
                                     ) from None
        else:
            # A private Ray: loopback only, no dashboard, temp files where asked (tests: under tmp_path).
            kw = {"_temp_dir": self.temp_dir} if self.temp_dir else {}
            for attempt in range(START_ATTEMPTS):
                try:
                    ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1",
                             num_cpus=self.num_cpus, log_to_driver=False, configure_logging=False, **kw)
                    break
                except Exception as exc:
                    ray.shutdown()
                    if attempt == START_ATTEMPTS - 1:
                        raise WorkbenchError(f"could not start a local Ray ({exc}); on a busy machine try again, "
                                             "or start one with `ray start --head` and pass --address") from None
        self._started = True

    def shutdown(self) -> None:
        if self._started:
            _ray().shutdown()
            self._started = False

    def cpus(self) -> float:
        return float(_ray().cluster_resources().get("CPU", 1.0))

    def gpus(self) -> float:
        return float(_ray().cluster_resources().get("GPU", 0.0))

    # -- embedding -------------------------------------------------------------------------------
    def embed_images(self, todo: list[tuple[str, str]], clip, batch_size: int
                     ) -> Iterator[tuple[list[str], np.ndarray | None, list[tuple[str, str]]]]:
        """Yield (ids, L2-normalised rows, problems) per block, as blocks finish."""
        self.start()
        ray = _ray()
        import ray.data  # noqa: F811 (the submodule, on the module _ray() set up)

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.execution_options.verbose_progress = False
        n = len(todo)
        blocks = max(1, -(-n // batch_size))
        ds = ray.data.from_items([{"id": i, "path": p} for i, p in todo], override_num_blocks=blocks)
        ds = ds.map_batches(_decode, batch_size=batch_size, batch_format="numpy", fn_args=(clip.preprocess,),
                            num_cpus=0.5)
        gpus = int(self.gpus())
        pool = ray.data.ActorPoolStrategy
        if gpus:
            actor = {"num_gpus": 1, "compute": pool(size=gpus)}
        else:   # fractional CPUs: the decode tasks keep a core even when the actors hold the others
            actor = {"num_cpus": 0.5, "compute": pool(size=max(1, int(self.cpus() // 2)))}
        ds = ds.map_batches(_Embedder, fn_constructor_args=(ray.put(clip),), batch_size=batch_size,
                            batch_format="numpy", **actor)
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1):
            ids = [str(i) for i in batch["id"]]
            errs = [str(e) for e in batch["err"]]
            ok = [j for j, e in enumerate(errs) if not e]
            bad = [(ids[j], errs[j]) for j, e in enumerate(errs) if e]
            emb = np.asarray(batch["emb"], np.float32)[ok] if ok else None
            yield [ids[j] for j in ok], emb, bad

    # -- matching --------------------------------------------------------------------------------
    def topk_blocks(self, blocks: Iterable[tuple[list, np.ndarray]], targets: np.ndarray, k: int
                    ) -> Iterator[tuple[list, np.ndarray, np.ndarray]]:
        """For each (ids, L2-normalised rows) block: (ids, top-k indices, scores), in input order."""
        self.start()
        ray = _ray()
        t_ref = ray.put(np.ascontiguousarray(targets, np.float32))   # broadcast once
        task = ray.remote(num_cpus=0.5)(_topk)
        window = max(2, int(self.cpus() * WINDOW_PER_CPU))
        inflight: collections.deque = collections.deque()
        for ids, x in blocks:
            inflight.append((ids, task.remote(t_ref, x, k)))
            if len(inflight) >= window:
                ids0, ref = inflight.popleft()
                yield (ids0, *ray.get(ref))
        while inflight:
            ids0, ref = inflight.popleft()
            yield (ids0, *ray.get(ref))

    # -- LLM calls -------------------------------------------------------------------------------
    def dispatch(self, plan: CallPlan) -> None:
        """The stage seam's `Dispatcher` (stages/dispatch.py): the plan's calls made on Ray workers."""
        self.start()
        _RayCalls(self, plan).run()


class _RayCalls:
    """One plan's calls on Ray: tasks of CALLS_PER_TASK requests, a bounded window in flight, each task's budget
    reserved (as one estimate) before it is submitted. Each finished task's CallRecords are stamped and committed
    by this process before any is delivered, as the local dispatcher does; a stop submits nothing more."""

    def __init__(self, engine: RayEngine, plan: CallPlan) -> None:
        self.ray, self.plan = _ray(), plan
        self.task = self.ray.remote(num_cpus=0.25)(_call_chunk)
        keys = list(plan.pending)
        self.chunks = [keys[i:i + CALLS_PER_TASK] for i in range(0, len(keys), CALLS_PER_TASK)]
        self.window = max(2, int(engine.cpus() * WINDOW_PER_CPU))
        self.ep_ref = self.ray.put(plan.endpoint)
        self.inflight: dict[Any, tuple[list[str], float]] = {}     # task ref -> (its keys, the budget reserved)

    def submit(self) -> None:
        plan, guard = self.plan, self.plan.guard
        while self.chunks and len(self.inflight) < self.window and not guard.stopped:
            chunk = self.chunks[0]
            want = sum(plan.est_cost(k) for k in chunk)
            reserved = guard.reserve(want, calls=len(chunk), mean_floor=False)
            if reserved is None:
                guard.reason()      # worded now, with what was spent when the budget refused
                break
            self.chunks.pop(0)
            items = [(k, plan.pending[k][1], plan.call_tokens(k)) for k in chunk]
            self.inflight[self.task.remote(self.ep_ref, plan.params, items)] = (chunk, reserved)

    def run(self) -> None:
        plan = self.plan
        self.submit()
        while self.inflight:
            done, _ = self.ray.wait(list(self.inflight), num_returns=1)
            chunk, reserved = self.inflight.pop(done[0])
            try:
                got = self.ray.get(done[0])
            except Exception as exc:
                plan.guard.settle(reserved, 0.0, calls=0)
                plan.report.errors.append(f"ray task failed: {type(exc).__name__}: {exc}"[:300])
                plan.report.not_run += len(chunk)
                self.submit()
                continue
            plan.guard.settle(reserved, sum(rec.cost_usd or 0.0 for _, rec in got), calls=len(got))
            plan.commit(got)          # committed before anything is parsed
            for key, rec in got:
                plan.arrived(key, rec)
            plan.check_failure_rate()
            self.submit()
        for chunk in self.chunks:     # never submitted (a stop): not run
            plan.not_run(chunk)


# -- what runs on the workers (module-level: importable by every worker) ----------------------------
def _decode(batch: dict, preprocess) -> dict:
    """Read, check (content hash = id) and preprocess a batch of images; a bad file keeps its reason."""
    items = list(zip((str(i) for i in batch["id"]), (str(p) for p in batch["path"])))
    data = ImageDataset(items, preprocess)
    out = [data[j] for j in range(len(items))]
    shape = next((tuple(x.shape) for _, x, e in out if e is None), (3, 1, 1))
    pixels = np.zeros((len(out), *shape), np.float32)
    for j, (_, x, e) in enumerate(out):
        if e is None:
            pixels[j] = x.numpy()
    return {"id": np.array([i for i, _, _ in out], dtype=object), "pixels": pixels,
            "err": np.array([e or "" for _, _, e in out], dtype=object)}


class _Embedder:
    """An actor holding the CLIP model; moved to the GPU when Ray gave it one."""

    def __init__(self, clip):
        import ray

        if isinstance(clip, ray.ObjectRef):
            clip = ray.get(clip)
        if ray.get_gpu_ids():
            import torch

            clip.model.to("cuda")
            clip.device = "cuda"
            if clip._image_dtype is None:
                clip._image_dtype = torch.float32
        self.clip = clip

    def __call__(self, batch: dict) -> dict:
        import torch

        errs = batch["err"]
        ok = np.array([not e for e in errs], bool)
        emb = None
        if ok.any():
            got = self.clip.encode_image_batch(torch.from_numpy(np.ascontiguousarray(batch["pixels"][ok])))
            emb = np.zeros((len(errs), got.shape[1]), np.float32)
            emb[ok] = got
        else:
            emb = np.zeros((len(errs), 1), np.float32)
        return {"id": batch["id"], "emb": emb, "err": errs}


def _topk(targets: np.ndarray, x: np.ndarray, k: int):
    idx, vals = [], []
    for _, i, v in topk_cosine(x, targets, k, chunk=max(1, len(x))):
        idx.append(i)
        vals.append(v)
    return np.concatenate(idx), np.concatenate(vals)


def _call_chunk(ep, params: dict, items: list) -> list:
    """Call the endpoint (or pool) for (key, messages, est_tokens) items; (key, CallRecord) for each."""
    async def main():
        client = make_client(ep)
        sem = asyncio.Semaphore(max(1, ep.config.max_concurrency))

        async def one(key, messages, est_tokens):
            async with sem:
                try:
                    rec = await client.complete(messages, params, est_tokens=est_tokens)
                except Exception as exc:
                    rec = client._record("error", error=f"{type(exc).__name__}: {exc}")
                return key, rec

        try:
            return await asyncio.gather(*(one(*it) for it in items))
        finally:
            await client.close()

    return list(asyncio.run(main()))
