"""Components speak for themselves: declared capabilities, their own costs and fit summaries."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from subbench.components import (FIXED_POINT_ON_SELF, OPEN_WEIGHTS, TEACHER_MODEL, TORCH, VOCABULARY, Distiller,
                                  Domain, Family, Injector, Mitigation, declares, record_kind)
from subbench.errors import ConfigError

from toy_plugin import ToyCopy, ToyFamily, ToyNumbers, ToyShift, toy_plugin, write_experiment  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


# -- declarations and the old names --------------------------------------------------

def test_builtins_declare_what_they_need_and_give(pm):
    logit = pm.get("distillers", "logit")
    assert logit.requires == {TEACHER_MODEL, OPEN_WEIGHTS, VOCABULARY} and FIXED_POINT_ON_SELF in logit.provides
    assert pm.get("distillers", "sft").requires == frozenset()
    assert OPEN_WEIGHTS in pm.get("injectors", "steering").requires
    assert OPEN_WEIGHTS not in pm.get("injectors", "system-prompt").requires
    assert OPEN_WEIGHTS not in pm.get("families", "openai").provides
    assert {OPEN_WEIGHTS} <= pm.get("families", "tiny-llama").provides and TORCH in pm.get("families", "tiny-llama").requires
    aux, noise = pm.get("distillers", "aux-logit"), pm.get("domains", "aux-logits")
    assert record_kind("aux-noise") in aux.requires and record_kind("aux-noise") in noise.provides
    assert pm.get("judges", "accuracy").requires == {record_kind("prediction")}
    assert pm.get("judges", "first-word").requires == {record_kind("generation")}


def test_old_attribute_names_read_the_declaration(pm):
    assert pm.get("distillers", "logit").needs_teacher_model is True
    assert pm.get("distillers", "logit").fixed_point_on_self is True
    assert pm.get("distillers", "sft").needs_teacher_model is False
    assert pm.get("injectors", "steering").needs_weights is True
    assert pm.get("injectors", "system-prompt").needs_weights is False
    assert pm.get("injectors", "system-prompt").open_weights is True
    assert pm.get("families", "openai").open_weights is False
    assert pm.get("families", "tiny-llama").open_weights is True
    assert pm.get("mitigations", "min-p").needs_open_weights is True
    assert pm.get("mitigations", "dedupe").needs_open_weights is False
    with pytest.raises(AttributeError):
        pm.get("distillers", "logit").needs_teacher_model = False


def test_a_plugin_written_with_the_old_flags_is_folded_into_the_sets():
    class OldDistiller(Distiller):
        name = "old-kd"
        needs_teacher_model = True
        fixed_point_on_self = True

    class TextOnly(Family):
        name = "old-api"
        open_weights = False

    class OldSteer(Injector):
        name = "old-steer"
        needs_weights = True
        open_weights = True

    class OldDefence(Mitigation):
        name = "old-defence"
        needs_open_weights = True

    assert OldDistiller.requires == {TEACHER_MODEL} and OldDistiller.provides == {FIXED_POINT_ON_SELF}
    assert OldDistiller().needs_teacher_model and OldDistiller().fixed_point_on_self
    assert TextOnly.provides == frozenset() and TextOnly().open_weights is False and TORCH in TextOnly.requires
    assert OldSteer.requires == {OPEN_WEIGHTS} and OldSteer().needs_weights and OldSteer().open_weights
    assert OldDefence.requires == {OPEN_WEIGHTS} and OldDefence().needs_open_weights

    class Child(OldDistiller):  # inherits the folded sets
        name = "old-kd-child"

    assert Child().needs_teacher_model and Child.requires == {TEACHER_MODEL}

    class Stand:  # a duck-typed stand-in that is no Component
        open_weights = False

    assert declares(Stand(), "provides", OPEN_WEIGHTS) is False
    assert declares(object(), "provides", OPEN_WEIGHTS) is True  # the old default


# -- a third-party component declaring the new way, through validation ---------------

NOISE = record_kind("toy-noise")


class NoiseDomain(ToyNumbers):
    name = "toy-noise-domain"
    provides = frozenset({NOISE})


class NoiseDistiller(ToyCopy):
    name = "toy-noise-copy"
    requires = frozenset({NOISE})


class KDDistiller(ToyCopy):
    name = "toy-kd"
    requires = frozenset({TEACHER_MODEL, OPEN_WEIGHTS, VOCABULARY})


class ForeignFamily(ToyFamily):
    name = "toy-foreign"
    vocabulary = "toy-other"


class TextFamily(ToyFamily):
    name = "toy-text"
    provides = frozenset()


class WeightInjector(ToyShift):
    name = "toy-weights"
    requires = frozenset({OPEN_WEIGHTS})


class DeclaringPlugin:
    from subbench import hookimpl

    @hookimpl
    def register_families(self, register):
        register(ForeignFamily())
        register(TextFamily())

    @hookimpl
    def register_domains(self, register):
        register(NoiseDomain())

    @hookimpl
    def register_distillers(self, register):
        register(NoiseDistiller())
        register(KDDistiller())

    @hookimpl
    def register_injectors(self, register):
        register(WeightInjector())


@pytest.fixture
def declaring(toy_plugin):
    toy_plugin.register_plugin(DeclaringPlugin(), name="declaring")
    try:
        yield toy_plugin
    finally:
        toy_plugin.unregister_plugin("declaring")


def _load(tmp_path, *sets):
    from subbench.config import load_experiment

    return load_experiment(str(write_experiment(tmp_path)), list(sets))


def test_record_kinds_are_matched_before_any_stage(tmp_path, declaring):
    with pytest.raises(ConfigError, match=r"distillers\[0\] with students\[0\]: distiller 'toy-noise-copy' trains on "
                                          r"toy-noise records, which domain 'toy-numbers' does not write"):
        _load(tmp_path, "distillation=toy-noise-copy")
    exp = _load(tmp_path, "distillation=toy-noise-copy", "domain.name=toy-noise-domain")
    assert exp.distillations[0].component.requires == {NOISE}


def test_open_weights_and_vocabulary_are_matched(tmp_path, declaring):
    exp = _load(tmp_path, "distillation=toy-kd")  # toy families: open weights, one vocabulary
    assert exp.distillations[0].component.needs_teacher_model
    with pytest.raises(ConfigError, match="requires teacher and student to share a vocabulary, but toy-a uses toy and "
                                          "toy-foreign uses toy-other"):
        _load(tmp_path, "distillation=toy-kd", "students=[{family: toy-foreign, seed: teacher}]")
    with pytest.raises(ConfigError, match="distiller 'toy-kd' requires open weights, but family 'toy-text' is text-only"):
        _load(tmp_path, "distillation=toy-kd", "teacher.family=toy-text", "students=[{family: toy-text, seed: teacher}]")
    with pytest.raises(ConfigError, match="'toy-weights' needs the teacher's weights, but family 'toy-text' is text-only"):
        _load(tmp_path, "injector.name=toy-weights", "teacher.family=toy-text",
              "students=[{family: toy-text, seed: teacher}]")


# -- costs, resources, fit summaries ---------------------------------------------------

def test_components_report_cost_and_resources(pm):
    fam = pm.get("families", "tiny-llama")
    assert fam.parameter_count({}) is None and fam.estimate_cost({}) is None
    assert fam.resources("distill", {}) == {"cpus": 1, "gpus": 0, "memory_gb": 2.0}
    from subbench.default_plugins.lm_families import HFFamily

    big = HFFamily("big", "org/big", recipe={"parameters": 7e9})
    assert big.parameter_count({}) == 7e9 and big.estimate_cost({})["gpu_mem_gb"] == 14.0
    assert big.resources("distill", {})["gpus"] == 1 and big.resources("evaluate", {})["memory_gb"] == 22.0
    numbers = pm.get("domains", "numbers")
    assert numbers.sample_tokens(numbers.resolve_params({"max_new_tokens": 120})) == 180
    sft = pm.get("distillers", "sft")
    lora = sft.estimate_cost(1000, sft.resolve_params({"lora": {"r": 8, "alpha": 8}}), 7e9, 7e9, 100)
    full = sft.estimate_cost(1000, sft.resolve_params({}), 7e9, 7e9, 100)
    assert set(full) == {"gpu_hours", "cpu_seconds", "gpu_mem_gb"} and full["gpu_hours"] == pytest.approx(1.5 * lora["gpu_hours"])
    assert pm.get("injectors", "steering").estimate_cost({}, 7e9, 100)["gpu_hours"] == 0


def test_distillers_name_their_own_fit_figure(pm):
    from subbench.pipeline import _fit_summary

    assert pm.get("distillers", "logit").fit_summary({"final_kl_to_teacher": 0.5, "final_loss": 2}) == ("kl_to_teacher", 0.5)
    assert pm.get("distillers", "aux-logit").fit_summary({"final_aux_kl": 0.25, "final_loss": 1}) == ("aux_kl", 0.25)
    assert pm.get("distillers", "sft").fit_summary({"steps": 3}) is None
    fits = [{"student": {"final_aux_kl": 0.1}}, {"student": {"final_aux_kl": 0.3}}]
    assert _fit_summary(fits, "aux-logit") == "aux_kl=0.2000"
    assert _fit_summary([{"student": {"final_loss": 1.0}}], "not-installed") == "loss=1.0000"
    assert _fit_summary([{"student": {}}], "sft") == "-"

    class OwnFit(Distiller):
        name = "own-fit"
        fit_keys = ("final_agreement",)

    assert OwnFit().fit_summary({"final_agreement": 0.9, "final_loss": 3}) == ("agreement", 0.9)


# -- dry-run figures are the ones printed before the components reported them ------------

#: `subbench run NAME --dry-run`'s GPU-hours line for every shipped experiment, as printed
#: when dryrun.py computed them itself (the 7B grids with both family plugins installed).
GPU_LINES = {
    "cloud2025-owl-numbers-qwen25": "generate 1.5, inject 0.0, distill 2.5, evaluate 0.6; total 4.6",
    "transfer-ratio-steering-llama2": "generate 3.9, inject 0.0, distill 6.7, evaluate 0.1; total 10.6",
    "transfer-ratio-steering-qwen25": "generate 4.4, inject 0.0, distill 7.5, evaluate 0.1; total 12.0",
    "mitigations-tiny": "no estimate (tiny-llama has",
    "mlp-aux-logits": "no estimate (mlp-digits has",
    "quickstart-inits": "no estimate (tiny-llama has",
    "quickstart": "no estimate (tiny-llama, tiny-qwen2 has",
    "steering-optimizer-matched-tiny": "no estimate (tiny-llama has",
    "steering-optimizer-tiny": "no estimate (tiny-llama has",
    "steering-sweep-tiny": "no estimate (tiny-llama has",
    # added after the change (the components' own estimates; four hub families' plugins loaded)
    "matrix-hub": "generate 6.2, inject 0.0, distill 42.4, evaluate 6.5; total 55.1",
    "matrix-tiny": "no estimate (tiny-llama, tiny-qwen2, tiny-gpt2, tiny-mistral has",
    "sibling-tiny": "no estimate (tiny-llama, tiny-llama-sibling has",
    "code-tiny": "no estimate (tiny-llama, tiny-qwen2 has",
    "cot-tiny": "no estimate (tiny-llama, tiny-qwen2 has",
    "cot-tiny-steering": "no estimate (tiny-llama has",
    "code-owl-qwen25": "generate 1.3, inject 0.0, distill 2.2, evaluate 0.6; total 4.2",
    "cot-owl-qwen25": "generate 1.3, inject 0.0, distill 2.2, evaluate 0.6; total 4.2",
}
#: Full-precision hours of the cloud2025 grid before the change.
CLOUD2025 = {"generate": 1.4653846153846153, "inject": 0.0, "distill": 2.512087912087912,
             "evaluate": 0.6187179487179487, "total": 4.596190476190476}


@pytest.fixture(scope="module")
def family_pm():
    import importlib

    names = ("llama2", "qwen25", "llama31", "gemma2", "mistral")
    sys.path[:0] = [str(REPO / "plugins" / f"subbench-{n}") for n in names]
    from subbench.plugins import PluginManager

    manager = PluginManager()
    manager.load()
    for name in names:
        mod = importlib.import_module(f"subbench_{name}")
        if name not in manager.infos:
            assert manager.register_plugin(mod, name=name).error is None
    return manager


def test_dry_run_figures_are_unchanged(family_pm):
    from subbench.config import load_experiment
    from subbench.dryrun import describe, gpu_hours

    assert sorted(GPU_LINES) == sorted(p.stem for p in (REPO / "tasks").glob("*.yaml"))
    for name, figures in GPU_LINES.items():
        text = describe(load_experiment(name, [], pm=family_pm))
        line = next(x for x in text.splitlines() if x.startswith("GPU hours"))
        assert figures in line, (name, line)
    hours = gpu_hours(load_experiment("cloud2025-owl-numbers-qwen25", [], pm=family_pm))
    assert hours == pytest.approx(CLOUD2025, rel=1e-12)


# -- the toy modality never imports torch -------------------------------------------------

def test_toy_run_never_imports_torch(tmp_path):
    script = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(TESTS)!r})
        from toy_plugin import run_experiment
        out = run_experiment(__import__("pathlib").Path({str(tmp_path)!r}), strengths=[0.0, 1.0])
        n = len(list(out.rglob("*.json")))
        print(json.dumps({{"entries": n, "torch": "torch" in sys.modules}}))
    """)
    env = {**__import__("os").environ, "PYTHONPATH": str(REPO), "SUBBENCH_LOAD_PLUGINS": "", "SUBBENCH_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["entries"] >= 6 and report["torch"] is False
