"""Runs a plan's stage nodes as soon as their inputs exist: in process, on local workers, or on Ray.

The parent process walks the graph. A node whose inputs exist is first *probed*: its
artifact key is computed and looked up in the store, which touches no model; a cached
node is done at once. A missing one is run in process (``--jobs 1``, the debugging path),
or sent to a worker: a local process of a pool (``--jobs N``, one torch thread each) or a
Ray task (``--executor ray``). A worker receives only picklable facts (the experiment's
validated YAML, the workdir, the node's operation and arguments, and the store keys of its
inputs), rebuilds its own runner once, produces the artifact into the shared store and
returns its key. So the parent stays light (it never loads a model), and what a worker
produces is exactly what the serial path would have: the same stage code, the same keys.

Two producers of one key never both write it: the store takes a per-key ``flock``, the
second waits and reuses. A worker that dies leaves a temp directory that the next start
removes; Ray retries its task, a local run reports the failure and a re-run resumes.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from subbench.errors import ConfigError, SubbenchError
from subbench.plan import DATA_STAGES

#: Relative weight of each stage for ordering ready nodes: longest remaining chain first, so
#: the bases (the longest stage of a tiny run) start first.
STAGE_WEIGHT = {"base": 120.0, "inject": 15.0, "generate": 15.0, "distill": 25.0, "evaluate": 4.0, "teacher_kl": 3.0,
                "residual": 2.0}


#: Stages the parent runs itself (they load no model).
INLINE_STAGES = DATA_STAGES


def run_experiment(runner) -> list[dict[str, Any]]:
    """A run: the experiment's plan, its nodes produced (or found), its cells filled, one entry each."""
    import json

    from subbench.artifacts import atomic_write_text
    from subbench.plan import build_plan

    plan = build_plan(runner.exp)
    arts = execute(runner, plan)
    runner._models.clear()
    if runner.timeline:  # which stages ran side by side, on which worker (benchmarks/executor.py draws it)
        (runner.workdir / "logs").mkdir(parents=True, exist_ok=True)
        atomic_write_text(runner.workdir / "logs" / "timeline.json", json.dumps(runner.timeline, indent=1) + "\n")
    return runner.entries(runner.cells(plan, arts))


def execute(runner, plan) -> dict[str, Any]:
    """Every node of ``plan`` produced or found; node id -> artifact."""
    jobs, kind = runner.jobs, runner.executor
    if kind == "ray":
        pool = RayPool(runner)
    elif jobs > 1 and _portable(runner):
        pool = ProcessPool(runner, jobs)
    else:
        if jobs > 1:
            runner.ctx.log("[run] a component of this experiment was registered in this process only; "
                           "running its stages in process (--jobs 1).")
        return _serial(runner, plan)
    try:
        arts = _parallel(runner, plan, pool)
    except BaseException:
        pool.close(abort=True)  # a failed stage (or Ctrl-C) stops the others now; a re-run resumes
        raise
    pool.close()
    return arts


def _serial(runner, plan) -> dict[str, Any]:
    arts: dict[str, Any] = {}
    for node in plan.order():
        arts[node.id] = runner.call(node, arts)
    return arts


def _portable(runner) -> bool:
    """True when a fresh process loads every component of the experiment (built-in or installed)."""
    from subbench.plugins import get_manager

    infos = get_manager().infos
    exp = runner.exp
    comps = [*runner._families(), exp.trait.component, exp.injector.component, exp.domain.component,
             exp.judge.component, *(d.component for d in exp.distillations),
             *(m.component for m in exp.mitigations if m is not None)]
    for c in comps:
        info = infos.get(getattr(c, "plugin", None) or "")
        if info is None or not info.portable:
            return False
    return True


def priorities(plan) -> dict[str, float]:
    """Each node's longest chain of work still ahead of it (itself included), by stage weight."""
    below: dict[str, float] = {}
    users: dict[str, list] = {n.id: [] for n in plan.order()}
    for n in plan.order():
        for d in n.all_deps():
            users[d.id].append(n)
    for n in reversed(plan.order()):
        below[n.id] = STAGE_WEIGHT.get(n.stage, 1.0) + max((below[u.id] for u in users[n.id]), default=0.0)
    return below


