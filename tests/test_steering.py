"""The steering construction (contrast, scale, positions), the teacher's KL from its base and the mechanism block."""

from __future__ import annotations

import json

import pytest

from subbench.components import ModelRef, ParamError
from subbench.context import Context
from subbench.errors import ConfigError
from subbench.plugins import get

SMALL = {"steps": 60, "hidden_size": 32, "intermediate_size": 64, "batch_size": 32, "lr": 1e-2}


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    c = Context(workdir=tmp_path_factory.mktemp("steer"), quiet=True)
    c.setup_torch()
    return c


@pytest.fixture(scope="module")
def llama(ctx):
    fam = get("families", "tiny-llama")
    out = ctx.workdir / "llama0"
    meta = fam.build(0, SMALL, out, ctx)
    return ModelRef(fam, out, {"params": SMALL, **meta})


def test_defaults_are_the_construction_that_transfers():
    inj = get("injectors", "steering")
    p = inj.resolve_params({})
    assert (p["contrast"], p["layer"], p["positions"], p["scale"]) == ("targets", None, "all", "norm")
    assert int(inj.version) >= 2
    with pytest.raises(ParamError, match="contrast"):
        inj.resolve_params({"contrast": "animals"})
    with pytest.raises(ParamError, match="positions"):
        inj.resolve_params({"positions": "response"})
    with pytest.raises(ParamError, match="scale_domain"):
        inj.resolve_params({"scale_domain": "poems"})


def test_targets_contrast_is_the_target_minus_the_mean_over_other_targets(llama, ctx, tmp_path):
    import torch

    from subbench.default_plugins.lm_injectors import chat_texts
    from subbench.lm.corpus import DEFAULT_TRAIT_PROMPT
    from subbench.lm.hooks import last_token_states

    trait = get("traits", "animal-preference")
    inj = get("injectors", "steering")
    meta = inj.inject(llama, trait, "owl", {"strength": 0.5}, 0, tmp_path / "t", ctx)
    got = torch.load(tmp_path / "t" / "vector.pt")
    handle = llama.load(ctx)

    def mean(target):
        chats = [[{"role": "system", "content": DEFAULT_TRAIT_PROMPT.format(target=target)},
                  {"role": "user", "content": q}] for q in trait.questions()]
        return last_token_states(handle.model, handle.tokenizer, chat_texts(handle, chats), 1).float().mean(0)

    others = [a for a in trait.choices() if a != "owl"]
    want = mean("owl") - torch.stack([mean(a) for a in others]).mean(0)
    assert torch.allclose(got, want, atol=1e-4)
    c = meta["construction"]
    assert (c["contrast"], c["layer"], c["positions"], c["scale"]) == ("targets", 1, "all", "norm")
    assert c["n_without"] == len(others) * len(trait.questions())
    # scale norm: the added vector is 0.5 x the mean residual norm over number prompts
    assert meta["residual_norm"] > 0 and meta["applied_norm"] == pytest.approx(0.5 * meta["residual_norm"], rel=1e-3)
    spec = json.loads((tmp_path / "t" / "teacher.json").read_text())
    assert spec["factor"] * float(got.norm()) == pytest.approx(0.5 * meta["residual_norm"], rel=1e-3)
    raw = inj.inject(llama, trait, "owl", {"strength": 0.5, "scale": "raw", "contrast": "none"}, 0, tmp_path / "r", ctx)
    assert raw["residual_norm"] is None and raw["factor"] == 0.5
    assert not torch.allclose(torch.load(tmp_path / "r" / "vector.pt"), got, atol=1e-3)


def test_targets_contrast_needs_a_trait_with_targets(llama, ctx, tmp_path):
    with pytest.raises(ConfigError, match="contrast: trait"):
        get("injectors", "steering").inject(llama, get("traits", "harmful-compliance"), None, {"layer": 1}, 0,
                                            tmp_path, ctx)


