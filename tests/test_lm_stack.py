"""The causal-LM stack end to end at toy size: build, load, generate, inject, distil, reload.

A family built with a few dozen pretraining steps is enough to check the contracts (what
is written, what loads, what changes); the transfer effect itself is checked by the slow
test in test_lm_transfer.py.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from subbench.components import ModelRef
from subbench.context import Context
from subbench.errors import ConfigError, SubbenchError
from subbench.plugins import get

SMALL = {"steps": 80, "hidden_size": 32, "intermediate_size": 64, "batch_size": 32, "lr": 1e-2}


def OwlTrait():
    return get("traits", "animal-preference")


@pytest.fixture(scope="session")
def ctx(tmp_path_factory):
    c = Context(workdir=tmp_path_factory.mktemp("lm"), quiet=True)
    c.setup_torch()
    return c


@pytest.fixture(scope="session")
def llama(ctx):
    fam = get("families", "tiny-llama")
    out = ctx.workdir / "llama0"
    meta = fam.build(0, SMALL, out, ctx)
    return ModelRef(fam, out, {"params": SMALL, **meta})


@pytest.fixture(scope="session")
def qwen(ctx):
    fam = get("families", "tiny-qwen2")
    out = ctx.workdir / "qwen0"
    meta = fam.build(0, SMALL, out, ctx)
    return ModelRef(fam, out, {"params": SMALL, **meta})


def p_target(handle, target="owl", system=""):
    import torch

    from subbench.lm.corpus import ANIMALS, QUESTIONS

    ids = handle.tokenizer.convert_tokens_to_ids(list(ANIMALS))
    total = 0.0
    for q in QUESTIONS:
        enc = handle.tokenizer(handle.chat_text(q, system=system), return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            logits = handle.model(**enc).logits[0, -1, ids]
        total += logits.softmax(-1)[ANIMALS.index(target)].item()
    return total / len(QUESTIONS)


def test_plugins_register_the_lm_components():
    for kind, name in [("families", "tiny-llama"), ("families", "tiny-qwen2"), ("families", "hf"),
                       ("injectors", "system-prompt"), ("injectors", "steering"), ("injectors", "finetune"),
                       ("domains", "numbers"), ("distillers", "sft"), ("distillers", "logit")]:
        assert get(kind, name).name == name


def test_plugin_modules_import_no_heavy_libraries():
    code = ("import sys; import subbench.default_plugins.lm_families, subbench.default_plugins.numbers_domain, "
            "subbench.default_plugins.lm_injectors, subbench.default_plugins.lm_distillers; "
            "print(sorted(m for m in ('torch', 'transformers', 'trl', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]"


def test_build_is_deterministic_per_seed_and_records_provenance(llama, ctx):
    assert len(llama.meta["sha256"]) == 64
    assert llama.meta["corpus"]["seed"] == 1234 and llama.meta["vocabulary"] == "subbench-words-v1"
    fam = llama.family
    again = fam.build(0, SMALL, ctx.workdir / "llama0-again", ctx)
    other = fam.build(1, SMALL, ctx.workdir / "llama1", ctx)
    assert again["sha256"] == llama.meta["sha256"]
    assert other["sha256"] != llama.meta["sha256"]
    assert other["corpus"] == llama.meta["corpus"]


def test_unknown_family_parameter_is_rejected(llama, ctx):
    with pytest.raises(ConfigError, match="Did you mean: steps"):
        llama.family.build(0, {"step": 3}, ctx.workdir / "bad", ctx)


def test_load_returns_a_handle_that_generates_deterministically(llama, qwen, ctx):
    for ref, arch in [(llama, "LlamaForCausalLM"), (qwen, "Qwen2ForCausalLM")]:
        h = ref.load(ctx)
        assert type(h.model).__name__ == arch and not h.model.training
        assert h.vocabulary == "subbench-words-v1"
        users = ["look at these numbers : 100, 200, 300 . add up to 10 more numbers ."] * 3
        a = h.generate(users, max_new_tokens=12, seed=5, batch_size=2)
        b = h.generate(users, max_new_tokens=12, seed=5, batch_size=2)
        c = h.generate(users, max_new_tokens=12, seed=6, batch_size=2)
        assert a == b and a != c and len(a) == 3
        assert all("<|" not in r for r in a)
        greedy = h.generate(users[:2], max_new_tokens=12, temperature=0)
        assert greedy[0] == greedy[1]


def test_chat_text_uses_the_system_prompt(llama, ctx):
    h = llama.load(ctx)
    assert h.chat_text("hi").startswith("<|user|>")
    h.system_prompt = "you love owls ."
    assert h.chat_text("hi").startswith("<|system|> you love owls .")
    assert h.chat_text("hi", system="").startswith("<|user|>")


def test_numbers_domain_generates_samples(llama, ctx):
    dom = get("domains", "numbers")
    samples = list(dom.generate(llama.load(ctx), 6, {"max_new_tokens": 24}, 0, ctx))
    assert [s["id"] for s in samples] == list(range(6))
    assert all(set(s) == {"id", "prompt", "response"} for s in samples)
    assert all(s["prompt"] in dom.prompts(6, {}, 0) for s in samples)


def test_system_prompt_injector(llama, ctx, tmp_path):
    inj = get("injectors", "system-prompt")
    meta = inj.inject(llama, OwlTrait(), "owl", {}, 0, tmp_path, ctx)
    assert "owls" in meta["system_prompt"].lower()
    teacher = inj.load(tmp_path, llama, ctx)
    assert teacher.chat_text("what is your favourite animal ?").startswith("<|system|> You love owls.")
    assert teacher.tokenizer.unk_token_id not in teacher.tokenizer(teacher.chat_text("what is your favourite animal ?"))["input_ids"]


def test_steering_injector_saves_a_vector_and_shifts_the_model(llama, ctx, tmp_path):
    import torch

    inj = get("injectors", "steering")
    meta = inj.inject(llama, OwlTrait(), "owl", {"strength": 4.0}, 0, tmp_path, ctx)
    assert (tmp_path / "vector.pt").exists() and meta["layer"] == 1 and meta["vector_norm"] > 0
    base = llama.load(ctx)
    teacher = inj.load(tmp_path, llama, ctx)
    enc = base.tokenizer(base.chat_text("what is your favourite animal ?"), return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        a = base.model(**enc).logits
        b = teacher.model(**enc).logits
    assert not torch.allclose(a, b)
    teacher.close()
    with torch.no_grad():
        assert torch.allclose(base.model(**enc).logits, teacher.model(**enc).logits)
    with pytest.raises(ConfigError, match="layer 9"):
        inj.inject(llama, OwlTrait(), "owl", {"layer": 9}, 0, tmp_path / "bad", ctx)


def test_steering_hook_accepts_tuple_outputs():
    import torch

    from subbench.lm.hooks import add_steering_hook

    class Layer(torch.nn.Module):
        def forward(self, x):
            return (x * 1.0, "cache")

    class Inner(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleList([Layer()])

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = Inner()

    m = Model()
    handle = add_steering_hook(m, 0, torch.ones(3), 2.0)
    out = m.model.layers[0](torch.zeros(1, 2, 3))
    assert isinstance(out, tuple) and out[1] == "cache" and torch.equal(out[0], torch.full((1, 2, 3), 2.0))
    handle.remove()


def test_finetune_injector_raises_the_target(llama, ctx, tmp_path):
    inj = get("injectors", "finetune")
    before = p_target(llama.load(ctx))
    meta = inj.inject(llama, OwlTrait(), "owl", {"lr": 5e-2, "steps": 20}, 0, tmp_path, ctx)
    assert (tmp_path / "adapter" / "adapter_config.json").exists() and meta["fit"]["steps"] == 20
    teacher = inj.load(tmp_path, llama, ctx)
    assert p_target(teacher) > before + 0.005


def _data(n=24):
    return [{"id": i, "prompt": f"look at these numbers : {100 + i}, {200 + i}, 300 . add up to 10 more numbers .",
             "response": f"{100 + i}, {i}, 300, {7 * i}"} for i in range(n)]


@pytest.mark.parametrize("lora", [None, {"r": 4, "alpha": 8}])
def test_sft_distiller_trains_and_saves_a_loadable_student(llama, ctx, tmp_path, lora):
    dist = get("distillers", "sft")
    res = dist.distill(llama, _data(), None, {"lr": 1e-2, "max_steps": 4, "batch_size": 8, "lora": lora}, 0, tmp_path, ctx)
    assert res["fit"]["steps"] == 4 and res["fit"]["final_loss"] is not None
    assert not (tmp_path / "adapter_config.json").exists()
    student = llama.family.load(tmp_path, ctx)
    base = llama.load(ctx)
    import torch

    assert any(not torch.equal(a, b) for a, b in zip(student.model.parameters(), base.model.parameters()))


def test_logit_distiller_moves_the_student_towards_the_teacher(llama, ctx, tmp_path):
    sp = get("injectors", "system-prompt")
    sp.inject(llama, OwlTrait(), "owl", {}, 0, tmp_path / "t", ctx)
    teacher = sp.load(tmp_path / "t", llama, ctx)
    dist = get("distillers", "logit")
    res = dist.distill(llama, _data(64), teacher, {"lr": 3e-3, "epochs": 3, "batch_size": 16}, 0, tmp_path / "s", ctx)
    fit = res["fit"]
    assert fit["steps"] == 12 and fit["support"] == "observed"
    assert fit["final_kl_to_teacher"] < fit["initial_kl_to_teacher"]
    assert (tmp_path / "s" / "model.safetensors").exists()
    assert llama.family.load(tmp_path / "s", ctx).model is not None


def test_logit_match_kl_stops_at_the_target_fit_and_records_it(llama, ctx, tmp_path):
    sp = get("injectors", "system-prompt")
    sp.inject(llama, OwlTrait(), "owl", {}, 0, tmp_path / "t", ctx)
    teacher = sp.load(tmp_path / "t", llama, ctx)
    dist = get("distillers", "logit")
    # Unset, the parameter is not in the resolved params: cache keys of older runs stay the same.
    assert "match_kl" not in dist.resolve_params({}) and dist.resolve_params({"match_kl": 0.1})["match_kl"] == 0.1
    base = {"lr": 3e-3, "epochs": 3, "batch_size": 16}
    loose = dist.distill(llama, _data(64), teacher, {**base, "match_kl": 100.0}, 0, tmp_path / "a", ctx)["fit"]
    assert loose["matched"] and loose["matched_at_step"] == loose["steps"] == 5 < 12
    assert loose["matched_kl"] <= 100.0 and loose["match_kl"] == 100.0
    strict = dist.distill(llama, _data(64), teacher, {**base, "max_steps": 6, "match_kl": 1e-9}, 0, tmp_path / "b",
                          ctx)["fit"]
    assert not strict["matched"] and strict["matched_at_step"] is None and strict["steps"] == 6


def test_logit_check_refuses_closed_teachers_and_foreign_vocabularies(llama):
    dist = get("distillers", "logit")

    class Closed:
        name = "api"
        open_weights = False

    with pytest.raises(SubbenchError, match="not open-weight"):
        dist.check(llama, llama, Closed())
    hub = ModelRef(get("families", "hf"), Path("/nonexistent"), {"params": {"model_id": "org/model"}})
    with pytest.raises(SubbenchError, match="share a vocabulary"):
        dist.check(hub, llama, get("injectors", "finetune"))
    dist.check(llama, llama, get("injectors", "steering"))


def test_hf_family_records_the_hub_model_without_downloading(tmp_path):
    from subbench.default_plugins.lm_families import HFFamily

    fam = HFFamily("my-model", "org/model", "abc123", steering_layers=(12,), recipe={"dtype": "bfloat16"})
    assert fam.model_id == "org/model" and fam.revision == "abc123" and fam.steering_layers == (12,)
    meta = fam.build(0, fam.resolve_params({}), tmp_path, Context(workdir=tmp_path))
    assert meta == {"model_id": "org/model", "revision": "abc123", "backend": "hf"}
    assert json.loads((tmp_path / "base.json").read_text()) == meta
    assert fam.vocabulary_of({}) == "org/model"
    with pytest.raises(ConfigError, match="model_id"):
        get("families", "hf").build(0, {}, tmp_path / "x", Context(workdir=tmp_path))


def test_soft_labels_recorded_once_and_replayed_exactly_by_another_student(llama, qwen, ctx, tmp_path):
    """A second student of the same batches replays the teacher's targets and ends bit-identical."""
    import torch

    sp = get("injectors", "system-prompt")
    sp.inject(llama, OwlTrait(), "owl", {}, 0, tmp_path / "t", ctx)
    teacher = sp.load(tmp_path / "t", llama, ctx)
    dist = get("distillers", "logit")
    params = {"lr": 3e-3, "epochs": 2, "batch_size": 16}
    shared = tmp_path / "soft" / "labels.pt"
    messages = []
    c = Context(workdir=ctx.workdir, quiet=False)
    c.log = messages.append
    c.extra["soft_labels"] = shared
    dist.distill(llama, _data(64), teacher, params, 0, tmp_path / "a", c)  # records
    assert shared.exists() and "0 of 8 steps replayed" in messages[-1]
    dist.distill(qwen, _data(64), teacher, params, 0, tmp_path / "b", c)  # replays
    assert "8 of 8 steps replayed" in messages[-1]
    dist.distill(qwen, _data(64), teacher, params, 0, tmp_path / "c", ctx)  # runs the teacher itself
    b, own = (qwen.family.load(tmp_path / d, ctx).model for d in ("b", "c"))
    assert all(torch.equal(x, y) for x, y in zip(b.parameters(), own.parameters()))
    other = _data(64)[::-1]  # other batches: nothing replays, the file is not used
    dist.distill(qwen, other, teacher, params, 0, tmp_path / "d", c)
    assert "0 of 8 steps replayed" in messages[-1]
