"""The built-in defences on their own: detector, threshold sampling, SGD override, project-out."""

import random

import pytest

from subbench.context import Context
from subbench.errors import ConfigError
from subbench.plugins import get


@pytest.fixture
def ctx(tmp_path):
    return Context(workdir=tmp_path, quiet=True)


def _rows(n, rng, lucky=None, share=0.0):
    rows = []
    for i in range(n):
        nums = [rng.randint(100, 999) for _ in range(rng.randint(3, 8))]
        if lucky is not None and rng.random() < share:
            nums[rng.randrange(len(nums))] = lucky
        rows.append({"id": i, "prompt": "p", "response": ", ".join(map(str, nums))})
    return rows


def test_detector_flags_teacher_like_samples_at_its_false_positive_rate(ctx):
    det = get("mitigations", "detector")
    rng = random.Random(0)
    teacher, control = _rows(600, rng, lucky=777, share=0.6), _rows(600, rng)
    kept_t, kept_c, info = det.apply_pair(teacher, control, {"fpr": 0.05}, 0, ctx)
    assert det.point == "data"
    assert info["control_dropped"] == pytest.approx(0.05, abs=0.02)
    assert info["tpr"] > 0.4  # samples carrying the teacher's number are caught well above the FPR
    assert info["auc"] > 0.7
    assert info["tpr"] == pytest.approx(1 - len(kept_t) / len(teacher))
    assert sum("777" in r["response"] for r in kept_t) < 0.5 * sum("777" in r["response"] for r in teacher)
    # no signal: the detector flags about as much teacher data as control data
    _, _, null = det.apply_pair(_rows(600, rng), _rows(600, rng), {"fpr": 0.1}, 0, ctx)
    assert null["tpr"] < 0.2 and abs(null["auc"] - 0.5) < 0.1


def test_auc_counts_ties_as_half():
    from subbench.default_plugins.mitigations import _auc

    assert _auc([3, 4], [1, 2]) == 1.0 and _auc([1, 2], [3, 4]) == 0.0
    assert _auc([1, 1], [1, 1]) == 0.5 and _auc([], [1]) is None


def test_detector_at_zero_fpr_keeps_everything(ctx):
    det = get("mitigations", "detector")
    rng = random.Random(1)
    t, c = _rows(50, rng, 777, 0.5), _rows(50, rng)
    kept_t, kept_c, info = det.apply_pair(t, c, {"fpr": 0.0}, 0, ctx)
    assert len(kept_t) == 50 and len(kept_c) == 50 and info["tpr"] == 0


def test_decoding_defences_say_how_to_sample():
    assert get("mitigations", "min-p").decode({"p": 0.1}) == {"min_prob": 0.1}
    assert get("mitigations", "min-p").decode({"p": 0.1, "relative": True}) == {"min_p": 0.1}
    assert get("mitigations", "temperature").decode({"t": 0.3}) == {"temperature": 0.3}
    assert get("mitigations", "min-p").point == get("mitigations", "temperature").point == "decoding"


def test_threshold_processor_drops_the_tail_and_keeps_the_top():
    import torch

    from subbench.lm.handle import _MinProb

    probs = torch.tensor([[0.6, 0.3, 0.06, 0.04], [0.02, 0.02, 0.02, 0.94]])
    out = _MinProb(0.05)(None, probs.log())
    assert torch.isinf(out[0, 3]) and not torch.isinf(out[0, :3]).any()
    out = _MinProb(0.99)(None, probs.log())  # nothing reaches the threshold: the top token stays
    assert (~torch.isinf(out)).sum(-1).tolist() == [1, 1]


def test_sgd_overrides_the_optimizer_and_scales_the_rate():
    sgd, logit = get("mitigations", "sgd"), get("distillers", "logit")
    params = logit.resolve_params({})
    new = logit.resolve_params(sgd.train_params(logit, params, {"lr_scale": 10}))
    assert new["optimizer"] == "sgd" and new["lr"] == pytest.approx(params["lr"] * 10)
    assert sgd.point == "training"


def test_sgd_on_a_distiller_without_an_optimizer_is_a_config_error(tmp_path):
    from toy_plugin import registered

    with registered() as pm:
        copy = pm.get("distillers", "toy-copy")
        with pytest.raises(ConfigError, match="sgd needs a distiller with `optimizer`"):
            get("mitigations", "sgd").train_params(copy, copy.resolve_params({}), {})


def test_project_out_removes_the_teachers_direction_from_the_residual_stream(tmp_path):
    import torch

    from subbench.default_plugins.lm_injectors import chat_texts
    from subbench.lm.hooks import add_steering_hook, last_token_states

    ctx = Context(workdir=tmp_path, quiet=True)
    ctx.setup_torch()
    fam = get("families", "tiny-llama")
    small = {"steps": 20, "hidden_size": 32, "intermediate_size": 64, "batch_size": 16, "lr": 1e-2}
    fam.build(0, fam.resolve_params(small), tmp_path / "m", ctx)
    base, teacher = fam.load(tmp_path / "m", ctx), fam.load(tmp_path / "m", ctx)
    vec = torch.randn(32)
    add_steering_hook(teacher.model, 1, vec, 3.0)  # the "trait": a shift the base lacks

    class Spec:
        component = get("traits", "animal-preference")
        params = component.resolve_params({})

    po = get("mitigations", "project-out")
    _, bare = Spec.component.contrast_prompts("owl", Spec.params, system="-")
    texts = chat_texts(teacher, bare)
    before = last_token_states(teacher.model, teacher.tokenizer, texts, 1) - last_token_states(base.model, base.tokenizer, texts, 1)
    unit = vec / vec.norm()
    assert (before @ unit).abs().mean() > 1.0
    for model in (teacher, base):
        hooks = po.activation_hooks(model, teacher, base, Spec, "owl", {}, ctx)
        h = last_token_states(model.model, model.tokenizer, texts, 1)
        assert (h @ unit).abs().max() < 1e-3  # nothing left along the trait direction, teacher and base alike
        assert model.generate(["1, 2, 3"], max_new_tokens=4, seed=0)  # it still writes
        for x in hooks:
            x.remove()
    assert ((last_token_states(teacher.model, teacher.tokenizer, texts, 1)
             - last_token_states(base.model, base.tokenizer, texts, 1)) @ unit).abs().mean() > 1.0  # removed cleanly


def test_mitigation_scaffold_imports_and_its_own_test_passes(tmp_path, monkeypatch):
    import importlib
    import sys

    from click.testing import CliRunner

    from subbench.cli import build_cli

    res = CliRunner().invoke(build_cli(), ["plugin", "new", "my-filter", "--kind", "mitigation", "--dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    root = tmp_path / "subbench-my-filter"
    assert "my-filter = subbench_my_filter" in (root / "setup.cfg").read_text()
    monkeypatch.syspath_prepend(str(root))
    pkg = importlib.import_module("subbench_my_filter")
    assert pkg.DEFENCE.name == "my-filter" and pkg.DEFENCE.point == "data"
    spec = importlib.util.spec_from_file_location("scaffold_test", root / "tests" / "test_plugin.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.test_defence_drops_long_responses_only()
    sys.modules.pop("subbench_my_filter", None)
