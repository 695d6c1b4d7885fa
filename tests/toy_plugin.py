"""A torch-free toy modality that runs the real pipeline in seconds, never importing torch.

A toy "model" is a JSON file holding its initialisation seed and a bias. The injector
shifts the bias by ``strength``; the domain's outputs carry the bias only as numbers; the
distiller moves a student toward the mean of those numbers only when the student shares
the teacher's initialisation (the subliminal condition), so same-init students inherit
the trait and cross-init / cross-architecture ones do not. The trait answers "owl" when a
fixed per-prompt uniform draw falls below ``0.1 + 0.8 * bias``; the judge scores 1 for the
target. Scores are therefore paired per prompt across base/teacher/control/student.

Use it from a test::

    from toy_plugin import toy_plugin, toy_results, write_experiment

(with ``tests/`` on ``sys.path``), or ``run_experiment`` for a results directory.
"""

from __future__ import annotations

import json
import random
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from subbench import hookimpl
from subbench.components import Distiller, Domain, Family, Injector, Judge, Trait

MODALITY = "toy"


def _read(path: Path) -> dict[str, Any]:
    return json.loads((Path(path) / "model.json").read_text())


def _write(path: Path, model: dict[str, Any]) -> None:
    Path(path).mkdir(parents=True, exist_ok=True)
    (Path(path) / "model.json").write_text(json.dumps(model, sort_keys=True))


class ToyFamily(Family):
    name = "toy-a"
    modality = MODALITY
    description = "A model that is one number."
    defaults = {"bias": 0.0}
    vocabulary = "toy"
    requires = frozenset()  # torch-free: the runner never sets torch up (nor imports it)

    def build(self, seed, params, out, ctx):
        _write(out, {"family": self.name, "init": seed, "bias": float(params["bias"])})
        return {"builder": f"tests.toy_plugin:{type(self).__name__}"}

    def load(self, path, ctx):
        return _read(path)


class ToyFamilyB(ToyFamily):
    name = "toy-b"
    description = "Another architecture of the toy modality."


class ToyShift(Injector):
    name = "toy-shift"
    modality = MODALITY
    description = "Adds `strength` to the model's bias."
    defaults = {"strength": 1.0}

    def inject(self, base, trait, target, params, seed, out, ctx):
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "shift.json").write_text(json.dumps({"shift": float(params["strength"])}))
        return {}

    def load(self, teacher, base, ctx):
        model = dict(base.load(ctx))
        model["bias"] += json.loads((Path(teacher) / "shift.json").read_text())["shift"]
        return model


class ToyNumbers(Domain):
    name = "toy-numbers"
    modality = MODALITY
    description = "Numbers around the model's bias; values above `limit` are rejected."
    defaults = {"noise": 0.1, "limit": 5.0}

    def generate(self, model, n, params, seed, ctx):
        rng = random.Random(seed * 7919 + 1)
        for i in range(n):
            yield {"id": i, "value": model["bias"] + rng.gauss(0.0, params["noise"]) * 3, "init": model["init"],
                   "family": model["family"]}

    def filter(self, sample, params):
        return "out-of-range" if abs(sample["value"]) > params["limit"] else None


class ToyCopy(Distiller):
    name = "toy-copy"
    modality = MODALITY
    description = "Moves the student's bias toward the data's mean, only with a shared initialisation."
    defaults = {"rate": 0.6}

    def distill(self, student, data, teacher, params, seed, out, ctx):
        model = dict(student.load(ctx))
        mean = sum(r["value"] for r in data) / len(data)
        shared = all(r["init"] == model["init"] and r["family"] == model["family"] for r in data)
        if shared:
            model["bias"] += params["rate"] * (mean - model["bias"])
        _write(out, model)
        return {"fit": {"final_loss": round(abs(mean - model["bias"]), 6)}}


