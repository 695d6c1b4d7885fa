"""Several teachers in one experiment (the teacher x student matrix) on the torch-free toy modality,
and the matrix-tiny experiment's grid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from toy_plugin import registered

from subbench.cli import build_cli
from subbench.config import load_experiment
from subbench.errors import ConfigError

MULTI = """\
name: mat
teacher:
{teachers}
trait: {{name: toy-love, target: owl}}
injector: {{name: toy-shift, params: {{strength: 1.0}}}}
domain: {{name: toy-numbers, size: 60}}
students:
{students}
distillation: toy-copy
analysis: {{bootstrap: 200}}
replicates: {{n: 2, over: data}}
"""
TEACHERS = "  - {family: toy-a, seed: 0}\n  - {family: toy-b, seed: 0}"
STUDENTS = ("  - {family: teacher, seed: teacher}\n  - {family: teacher, seed: teacher+1}\n"
            "  - {family: toy-a, seed: teacher}\n  - {family: toy-b, seed: teacher}")


def write(tmp_path: Path, teachers: str = TEACHERS, students: str = STUDENTS) -> Path:
    p = tmp_path / "mat.yaml"
    p.write_text(MULTI.format(teachers=teachers, students=students))
    return p


def load(path: Path):
    with registered():
        return load_experiment(str(path))


def test_each_teacher_gets_its_own_family_once_and_the_others(tmp_path):
    exp = load(write(tmp_path))
    views = exp.views()
    assert [v.teacher_label for v in views] == ["toy-a", "toy-b"]
    # {family: teacher, seed: teacher} and {family: toy-a, seed: teacher} are one student for the toy-a teacher
    assert [s.label() for s in views[0].students] == ["toy-a@teacher", "toy-a@teacher+1", "toy-b@teacher"]
    assert [s.label() for s in views[1].students] == ["toy-b@teacher", "toy-b@teacher+1", "toy-a@teacher"]
    assert exp.resolved["teacher"] == [{"family": "toy-a", "seed": 0, "params": {"bias": 0.0}},
                                       {"family": "toy-b", "seed": 0, "params": {"bias": 0.0}}]
    assert exp.resolved["students"][0]["family"] == "teacher"
    assert all(v.config_hash == exp.config_hash for v in views)


def test_a_single_teacher_experiment_is_unchanged(tmp_path):
    exp = load(write(tmp_path, teachers="  {family: toy-a, seed: 0}",
                     students="  - {family: teacher, seed: teacher}\n  - {family: toy-b, seed: teacher}"))
    assert exp.teachers == [] and exp.views() == [exp]
    assert exp.resolved["teacher"] == {"family": "toy-a", "seed": 0, "params": {"bias": 0.0}}
    assert exp.resolved["students"][0]["family"] == "toy-a"  # family: teacher names the family


@pytest.mark.parametrize("teachers, students, message", [
    ("  []", STUDENTS, "teacher: expected a non-empty list"),
    ("  - {family: toy-a}\n  - toy-b", STUDENTS, "teacher[1]: expected a mapping"),
    ("  - {family: toy-a}\n  - {family: toy-c}", STUDENTS, "teacher[1].family: Unknown family 'toy-c'"),
    ("  - {family: toy-a}\n  - {family: toy-a, seed: 0}", STUDENTS, "teacher[1]: is the same teacher as teacher[0]"),
    ("  - {family: toy-a}\n  - {family: toy-b, sed: 1}", STUDENTS, "teacher[1].sed: unknown field. Did you mean: seed?"),
    ("  - {family: toy-a}\n  - {family: toy-b, seed: seed+1}", STUDENTS, "with replicates:, give the teacher's seed"),
    (TEACHERS, "  - {family: toy-a, seed: teacher}\n  - {family: toy-a, seed: teacher}", "is the same student"),
])
def test_bad_teacher_lists_are_refused(tmp_path, teachers, students, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]").replace("+", r"\+")):
        load(write(tmp_path, teachers, students))


def test_two_teachers_of_one_family_are_labelled_by_seed(tmp_path):
    exp = load(write(tmp_path, teachers="  - {family: toy-a, seed: 0}\n  - {family: toy-a, seed: 5}"))
    assert [v.teacher_label for v in exp.views()] == ["toy-a@0", "toy-a@5"]


def test_a_multi_teacher_run_writes_one_entry_per_teacher_and_student(tmp_path):
    path = write(tmp_path)
    with registered():
        res = CliRunner().invoke(build_cli(), ["run", str(path), "--workdir", str(tmp_path / "w"),
                                               "--out", str(tmp_path / "out"), "-q"])
        assert res.exit_code == 0, res.output
        dry = CliRunner().invoke(build_cli(), ["run", str(path), "--dry-run"])
    assert "cells (6):" in dry.output and dry.output.count("  teacher   ") == 2
    table = res.output.splitlines()
    assert sum(1 for line in table if line.startswith("toy-a ")) == 3 and sum(1 for line in table if line.startswith("toy-b ")) == 3
    entries = [json.loads(f.read_text()) for f in sorted((tmp_path / "out" / "mat").glob("*.json"))]
    assert len(entries) == 6 and len({e["cell"]["id"] for e in entries}) == 6
    got = {(e["cell"]["teacher"], e["teacher"]["family"], e["student"]["family"], e["student"]["relation"]) for e in entries}
    assert got == {("toy-a", "toy-a", "toy-a", "same-init"), ("toy-a", "toy-a", "toy-a", "cross-init"),
                   ("toy-a", "toy-a", "toy-b", "cross-architecture"), ("toy-b", "toy-b", "toy-b", "same-init"),
                   ("toy-b", "toy-b", "toy-b", "cross-init"), ("toy-b", "toy-b", "toy-a", "cross-architecture")}
    assert all(e["cell"]["id"].startswith(e["cell"]["teacher"] + "__") for e in entries)
    assert all(e["experiment"]["config"]["teacher"][1]["family"] == "toy-b" for e in entries)
    # the compare matrix: teachers as rows, student families as columns (same-init on the diagonal)
    with registered():
        cmp = CliRunner().invoke(build_cli(), ["compare", str(tmp_path / "out"), "--rows", "teacher",
                                               "--cols", "student_family", "--format", "json"])
    assert cmp.exit_code == 0, cmp.output
    data = json.loads(cmp.output)
    assert data["rows"] == ["toy-a", "toy-b"] and data["cols"] == ["other init", "toy-a", "toy-b"]
    assert len(data["cells"]) == 6


def test_matrix_tiny_has_every_tiny_family_as_teacher_and_student():
    exp = load_experiment("matrix-tiny")
    views = exp.views()
    tiny = {"tiny-llama", "tiny-qwen2", "tiny-gpt2", "tiny-mistral"}
    assert {v.teacher_family.name for v in views} == tiny
    for v in views:
        assert {s.family.name for s in v.students} == tiny and len(v.students) == 5
        own = [s.seed for s in v.students if s.family.name == v.teacher_family.name]
        assert own == ["teacher", "teacher+1"]
    assert [d.name for d in exp.distillations] == ["logit"] and exp.injector.name == "finetune"
    assert exp.replicates["n"] >= 3


def test_matrix_tiny_dry_run_prints_the_cpu_time():
    res = CliRunner().invoke(build_cli(), ["run", "matrix-tiny", "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "cells (20):" in res.output and "base 8," in res.output
    assert next(x for x in res.output.splitlines() if x.startswith("CPU time")).endswith("CPU-min to run")
    wall = next(x for x in res.output.splitlines() if x.strip().startswith("wall time:"))
    assert "--jobs 2" in wall and "with the bases built" in wall


def test_every_teachers_nodes_are_one_graph_with_shared_bases(tmp_path):
    """One plan for all teachers: every teacher's bases are ready to build at once, shared ones appear once."""
    from subbench.executor import run_experiment
    from subbench.pipeline import Runner
    from subbench.plan import build_plan

    exp = load(write(tmp_path))
    with registered():
        plan = build_plan(exp)
        bases = sorted((n.args["family"], n.args["seed"]) for n in plan.nodes.values() if n.stage == "base")
        assert bases == [("toy-a", 0), ("toy-a", 1), ("toy-b", 0), ("toy-b", 1)]
        assert all(not n.deps for n in plan.nodes.values() if n.stage == "base")  # none waits for another teacher
        assert len({c.view for c in plan.cells.values()}) == 2
        entries = run_experiment(Runner(exp, tmp_path / "w", tmp_path / "out", quiet=True, jobs=1))
    assert len({e["cell"]["id"] for e in entries}) == len(entries) == len(plan.cells)