def _parallel(runner, plan, pool) -> dict[str, Any]:
    from subbench.plan import Missing

    order = plan.order()
    prio = priorities(plan)
    arts: dict[str, Any] = {}
    waiting = {n.id: n for n in order}
    missing: dict[str, Any] = {}  # node id -> Missing (probed, not cached, not yet sent)
    running: dict[Any, tuple] = {}  # handle -> (node, Missing, started)
    keys_running: set[str] = set()
    total, started_all = len(order), time.time()
    log = runner.ctx.log

    def status() -> str:
        return f"{len(arts)}/{total} done, {len(running)} running, {len(waiting)} waiting"

    while waiting or running:
        progressed = False
        ready = [n for n in waiting.values() if all(d.id in arts for d in n.all_deps())]
        for node in sorted(ready, key=lambda n: -prio[n.id]):
            if node.id not in missing:
                try:
                    arts[node.id] = runner.call(node, arts, probe=True)
                    del waiting[node.id]
                    progressed = True
                    continue
                except Missing as m:
                    missing[node.id] = m
            m = missing[node.id]
            if m.stage in INLINE_STAGES and f"{m.stage}/{m.key}" not in keys_running:
                arts[node.id] = runner.call(node, arts)
                del waiting[node.id]
                progressed = True
                continue
            if f"{m.stage}/{m.key}" in keys_running or len(running) >= pool.slots:
                continue  # the same key is being produced, or every worker is busy
            handle = pool.submit(node, {name: (arts[d.id].stage, arts[d.id].key) for name, d in node.deps.items()})
            running[handle] = (node, m, time.time())
            keys_running.add(f"{m.stage}/{m.key}")
            del waiting[node.id]
            log(f"[{m.stage}] {m.label} ... ({status()})")
        if progressed:
            continue
        if not running:
            if waiting:  # nothing ready and nothing running: a cycle, which build_plan never makes
                raise SubbenchError(f"The plan is stuck with {len(waiting)} nodes waiting; this is a bug, please report it.")
            break
        for handle, outcome in pool.wait(list(running)):
            node, m, t0 = running.pop(handle)
            keys_running.discard(f"{m.stage}/{m.key}")
            if isinstance(outcome, BaseException):
                for other in list(running):
                    pool.cancel(other)
                raise outcome
            if outcome.get("ran"):
                runner.store.mark_refreshed(m.stage, m.key)
                runner.stats["run"] += 1
            else:
                runner.stats["cached"] += 1
            # probe again: a node whose op is several stages (sample, then score) may have more to do
            missing.pop(node.id, None)
            try:
                arts[node.id] = runner.call(node, arts, probe=True, count=False)
            except Missing:
                waiting[node.id] = node
            runner.timeline.append({"stage": m.stage, "label": m.label, "start": round(t0 - started_all, 2),
                                    "end": round(time.time() - started_all, 2), "worker": outcome.get("worker"),
                                    "ran": bool(outcome.get("ran"))})
            log(f"[{m.stage}] {m.label} done in {time.time() - t0:.1f}s ({status()})")
    return arts


# -- what a worker runs ------------------------------------------------------------------
_WORKER: dict[str, Any] = {}


def run_node(payload: dict[str, Any]) -> dict[str, Any]:
    """In a worker: produce one node into the shared store; its key and whether it ran."""
    from subbench.config import validate
    from subbench.pipeline import Runner

    ident = (payload["where"], payload["config_hash"], payload["workdir"], payload["device"], payload["fresh"],
             payload["started"])
    runner = _WORKER.get("runner") if _WORKER.get("ident") == ident else None
    if runner is None:
        from subbench.context import env_threads

        os.environ.setdefault("SUBBENCH_THREADS", str(env_threads()))
        os.environ.setdefault("TQDM_DISABLE", "1")  # the parent shows progress
        import contextlib
        import io

        with contextlib.redirect_stderr(io.StringIO()):  # the parent already said what validation says
            exp = validate(payload["raw"], payload["where"])
        runner = Runner(exp, workdir=Path(payload["workdir"]), out=Path(payload["workdir"]) / "out",
                        device=payload["device"], quiet=True, fresh=payload["fresh"], worker=True)
        runner.store.started = payload["started"]  # --fresh: what this run produced (any worker) counts as fresh
        _WORKER.update(ident=ident, runner=runner)
    deps = {name: runner.store.open(stage, key) for name, (stage, key) in payload["deps"].items()}
    before = runner.stats["run"]
    try:
        art = getattr(runner, payload["op"])(deps, **payload["args"])
    finally:
        _release_memory()
    return {"stage": art.stage, "key": art.key, "ran": runner.stats["run"] > before, "worker": os.getpid()}


def _release_memory() -> None:
    """Hand the heap a stage freed back to the system, so a long-lived worker does not keep its peak."""
    import gc

    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _payload(runner, node, deps: dict[str, tuple[str, str]]) -> dict[str, Any]:
    exp = runner.exp
    if exp.raw is None:
        raise SubbenchError("This experiment was built in process (no YAML); run it with --jobs 1.")
    return {"raw": exp.raw, "where": exp.where, "config_hash": exp.config_hash, "workdir": str(runner.workdir),
            "device": runner.ctx.device, "fresh": runner.store.fresh, "started": runner.store.started, "op": node.op,
            "args": node.args, "deps": deps}


