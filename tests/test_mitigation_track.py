"""The mitigation track on the torch-free toy modality: points, pairing, reduction and utility.

Toy defences, one per point, run through the real pipeline: a decoding defence shrinks
the spread a toy model writes with, a data defence drops high values, a training defence
slows the distiller, an activations defence pulls the writer's bias toward its base's.
"""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from toy_plugin import MODALITY, ToyFamily, ToyNumbers, ToyShift, _read, registered  # noqa: E402

from subbench import hookimpl  # noqa: E402
from subbench.components import Mitigation, Param  # noqa: E402
from subbench.errors import ConfigError  # noqa: E402


class GenModel(dict):
    """A toy model that writes through ``generate`` (so a decoding defence has a sampler to change)."""

    def generate(self, n, seed, spread=3.0):
        import random

        rng = random.Random(seed * 7919 + 1)
        return [self["bias"] + rng.gauss(0.0, 0.1) * spread for _ in range(n)]


class GenFamily(ToyFamily):
    name = "toy-g"

    def load(self, path, ctx):
        return GenModel(_read(path))


class GenShift(ToyShift):
    name = "toy-g-shift"

    def load(self, teacher, base, ctx):
        return GenModel(super().load(teacher, base, ctx))


class GenNumbers(ToyNumbers):
    name = "toy-gen"

    def generate(self, model, n, params, seed, ctx):
        for i, v in enumerate(model.generate(n, seed)):
            yield {"id": i, "value": v, "init": model["init"], "family": model["family"]}


class Narrow(Mitigation):
    name = "toy-narrow"
    point = "decoding"
    modality = MODALITY
    cost = "none"
    parameters = {"spread": Param(float, 0.5, "sampling spread", min=0, max=10)}

    def decode(self, params):
        return {"spread": self.resolve_params(params)["spread"]}


class DropHigh(Mitigation):
    name = "toy-drop-high"
    point = "data"
    modality = MODALITY
    parameters = {"above": Param(float, 1.0, "drop values above this", min=-10, max=10)}

    def apply(self, data, params, seed, ctx):
        above = self.resolve_params(params)["above"]
        return [dict(s) for s in data if s["value"] <= above]


class Slow(Mitigation):
    name = "toy-slow"
    point = "training"
    modality = MODALITY
    parameters = {"factor": Param(float, 0.25, "learning-rate factor", min=0, max=1)}

    def train_params(self, distiller, dist_params, params):
        return {**dist_params, "rate": dist_params["rate"] * self.resolve_params(params)["factor"]}


class Pull(Mitigation):
    """Moves the writer's bias by the base-minus-teacher difference (a one-number 'project-out')."""

    name = "toy-pull"
    point = "activations"
    modality = MODALITY

    def activation_hooks(self, model, teacher, base, trait, target, params, ctx):
        delta = base["bias"] - teacher["bias"]
        old = model["bias"]
        model["bias"] = old + delta if model["bias"] == teacher["bias"] else old

        class Handle:
            def remove(self_inner):
                model["bias"] = old

        return [Handle()]


class Plugin:
    @hookimpl
    def register_families(self, register):
        register(GenFamily())

    @hookimpl
    def register_injectors(self, register):
        register(GenShift())

    @hookimpl
    def register_domains(self, register):
        register(GenNumbers())

    @hookimpl
    def register_mitigations(self, register):
        for m in (Narrow(), DropHigh(), Slow(), Pull()):
            register(m)


EXP = """\
name: {name}
teacher: {{family: toy-g, seed: 0}}
trait: {{name: toy-love, target: owl}}
injector: {{name: toy-g-shift, params: {{strength: 1.0}}}}
domain: {{name: toy-gen, size: 60}}
students:
  - {{family: toy-g, seed: teacher}}
  - {{family: toy-g, seed: teacher+1}}
distillation: toy-copy
{mit}
replicates: {{n: 3, over: data}}
analysis: {{bootstrap: 200}}
"""


def _run(tmp_path, mit, name="mt"):
    from click.testing import CliRunner

    from subbench.cli import build_cli

    path = tmp_path / f"{name}.yaml"
    path.write_text(EXP.format(name=name, mit=mit))
    with registered() as pm:
        pm.register_plugin(Plugin(), name="toy-mit")
        try:
            res = CliRunner().invoke(build_cli(), ["run", str(path), "--workdir", str(tmp_path / "w"),
                                                   "--out", str(tmp_path / "out"), "-q"])
        finally:
            pm.unregister_plugin("toy-mit")
    return res, tmp_path / "out" / name


ALL = "mitigations: [none, toy-narrow, toy-drop-high, toy-slow, toy-pull]"


@pytest.fixture(scope="module")
def track(tmp_path_factory):
    res, out = _run(tmp_path_factory.mktemp("track"), ALL)
    assert res.exit_code == 0, res.output
    entries = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    return res, {(e["cell"]["student"], (e["mitigation"] or {}).get("label", "none")): e for e in entries}


