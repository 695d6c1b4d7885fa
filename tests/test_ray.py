"""The plan's stage graph on a real Ray cluster: a local head on 127.0.0.1 with 2 CPUs.

Marked ``ray`` (``pytest -m ray``; ``.ci/run`` installs the extra and runs them). The
entries of a Ray run must equal the in-process run's in every field but time and
environment, also when a Ray worker is killed in the middle of a stage.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_executor import ENV, _cmd, entries  # noqa: E402

pytest.importorskip("ray")
pytestmark = pytest.mark.ray


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    ray = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    port = _free_port()
    tmp = Path("/tmp") / f"sbray-{os.getpid()}"  # Ray's socket paths must stay short
    start = subprocess.run([ray, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
                            "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={tmp}"],
                           capture_output=True, text=True, env=ENV, timeout=180)
    assert start.returncode == 0, start.stderr
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True, env=ENV, timeout=120)
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    base = tmp_path_factory.mktemp("serial")
    done = subprocess.run(_cmd(base / "work", base / "out", "--jobs", "1", "-q"), capture_output=True, text=True, env=ENV)
    assert done.returncode == 0, done.stderr
    return entries(base / "out")


def test_ray_run_gives_the_in_process_entries(head, serial, tmp_path):
    done = subprocess.run(_cmd(tmp_path / "work", tmp_path / "out", "--executor", "ray", "--address", head),
                          capture_output=True, text=True, env=ENV, timeout=900)
    assert done.returncode == 0, done.stderr
    assert entries(tmp_path / "out") == serial
    again = subprocess.run(_cmd(tmp_path / "work", tmp_path / "out2", "--executor", "ray", "--address", head, "-q"),
                           capture_output=True, text=True, env=ENV, timeout=300)
    assert again.returncode == 0 and "0 stages run" in again.stdout


def _task_workers() -> list[int]:
    out = subprocess.run(["pgrep", "-f", "ray::run_node"], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def test_a_killed_ray_worker_is_retried_and_the_entries_are_the_same(head, serial, tmp_path):
    proc = subprocess.Popen(_cmd(tmp_path / "work", tmp_path / "out", "--executor", "ray", "--address", head),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    killed = None
    deadline = time.time() + 300
    for line in proc.stderr:
        if line.startswith("[distill]") and line.rstrip().endswith(")") and "running" in line:
            for _ in range(200):  # the task is on a worker now: kill that worker hard
                pids = _task_workers()
                if pids:
                    os.kill(pids[0], signal.SIGKILL)
                    killed = pids[0]
                    break
                time.sleep(0.02)
            if killed:
                break
        assert time.time() < deadline
    out, err = proc.communicate(timeout=900)
    assert killed is not None, "no Ray worker was running a stage to kill"
    assert proc.returncode == 0, err
    assert entries(tmp_path / "out") == serial