class ProcessPool:
    """Local worker processes (spawned: a fresh interpreter, one torch thread each)."""

    def __init__(self, runner, jobs: int):
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        self.runner, self.slots = runner, jobs
        # glibc's default of 8 malloc arenas per core lets each worker's heap grow where two do
        # (one torch thread each): about 0.1 GiB less per worker (docs/results.md, "Memory")
        os.environ.setdefault("MALLOC_ARENA_MAX", "2")
        logs = Path(runner.workdir) / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.pool = ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                                        initargs=(str(logs),))

    def submit(self, node, deps):
        return self.pool.submit(run_node, _payload(self.runner, node, deps))

    def wait(self, handles):
        from concurrent.futures import FIRST_COMPLETED, wait

        done, _ = wait(handles, return_when=FIRST_COMPLETED)
        out = []
        for h in done:
            exc = h.exception()
            out.append((h, _worker_error(exc) if exc is not None else h.result()))
        return out

    def cancel(self, handle) -> None:
        handle.cancel()

    def close(self, abort: bool = False) -> None:
        if abort:
            for proc in list(getattr(self.pool, "_processes", {}).values()):
                proc.terminate()
        self.pool.shutdown(wait=True, cancel_futures=True)


def _init_worker(logs: str) -> None:
    """A local worker writes its libraries' output (progress bars, warnings) to WORKDIR/logs/worker-PID.log.

    The parent prints the run's progress; a worker's own output would interleave with it.
    """
    os.environ["TQDM_DISABLE"] = "1"
    fd = os.open(os.path.join(logs, f"worker-{os.getpid()}.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _worker_error(exc: BaseException) -> BaseException:
    from concurrent.futures.process import BrokenProcessPool

    if isinstance(exc, BrokenProcessPool):
        return SubbenchError("A worker process died (killed, or out of memory); run the same command again to resume "
                             "from the finished stages.")
    return exc


class RayPool:
    """Ray tasks on a cluster (``--address``) or a local one; resources per stage from the components."""

    def __init__(self, runner):
        try:
            import ray
        except ImportError:
            raise ConfigError("--executor ray needs Ray: pip install 'subbench[ray]' (or pip install ray).") from None
        self.ray, self.runner = ray, runner
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": False,
                                      "include_dashboard": False}
            if runner.address:
                kwargs["address"] = runner.address
            else:
                kwargs["num_cpus"] = runner.jobs
            try:
                ray.init(**kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise SubbenchError(f"Could not connect to the Ray cluster at {runner.address or 'a new local one'}: "
                                    f"{str(exc).splitlines()[0] if str(exc) else exc}") from None
            self._owns = not runner.address
        else:
            self._owns = False
        self.slots = max(1, int(ray.cluster_resources().get("CPU", runner.jobs)))
        self.remote = ray.remote(max_retries=3, retry_exceptions=False)(run_node)

    def submit(self, node, deps):
        res = stage_resources(self.runner, node)
        return self.remote.options(**res).remote(_payload(self.runner, node, deps))

    def wait(self, handles):
        ready, _ = self.ray.wait(handles, num_returns=1)
        out = []
        for h in ready:
            try:
                out.append((h, self.ray.get(h)))
            except Exception as exc:  # a task error: the original exception when Ray kept it
                cause = getattr(exc, "cause", None)
                out.append((h, cause if isinstance(cause, BaseException) else SubbenchError(str(exc).splitlines()[-1])))
        return out

    def cancel(self, handle) -> None:
        try:
            self.ray.cancel(handle)
        except Exception:  # pragma: no cover - already finished
            pass

    def close(self, abort: bool = False) -> None:
        if self._owns:
            self.ray.shutdown()


def stage_resources(runner, node) -> dict[str, Any]:
    """Ray resources for one node: what the family of the model it trains or loads declares (``resources``).

    The families say it (CPU, GPU count, memory for a 7B family); a stage that loads a model
    on ``--device cuda`` asks for a GPU even when its family declares none.
    """
    family, params = _stage_family(runner, node)
    got: dict[str, Any] = {}
    if family is not None:
        try:
            got = family.resources(node.stage, params) or {}
        except Exception:  # a plugin's estimate never breaks the run
            got = {}
    cpus, gpus, mem = float(got.get("cpus", 1)), float(got.get("gpus", 0)), got.get("memory_gb")
    if runner.ctx.device == "cuda" and family is not None and gpus == 0:
        gpus = 1.0
    out: dict[str, Any] = {"num_cpus": cpus, "num_gpus": gpus}
    if mem:
        out["memory"] = int(float(mem) * 2**30)
    return out


def _stage_family(runner, node):
    """The family whose model the node trains or loads, and its params (None for data-only stages)."""
    args = node.args
    view = runner.views[args.get("view", 0)]
    if node.stage == "base":
        return runner._family(args["family"]), args["params"]
    if node.stage == "distill" or args.get("kind") == "student":
        s = view.students[args["student" if node.stage == "distill" else "who"]]
        return s.family, s.params
    name = args.get("family") if node.stage in ("inject", "teacher_kl") else args.get("who")
    if name is None:
        return None, {}
    fam = runner._family(name)
    params = next((v.teacher_params for v in runner.views if v.teacher_family is fam),
                  next((s.params for v in runner.views for s in v.students if s.family is fam), {}))
    return fam, params


# -- what --dry-run says about the graph ----------------------------------------------------
def simulate(plan, cost: dict[str, float], jobs: int) -> float:
    """Wall seconds of ``plan`` on ``jobs`` workers, ready nodes longest-remaining-chain first (as execute does)."""
    import heapq

    prio = priorities(plan)
    users: dict[str, list] = {n.id: [] for n in plan.order()}
    left = {n.id: len(n.all_deps()) for n in plan.order()}
    for n in plan.order():
        for d in n.all_deps():
            users[d.id].append(n)
    ready = [(-prio[n.id], i, n) for i, n in enumerate(plan.order()) if not left[n.id]]
    heapq.heapify(ready)
    running: list[tuple[float, int, Any]] = []
    now, seq = 0.0, 0
    while ready or running:
        while ready and len(running) < jobs:
            _, _, n = heapq.heappop(ready)
            seq += 1
            heapq.heappush(running, (now + cost[n.id], seq, n))
        now, _, done = heapq.heappop(running)
        for u in users[done.id]:
            left[u.id] -= 1
            if not left[u.id]:
                heapq.heappush(ready, (-prio[u.id], seq, u))
                seq += 1
    return now


def describe_plan(exp, workdir: Path, jobs: int) -> list[str]:
    """The plan's nodes, which are cached in ``workdir``, the critical path and the wall time on ``jobs`` workers."""
    from subbench.dryrun import node_seconds, tiny_only
    from subbench.pipeline import Runner
    from subbench.plan import Missing, build_plan

    plan = build_plan(exp)
    runner = Runner(exp, workdir=workdir, out=workdir / "out", quiet=True, worker=True) \
        if (Path(workdir) / "artifacts").is_dir() else None  # a dry run creates nothing
    arts: dict[str, Any] = {}
    state: dict[str, str] = {}
    for node in plan.order():
        if runner is None or any(d.id not in arts for d in node.deps.values()):
            state[node.id] = "pending"  # its key depends on what has not run yet
            continue
        try:
            arts[node.id] = runner.call(node, arts, probe=True)
            state[node.id] = "cached"
        except Missing:
            state[node.id] = "to run"
    counts = plan.counts()
    by_state = {s: sum(1 for v in state.values() if v == s) for s in ("cached", "to run", "pending")}
    lines = [f"plan: {len(plan.nodes)} stage nodes ({', '.join(f'{k} {v}' for k, v in counts.items())})",
             f"  in {workdir}: {by_state['cached']} cached, {by_state['to run']} to run, "
             f"{by_state['pending']} waiting on stages not run yet"]
    if not by_state["to run"] and not by_state["pending"]:
        return lines + ["  nothing to run: every stage is cached"]
    if not tiny_only(exp):
        return lines + ["  wall time: no CPU estimate for these families (see the GPU hours above)"]
    cost = {n.id: 0.0 if state[n.id] == "cached" else node_seconds(exp, n) for n in plan.order()}
    total = sum(cost.values())
    if not total:
        return lines + ["  nothing to run: every stage is cached"]
    crit, path = plan.critical_path(cost)
    steps: list[list] = []
    for n in path:
        if cost[n.id] and (not steps or steps[-1][0] != n.stage):
            steps.append([n.stage, cost[n.id]])
        elif cost[n.id]:
            steps[-1][1] += cost[n.id]
    no_bases = {k: (0.0 if plan.nodes[k].stage == "base" else v) for k, v in cost.items()}
    widths = sorted({1, 2, max(1, jobs)})
    walls = ", ".join(f"--jobs {j} {simulate(plan, cost, j) / 60:.1f} min" for j in widths)
    rest = ", ".join(f"--jobs {j} {simulate(plan, no_bases, j) / 60:.1f} min" for j in widths)
    return lines + [
        f"CPU time (estimate, tiny families, one core per stage; docs/performance.md): {total / 60:.1f} CPU-min to run",
        f"  critical path: {' -> '.join(f'{s} {c:.0f}s' for s, c in steps)} = {crit / 60:.1f} min",
        f"  wall time: {walls}; with the bases built: {rest}"]
