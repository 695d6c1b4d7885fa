"""Typed parameters: every parameter of every registered component is checked at validation.

The walk below feeds each declared parameter values of the wrong type, out of its range
or outside its choices through :func:`subbench.config.validate`, and expects a
ConfigError that names the experiment field, before any stage could run.
"""

import copy
import json
import math

import pytest
from click.testing import CliRunner

from subbench.cli import build_cli
from subbench.components import KINDS, Component, Param, ParamError
from subbench.config import validate
from subbench.errors import ConfigError
from subbench.plugins import get_manager

BASE = {
    "name": "params",
    "teacher": {"family": "tiny-llama", "seed": 0},
    "trait": {"name": "animal-preference", "target": "owl"},
    "injector": {"name": "system-prompt"},
    "domain": {"name": "numbers", "size": 10},
    "students": [{"family": "tiny-llama", "seed": "teacher"}],
    "distillation": [{"name": "sft"}],
    "judge": "logprob",
}
#: Where a component of each kind sits in an experiment, and the field its params get.
SLOTS = {
    "families": ("teacher", lambda n, p: {"family": n, "params": p}, "teacher.params"),
    "traits": ("trait", lambda n, p: {"name": n, "target": "owl", "params": p}, "trait.params"),
    "injectors": ("injector", lambda n, p: {"name": n, "params": p}, "injector.params"),
    "domains": ("domain", lambda n, p: {"name": n, "size": 10, "params": p}, "domain.params"),
    "mitigations": ("mitigation", lambda n, p: {"name": n, "params": p}, "mitigation.params"),
    "distillers": ("distillation", lambda n, p: [{"name": n, "params": p}], "distillation[0].params"),
    "judges": ("judge", lambda n, p: {"name": n, "params": p}, "judge.params"),
}


def experiment(kind, name, params):
    raw = copy.deepcopy(BASE)
    key, make, _ = SLOTS[kind]
    raw[key] = make(name, params)
    return raw


def bad_values(p: Param):
    """Values the declaration must refuse: wrong type, out of range, not a choice, null."""
    types = p.types
    out = []
    if object in types:
        return out
    if p.choices is not None:
        out.append("not-a-choice")
    if str not in types:
        out.append("text")
    elif int not in types and float not in types:
        out.append(12345)
    if bool not in types:
        out.append(True)
    if int in types and float not in types:
        out.append(1.5)
    if float in types:
        out += [math.nan, math.inf]
    if (int in types or float in types) and p.choices is None:
        if p.min is not None:
            out.append(p.min if p.min_open else p.min - 1)
        if p.max is not None:
            out.append(p.max if p.max_open else p.max + 1)
    if str in types and p.max_len is not None:
        out.append("x" * (p.max_len + 1))
    if list in types:
        if p.max_len is not None:
            out.append([p.item.default if p.item else 0] * (p.max_len + 1))
        if p.item is not None:
            out += [[v] for v in bad_values(p.item)[:2]]
    if dict in types and p.fields:
        out.append({"no_such_field": 1})
        for fname, f in p.fields.items():
            out += [{fname: v} for v in bad_values(f)[:2]]
    if not p.nullable:
        out.append(None)
    return out


def cases():
    pm = get_manager()
    for kind in KINDS:
        for comp in pm.registry(kind):
            for pname, p in comp.param_specs().items():
                for value in bad_values(p):
                    yield pytest.param(kind, comp.name, pname, value, id=f"{kind}-{comp.name}-{pname}-{value!r:.20}")


@pytest.mark.parametrize("kind,name,pname,value", list(cases()))
def test_wrong_values_are_refused_at_validation(kind, name, pname, value):
    raw = experiment(kind, name, {pname: value})
    with pytest.raises(ConfigError) as exc:
        validate(raw, "tasks/x.yaml")
    message = str(exc.value)
    field = f"{SLOTS[kind][2]}.{pname}"
    assert message.startswith(f"tasks/x.yaml: {field}"), message
    assert "\n" not in message and message.endswith((".", "?")), message


def test_the_walk_covers_every_kind_and_many_parameters():
    ids = [c.values for c in cases()]
    assert {c[0] for c in ids} == set(KINDS)
    assert len({(c[1], c[2]) for c in ids}) > 60


