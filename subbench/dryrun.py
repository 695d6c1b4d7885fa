"""``subbench run --dry-run``: the resolved grid, its cells, its stages and the GPU hours it needs, without running."""

from __future__ import annotations

from subbench.config import Experiment
from subbench.plan import distillation_labels, grid_labels


def describe(exp: Experiment) -> str:
    views = exp.views()  # one per teacher (a single-teacher experiment is its own view)
    glabels = grid_labels(exp.grid)
    dlabels = distillation_labels(exp.distillations)
    n_rep = len(exp.seeds)
    n_t, n_d = len(exp.grid), len(exp.distillations)
    bases = {(v.teacher_family.name, v.teacher_seed_for(r)) for v in views for r in exp.seeds}
    bases |= {(s.family.name, s.resolve_seed(v.teacher_seed_for(r))) for v in views for r in exp.seeds for s in v.students}
    teacher_lines = [
        f"  teacher   {v.teacher_family.name} seed {v.teacher_seed}"
        + (" (from the replicate seed)" if isinstance(v.teacher_seed, str) else "") + f" via {exp.injector.name}"
        for v in views]
    lines = [
        f"experiment {exp.name} (config {exp.config_hash[:19]})",
        *teacher_lines,
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
    n_cells = sum(n_m * n_t * n_d * len(v.students) for v in views)
    lines.append(f"cells ({n_cells}):")
    for v in views:
        for gi, _ in enumerate(exp.grid):
            for di, _ in enumerate(exp.distillations):
                for s in v.students:
                    lines.append((f"  {v.teacher_label:<14}" if v.teacher_label else "")
                                 + f"  {glabels[gi] or 'default':<20} {dlabels[di]:<40} {s.label()}"
                                 + (f"  x {n_m} mitigations" if n_m > 1 else ""))
    lines.append(gpu_hours_line(exp))
    return "\n".join(lines)


# -- CPU estimate (tiny families) -----------------------------------------------------
#: One-core seconds per unit of work of the tiny families (hidden 64, 2 layers), measured on
#: the 2-core machine of docs/results.md (matrix-tiny's stage log): pretraining one base,
#: one injector optimizer step, one generated sample, one distillation sample-epoch (teacher
#: forward included for logit), one evaluation.
CPU_SECONDS = {"base": 100.0, "inject_step": 0.035, "generate": 0.0016, "filter": 0.00005,
               "distill": {"logit": 0.0038, "sft": 0.0029}, "evaluate": 0.4}
#: Share of generated samples a distillation trains on: the finetuned owl teacher's numbers pass
#: the filter 20-40 % of the time and ``budget: equal`` cuts the control's data to the same size.
KEEP_RATE = 0.3


#: Seconds of the small stages on one core (data stages, the mechanism's measures).
SMALL_SECONDS = {"filter": 0.1, "budget": 0.1, "mitigate": 0.5, "teacher_kl": 0.7, "residual": 0.1}


def tiny_only(exp: Experiment) -> bool:
    """True when every family of the experiment is a tiny CPU family (the costs above apply)."""
    return all(getattr(f, "vocabulary_name", None) == "subbench-words-v1"
               for v in exp.views() for f in [v.teacher_family, *(s.family for s in v.students)])


def node_seconds(exp: Experiment, node) -> float:
    """One-core seconds of a plan node with the tiny families (``CPU_SECONDS``, ``KEEP_RATE``)."""
    args, c = node.args, CPU_SECONDS
    if node.stage == "base":
        return c["base"]
    if node.stage == "inject":
        g = exp.grid[args["grid"]]
        return int(g.get("steps") or 30) * c["inject_step"] if exp.injector.component.needs_weights else 1.0
    if node.stage == "generate":
        return exp.size * (c["generate"] + c["filter"])
    if node.stage == "distill":
        d = exp.distillations[args["distillation"]]
        kept = exp.size * KEEP_RATE if exp.budget == "equal" else min(exp.size * KEEP_RATE, int(exp.budget))
        return c["distill"].get(d.name, c["distill"]["logit"]) * kept * float(d.params.get("epochs") or 1)
    if node.stage == "evaluate":
        return c["evaluate"]
    return SMALL_SECONDS.get(node.stage, 1.0)


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
    views = exp.views()
    if len(views) > 1:  # several teachers: the sum of each teacher's run
        parts = [gpu_hours(v) for v in views]
        if any(p is None for p in parts):
            return None
        return {k: sum(p[k] for p in parts) for k in parts[0]}
    costs = stage_costs(exp)
    if costs is None:
        return None
    out = {stage: c["gpu_hours"] for stage, c in costs.items()}
    out["total"] = sum(out.values())
    return out


def gpu_hours_line(exp: Experiment) -> str:
    hours = gpu_hours(exp)
    if hours is None:
        cpu = [f.name for v in exp.views() for f, p in [(v.teacher_family, v.teacher_params),
                                                         *((s.family, s.params) for s in v.students)]
               if f.parameter_count(p) is None]
        return (f"GPU hours: no estimate ({', '.join(dict.fromkeys(cpu))} has no `parameters` in its recipe; "
                f"CPU families need no GPU)")
    parts = ", ".join(f"{k} {v:.1f}" for k, v in hours.items() if k != "total")
    return (f"GPU hours (estimate, one {PEAK_TFLOPS:.0f}-TFLOP/s GPU at {MFU['train']:.0%} MFU training, "
            f"{MFU['generate']:.0%} sampling; docs/plugins.md): {parts}; total {hours['total']:.1f}")
