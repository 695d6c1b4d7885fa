"""Replicates, equal training budgets and the v2 entry fields, on the torch-free toy modality."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from toy_plugin import registered

from subbench.cli import build_cli
from subbench.config import load_experiment
from subbench.errors import ConfigError

BASE = """\
name: rep
teacher: {{family: toy-a, seed: 0}}
trait: {{name: toy-love, target: owl}}
injector: {{name: toy-shift, params: {{strength: 1.0}}}}
domain: {{name: toy-numbers, size: 60{budget}, params: {{limit: {limit}}}}}
students:
  - {{family: toy-a, seed: teacher}}
  - {{family: toy-a, seed: teacher+1}}
distillation: toy-copy
analysis: {{bootstrap: 200}}
{extra}
"""


def write(tmp_path: Path, extra: str = "replicates: {n: 3, over: data}", limit: float = 5.0, budget: str = "") -> Path:
    p = tmp_path / "rep.yaml"
    p.write_text(BASE.format(extra=extra, limit=limit, budget=budget))
    return p


def run(tmp_path: Path, path: Path) -> dict[str, dict]:
    with registered():
        res = CliRunner().invoke(build_cli(), ["run", str(path), "--workdir", str(tmp_path / "w"),
                                               "--out", str(tmp_path / "out"), "-q"])
    assert res.exit_code == 0, res.output
    entries = {}
    for f in (tmp_path / "out" / "rep").glob("*.json"):
        e = json.loads(f.read_text())
        entries[e["student"]["relation"]] = e
    return entries, res.output


def test_replicates_over_data_keep_the_bases(tmp_path):
    with registered():
        exp = load_experiment(str(write(tmp_path)))
    assert exp.seeds == [0, 1, 2] and exp.replicates == {"n": 3, "over": "data"}
    assert [exp.teacher_seed_for(r) for r in exp.seeds] == [0, 0, 0]
    assert exp.resolved["replicates"] == {"n": 3, "over": "data"}


def test_replicates_over_init_draw_new_bases(tmp_path):
    with registered():
        exp = load_experiment(str(write(tmp_path, "replicates: {n: 4, over: init, first: 2}")))
    assert exp.seeds == [2, 3, 4, 5]
    assert [exp.teacher_seed_for(r) for r in exp.seeds] == [2, 3, 4, 5]
    assert [exp.students[1].resolve_seed(exp.teacher_seed_for(r)) for r in exp.seeds] == [3, 4, 5, 6]


@pytest.mark.parametrize("extra, message", [
    ("replicates: {n: 0}", "replicates.n: expected a whole number from 1 to 1000"),
    ("replicates: {n: 3, over: everything}", "replicates.over: expected one of data, init"),
    ("replicates: {n: 3}\nseeds: [0, 1]", "replicates: give either replicates or seeds, not both."),
    ("replicates: {n: 2, ovr: data}", "replicates.ovr: unknown field. Did you mean: over?"),
])
def test_bad_replicates_are_refused(tmp_path, extra, message):
    with registered(), pytest.raises(ConfigError) as err:
        load_experiment(str(write(tmp_path, extra)))
    assert message in str(err.value)


def test_bad_budget_is_refused(tmp_path):
    with registered(), pytest.raises(ConfigError) as err:
        load_experiment(str(write(tmp_path, budget=", budget: lots")))
    assert "domain.budget: expected 'equal'" in str(err.value)


def test_entries_carry_replicates_spread_and_equal_budgets(tmp_path):
    # limit 0.9: the teacher (bias 1) keeps about a third of its numbers, the base (bias 0) all of them
    entries, table = run(tmp_path, write(tmp_path, limit=0.9))
    same = entries["same-init"]
    reps = same["replicates"]
    assert reps["n"] == 3 and reps["over"] == "data" and len(reps["per_replicate"]) == 3
    ratios = [p["transfer_ratio"] for p in reps["per_replicate"]]
    assert reps["ratio_spread"]["sd"] > 0 and reps["ratio_spread"]["min"] == min(ratios)
    for ps in same["domain"]["per_seed"]:
        b = ps["budget"]
        assert b["n_train"] == b["n_teacher_kept"] == ps["n_kept"] < b["n_control_kept"] == 60
        assert ps["keep_rate"] < 0.5 * ps["control_keep_rate"]
    # the control really trained on as many samples as the student
    work = tmp_path / "w"
    for i, art in enumerate(same["artifacts"]["data"]):
        n_student = sum(1 for _ in open(work / art["path"]))
        n_control = sum(1 for _ in open(work / same["artifacts"]["control_data"][i]["path"]))
        assert n_student == n_control == reps["per_replicate"][i]["n_train"]
    assert any("damaged the teacher's benign skill" in f for f in same["flags"])
    assert "per replicate" in table and "damaged the teacher's benign skill" in table
    assert entries["cross-init"]["transfer_ratio"] == 0.0


def test_a_fixed_budget_cuts_both(tmp_path):
    entries, _ = run(tmp_path, write(tmp_path, budget=", budget: 12"))
    for e in entries.values():
        assert {p["n_train"] for p in e["replicates"]["per_replicate"]} == {12}
        assert all(not ps["budget"]["short"] for ps in e["domain"]["per_seed"])


def test_a_zero_teacher_effect_is_a_null_ratio_even_with_min_effect_0():
    from subbench.metrics import replicate_ratios, transfer_ratio

    flat = [[0.5, 0.5]]
    res = transfer_ratio(flat, flat, flat, [[0.6, 0.6]], min_effect=0.0, n_boot=100)
    assert res.ratio is None and res.note
    assert replicate_ratios(flat, flat, flat, flat, min_effect=0.0)[0]["transfer_ratio"] is None


def test_list_experiments_reads_folded_descriptions():
    res = CliRunner().invoke(build_cli(), ["list", "experiments"])
    assert res.exit_code == 0
    mlp = next(line for line in res.output.splitlines() if line.startswith("mlp-aux-logits"))
    assert ">-" not in mlp and "The theory check of subliminal learning" in mlp
    assert any(line.startswith("quickstart-inits") for line in res.output.splitlines())