def test_every_mitigation_gets_its_own_cells_paired_with_none(track):
    _, by = track
    assert len(by) == 2 * 5
    for (student, label), e in by.items():
        if label == "none":
            assert e["mitigation"] is None and "mitigation_effect" not in e
            assert "__mit-" not in e["cell"]["id"]
        else:
            assert e["cell"]["id"].endswith(f"__mit-{label}")
            eff = e["mitigation_effect"]
            assert eff["against"] == "none"
            assert e["seeds"] == by[(student, "none")]["seeds"]


def test_reduction_is_one_minus_the_ratio_of_ratios(track):
    _, by = track
    same = "toy-g@teacher"
    base = by[(same, "none")]
    assert base["transfer_ratio"] > 0.3
    for label in ("toy-narrow", "toy-drop-high", "toy-slow", "toy-pull"):
        e = by[(same, label)]
        eff = e["mitigation_effect"]
        assert eff["ratio_unmitigated"] == pytest.approx(base["transfer_ratio"])
        assert eff["ratio_mitigated"] == pytest.approx(e["transfer_ratio"])
        assert eff["transfer_reduction"] == pytest.approx(1 - e["transfer_ratio"] / base["transfer_ratio"])
        lo, hi = eff["ci95"]
        assert lo <= eff["transfer_reduction"] <= hi
    # the training defence slows the distiller 4x: about 3/4 of the transfer goes
    assert by[(same, "toy-slow")]["mitigation_effect"]["transfer_reduction"] == pytest.approx(0.75, abs=0.1)
    # the activations defence makes the teacher write like its base: nothing left to transfer
    assert by[(same, "toy-pull")]["mitigation_effect"]["transfer_reduction"] > 0.9


def test_no_reduction_is_reported_where_nothing_transferred(track):
    _, by = track
    eff = by[("toy-g@teacher+1", "toy-slow")]["mitigation_effect"]
    assert eff["transfer_reduction"] is None and "no transfer to remove" in eff["note"]


def test_utility_reports_data_kept_and_the_students_fit(track):
    _, by = track
    drop = by[("toy-g@teacher", "toy-drop-high")]["mitigation_effect"]["utility"]
    assert 0.2 < drop["data_kept"] < 0.8  # the teacher writes around 1.0: about half its values are above
    assert by[("toy-g@teacher", "toy-slow")]["mitigation_effect"]["utility"]["data_kept"] == 1.0
    fit = by[("toy-g@teacher", "toy-slow")]["mitigation_effect"]["utility"]["student_fit"]
    assert fit["metric"] == "final_loss" and fit["relative"] > 1  # the slowed student stays further from the data


def test_defences_act_on_the_control_too(track):
    """A defence that changed only the teacher's side (or only the control's) would be a bug."""
    _, by = track
    same = "toy-g@teacher"
    none = by[(same, "none")]
    for label in ("toy-narrow", "toy-drop-high", "toy-pull"):
        e = by[(same, label)]
        assert e["artifacts"]["data"] != none["artifacts"]["data"], label
    for label in ("toy-narrow", "toy-drop-high"):
        e = by[(same, label)]
        assert e["artifacts"]["control_data"] != none["artifacts"]["control_data"], label
        assert e["scores"]["control"]["mean"] != pytest.approx(none["scores"]["control"]["mean"]) or label
    # the training defence slows the control too: its control moves less toward its (base) data
    slow_fits = [f["control"]["final_loss"] for f in by[(same, "toy-slow")]["distillation"]["fit"]]
    none_fits = [f["control"]["final_loss"] for f in none["distillation"]["fit"]]
    assert slow_fits != none_fits


def test_the_single_mitigation_key_still_works(tmp_path):
    res, out = _run(tmp_path, "mitigation: toy-drop-high", name="single")
    assert res.exit_code == 0, res.output
    entries = [json.loads(p.read_text()) for p in out.glob("*.json")]
    assert len(entries) == 2
    for e in entries:
        assert e["mitigation"]["name"] == "toy-drop-high" and e["mitigation"]["point"] == "data"
        assert "__mit-" not in e["cell"]["id"] and "mitigation_effect" not in e


def test_both_keys_or_a_repeat_are_refused(tmp_path):
    res, _ = _run(tmp_path, "mitigation: toy-slow\nmitigations: [none, toy-slow]", name="both")
    assert isinstance(res.exception, ConfigError) and "not both" in str(res.exception)
    res, _ = _run(tmp_path, "mitigations: [none, toy-slow, toy-slow]", name="rep")
    assert isinstance(res.exception, ConfigError) and "twice" in str(res.exception)


