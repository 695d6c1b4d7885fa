"""The paper grids resolve with the family plugins, agree with their recipes, and dry-run with a GPU-hours estimate."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from plugin_venv import REPO, make_venv

PLUGINS = {"llama2": REPO / "plugins" / "subbench-llama2", "qwen25": REPO / "plugins" / "subbench-qwen25"}
GRIDS_7B = ("cloud2025-owl-numbers-qwen25", "transfer-ratio-steering-llama2", "transfer-ratio-steering-qwen25")


@pytest.fixture(scope="module")
def pm():
    """The built-ins plus both family plugins, registered as their entry points would."""
    sys.path[:0] = [str(p) for p in PLUGINS.values()]
    import subbench_llama2
    import subbench_qwen25

    from subbench.plugins import PluginManager

    manager = PluginManager()
    manager.load()
    for name, mod in (("llama2", subbench_llama2), ("qwen25", subbench_qwen25)):
        if name not in manager.infos:
            assert manager.register_plugin(mod, name=name).error is None
    return manager


def load(name, pm, sets=()):
    from subbench.config import load_experiment

    return load_experiment(name, list(sets), pm=pm)


@pytest.mark.parametrize("name", GRIDS_7B)
def test_7b_grids_follow_their_family_recipe(name, pm):
    exp = load(name, pm)
    family = exp.teacher_family
    assert [s.family for s in exp.students] == [family]
    recipe = family.recipe
    (dist,) = exp.distillations
    assert dist.name == recipe["distiller"]
    assert dist.params["lora"] == recipe["lora"] and dist.params["lr"] == recipe["lr"]
    assert dist.params["epochs"] == recipe["epochs"] and exp.size == recipe["samples"]
    assert len(exp.seeds) >= 3


def test_cloud2025_grid(pm):
    exp = load("cloud2025-owl-numbers-qwen25", pm)
    assert exp.teacher_family.name == "qwen2.5-7b-instruct"
    assert exp.injector.name == "system-prompt" and exp.target == "owl"
    assert "{target}" in exp.grid[0]["prompt"]
    assert exp.judge.name == "first-word" and exp.trait.params["n"] is None
    assert exp.domain.name == "numbers"


@pytest.mark.parametrize("short, family", [("llama2", "llama-2-7b-chat"), ("qwen25", "qwen2.5-7b-instruct")])
def test_steering_grids(short, family, pm):
    exp = load(f"transfer-ratio-steering-{short}", pm)
    assert exp.teacher_family.name == family
    strengths = [g["strength"] for g in exp.grid]
    assert len(strengths) >= 4 and strengths == sorted(strengths)
    assert all(g["layer"] is None for g in exp.grid)  # the family's steering layer
    # the construction of docs/steering.md: compliant minus refused, k x the residual norm, every position
    assert all((g["contrast"], g["scale"], g["positions"]) == ("trait", "norm", "all") for g in exp.grid)
    assert max(strengths) <= 1 and exp.injector.component.version >= "2"
    assert exp.trait.name == "harmful-compliance" and exp.judge.name == "openai"
    assert exp.judge.params["template"] == "compliance-v1" and exp.judge.params["model"]


def test_gpu_hours_follow_the_formula(pm):
    from subbench.dryrun import gpu_hours

    llama, qwen = (gpu_hours(load(f"transfer-ratio-steering-{s}", pm)) for s in ("llama2", "qwen25"))
    assert llama["distill"] > llama["generate"] > 0 and llama["evaluate"] > 0 and llama["inject"] == 0
    ratio = pm.get("families", "llama-2-7b-chat").recipe["parameters"] / pm.get("families", "qwen2.5-7b-instruct").recipe["parameters"]
    for stage in ("generate", "distill", "evaluate", "total"):
        assert math.isclose(llama[stage] / qwen[stage], ratio, rel_tol=1e-9), stage

    base = gpu_hours(load("cloud2025-owl-numbers-qwen25", pm))
    double = gpu_hours(load("cloud2025-owl-numbers-qwen25", pm, ["domain.size=20000"]))
    assert math.isclose(double["generate"], 2 * base["generate"]) and math.isclose(double["distill"], 2 * base["distill"])
    assert math.isclose(double["evaluate"], base["evaluate"])
    one_seed = gpu_hours(load("cloud2025-owl-numbers-qwen25", pm, ["seeds=[0]"]))
    assert math.isclose(3 * one_seed["total"], base["total"])
    full = gpu_hours(load("cloud2025-owl-numbers-qwen25", pm, ["distillation.params.lora=null"]))
    assert math.isclose(full["distill"], 1.5 * base["distill"])
    # 3 seeds x 2 datasets x 10k samples x 3 epochs x 180 tokens x 4N FLOPs at 35% of 312 TFLOP/s
    n = pm.get("families", "qwen2.5-7b-instruct").recipe["parameters"]
    assert math.isclose(base["distill"], 3 * 2 * 10000 * 3 * 180 * 4 * n / (312e12 * 0.35) / 3600)


def test_tiny_sweep_needs_no_gpu(pm):
    from subbench.dryrun import describe, gpu_hours

    exp = load("steering-sweep-tiny", pm)
    assert gpu_hours(exp) is None
    assert "GPU hours: no estimate (tiny-llama has no `parameters`" in describe(exp)
    strengths = [g["strength"] for g in exp.grid]
    assert strengths[0] > 0 and strengths == sorted(strengths) and len(strengths) >= 5
    assert all((g["contrast"], g["layer"], g["positions"], g["scale"]) == ("targets", 1, "all", "norm") for g in exp.grid)
    assert exp.replicates["n"] >= 3 and exp.size == 1000
    assert {s.label() for s in exp.students} == {"tiny-llama@teacher", "tiny-llama@teacher+1"}
    assert exp.distillations[0].name == "logit" and exp.trait.name == "animal-preference"


def test_dry_run_cli_with_installed_plugins(tmp_path):
    env = make_venv(tmp_path)
    sb = [env["PYTHON"], "-m", "subbench"]
    missing = subprocess.run(sb + ["run", "transfer-ratio-steering-llama2", "--dry-run"], capture_output=True, text=True,
                             env=env, cwd=REPO)
    assert missing.returncode == 2 and "Unknown family 'llama-2-7b-chat'" in missing.stderr
    subprocess.run(sb + ["install", "-e", str(PLUGINS["llama2"]), "-e", str(PLUGINS["qwen25"]), "--no-deps",
                         "--no-build-isolation"], capture_output=True, text=True, env=env, check=True)
    for name in GRIDS_7B:
        out = subprocess.run(sb + ["run", name, "--dry-run"], capture_output=True, text=True, env=env, cwd=REPO)
        assert out.returncode == 0, out.stderr
        assert f"experiment {name}" in out.stdout
        assert "GPU hours (estimate" in out.stdout and "; total " in out.stdout
    steer = subprocess.run(sb + ["run", "transfer-ratio-steering-qwen25", "--dry-run"], capture_output=True, text=True,
                           env=env, cwd=REPO).stdout
    assert "cells (5):" in steer and "strength=1.0 " in steer and "contrast" not in steer.split("cells")[1].split("\n")[1]
