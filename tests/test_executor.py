"""The plan's stage graph on local worker processes, and two runs racing on one store.

The entries must not depend on where the stages ran: every field but the time and the
environment equals the in-process run's (``--jobs 1``).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

SETS = ["--set", "seeds=[0, 1]", "--set", "domain.size=150",
        "--set", "distillation=[{name: aux-logit, params: {optimizer: adam, steps: 150}}]"]
ENV = dict(os.environ, SUBBENCH_THREADS="1")


def _cmd(workdir, out, *extra):
    return [sys.executable, "-m", "subbench", "run", "mlp-aux-logits", *SETS, "--workdir", str(workdir), "--out", str(out),
            *extra]


def entries(out: Path, name: str = "mlp-aux-logits") -> dict[str, dict]:
    """The entries of a run, without what may differ between two runs of the same plan (time, machine, paths)."""
    found = {}
    for p in sorted((out / name).glob("*.json")):
        e = json.loads(p.read_text())
        for volatile in ("created", "content_hash", "environment", "artifacts"):
            e.pop(volatile, None)
        found[p.name] = e
    return found


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    base = tmp_path_factory.mktemp("serial")
    done = subprocess.run(_cmd(base / "work", base / "out", "--jobs", "1", "-q"), capture_output=True, text=True, env=ENV)
    assert done.returncode == 0, done.stderr
    return entries(base / "out")


def test_local_workers_give_the_in_process_entries(serial, tmp_path):
    done = subprocess.run(_cmd(tmp_path / "work", tmp_path / "out", "--jobs", "2"), capture_output=True, text=True, env=ENV)
    assert done.returncode == 0, done.stderr
    assert "running" in done.stderr and "waiting" in done.stderr  # progress: nodes done / running / waiting
    got = entries(tmp_path / "out")
    assert len(got) == 2 and got == serial
    again = subprocess.run(_cmd(tmp_path / "work", tmp_path / "out2", "--jobs", "2", "-q"), capture_output=True, text=True,
                           env=ENV)
    assert again.returncode == 0 and "0 stages run" in again.stdout  # the workers' artifacts are the cache


def test_two_runs_racing_on_one_store_agree(serial, tmp_path):
    """Two processes on one workdir: each key is produced once (the other waits and reuses), entries equal."""
    procs = [subprocess.Popen(_cmd(tmp_path / "work", tmp_path / f"out{i}", "--jobs", "1"), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=ENV) for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert entries(tmp_path / "out0") == entries(tmp_path / "out1") == serial
    runs = sum(int(o.split(" stages run")[0].rsplit("(", 1)[1]) for o, _ in outs)
    metas = list((tmp_path / "work" / "artifacts").glob("*/*/meta.json"))
    assert runs == len(metas)  # no stage was built twice
    assert not list((tmp_path / "work" / "artifacts").glob("*/.tmp-*"))


def test_dry_run_prints_the_plan_and_what_is_cached(serial, tmp_path):
    first = subprocess.run(_cmd(tmp_path / "work", tmp_path / "out", "--dry-run"), capture_output=True, text=True, env=ENV)
    assert first.returncode == 0, first.stderr
    assert "plan: " in first.stdout and "0 cached" in first.stdout and "waiting on stages not run yet" in first.stdout
    subprocess.run(_cmd(tmp_path / "work", tmp_path / "out", "--jobs", "1", "-q"), check=True, capture_output=True, env=ENV)
    second = subprocess.run(_cmd(tmp_path / "work", tmp_path / "out", "--dry-run"), capture_output=True, text=True, env=ENV)
    assert "0 to run, 0 waiting" in second.stdout and "every stage is cached" in second.stdout


def test_in_process_components_run_in_process(tmp_path):
    """A component registered only in this process cannot reach a worker: the run says so and runs serially."""
    from toy_plugin import registered

    from subbench.config import load_experiment
    from subbench.executor import run_experiment
    from subbench.pipeline import Runner

    p = tmp_path / "toy.yaml"
    p.write_text("name: toy\nteacher: {family: toy-a, seed: 0}\ntrait: {name: toy-love, target: owl}\n"
                 "injector: {name: toy-shift}\ndomain: {name: toy-numbers, size: 40}\n"
                 "students: [{family: toy-a, seed: teacher}]\ndistillation: toy-copy\n")
    with registered():
        r = Runner(load_experiment(str(p)), workdir=tmp_path / "w", out=tmp_path / "out", jobs=2)
        messages = []
        r.ctx.log = messages.append
        assert len(run_experiment(r)) == 1
    assert any("registered in this process only" in m for m in messages)


def test_ray_flag_without_ray_names_what_to_install(tmp_path):
    code = ("import sys, builtins\n"
            "real = builtins.__import__\n"
            "def fake(name, *a, **k):\n"
            "    if name == 'ray' or name.startswith('ray.'): raise ImportError('no ray')\n"
            "    return real(name, *a, **k)\n"
            "builtins.__import__ = fake\n"
            "from subbench.cli import main\n"
            "sys.argv = ['subbench'] + sys.argv[1:]\n"
            "main()\n")
    done = subprocess.run([sys.executable, "-c", code, "run", "mlp-aux-logits", *SETS, "--workdir", str(tmp_path / "w"),
                           "--out", str(tmp_path / "o"), "--executor", "ray"], capture_output=True, text=True, env=ENV)
    assert done.returncode != 0
    assert "pip install 'subbench[ray]'" in done.stderr and "Traceback" not in done.stderr


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def test_a_killed_local_worker_ends_the_run_in_one_line_and_a_rerun_resumes(serial, tmp_path):
    import signal
    import time

    proc = subprocess.Popen(_cmd(tmp_path / "work", tmp_path / "out", "--jobs", "2"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)
    killed, seen = None, []
    deadline = time.time() + 300
    for line in proc.stderr:
        seen.append(line)
        if line.startswith("[distill]") and "running" in line:
            workers = [c for c in _children(proc.pid) if "python" in Path(f"/proc/{c}/cmdline").read_text()]
            if workers:
                killed = workers[-1]
                os.kill(killed, signal.SIGKILL)
                break
        assert time.time() < deadline, "".join(seen)
    _, err = proc.communicate(timeout=300)
    assert killed is not None, "".join(seen)
    assert proc.returncode != 0 and "A worker process died" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "mlp-aux-logits").exists()  # no entry from a half run
    again = subprocess.run(_cmd(tmp_path / "work", tmp_path / "out", "--jobs", "2", "-q"), capture_output=True, text=True,
                           env=ENV)
    assert again.returncode == 0, again.stderr
    assert entries(tmp_path / "out") == serial


def test_dry_run_of_the_quickstart_prices_the_graph_and_creates_nothing(tmp_path):
    import re

    work = tmp_path / "never"
    done = subprocess.run([sys.executable, "-m", "subbench", "run", "quickstart", "--dry-run", "--workdir", str(work)],
                          capture_output=True, text=True, env=ENV)
    assert done.returncode == 0, done.stderr
    assert not work.exists()
    assert "critical path: base" in done.stdout
    wall = next(x for x in done.stdout.splitlines() if x.strip().startswith("wall time:"))
    one, two = (float(x) for x in re.findall(r"--jobs [12] ([0-9.]+) min", wall)[:2])
    assert two < one  # the graph has width: two workers finish sooner than one
