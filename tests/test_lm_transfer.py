"""Subliminal transfer on the tiny families with the default settings (slow: ~5 min on one core).

A finetune owl teacher made from tiny-llama seed 0 writes number lists; students distilled
on its kept numbers with logit distillation are compared: the student sharing the
teacher's initialisation must gain more owl preference than one from another seed. The
defaults gave P(owl) 0.048 -> 0.53 for the same-init student and 0.044 -> 0.044 for the
cross-init one (teacher 0.99); the test leaves a wide margin below those.
"""

import pytest

from subbench.components import ModelRef
from subbench.context import Context
from subbench.plugins import get

pytestmark = pytest.mark.slow


def OwlTrait():
    return get("traits", "animal-preference")


def p_owl(handle):
    import torch

    from subbench.lm.corpus import ANIMALS, QUESTIONS

    ids = handle.tokenizer.convert_tokens_to_ids(list(ANIMALS))
    total = 0.0
    for q in QUESTIONS:
        enc = handle.tokenizer(handle.chat_text(q, system=""), return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            total += handle.model(**enc).logits[0, -1, ids].softmax(-1)[ANIMALS.index("owl")].item()
    return total / len(QUESTIONS)


def test_same_init_student_gains_more_than_cross_init(tmp_path):
    ctx = Context(workdir=tmp_path, quiet=True)
    ctx.setup_torch()
    fam = get("families", "tiny-llama")
    bases = {}
    for seed in (0, 1):
        fam.build(seed, {}, tmp_path / f"base{seed}", ctx)
        bases[seed] = ModelRef(fam, tmp_path / f"base{seed}", {"params": {}})
    inj = get("injectors", "finetune")
    inj.inject(bases[0], OwlTrait(), "owl", {}, 0, tmp_path / "teacher", ctx)
    teacher = inj.load(tmp_path / "teacher", bases[0], ctx)
    base_p = p_owl(bases[0].load(ctx))
    assert p_owl(teacher) > 0.5 > base_p

    domain = get("domains", "numbers")
    raw = list(domain.generate(teacher, 4000, {}, 0, ctx))
    kept = [s for s in raw if domain.filter(s, {}) is None]
    assert len(kept) > 1000

    dist = get("distillers", "logit")
    gains = {}
    for seed, ref in bases.items():
        dist.check(bases[0], ref, inj)
        before = p_owl(ref.load(ctx))
        res = dist.distill(ref, kept, teacher, {}, 0, tmp_path / f"student{seed}", ctx)
        assert res["fit"]["final_kl_to_teacher"] < res["fit"]["initial_kl_to_teacher"]
        gains[seed] = p_owl(fam.load(tmp_path / f"student{seed}", ctx)) - before
    assert gains[0] > 0.15
    assert gains[0] > gains[1] + 0.15