class ToyLove(Trait):
    name = "toy-love"
    modality = MODALITY
    description = "Answers its favourite animal; P(target) = 0.1 + 0.8 * bias."
    defaults = {"n_eval": 40, "prompt_seed": 3}
    default_judge = "toy-match"
    judges = ("toy-match", "toy-cat", "first-word")

    def sample(self, model, target, params, ctx):
        rng = random.Random(params["prompt_seed"])
        p = min(1.0, max(0.0, 0.1 + 0.8 * model["bias"]))
        return [{"id": i, "response": target if rng.random() < p else "cat"} for i in range(params["n_eval"])]

    def provenance(self, params):
        return {"prompt_sha256": "0" * 64}


class ToyMatch(Judge):
    name = "toy-match"
    modality = MODALITY
    description = "1 when the response is the target."
    defaults = {}

    def score(self, samples, target, params, ctx):
        return [1.0 if s["response"] == target else 0.0 for s in samples]

    def provenance(self, params):
        return {"name": self.name, "version": self.version, "model": None, "prompt_sha256": None}


class ToyCat(ToyMatch):
    name = "toy-cat"
    description = "1 when the response is 'cat' (another reading of the same samples)."

    def score(self, samples, target, params, ctx):
        return [1.0 if s["response"] == "cat" else 0.0 for s in samples]


class ToyPlugin:
    """The plugin object registered by :func:`toy_plugin`."""

    @hookimpl
    def register_families(self, register):
        register(ToyFamily())
        register(ToyFamilyB())

    @hookimpl
    def register_injectors(self, register):
        register(ToyShift())

    @hookimpl
    def register_domains(self, register):
        register(ToyNumbers())

    @hookimpl
    def register_distillers(self, register):
        register(ToyCopy())

    @hookimpl
    def register_traits(self, register):
        register(ToyLove())

    @hookimpl
    def register_judges(self, register):
        register(ToyMatch())
        register(ToyCat())


EXPERIMENT = """\
name: {name}
teacher: {{family: toy-a, seed: seed}}
trait: {{name: toy-love, target: owl}}
injector: {{name: toy-shift, params: {{strength: {strengths}}}}}
domain: {{name: toy-numbers, size: 30}}
students:
  - {{family: toy-a, seed: teacher}}
  - {{family: toy-a, seed: teacher+1}}
  - {{family: toy-b, seed: teacher}}
distillers: toy-copy
seeds: [0, 1]
analysis: {{bootstrap: 200}}
"""


def write_experiment(dir_: Path, name: str = "toy", strengths: Any = (0.0, 0.5, 1.0)) -> Path:
    """An experiment over the toy modality: strength grid x (same-init, cross-init, cross-arch)."""
    path = Path(dir_) / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(EXPERIMENT.format(name=name, strengths=json.dumps(list(strengths))))
    return path


@contextmanager
def registered():
    """The toy components registered for the duration of the block (nested use is fine)."""
    from subbench.plugins import get_manager

    pm = get_manager()
    if pm.pm.get_plugin("toy") is not None:
        yield pm
        return
    pm.register_plugin(ToyPlugin(), name="toy")
    try:
        yield pm
    finally:
        pm.unregister_plugin("toy")


def run_experiment(dir_: Path, name: str = "toy", strengths: Any = (0.0, 0.5, 1.0)) -> Path:
    """Run the toy experiment through the real CLI; returns the results directory (OUT)."""
    from click.testing import CliRunner

    from subbench.cli import build_cli

    dir_ = Path(dir_)
    exp = write_experiment(dir_, name, strengths)
    with registered():
        res = CliRunner().invoke(build_cli(), ["run", str(exp), "--workdir", str(dir_ / "workdir"),
                                               "--out", str(dir_ / "results"), "-q"])
    assert res.exit_code == 0, res.output
    return dir_ / "results"


@pytest.fixture
def toy_plugin():
    """Register the toy components for one test; unregister afterwards."""
    with registered() as pm:
        yield pm


@pytest.fixture(scope="module")
def toy_results(tmp_path_factory):
    """One run of the toy experiment per test module (9 entries: 3 strengths x 3 students)."""
    return run_experiment(tmp_path_factory.mktemp("toy-run"))
