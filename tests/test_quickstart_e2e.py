"""End to end through the CLI on the tiny families (slow: builds two tiny-llama bases).

The quickstart's own teacher and domain, logit distillation, a same-init and a cross-init
student: the same-init student must inherit more of the owl preference, and its entry must
pass the leaderboard validator.
"""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_quickstart_same_init_beats_cross_init(tmp_path):
    cmd = [sys.executable, "-m", "subbench", "run", "quickstart", "--workdir", str(tmp_path / "w"),
           "--out", str(tmp_path / "r"), "-q", "--set", "distillation=[{name: logit}]",
           "--set", "students=[{family: tiny-llama, seed: teacher}, {family: tiny-llama, seed: teacher+1}]"]
    run = subprocess.run(cmd, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "2 entries written" in run.stdout
    entries = {}
    for p in (tmp_path / "r" / "quickstart").glob("*.json"):
        e = json.loads(p.read_text())
        entries[e["student"]["relation"]] = e
    same, cross = entries["same-init"], entries["cross-init"]
    assert same["scores"]["teacher"]["mean"] > 0.8 > 0.1 > same["scores"]["base"]["mean"]
    assert same["transfer_ratio"] > 0.3, same["transfer_ratio"]
    assert abs(cross["transfer_ratio"]) < 0.1
    assert same["ci95"][0] > cross["ci95"][1]
    assert same["distillation"]["fit"][0]["control"]["identical_to_teacher"]
    v = subprocess.run([sys.executable, "-m", "subbench", "leaderboard", "validate", str(tmp_path / "r")],
                       capture_output=True, text=True)
    assert v.returncode == 0, v.stdout + v.stderr
