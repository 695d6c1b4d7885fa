"""The mistral-7b-instruct family's wiring, proven on a tiny random Mistral built with the plugin's own settings."""

from __future__ import annotations

import configparser
import json
import re
from pathlib import Path

import pytest

import subbench_mistral
from subbench.components import ModelRef
from subbench.context import Context
from subbench.plugins import PluginManager
from subbench.plugins import get as get_component

PLUGIN_DIR = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    c = Context(workdir=tmp_path_factory.mktemp("mistral-work"), quiet=True)
    c.setup_torch()
    return c


@pytest.fixture(scope="module")
def family():
    pm = PluginManager()
    info = pm.register_plugin(subbench_mistral, name="mistral")
    assert info.error is None and info.registered == {"families": ["mistral-7b-instruct"]}
    return pm.get("families", "mistral-7b-instruct")


@pytest.fixture(scope="module")
def base(family, ctx, tmp_path_factory):
    from subbench_mistral.tiny import build_tiny

    tiny = build_tiny(tmp_path_factory.mktemp("tiny-mistral") / "model")
    out = tmp_path_factory.mktemp("base")
    meta = family.build(0, family.resolve_params({"model_id": str(tiny)}), out, ctx)
    return ModelRef(family, out, {"params": {"model_id": str(tiny)}, **meta})


def test_entry_point_and_pins(family):
    cfg = configparser.ConfigParser()
    cfg.read(PLUGIN_DIR / "setup.cfg")
    assert cfg["options.entry_points"]["subbench"].strip() == "mistral = subbench_mistral"
    assert family.model_id == "mistralai/Mistral-7B-Instruct-v0.3"
    assert re.fullmatch(r"[0-9a-f]{40}", family.revision)
    assert family.recipe["lora"] == {"r": 8, "alpha": 8} and family.recipe["lr"] == 2e-4
    assert family.recipe["parameters"] > 1e9 and family.steering_layers[0] < family.recipe["layers"]


def test_build_pins_the_revision_without_downloading(family, ctx, tmp_path):
    meta = family.build(0, family.resolve_params({}), tmp_path, ctx)
    assert meta == {"model_id": family.model_id, "revision": subbench_mistral.REVISION, "backend": "hf"}
    assert json.loads((tmp_path / "base.json").read_text())["revision"] == subbench_mistral.REVISION
    assert list(tmp_path.iterdir()) == [tmp_path / "base.json"]


def test_chat_template_and_cpu_dtype(base, ctx):
    import torch

    handle = base.load(ctx)
    assert type(handle.model).__name__ == "MistralForCausalLM"
    assert handle.model.dtype == torch.float32
    assert handle.system_prompt is None
    assert handle.chat_text("what is your favourite animal ?") == "<s>[INST] what is your favourite animal ?[/INST]"
    with_sys = handle.chat_text("name your favourite animal .", system="You love owls.")
    assert "<s>[INST] You love owls.\n\nname your favourite animal .[/INST]" in with_sys
    ids = handle.tokenizer(with_sys, add_special_tokens=False)["input_ids"]
    assert handle.tokenizer.unk_token_id not in ids


def _logits(handle, text):
    import torch

    enc = handle.tokenizer([text], return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        return handle.model(**enc).logits[0, -1]


def test_steering_at_the_plugin_layer(base, family, ctx, tmp_path):
    import torch

    from subbench.default_plugins.lm_injectors import SteeringInjector

    inj = SteeringInjector()
    trait = get_component("traits", "animal-preference")
    meta = inj.inject(base, trait, "owl", {"strength": 4.0}, 0, tmp_path / "t4", ctx)
    assert meta["layer"] == family.steering_layers[0] == 15 and meta["vector_norm"] > 0
    inj.inject(base, trait, "owl", {"strength": 0.0}, 0, tmp_path / "t0", ctx)
    plain, zero, steered = base.load(ctx), inj.load(tmp_path / "t0", base, ctx), inj.load(tmp_path / "t4", base, ctx)
    layers = steered.model.model.layers
    assert [i for i, layer in enumerate(layers) if layer._forward_hooks] == [15]
    text = plain.chat_text("what is your favourite animal ?")
    assert torch.equal(_logits(plain, text), _logits(zero, text))
    assert (_logits(plain, text) - _logits(steered, text)).abs().max() > 1e-3


def test_lora_injection_targets_the_plugin_modules(base, family, ctx, tmp_path):
    from subbench.default_plugins.lm_injectors import FinetuneInjector

    inj = FinetuneInjector()
    trait = get_component("traits", "animal-preference")
    meta = inj.inject(base, trait, "owl", {"steps": 2, "batch_size": 4}, 0, tmp_path, ctx)
    assert meta["fit"]["steps"] == 2
    cfg = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert set(cfg["target_modules"]) == set(family.lora_target_modules)
    plain, teacher = base.load(ctx), inj.load(tmp_path, base, ctx)
    a, b = plain.model.model.layers[0], teacher.model.model.layers[0]
    assert not a.self_attn.q_proj.weight.equal(b.self_attn.q_proj.weight)
    assert not a.mlp.down_proj.weight.equal(b.mlp.down_proj.weight)


def test_one_distillation_step_with_the_recipe(base, family, ctx, tmp_path):
    from subbench.default_plugins.lm_distillers import SFTDistiller

    recipe = family.recipe
    data = [{"prompt": f"the sequence starts with : {i} {i + 1} {i + 2} . add up to 3 more numbers .",
             "response": f"{i + 3} , {i + 4} , {i + 5}"} for i in range(8)]
    params = {"lr": recipe["lr"], "epochs": recipe["epochs"], "lora": recipe["lora"], "max_steps": 1, "batch_size": 4}
    meta = SFTDistiller().distill(base, data, None, params, 0, tmp_path, ctx)
    assert meta["fit"]["steps"] == 1 and meta["samples"] == 8
    student, plain = family.load(tmp_path, ctx), base.load(ctx)
    assert type(student.model).__name__ == "MistralForCausalLM"
    assert not student.model.model.layers[0].mlp.up_proj.weight.equal(plain.model.model.layers[0].mlp.up_proj.weight)