def builtin_components():
    pm = get_manager()
    for kind in KINDS:
        for comp in pm.registry(kind):
            if type(comp).__module__.startswith(("subbench.", "subbench_")):
                yield kind, comp


def test_every_builtin_parameter_is_declared_with_type_range_and_doc():
    seen = 0
    for kind, comp in builtin_components():
        assert set(comp.param_specs()) == set(comp.defaults), comp.name
        for pname, p in comp.param_specs().items():
            where = f"{kind} {comp.name}.{pname}"
            assert not p.inferred, f"{where}: declare it with a Param (a bare defaults entry was inferred)"
            assert p.doc, f"{where}: give it a one-line doc"
            if (int in p.types or float in p.types) and p.choices is None:
                assert p.min is not None and p.max is not None, f"{where}: every number needs a range"
            if str in p.types and p.choices is None:
                assert p.max_len is not None, f"{where}: bound the string's length"
            if list in p.types:
                assert p.max_len is not None and p.item is not None, f"{where}: bound the list and check its items"
            p.check(comp.defaults[pname], pname)  # the default passes its own declaration
            seen += 1
    assert seen > 60


def test_defaults_are_derived_from_the_declarations(pm):
    sft = pm.get("distillers", "sft")
    assert sft.defaults == {"optimizer": "adamw", "lr": 1e-4, "epochs": 1, "batch_size": 32, "lora": None,
                            "max_steps": None}
    tiny = pm.get("families", "tiny-llama")
    assert tiny.defaults["hidden_size"] == 64 and set(tiny.defaults) == set(tiny.parameters)
    assert pm.get("families", "hf").defaults == {"model_id": None, "revision": "main", "backend": "hf"}


def test_valid_values_pass_and_are_not_coerced(pm):
    sft = pm.get("distillers", "sft")
    out = sft.resolve_params({"lr": 2e-4, "epochs": 3, "lora": {"r": 8, "alpha": 8}})
    assert out["epochs"] == 3 and type(out["epochs"]) is int and out["lora"] == {"r": 8, "alpha": 8}
    for name in ("quickstart", "steering-sweep-tiny", "mlp-aux-logits"):
        from subbench.config import load_experiment

        assert load_experiment(name).name == name


def test_messages_name_field_value_and_what_is_allowed():
    raw = experiment("distillers", "sft", {"lr": math.inf})
    with pytest.raises(ConfigError) as exc:
        validate(raw, "tasks/x.yaml")
    assert str(exc.value) == "tasks/x.yaml: distillation[0].params.lr: expected a number in (0, 10], got inf."
    raw = experiment("distillers", "logit", {"lora": {"r": 0, "alpha": 8}})
    with pytest.raises(ConfigError, match=r"distillation\[0\]\.params\.lora\.r: expected an integer in \[1, 1024\], got 0\."):
        validate(raw, "tasks/x.yaml")
    raw = experiment("distillers", "sft", {"optimizer": "adam"})
    with pytest.raises(ConfigError, match=r"params\.optimizer: expected one of adamw, sgd, got 'adam'\. Did you mean: adamw\?"):
        validate(raw, "tasks/x.yaml")
    raw = experiment("traits", "animal-preference", {"n": True})
    with pytest.raises(ConfigError, match=r"trait\.params\.n: expected an integer in \[1, 1000000\] or null, got true\."):
        validate(raw, "tasks/x.yaml")


