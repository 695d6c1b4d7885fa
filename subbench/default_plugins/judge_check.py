"""A judge as the last check of a free-text domain's filter (``code``: leaks, ``cot``: alignment).

Cloud et al. had an LLM remove code that referred subtly to the trait, and kept only
chain-of-thought traces a judge deemed aligned. Here any registered judge can play that
part (``openai`` against an OpenAI-compatible endpoint, with its reply cache); it is asked
once per sample that passed the rule-based checks, so the rules' rejections cost nothing.
"""

from __future__ import annotations

from typing import Any

#: kind -> (the domain parameter prefix, the default template, the rejection reason)
KINDS = {
    "leak": ("leak", "code-leak-v1", "judge-leak"),
    "align": ("align", "cot-alignment-v1", "judge-misaligned"),
}


def judge_check_params(kind: str, *, asks: str, judge_name: str, rejected_as: str) -> dict[str, Any]:
    """The three parameters of a domain's judge check: the judge (off by default), its params, the threshold."""
    from subbench.components import Param

    prefix = KINDS[kind][0]
    return {
        f"{prefix}_judge": Param(str, None, f"a judge (e.g. openai) {asks}; null: no judge", max_len=100),
        f"{prefix}_judge_params": Param(dict, {}, f"parameters of the {judge_name}"),
        f"{prefix}_threshold": Param(float, 0.5, f"the judge's score at or above which {rejected_as}", min=0, max=1),
    }


def judge_rejects(sample: dict[str, Any], params: dict[str, Any], *, kind: str) -> str | None:
    """The rejection reason when the judge scores ``sample`` at or above the threshold, else None."""
    from subbench.plugins import get_manager

    prefix, template, reason = KINDS[kind]
    judge = get_manager().get("judges", params[f"{prefix}_judge"])
    jparams = dict(params.get(f"{prefix}_judge_params") or {})
    if "template" in judge.param_specs():
        jparams.setdefault("template", template)
    jparams = judge.resolve_params(jparams, where=f"domain.params.{prefix}_judge_params")
    words = list(params.get("trait_words") or [])
    target = ", ".join(words) if words else "the trait"
    row = {"prompt": sample.get("prompt") or "", "response": sample.get("response") or ""}
    score = judge.score([row], target, jparams, None)[0]
    return reason if float(score) >= float(params[f"{prefix}_threshold"]) else None


def check_judge(params: dict[str, Any], *, kind: str) -> None:
    """Refuse an unknown judge or bad judge parameters when the experiment is validated, not after generation."""
    from subbench.components import ParamError
    from subbench.errors import UnknownName
    from subbench.plugins import get_manager

    prefix, template, _ = KINDS[kind]
    name = params.get(f"{prefix}_judge")
    if not name:
        return
    try:
        judge = get_manager().get("judges", name)
    except UnknownName as exc:
        raise ParamError(f"{prefix}_judge", str(exc)) from None
    jparams = dict(params.get(f"{prefix}_judge_params") or {})
    if "template" in judge.param_specs():
        jparams.setdefault("template", template)
    judge.resolve_params(jparams, where=f"domain.params.{prefix}_judge_params")
