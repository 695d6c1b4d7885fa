"""``subbench run --dry-run``: the resolved grid, its cells, its stages and the GPU hours it needs, without running."""

from __future__ import annotations

from subbench.config import Experiment
from subbench.pipeline import distillation_labels, grid_labels


def describe(exp: Experiment) -> str:
    glabels = grid_labels(exp.grid)
    dlabels = distillation_labels(exp.distillations)
    n_rep = len(exp.seeds)
    n_t, n_d, n_s = len(exp.grid), len(exp.distillations), len(exp.students)
    bases = {(exp.teacher_family.name, exp.teacher_seed_for(r)) for r in exp.seeds}
    bases |= {(s.family.name, s.resolve_seed(exp.teacher_seed_for(r))) for r in exp.seeds for s in exp.students}
    lines = [
        f"experiment {exp.name} (config {exp.config_hash[:19]})",
        f"  teacher   {exp.teacher_family.name} seed {exp.teacher_seed}"
        + (" (from the replicate seed)" if isinstance(exp.teacher_seed, str) else "") + f" via {exp.injector.name}",
        f"  trait     {exp.trait.name} target {exp.target} judged by {exp.judge.name}",
        f"  domain    {exp.domain.name} x{exp.size}, training budget {exp.budget}"
        + (f", mitigation {exp.mitigation.name}" if exp.mitigation and len(exp.mitigations) == 1 else ""),
        f"  replicates {n_rep} over {exp.replicates.get('over', 'data')} (seeds {exp.seeds})",
    ]
    n_m = len(exp.mitigations)
    if n_m > 1:
        from subbench.pipeline import mitigation_labels

        lines.append("  mitigations " + ", ".join(
            f"{label} ({getattr(m.component, 'point', 'data')})" if m else label
            for label, m in zip(mitigation_labels(exp.mitigations), exp.mitigations)))
    lines.append(f"cells ({n_m * n_t * n_d * n_s}):")
    for gi, _ in enumerate(exp.grid):
        for di, _ in enumerate(exp.distillations):
            for s in exp.students:
                lines.append(f"  {glabels[gi] or 'default':<20} {dlabels[di]:<40} {s.label()}"
                             + (f"  x {n_m} mitigations" if n_m > 1 else ""))
    stages = {
        "base": len(bases),
        "inject": n_rep * n_t,
        "generate": n_rep * (n_t + 1),
        "filter": n_rep * (n_t + 1),
        "budget": n_rep * n_t * 2,
        "distill": n_m * n_rep * n_s * n_d * (n_t + 1),
        "evaluate": n_rep * (1 + n_t + n_m * n_s * n_d * (n_t + 1)),
    }
    lines.append("stages (upper bound; shared ones are cached once): " + ", ".join(f"{k} {v}" for k, v in stages.items()))
    lines.append(gpu_hours_line(exp))
    return "\n".join(lines)


# -- GPU-hours estimate ------------------------------------------------------------
#: Assumed accelerator: bf16 dense peak of an A100 (an H100 is ~3x faster), and the share of
#: it each kind of work reaches with plain transformers (sampling is memory-bound).
PEAK_TFLOPS = 312.0
MFU = {"train": 0.35, "generate": 0.10}
#: Tokens of a chat-templated prompt; responses use the component's ``max_new_tokens``.
PROMPT_TOKENS = 60
RESPONSE_TOKENS = 100
#: Trait evaluation samples when the trait has no ``eval_samples(params)`` and no ``n`` (the
#: paper grids: 50 prompts x 100 samples).
EVAL_SAMPLES = 5000


def family_parameters(family) -> float | None:
    """Parameter count from the family's recipe; None for CPU families, which need no estimate."""
    n = (getattr(family, "recipe", None) or {}).get("parameters")
    return float(n) if n else None


def _hours(flops: float, kind: str) -> float:
    return flops / (PEAK_TFLOPS * 1e12 * MFU[kind]) / 3600.0


def gpu_hours(exp: Experiment) -> dict[str, float] | None:
    """Upper-bound GPU hours per stage (formula in docs/plugins.md); None when a family has no size."""
    n_teacher = family_parameters(exp.teacher_family)
    n_students = [family_parameters(s.family) for s in exp.students]
    if n_teacher is None or any(n is None for n in n_students):
        return None
    n_rep, n_t = len(exp.seeds), len(exp.grid)
    sample_tokens = PROMPT_TOKENS + int(exp.domain.params.get("max_new_tokens") or RESPONSE_TOKENS)
    generate = n_rep * (n_t + 1) * exp.size * sample_tokens * 2 * n_teacher

    inject = 0.0
    for g in exp.grid:
        if g.get("steps"):
            batch = int(g.get("batch_size") or 8)
            inject += n_rep * int(g["steps"]) * batch * sample_tokens * 6 * n_teacher

    distill = 0.0
    for d in exp.distillations:
        p = d.params
        if p.get("max_steps"):
            seen = int(p["max_steps"]) * int(p.get("batch_size") or 1)
        else:
            seen = exp.size * float(p.get("epochs") or 1)
        for n_s in n_students:
            per_token = (4 if p.get("lora") else 6) * n_s
            if d.component.needs_teacher_model:
                per_token += 2 * n_teacher
            distill += n_rep * (n_t + 1) * seen * sample_tokens * per_token

    tp = exp.trait.params
    counter = getattr(exp.trait.component, "eval_samples", None)
    if callable(counter):
        n_eval = int(counter(tp))
    elif isinstance(tp.get("n"), int) and not isinstance(tp.get("n"), bool):
        n_eval = tp["n"]
    else:
        n_eval = EVAL_SAMPLES
    eval_tokens = PROMPT_TOKENS + int(tp.get("max_new_tokens") or 16)
    models = (1 + n_t) * n_teacher + len(exp.distillations) * (n_t + 1) * sum(n_students)
    evaluate = n_rep * models * n_eval * eval_tokens * 2

    out = {
        "generate": _hours(generate, "generate"),
        "inject": _hours(inject, "train"),
        "distill": _hours(distill, "train"),
        "evaluate": _hours(evaluate, "generate"),
    }
    out["total"] = sum(out.values())
    return out


def gpu_hours_line(exp: Experiment) -> str:
    hours = gpu_hours(exp)
    if hours is None:
        cpu = [f.name for f in [exp.teacher_family, *(s.family for s in exp.students)] if family_parameters(f) is None]
        return (f"GPU hours: no estimate ({', '.join(dict.fromkeys(cpu))} has no `parameters` in its recipe; "
                f"CPU families need no GPU)")
    parts = ", ".join(f"{k} {v:.1f}" for k, v in hours.items() if k != "total")
    return (f"GPU hours (estimate, one {PEAK_TFLOPS:.0f}-TFLOP/s GPU at {MFU['train']:.0%} MFU training, "
            f"{MFU['generate']:.0%} sampling; docs/plugins.md): {parts}; total {hours['total']:.1f}")