def test_a_training_override_the_distiller_rejects_is_a_config_error(tmp_path):
    class Bad(Slow):
        name = "toy-bad"

        def train_params(self, distiller, dist_params, params):
            return {**dist_params, "nonsense": 1}

    from click.testing import CliRunner

    from subbench.cli import build_cli

    path = tmp_path / "bad.yaml"
    path.write_text(EXP.format(name="bad", mit="mitigations: [none, toy-bad]"))

    class P:
        @hookimpl
        def register_mitigations(self, register):
            register(Bad())

    with registered() as pm:
        pm.register_plugin(Plugin(), name="toy-mit")
        pm.register_plugin(P(), name="toy-bad")
        try:
            res = CliRunner().invoke(build_cli(), ["run", str(path), "--workdir", str(tmp_path / "w"),
                                                   "--out", str(tmp_path / "out"), "-q"])
        finally:
            pm.unregister_plugin("toy-bad")
            pm.unregister_plugin("toy-mit")
    assert isinstance(res.exception, ConfigError), res.output
    assert "cannot apply to distiller 'toy-copy'" in str(res.exception)


def _cli(*args):
    from click.testing import CliRunner

    from subbench.cli import build_cli

    return CliRunner().invoke(build_cli(), [str(a) for a in args])


@pytest.fixture(scope="module")
def track_dir(track, tmp_path_factory):
    _, by = track
    out = tmp_path_factory.mktemp("entries") / "mt"
    out.mkdir()
    for e in by.values():
        (out / f"{e['cell']['id']}.json").write_text(json.dumps(e))
    return out


def test_track_entries_match_the_schema_and_the_run_prints_the_effect_table(track, track_dir):
    import jsonschema

    from subbench.leaderboard.entries import load_schema

    res, _ = track
    assert "mitigation effect (paired" in res.output and "toy-slow" in res.output
    validator = jsonschema.Draft202012Validator(load_schema())
    for f in track_dir.glob("*.json"):
        assert list(validator.iter_errors(json.loads(f.read_text()))) == []


def test_compare_rows_mitigation(track_dir):
    res = _cli("compare", track_dir, "--rows", "mitigation", "--cols", "relation", "--metric", "transfer_reduction")
    assert res.exit_code == 0, res.output
    for label in ("none", "toy-narrow", "toy-drop-high", "toy-slow", "toy-pull"):
        assert label in res.output
    res = _cli("compare", track_dir, "--rows", "mitigation", "--cols", "student")
    assert res.exit_code == 0, res.output


def test_site_has_the_mitigation_table_and_plot(track_dir, tmp_path):
    board = tmp_path / "board"
    res = _cli("leaderboard", "submit", track_dir, "--board", board)
    assert res.exit_code == 0, res.output
    res = _cli("leaderboard", "build", "--board", board)
    assert res.exit_code == 0, res.output
    page = (board / "site" / "index.html").read_text()
    assert '<table id="mitigations">' in page and "transfer reduction" in page
    table = page.split('<table id="mitigations">')[1].split("</table>")[0]
    assert table.count("<tr>") == 1 + 2 * 4  # head + (2 students x 4 defences)
    assert "toy-slow" in table and "training" in table and "activations" in table
    png = board / "site" / "mitigations.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_dry_run_lists_the_mitigations_and_their_points(tmp_path):
    path = tmp_path / "dry.yaml"
    path.write_text(EXP.format(name="dry", mit=ALL))
    with registered() as pm:
        pm.register_plugin(Plugin(), name="toy-mit")
        try:
            res = _cli("run", path, "--dry-run", "--workdir", tmp_path / "w")
        finally:
            pm.unregister_plugin("toy-mit")
    assert res.exit_code == 0, res.output
    assert "mitigations none, toy-narrow (decoding), toy-drop-high (data), toy-slow (training), toy-pull (activations)" \
        in res.output
    assert "cells (10):" in res.output


def test_paired_reduction_on_known_groups():
    from subbench.cell import paired_reduction

    rng = __import__("random").Random(0)
    base = [[0.0] * 20 for _ in range(3)]
    teacher = [[1.0] * 20 for _ in range(3)]
    control = [[rng.random() * 0.1 for _ in range(20)] for _ in range(3)]
    student = [[c + 0.5 for c in rep] for rep in control]
    unmit = [base, teacher, control, student]
    red, ci, r_m, r_u = paired_reduction(unmit, unmit, n_boot=200, seed=0)
    assert red == pytest.approx(0.0) and ci == pytest.approx((0.0, 0.0)) and r_u == pytest.approx(0.5)
    gone = [base, teacher, control, control]  # the mitigated student is its control: all transfer removed
    red, ci, r_m, _ = paired_reduction(gone, unmit, n_boot=200, seed=0)
    assert red == pytest.approx(1.0) and r_m == pytest.approx(0.0) and ci == pytest.approx((1.0, 1.0))
    flat = [base, base, control, student]  # no teacher effect: nothing to measure
    assert paired_reduction(flat, unmit, n_boot=50, seed=0, min_effect=0.05) == (None, None, None, None)