@pytest.mark.parametrize(
    "kind,name,params,field,message",
    [
        ("judges", "ensemble", {"judges": ["refusal"]}, "judge.params.judges", "at least two"),
        ("judges", "ensemble", {"judges": ["refusal", "refusl"]}, "judge.params.judges[1].name",
         "Unknown judge 'refusl'. Did you mean: refusal?"),
        ("judges", "ensemble", {"judges": ["refusal", {"name": "refusal", "params": {"window": 0}}]},
         "judge.params.judges[1].params.window", "expected an integer in [1, 1000000], got 0."),
        ("judges", "ensemble", {"judges": ["refusal", "logprob"]}, "judge.params.judges[1]", "needs loglikelihood"),
        ("judges", "refusal", {"extra_patterns": ["ok", "(unclosed"]}, "judge.params.extra_patterns[1]",
         "invalid regular expression"),
        ("judges", "openai", {"model": "m"}, "judge.params.base_url", "needs params base_url and model"),
        ("judges", "openai", {"base_url": "ftp://x", "model": "m"}, "judge.params.base_url", "http(s) URL"),
        ("families", "hf", {}, "teacher.params.model_id", "needs a hub id"),
        ("families", "tiny-llama", {"hidden_size": 30, "heads": 4}, "teacher.params.heads", "multiple of heads"),
        ("domains", "numbers", {"min_seed": 900, "max_seed": 100}, "domain.params.min_seed", "at most max_seed"),
        ("injectors", "system-prompt", {"prompt": "You love {animal}s."}, "injector.params.prompt", "{target}"),
        ("injectors", "finetune", {"replay": 5, "replay_domain": "letters"}, "injector.params.replay_domain",
         "expected one of"),
        ("distillers", "aux-logit", {"max_steps": 10}, "distillation[0].params.max_steps", "only applies with match_kl"),
    ],
)
def test_cross_parameter_checks_run_at_validation(kind, name, params, field, message):
    with pytest.raises(ConfigError) as exc:
        validate(experiment(kind, name, params), "tasks/x.yaml")
    assert str(exc.value).startswith(f"tasks/x.yaml: {field}: "), str(exc.value)
    assert message in str(exc.value)


def test_tiny_family_size_estimate_is_refused_unless_allowed(monkeypatch):
    big = {"hidden_size": 4096, "intermediate_size": 16384, "layers": 64, "heads": 64}
    with pytest.raises(ConfigError, match="SUBBENCH_ALLOW_LARGE=1"):
        validate(experiment("families", "tiny-llama", big), "tasks/x.yaml")
    monkeypatch.setenv("SUBBENCH_ALLOW_LARGE", "1")
    validate(experiment("families", "tiny-llama", big), "tasks/x.yaml")


def test_stage_time_checks_are_the_same(pm):
    with pytest.raises(ParamError) as exc:
        pm.get("distillers", "sft").resolve_params({"lr": -1})
    assert str(exc.value) == "distiller 'sft': parameter 'lr': expected a number in (0, 10], got -1."


def test_list_params_are_not_grid_axes(pm):
    raw = experiment("injectors", "finetune", {"target_modules": ["q_proj", "v_proj"], "lr": [1e-3, 2e-3]})
    exp = validate(raw, "tasks/x.yaml")
    assert [g["lr"] for g in exp.grid] == [1e-3, 2e-3]
    assert all(g["target_modules"] == ["q_proj", "v_proj"] for g in exp.grid)


class DefaultsOnly(Component):
    """A third-party component that predates Param: it declares only ``defaults``."""

    kind = "injector"
    name = "legacy"
    defaults = {"strength": 1.0, "label": "x", "flag": True, "anything": None, "items": [1]}


def test_defaults_only_components_keep_working_with_a_loose_check():
    comp = DefaultsOnly()
    assert comp.resolve_params({"strength": 3, "anything": {"a": [1]}})["strength"] == 3
    assert all(p.inferred for p in comp.param_specs().values())
    for params, what in [({"strength": "big"}, "a number"), ({"strength": math.nan}, "a number"),
                         ({"flag": 1}, "true or false"), ({"label": 5}, "a string"), ({"items": "x"}, "a list")]:
        with pytest.raises(ConfigError, match=what):
            comp.resolve_params(params)
    with pytest.raises(ConfigError, match="unknown parameter 'strenght'.*Did you mean: strength"):
        comp.resolve_params({"strenght": 1})


def test_list_params_prints_each_parameter():
    runner = CliRunner()
    res = runner.invoke(build_cli(), ["list", "distillers", "--params"])
    assert res.exit_code == 0, res.output
    assert "lr" in res.output and "a number in (0, 10]" in res.output and "one of adamw, sgd" in res.output
    assert "learning rate" in res.output
    res = runner.invoke(build_cli(), ["list", "families", "--json"])
    items = {i["name"]: i for i in json.loads(res.output)}
    hidden = {p["name"]: p for p in items["tiny-llama"]["parameters"]}["hidden_size"]
    assert hidden == {"name": "hidden_size", "type": "int", "default": 64, "allowed": "an integer in [4, 4096]",
                      "doc": "width of the model", "inferred": False}
