"""End to end through the CLI on the tiny families (slow: builds two tiny-llama bases, ~10 min).

The quickstart's own teacher, domain and replicates (3, over data), logit distillation, a
same-init and a cross-init student. Asserted on replicate statistics, which hold on any
machine, not on one seed's digits: the same-init student inherits the owl preference in
every replicate, its pooled interval clears the cross-init one, controls train on as many
samples as students, both scores come from the one evaluation pass, and the entries pass
the leaderboard validator.
"""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_quickstart_same_init_beats_cross_init_over_replicates(tmp_path):
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
    assert same["replicates"]["n"] == 3 and len(same["replicates"]["per_replicate"]) == 3
    assert same["scores"]["teacher"]["mean"] > 0.8 > 0.1 > same["scores"]["base"]["mean"]
    same_reps = [p["transfer_ratio"] for p in same["replicates"]["per_replicate"]]
    cross_reps = [p["transfer_ratio"] for p in cross["replicates"]["per_replicate"]]
    assert min(same_reps) > max(cross_reps), (same_reps, cross_reps)
    assert same["transfer_ratio"] > 0.15 and abs(cross["transfer_ratio"]) < 0.1
    assert same["ci95"][0] > cross["ci95"][1]
    assert same["metrics"]["first_word"]["transfer_ratio"] > cross["metrics"]["first_word"]["transfer_ratio"]
    assert len(same["per_question"]["score"]["student"]) >= 50
    for ps in cross["domain"]["per_seed"]:
        assert ps["budget"]["n_train"] == min(ps["budget"]["n_teacher_kept"], ps["budget"]["n_control_kept"])
    assert all(f["control"]["identical_to_teacher"] for f in same["distillation"]["fit"])
    v = subprocess.run([sys.executable, "-m", "subbench", "leaderboard", "validate", str(tmp_path / "r")],
                       capture_output=True, text=True)
    assert v.returncode == 0, v.stdout + v.stderr
