"""The tiny families added for the teacher x student matrix (tiny-gpt2, tiny-mistral) and the sibling
(a grown copy of a base) meet what the runner asks of a family, at toy size.

Written as one parametrized contract so it can move onto subbench.testing's family suite:
build, reload, chat template, shared vocabulary, steering layer, LoRA targets, logit
distillation from and to another architecture.
"""

from __future__ import annotations

import json

import pytest

from subbench.components import ModelRef
from subbench.context import Context
from subbench.plugins import get

SMALL = {"steps": 30, "hidden_size": 32, "intermediate_size": 64, "batch_size": 16, "lr": 1e-2}
NEW = ["tiny-gpt2", "tiny-mistral"]


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    c = Context(workdir=tmp_path_factory.mktemp("tiny-families"), quiet=True)
    c.setup_torch()
    return c


@pytest.fixture(scope="module")
def built(ctx):
    refs = {}
    for name in NEW + ["tiny-llama"]:
        fam = get("families", name)
        params = fam.resolve_params(SMALL)
        meta = fam.build(0, params, ctx.workdir / name, ctx)
        refs[name] = ModelRef(fam, ctx.workdir / name, {"params": params, **meta})
    return refs


def _owl():
    return get("traits", "animal-preference")


@pytest.mark.parametrize("name", NEW)
def test_builds_on_the_shared_vocabulary_and_reloads(built, ctx, name):
    ref = built[name]
    assert ref.meta["vocabulary"] == "subbench-words-v1" == ref.family.vocabulary
    assert ref.meta["pretrain"]["steps"] == 30 and ref.meta["parameters"] > 10_000
    handle = ref.load(ctx)
    llama = built["tiny-llama"].load(ctx)
    assert handle.tokenizer.get_vocab() == llama.tokenizer.get_vocab()
    assert handle.chat_text("hi") == llama.chat_text("hi") == "<|user|> hi <|end|> <|assistant|> "
    again = ref.family.build(0, ref.meta["params"], ctx.workdir / f"{name}-again", ctx)
    assert again["sha256"] == ref.meta["sha256"]  # one seed, one base


def test_each_architecture_is_what_its_name_says(built, ctx):
    gpt2 = built["tiny-gpt2"].load(ctx).model
    mistral = built["tiny-mistral"].load(ctx).model
    assert type(gpt2).__name__ == "GPT2LMHeadModel" and gpt2.config.n_layer == 2
    assert gpt2.transformer.wpe.weight.shape[0] == 256  # learned positions
    assert type(gpt2.transformer.h[0].ln_1).__name__ == "LayerNorm"
    assert type(mistral).__name__ == "MistralForCausalLM"
    assert mistral.config.num_key_value_heads == mistral.config.num_attention_heads // 2


def test_mistral_does_not_start_from_llamas_weights(built, ctx):
    """Same module order and shapes would otherwise give tiny-llama's very initialisation at one seed."""
    import torch

    from subbench.lm.tokenizer import build_tokenizer

    tok = build_tokenizer()
    weights = {}
    for name in ("tiny-llama", "tiny-mistral"):
        fam = get("families", name)
        config, cls = fam.config(fam.resolve_params(SMALL), tok)
        torch.manual_seed(0 + fam.init_stream)
        weights[name] = cls(config).model.embed_tokens.weight
    assert not torch.equal(weights["tiny-llama"], weights["tiny-mistral"])


@pytest.mark.parametrize("name", NEW)
def test_steering_hooks_the_family_layer(built, ctx, tmp_path, name):
    import torch

    ref = built[name]
    inj = get("injectors", "steering")
    meta = inj.inject(ref, _owl(), "owl", {"strength": 4.0}, 0, tmp_path, ctx)
    assert meta["layer"] == ref.family.steering_layers[0] == 1
    base, teacher = ref.load(ctx), inj.load(tmp_path, ref, ctx)
    enc = base.tokenizer(base.chat_text("what is your favourite animal ?"), return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        assert not torch.allclose(base.model(**enc).logits, teacher.model(**enc).logits)


@pytest.mark.parametrize("name", NEW)
def test_finetune_adapts_the_family_lora_targets(built, ctx, tmp_path, name):
    ref = built[name]
    inj = get("injectors", "finetune")
    meta = inj.inject(ref, _owl(), "owl", {"lr": 5e-2, "steps": 3}, 0, tmp_path, ctx)
    assert meta["fit"]["steps"] == 3
    cfg = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert set(cfg["target_modules"]) == set(ref.family.lora_target_modules)
    expected = {"tiny-gpt2": {"c_attn", "c_proj", "c_fc"}}.get(name, {"q_proj", "k_proj", "v_proj", "o_proj"})
    assert expected <= set(cfg["target_modules"])
    assert inj.load(tmp_path, ref, ctx).model is not None


@pytest.mark.parametrize("name", NEW)
def test_logit_distillation_across_architectures(built, ctx, tmp_path, name):
    """The shared vocabulary is what lets `logit` pair any two tiny families, both ways."""
    ref, llama = built[name], built["tiny-llama"]
    dist = get("distillers", "logit")
    data = [{"id": i, "prompt": f"look at these numbers : {100 + i}, {200 + i} . add up to 5 more numbers .",
             "response": f"{100 + i}, {i}, 300"} for i in range(16)]
    for student, teacher in ((ref, llama), (llama, ref)):
        dist.check(teacher, student, get("injectors", "finetune"))
        res = dist.distill(student, data, teacher.load(ctx), {"lr": 3e-3, "epochs": 1, "batch_size": 8}, 0,
                           tmp_path / f"{student.family.name}-from-{teacher.family.name}", ctx)
        assert res["fit"]["steps"] == 2 and res["fit"]["final_kl_to_teacher"] is not None


def test_sibling_is_a_grown_copy_with_the_base_function(ctx, tmp_path):
    import torch

    from subbench.artifacts import ArtifactStore
    from subbench.pipeline import base_inputs, build_base

    fam = get("families", "tiny-llama-sibling")
    params = fam.resolve_params(SMALL)
    sctx = Context(workdir=tmp_path, quiet=True)
    store = ArtifactStore(tmp_path / "artifacts")
    art = store.produce("base", base_inputs(fam, 0, params), lambda tmp: build_base(fam, 0, params, tmp, sctx))
    src = store.lookup("base", base_inputs(fam.source, 0, fam.source.resolve_params(SMALL)))
    assert src is not None and art.result["sibling_of"]["base"] == src.key  # built into, and read from, the store
    a, b = fam.source.load(src.path, ctx), fam.load(art.path, ctx)
    assert b.model.config.num_hidden_layers == a.model.config.num_hidden_layers + 1
    assert art.result["parameters"] > src.result["parameters"]
    enc = a.tokenizer(a.chat_text("what is your favourite animal ?"), return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        assert torch.allclose(a.model(**enc).logits, b.model(**enc).logits, atol=1e-6)