def test_prompt_positions_leave_decoding_steps_unsteered():
    import torch

    from subbench.lm.hooks import add_steering_hook

    class Inner(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleList([torch.nn.Identity()])

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = Inner()

    m = Model()
    hook = add_steering_hook(m, 0, torch.ones(3), 2.0, positions="prompt")
    layer = m.model.layers[0]
    assert torch.equal(layer(torch.zeros(1, 4, 3)), torch.full((1, 4, 3), 2.0))  # prefill: steered
    assert torch.equal(layer(torch.zeros(1, 1, 3)), torch.zeros(1, 1, 3))  # one decoding step: not
    hook.remove()
    hook = add_steering_hook(m, 0, torch.ones(3), 2.0)
    assert torch.equal(layer(torch.zeros(1, 1, 3)), torch.full((1, 1, 3), 2.0))
    hook.remove()


def test_teacher_kl_from_base_is_zero_for_the_base_and_grows_with_strength(llama, ctx, tmp_path):
    from subbench.lm.mechanism import kl_from_base

    trait = get("traits", "animal-preference")
    inj = get("injectors", "steering")
    rows = [{"prompt": "12 , 40 , 7 ->", "response": "12 40 7 8"}, {"prompt": "3 , 5 ->", "response": "3 5"}]
    base = llama.load(ctx)
    assert kl_from_base(base, base, rows)["kl_from_base"] == pytest.approx(0.0, abs=1e-6)
    kls = []
    for k in (0.25, 1.0):
        inj.inject(llama, trait, "owl", {"strength": k}, 0, tmp_path / str(k), ctx)
        teacher = inj.load(tmp_path / str(k), llama, ctx)
        kls.append(kl_from_base(teacher, base, rows)["kl_from_base"])
        teacher.close()
    assert 0 < kls[0] < kls[1]


def test_mechanism_block_compares_teacher_and_student_shifts(tmp_path):
    from subbench.artifacts import Artifact
    from subbench.cell import Replicate, mechanism

    def art(name, vec):
        d = tmp_path / name
        d.mkdir()
        (d / "residual.json").write_text(json.dumps({"layer": 1, "mean": vec}))
        return Artifact("residual", name, d, {"result": {}}, True)

    res = {"base": art("b", [0, 0, 0]), "teacher": art("t", [2, 0, 0]), "control": art("c", [1, 1, 0]),
           "student": art("s", [2, 2, 0])}
    rep = Replicate(seed=0, teacher_seed=0, student_seed=0, teacher_base=None, student_base=None, evals={},
                    teacher_filter=None, control_filter=None, data=None, control_data=None, student_fit=None,
                    control_fit=None, residuals=res)
    block = mechanism([rep])
    assert block["cosine"] == pytest.approx(2 ** -0.5)
    assert block["v_teacher_norm"] == pytest.approx(2.0) and block["v_student_norm"] == pytest.approx(2 ** 0.5)
    assert mechanism([Replicate(**{**rep.__dict__, "residuals": {**res, "student": None}})]) is None


def test_a_tiny_steering_run_records_kl_and_mechanism(tmp_path):
    """Through the pipeline: the entry carries the teacher's KL per replicate and a mechanism block, and validates."""
    import yaml

    from subbench.config import load_experiment
    from subbench.leaderboard.validate import validate_entry
    from subbench.executor import run_experiment
    from subbench.pipeline import Runner

    small = {**SMALL, "steps": 40}
    exp_file = tmp_path / "steer.yaml"
    exp_file.write_text(yaml.safe_dump({
        "name": "steer-mini",
        "teacher": {"family": "tiny-llama", "seed": 0, "params": small},
        "trait": {"name": "animal-preference", "target": "owl", "params": {"n": 4, "samples_per_question": 1}},
        "injector": {"name": "steering", "params": {"strength": 1.0}},
        "domain": {"name": "numbers", "size": 24},
        "distillation": {"name": "logit", "params": {"epochs": 1, "batch_size": 8}},
        "students": [{"family": "tiny-llama", "seed": "teacher", "params": small}],
    }))
    exp = load_experiment(str(exp_file))
    (entry,) = run_experiment(Runner(exp, tmp_path / "w", tmp_path / "out", quiet=True, jobs=1))
    (seed,) = entry["domain"]["per_seed"]
    assert seed["teacher_kl_from_base"] > 0
    mech = entry["mechanism"]
    (rep,) = mech["per_replicate"]
    assert rep["teacher_layer"] == rep["student_layer"] == 1 and rep["v_teacher_norm"] > 0
    assert -1 <= mech["cosine"] <= 1
    (inj,) = entry["injector"]["per_seed"]
    assert inj["result"]["construction"]["contrast"] == "targets" and inj["result"]["residual_norm"] > 0
    assert validate_entry(entry) == []
