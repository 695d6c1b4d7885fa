"""The MLP auxiliary-logit suite: params, determinism, the same-init effect, and the pipeline run."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import pytest

from subbench.components import ModelRef
from subbench.context import Context
from subbench.errors import ConfigError, SubbenchError

REPO = Path(__file__).resolve().parent.parent
TASK = REPO / "tasks" / "mlp-aux-logits.yaml"


@pytest.fixture
def parts(pm):
    return {
        "family": pm.get("families", "mlp-digits"),
        "injector": pm.get("injectors", "train-digits"),
        "domain": pm.get("domains", "aux-logits"),
        "distiller": pm.get("distillers", "aux-logit"),
        "trait": pm.get("traits", "digit-accuracy"),
        "judge": pm.get("judges", "accuracy"),
    }


@pytest.fixture
def ctx(tmp_path):
    c = Context(workdir=tmp_path, quiet=True)
    c.setup_torch()
    return c


def build(parts, seed, out, ctx, **params):
    fam = parts["family"]
    result = fam.build(seed, fam.resolve_params(params), out, ctx)
    return ModelRef(fam, out, result)


def teach(parts, base, out, ctx, seed, **params):
    inj = parts["injector"]
    inj.inject(base, parts["trait"], None, inj.resolve_params(params), seed, out, ctx)
    return inj.load(out, base, ctx)


def data(parts, n, seed, ctx, **params):
    dom = parts["domain"]
    p = dom.resolve_params(params)
    return [r for r in dom.generate(None, n, p, seed, ctx) if dom.filter(r, p) is None]


def distill(parts, student, rows, teacher, out, ctx, **params):
    dist = parts["distiller"]
    return dist.distill(student, rows, teacher, dist.resolve_params(params), 0, out, ctx)


def accuracy(parts, model, ctx):
    trait, judge = parts["trait"], parts["judge"]
    records = trait.evaluate(model, judge, None, trait.resolve_params({}), ctx)
    return sum(r["score"] for r in records) / len(records)


def test_components_registered_by_the_mlp_plugin(pm, parts):
    assert pm.infos["mlp"].error is None
    for comp in parts.values():
        assert comp.plugin == "mlp" and comp.modality == "mlp"
    assert parts["distiller"].needs_teacher_model
    assert parts["judge"].needs == "prediction"


@pytest.mark.parametrize(
    "kind, params, match",
    [
        ("family", {"m": 0}, r"parameter 'm': expected an integer in \[1, 1000\], got 0"),
        ("family", {"hidden": "256"}, r"parameter 'hidden': expected an integer"),
        ("family", {"n_aux": 3}, "unknown parameter 'n_aux'"),
        ("injector", {"lr": -1}, r"parameter 'lr': expected a number in \(0, 100\], got -1"),
        ("injector", {"epoch": 3}, "Did you mean: epochs"),
        ("domain", {"noise": "pink"}, "expected one of uniform, gaussian"),
        ("domain", {"batch_size": 0}, r"parameter 'batch_size': expected an integer"),
        ("distiller", {"optimizer": "adamw"}, "expected one of adam, sgd, sgd-momentum"),
        ("distiller", {"loss": "ce"}, "expected one of kl, mse"),
        ("distiller", {"momentum": 1.0}, r"parameter 'momentum': expected a number in \[0, 1\)"),
        ("distiller", {"max_steps": 100}, "'max_steps': only applies with match_kl"),
        ("distiller", {"steps": 100, "match_kl": 1e-3, "max_steps": 50}, r"must be ≥ steps"),
        ("distiller", {"match_kl": 0}, r"parameter 'match_kl': expected a number in \(0"),
        ("trait", {"n": 0}, r"parameter 'n': expected an integer"),
    ],
)
def test_bad_params_are_config_errors(parts, kind, params, match):
    with pytest.raises(ConfigError, match=match):
        parts[kind].resolve_params(params)


def test_learning_rate_defaults_follow_the_optimizer(parts):
    dist = parts["distiller"]
    assert dist.resolve_params({})["lr"] == 1e-3
    assert dist.resolve_params({"optimizer": "sgd"})["lr"] == 1.0
    assert dist.resolve_params({"optimizer": "sgd", "lr": 0.5})["lr"] == 0.5


def test_trait_refuses_a_target_and_other_judges(parts, ctx, tmp_path, pm):
    model = build(parts, 0, tmp_path / "b", ctx).load(ctx)
    trait = parts["trait"]
    with pytest.raises(ConfigError, match="has no target"):
        trait.evaluate(model, parts["judge"], "owl", {}, ctx)

    class Generation:
        name, needs = "first-word", "generation"

    with pytest.raises(ConfigError, match="use judge accuracy"):
        trait.evaluate(model, Generation(), None, {}, ctx)


def test_domain_records_are_seeded_batches(parts, ctx):
    a = data(parts, 50, 3, ctx)
    assert a == data(parts, 50, 3, ctx)
    assert [r["id"] for r in a] == list(range(50))
    assert len({r["noise_seed"] for r in a}) == 50
    assert {r["noise_seed"] for r in a}.isdisjoint(r["noise_seed"] for r in data(parts, 50, 4, ctx))
    assert a[0] == {"id": 0, "noise_seed": a[0]["noise_seed"], "batch_size": 256, "noise": "uniform"}
    assert data(parts, 2, 3, ctx, noise="gaussian", batch_size=64)[1]["noise"] == "gaussian"


def test_same_seed_gives_identical_weights(parts, ctx, tmp_path):
    a, b, c = (build(parts, s, tmp_path / n, ctx) for s, n in ((7, "a"), (7, "b"), (8, "c")))
    assert a.meta["sha256"] == b.meta["sha256"] != c.meta["sha256"]
    assert a.meta["builder"] == "mlp-digits" and a.meta["m"] == 10
    ta = teach(parts, a, tmp_path / "ta", ctx, seed=7, epochs=2)
    teach(parts, b, tmp_path / "tb", ctx, seed=7, epochs=2)
    assert (tmp_path / "ta" / "model.pt").read_bytes() == (tmp_path / "tb" / "model.pt").read_bytes()
    rows = data(parts, 20, 7, ctx)
    fits = [distill(parts, c, rows, ta, tmp_path / n, ctx) for n in ("sa", "sb")]
    assert fits[0]["sha256"] == fits[1]["sha256"]
    assert fits[0]["fit"] == fits[1]["fit"]


def test_distiller_refuses_mismatched_aux_logits(parts, ctx, tmp_path):
    teacher = build(parts, 0, tmp_path / "t", ctx, m=10)
    student = build(parts, 1, tmp_path / "s", ctx, m=3)
    with pytest.raises(SubbenchError, match="same m"):
        parts["distiller"].check(teacher, student, parts["injector"])
    with pytest.raises(SubbenchError, match="same m"):
        distill(parts, student, data(parts, 2, 0, ctx), teacher.load(ctx), tmp_path / "o", ctx)


def test_experiment_refuses_mismatched_aux_logits():
    from subbench.config import load_experiment

    with pytest.raises(ConfigError, match="same m"):
        load_experiment(str(TASK), ["students.1.params={m: 3}"])


def test_match_kl_trains_on_until_the_fit_is_reached(parts, ctx, tmp_path):
    base = build(parts, 2, tmp_path / "b", ctx)
    teacher = teach(parts, base, tmp_path / "t", ctx, seed=2)
    rows = data(parts, 40, 2, ctx)
    fit = distill(parts, base, rows, teacher, tmp_path / "s1", ctx, steps=5, match_kl=0.01, probe_every=5, max_steps=400)["fit"]
    assert fit["matched"] and fit["final_aux_kl"] <= 0.01 < fit["initial_aux_kl"]
    assert 5 <= fit["steps"] < 400 and fit["steps"] % 5 == 0
    miss = distill(parts, base, rows, teacher, tmp_path / "s2", ctx, steps=10, match_kl=1e-9, probe_every=5, max_steps=30)["fit"]
    assert miss["matched"] is False and miss["steps"] == 30 and miss["final_aux_kl"] > 1e-9
    mse = distill(parts, base, rows, teacher, tmp_path / "s3", ctx, loss="mse", optimizer="sgd-momentum")["fit"]
    assert mse["steps"] == 40 and mse["final_aux_kl"] < mse["initial_aux_kl"]


def test_control_from_the_same_init_is_the_base(parts, ctx, tmp_path):
    """KL to oneself has zero gradient: the same-init control must come back unchanged."""
    base = build(parts, 4, tmp_path / "b", ctx)
    out = distill(parts, base, data(parts, 30, 4, ctx), base.load(ctx), tmp_path / "c", ctx)
    assert out["fit"]["identical_to_teacher"] and out["fit"]["final_aux_kl"] == 0.0
    assert out["sha256"] == base.meta["sha256"]


def test_digits_transfer_only_from_the_same_init(parts, ctx, tmp_path):
    """The theory check, driven stage by stage as the pipeline does (3 seeds, Adam, 300 steps)."""
    started = time.time()
    same, cross, teachers = [], [], []
    for seed in range(3):
        base = build(parts, seed, tmp_path / f"b{seed}", ctx)
        other = build(parts, seed + 1000, tmp_path / f"o{seed}", ctx)
        teacher = teach(parts, base, tmp_path / f"t{seed}", ctx, seed)
        teachers.append(accuracy(parts, teacher, ctx))
        rows = data(parts, 300, seed, ctx)
        for ref, sink, name in ((base, same, "same"), (other, cross, "cross")):
            out = distill(parts, ref, rows, teacher, tmp_path / f"{name}{seed}", ctx)
            assert out["fit"]["steps"] == 300 and out["fit"]["final_aux_kl"] < out["fit"]["initial_aux_kl"]
            sink.append(accuracy(parts, ref.family.load(tmp_path / f"{name}{seed}", ctx), ctx))
    print(f"teacher {teachers} same {same} cross {cross} ({time.time() - started:.0f}s)")
    assert min(teachers) >= 0.93
    assert statistics.mean(same) >= 0.6 and statistics.mean(cross) <= 0.2
    assert min(same) > max(cross) + 0.25


def test_experiment_runs_through_the_pipeline(tmp_path):
    """A shrunken copy of the task (1 seed, 60 batches) through the real CLI, ending in entries."""
    from click.testing import CliRunner

    from subbench.cli import cli

    sets = ["seeds=[0]", "domain.size=60", "distillation.2.params.max_steps=60"]
    args = ["run", str(TASK), "--workdir", str(tmp_path / "wd"), "--out", str(tmp_path / "out"), "-q"]
    res = CliRunner().invoke(cli, args + [f"--set={s}" for s in sets])
    assert res.exit_code == 0, res.output
    entries = [json.loads(p.read_text()) for p in sorted((tmp_path / "out" / "mlp-aux-logits").glob("*.json"))]
    assert len(entries) == 6
    for e in entries:
        fit = e["distillation"]["fit"][0]
        assert fit["student"]["optimizer"] in ("adam", "sgd") and "final_aux_kl" in fit["student"]
        assert e["scores"]["teacher"]["mean"] > 0.9 and e["scores"]["base"]["mean"] < 0.25
        if e["student"]["relation"] == "same-init":
            assert fit["control"]["identical_to_teacher"]
            assert e["scores"]["control"]["mean"] == e["scores"]["base"]["mean"]
    assert "trait" in entries[0] and entries[0]["trait"]["test_sha256"]


def summarize(entries: list[dict]) -> str:
    """Mean ± sd over seeds of every cell, with the fit: the figures the suite is quoted by."""
    lines = [f"{'distillation':<90} {'relation':<11} {'student':>15} {'control':>15} {'aux KL':>9} {'steps':>6}"]
    for e in entries:
        st, ct = e["scores"]["student"]["per_seed"], e["scores"]["control"]["per_seed"]
        fits = [f["student"] for f in e["distillation"]["fit"]]
        kl = statistics.mean(f["final_aux_kl"] for f in fits)
        steps = statistics.mean(f["steps"] for f in fits)
        pm = lambda v: f"{statistics.mean(v):.3f} ± {statistics.stdev(v) if len(v) > 1 else 0:.3f}"  # noqa: E731
        lines.append(f"{e['cell']['distillation']:<90} {e['student']['relation']:<11} {pm(st):>15} {pm(ct):>15} {kl:>9.2e} {steps:>6.0f}")
    t = entries[0]["scores"]["teacher"]["per_seed"]
    lines.append(f"teacher {statistics.mean(t):.3f} ± {statistics.stdev(t) if len(t) > 1 else 0:.3f}")
    return "\n".join(lines)


@pytest.mark.slow
def test_full_experiment_reproduces_the_findings(tmp_path):
    """The whole task (10 seeds); prints the table quoted in docs. Several minutes on one core."""
    from click.testing import CliRunner

    from subbench.cli import cli

    started = time.time()
    args = ["run", str(TASK), "--workdir", str(tmp_path / "wd"), "--out", str(tmp_path / "out"), "-q"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    entries = [json.loads(p.read_text()) for p in sorted((tmp_path / "out" / "mlp-aux-logits").glob("*.json"))]
    print(summarize(entries))
    print(f"wall {time.time() - started:.0f}s")
    def mean(kind: str, relation: str) -> float:
        for e in entries:
            p = e["distillation"]["params"]
            if ("matched" if p["match_kl"] else p["optimizer"]) == kind and e["student"]["relation"] == relation:
                return statistics.mean(e["scores"]["student"]["per_seed"])
        raise AssertionError(f"no {kind} {relation} cell")

    for kind in ("adam", "sgd", "matched"):
        assert mean(kind, "cross-init") <= 0.2
    assert mean("adam", "same-init") >= 0.7
    assert mean("sgd", "same-init") < mean("adam", "same-init") - 0.2
    assert abs(mean("matched", "same-init") - mean("sgd", "same-init")) < 0.15
