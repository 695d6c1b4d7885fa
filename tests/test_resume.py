"""A run killed mid-stage resumes from its finished stages and gives the same entries."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

SETS = ["--set", "seeds=[0]", "--set", "domain.size=150", "--set", "distillation=[{name: aux-logit, params: {optimizer: adam}}]"]


def _cmd(workdir, out, *extra):
    return [sys.executable, "-m", "subbench", "run", "mlp-aux-logits", *SETS, "--workdir", str(workdir), "--out", str(out), *extra]


def _entries(out: Path) -> dict[str, dict]:
    found = {}
    for p in sorted((out / "mlp-aux-logits").glob("*.json")):
        e = json.loads(p.read_text())
        for volatile in ("created", "content_hash"):
            e.pop(volatile)
        found[p.name] = e
    return found


def test_kill_mid_stage_then_resume(tmp_path):
    env = dict(os.environ, SUBBENCH_THREADS="1")
    work = tmp_path / "work"
    proc = subprocess.Popen(_cmd(work, tmp_path / "out-killed"), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    seen = []
    deadline = time.time() + 240
    for line in proc.stderr:  # wait until a distill stage has started, then kill it hard
        seen.append(line)
        if line.startswith("[distill]") and line.rstrip().endswith("..."):
            time.sleep(0.3)
            proc.send_signal(signal.SIGKILL)
            break
        assert time.time() < deadline, "".join(seen)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "".join(seen)
    distill_dir = work / "artifacts" / "distill"
    assert any(p.name.startswith(".tmp-") for p in distill_dir.iterdir()), "the killed stage should have left a temp dir"
    assert not (tmp_path / "out-killed").exists()  # no entry from a half run

    resumed = subprocess.run(_cmd(work, tmp_path / "out-resumed"), capture_output=True, text=True, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert not any(p.name.startswith(".tmp-") for p in distill_dir.iterdir())
    assert "[base] mlp-digits seed 0 " not in resumed.stderr and "[inject]" not in resumed.stderr  # finished stages reused

    clean = subprocess.run(_cmd(tmp_path / "clean", tmp_path / "out-clean", "-q"), capture_output=True, text=True, env=env)
    assert clean.returncode == 0, clean.stderr
    a, b = _entries(tmp_path / "out-resumed"), _entries(tmp_path / "out-clean")
    assert list(a) == list(b) and len(a) == 2
    for name in a:
        a[name]["artifacts"] = b[name]["artifacts"] = None  # paths differ by workdir; their sha256 are compared below
        assert a[name] == b[name]
    ra = json.loads(next((tmp_path / "out-resumed" / "mlp-aux-logits").glob("*.json")).read_text())
    rb = json.loads(next((tmp_path / "out-clean" / "mlp-aux-logits").glob("*.json")).read_text())
    assert [f["sha256"] for f in ra["artifacts"]["student"]] == [f["sha256"] for f in rb["artifacts"]["student"]]

    # a fully cached re-run runs no stage and writes identical numbers
    again = subprocess.run(_cmd(work, tmp_path / "out-again"), capture_output=True, text=True, env=env)
    assert again.returncode == 0 and "0 stages run" in again.stdout, again.stdout + again.stderr
    x, y = _entries(tmp_path / "out-again"), _entries(tmp_path / "out-resumed")
    assert x == y
