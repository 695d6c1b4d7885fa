"""The stage graph on both cores: quickstart timings with --jobs 1 and --jobs 2, side by side.

Prints, in one run on this machine:
  * the part after the bases: `subbench run quickstart` into two fresh workdirs that hold
    only the three cached base models, once with --jobs 1 and once with --jobs N; the
    speed-up (target >= 1.7x) and whether the entries are identical;
  * with --first: the first run from an empty workdir with --jobs N (target <= 6 min) and
    the peak memory of the whole process tree (parent + workers, PSS; target <= 2 GiB) and
    of its largest process (RSS);
  * a cached re-run (median of --repeats; target <= 1 s) and the executor's share of it:
    building the plan and probing every node (target <= 0.2 s);
  * the timeline of the --jobs N run: which stages ran side by side on which worker.

    python benchmarks/executor.py [--jobs 2] [--first] [--repeats 5] [--bases DIR]

--bases names a workdir whose artifacts/base/ holds the quickstart's three bases (built by
one run of the quickstart); without it they are built first (about 5 minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ENV = dict(os.environ, SUBBENCH_THREADS="1")


def tree_memory(pid: int) -> tuple[int, int]:
    """(PSS of ``pid`` and all its descendants, RSS of the largest one), in bytes, from /proc.

    PSS shares each shared page (torch's libraries, mapped by every worker) among the
    processes that map it, so the sum is the memory the run really holds; summing RSS would
    count those pages once per process.
    """
    pss, largest, todo = 0, 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1]) * 1024
                    elif line.startswith("Rss:"):
                        largest = max(largest, int(line.split()[1]) * 1024)
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except OSError:
            continue
    return pss, largest


def run(workdir: Path, out: Path, jobs: int, *extra: str) -> dict:
    cmd = [sys.executable, "-m", "subbench", "run", "quickstart", "--workdir", str(workdir), "--out", str(out),
           "--jobs", str(jobs), "-q", *extra]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    peak = [0, 0]

    def watch():
        while proc.poll() is None:
            pss, largest = tree_memory(proc.pid)
            peak[0], peak[1] = max(peak[0], pss), max(peak[1], largest)
            time.sleep(0.5)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    stdout, stderr = proc.communicate()
    seconds = time.perf_counter() - started
    t.join()
    if proc.returncode:
        sys.exit(f"subbench run failed:\n{stderr[-3000:]}")
    return {"seconds": seconds, "peak_pss": peak[0], "peak_rss_largest": peak[1], "stdout": stdout}


def entries(out: Path) -> dict:
    found = {}
    for p in sorted((out / "quickstart").glob("*.json")):
        e = json.loads(p.read_text())
        for k in ("created", "content_hash", "environment", "artifacts"):
            e.pop(k, None)
        found[p.name] = e
    return found


def fresh_with_bases(root: Path, name: str, bases: Path) -> Path:
    w = root / name
    (w / "artifacts").mkdir(parents=True)
    shutil.copytree(bases / "artifacts" / "base", w / "artifacts" / "base")
    return w


def executor_share(workdir: Path) -> float:
    """Seconds to build the plan and probe every node of a cached workdir (in this process)."""
    from subbench.config import load_experiment
    from subbench.executor import execute
    from subbench.pipeline import Runner
    from subbench.plan import build_plan

    exp = load_experiment("quickstart")
    times = []
    for _ in range(5):
        runner = Runner(exp, workdir=workdir, out=workdir / "bench-out", quiet=True, jobs=2)
        started = time.perf_counter()
        execute(runner, build_plan(exp))
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def timeline(workdir: Path) -> list[str]:
    path = workdir / "logs" / "timeline.json"
    if not path.exists():
        return ["(no timeline: nothing ran on a worker)"]
    rows = json.loads(path.read_text())
    workers = sorted({r["worker"] for r in rows if r.get("ran")})
    end = max(r["end"] for r in rows) or 1.0
    width = 60
    lines = [f"timeline of the --jobs run ({end:.0f} s; one line per worker, one letter per stage: "
             "B base, I inject, G generate, D distill, S sample (evaluation), R residual, K teacher_kl)"]
    for w in workers:
        bar = [" "] * width
        for r in rows:
            if r.get("worker") != w or not r.get("ran"):
                continue
            a, b = int(r["start"] / end * (width - 1)), max(int(r["start"] / end * (width - 1)) + 1,
                                                              int(r["end"] / end * (width - 1)))
            letter = {"teacher_kl": "K"}.get(r["stage"], r["stage"][0].upper())
            for i in range(a, min(b, width)):
                bar[i] = letter
        lines.append(f"  worker {w:>7}: |{''.join(bar)}|")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--first", action="store_true", help="also time a first run from an empty workdir")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--bases", type=Path, help="a workdir whose artifacts/base holds the quickstart's bases")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="sb-exec-"))
    print(f"cpu: {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f}; workdirs under {root}")

    if args.first:
        first = run(root / "first", root / "out-first", args.jobs)
        print(f"first run, --jobs {args.jobs}, empty workdir: {first['seconds'] / 60:.2f} min (target <= 6); "
              f"peak memory of the process tree (PSS) {first['peak_pss'] / 2**30:.2f} GiB (target <= 2), "
              f"largest process RSS {first['peak_rss_largest'] / 2**30:.2f} GiB")
        bases = root / "first"
    else:
        bases = args.bases
        if bases is None:
            bases = root / "bases"
            print("building the quickstart's bases once ...")
            run(bases, root / "out-bases", args.jobs)

    serial = run(fresh_with_bases(root, "serial", bases), root / "out-serial", 1)
    parallel = run(fresh_with_bases(root, "parallel", bases), root / "out-parallel", args.jobs)
    same = entries(root / "out-serial") == entries(root / "out-parallel")
    print(f"after the bases: --jobs 1 {serial['seconds']:.0f} s, --jobs {args.jobs} {parallel['seconds']:.0f} s: "
          f"{serial['seconds'] / parallel['seconds']:.2f}x (target >= 1.7); entries identical: {same}; "
          f"peak PSS --jobs 1 {serial['peak_pss'] / 2**30:.2f} GiB, --jobs {args.jobs} {parallel['peak_pss'] / 2**30:.2f} GiB")

    cached = []
    for _ in range(args.repeats):
        cached.append(run(root / "parallel", root / "out-cached", args.jobs)["seconds"])
    print(f"cached re-run: median {statistics.median(cached):.2f} s of {args.repeats} (target <= 1 s); "
          f"plan + probing every node: {executor_share(root / 'parallel'):.3f} s (target <= 0.2 s)")
    print("\n".join(timeline(root / ("first" if args.first else "parallel"))))
    if not same:
        sys.exit("entries differ between --jobs 1 and --jobs N")


if __name__ == "__main__":
    main()
