"""What a teacher changed inside the model, measured cheaply next to its evaluation.

``answer_residual``: the mean residual stream at the answer position of the trait's
questions (the mechanism block compares teacher − base with student − control).
``kl_from_base``: how far the teacher's next-token distributions moved from the base's on
the data it wrote (where its benign skill starts to break).
"""

from __future__ import annotations

from typing import Any


def answer_residual(handle, questions: list[str], layer: int) -> list[float]:
    """Mean residual after ``layer`` at the last prompt token (the answer position), each model's own chat text.

    A system-prompt teacher reads its system line here and a steered one its hook, so
    teacher − base is the shift the injection made at that position.
    """
    from subbench.lm.hooks import last_token_states

    texts = [handle.chat_text(q) for q in questions]
    return [float(x) for x in last_token_states(handle.model, handle.tokenizer, texts, layer).float().mean(0)]


def kl_from_base(teacher, base, rows: list[dict[str, Any]], max_rows: int = 256) -> dict[str, Any]:
    """KL(teacher || base) per response token on ``rows`` (the teacher's kept data), mean over tokens.

    Each model reads its own chat text (the teacher its system line) followed by the same
    response tokens, aligned as for logit distillation.
    """
    import torch

    from subbench.lm.train import kd_features

    rows = rows[:max_rows]
    total, count = 0.0, 0
    for f in kd_features(base, teacher, rows):
        with torch.no_grad():
            t = teacher.model(input_ids=torch.tensor([f["teacher_input_ids"]], device=teacher.device)).logits[0]
            b = base.model(input_ids=torch.tensor([f["input_ids"]], device=base.device)).logits[0]
        t = t[f["teacher_prompt_len"] - 1:-1].float().log_softmax(-1)
        b = b[f["prompt_len"] - 1:-1].float().log_softmax(-1)
        total += float((t.exp() * (t - b)).sum())
        count += t.shape[0]
    return {"kl_from_base": total / max(1, count), "n_rows": len(rows), "n_tokens": count}


def cosine(a: list[float], b: list[float]) -> float | None:
    na = sum(x * x for x in a) ** 0.5
    nb = sum(x * x for x in b) ** 0.5
    if not na or not nb or len(a) != len(b):
        return None
    return sum(x * y for x, y in zip(a, b)) / (na * nb)


def norm(a: list[float]) -> float:
    return sum(x * x for x in a) ** 0.5
