"""``subbench run --dry-run``: the resolved grid, its cells, its stages and the GPU hours it needs, without running."""

from __future__ import annotations

from subbench.config import Experiment
from subbench.plan import distillation_labels, grid_labels


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
        from subbench.plan import mitigation_labels

        lines.append("  mitigations " + ", ".join(
            f"{label} ({getattr(m.component, 'point', 'data')})" if m else label
            for label, m in zip(mitigation_labels(exp.mitigations), exp.mitigations)))
    lines.append(f"cells ({n_m * n_t * n_d * n_s}):")
    for gi, _ in enumerate(exp.grid):
        for di, _ in enumerate(exp.distillations):
            for s in exp.students:
                lines.append(f"  {glabels[gi] or 'default':<20} {dlabels[di]:<40} {s.label()}"
                             + (f"  x {n_m} mitigations" if n_m > 1 else ""))
    lines.append(gpu_hours_line(exp))
    return "\n".join(lines)


# -- GPU-hours estimate ------------------------------------------------------------
# The figures come from the components (``estimate_cost`` on each base class, the formula of
# the built-ins in docs/plugins.md); this sums them over the stages a grid runs.
from subbench.components import COST_FIELDS, EVAL_SAMPLES, MFU, PEAK_TFLOPS, PROMPT_TOKENS, RESPONSE_TOKENS  # noqa: E402,F401


def family_parameters(family, params=None) -> float | None:
    """Parameter count the family reports; None for CPU families, which need no estimate."""
    return family.parameter_count(params or {})


def stage_costs(exp: Experiment) -> dict[str, dict[str, float]] | None:
    """Upper-bound cost per stage, summed from the components' own estimates; None when a family has no size."""
    n_teacher = exp.teacher_family.parameter_count(exp.teacher_params)
    n_students = [s.family.parameter_count(s.params) for s in exp.students]
    if n_teacher is None or any(n is None for n in n_students):
        return None
    n_rep, n_t = len(exp.seeds), len(exp.grid)
    total: dict[str, dict[str, float]] = {k: dict.fromkeys(COST_FIELDS, 0.0)
                                          for k in ("generate", "inject", "distill", "evaluate")}

    def add(stage: str, est: dict[str, float] | None, times: float) -> None:
        for k, v in (est or {}).items():
            if k == "gpu_mem_gb":  # memory is a peak, not a sum
                total[stage][k] = max(total[stage][k], float(v))
            elif k in total[stage]:
                total[stage][k] += times * float(v)

    domain, dp = exp.domain.component, exp.domain.params
    tokens = domain.sample_tokens(dp)
    add("generate", domain.estimate_cost(exp.size, dp, n_teacher), n_rep * (n_t + 1))
    for g in exp.grid:
        add("inject", exp.injector.component.estimate_cost(g, n_teacher, tokens), n_rep)
    for d in exp.distillations:
        for n_s in n_students:
            add("distill", d.component.estimate_cost(exp.size, d.params, n_s, n_teacher, tokens), n_rep * (n_t + 1))
    trait, tp = exp.trait.component, exp.trait.params
    add("evaluate", trait.estimate_cost(tp, n_teacher), n_rep * (1 + n_t))
    for n_s in n_students:
        add("evaluate", trait.estimate_cost(tp, n_s), n_rep * len(exp.distillations) * (n_t + 1))
    return total


def gpu_hours(exp: Experiment) -> dict[str, float] | None:
    """Upper-bound GPU hours per stage (formula in docs/plugins.md); None when a family has no size."""
    costs = stage_costs(exp)
    if costs is None:
        return None
    out = {stage: c["gpu_hours"] for stage, c in costs.items()}
    out["total"] = sum(out.values())
    return out


def gpu_hours_line(exp: Experiment) -> str:
    hours = gpu_hours(exp)
    if hours is None:
        cpu = [f.name for f, p in [(exp.teacher_family, exp.teacher_params), *((s.family, s.params) for s in exp.students)]
               if f.parameter_count(p) is None]
        return (f"GPU hours: no estimate ({', '.join(dict.fromkeys(cpu))} has no `parameters` in its recipe; "
                f"CPU families need no GPU)")
    parts = ", ".join(f"{k} {v:.1f}" for k, v in hours.items() if k != "total")
    return (f"GPU hours (estimate, one {PEAK_TFLOPS:.0f}-TFLOP/s GPU at {MFU['train']:.0%} MFU training, "
            f"{MFU['generate']:.0%} sampling; docs/plugins.md): {parts}; total {hours['total']:.1f}")
