"""``subbench run --dry-run``: the resolved grid, its cells and its stages, without running."""

from __future__ import annotations

from subbench.config import Experiment
from subbench.pipeline import distillation_labels, grid_labels


def describe(exp: Experiment) -> str:
    glabels = grid_labels(exp.grid)
    dlabels = distillation_labels(exp.distillations)
    n_rep = len(exp.seeds)
    n_t, n_d, n_s = len(exp.grid), len(exp.distillations), len(exp.students)
    student_bases = {(s.family.name, str(s.seed)) for s in exp.students}
    lines = [
        f"experiment {exp.name} (config {exp.config_hash[:19]})",
        f"  teacher   {exp.teacher_family.name} seed {exp.teacher_seed} via {exp.injector.name}",
        f"  trait     {exp.trait.name} target {exp.target} judged by {exp.judge.name}",
        f"  domain    {exp.domain.name} x{exp.size}" + (f", mitigation {exp.mitigation.name}" if exp.mitigation else ""),
        f"  seeds     {exp.seeds}",
        f"cells ({n_t * n_d * n_s}):",
    ]
    for gi, _ in enumerate(exp.grid):
        for di, _ in enumerate(exp.distillations):
            for s in exp.students:
                lines.append(f"  {glabels[gi] or 'default':<20} {dlabels[di]:<40} {s.label()}")
    stages = {
        "base": n_rep * (1 + len(student_bases)),
        "inject": n_rep * n_t,
        "generate": n_rep * (n_t + 1),
        "filter": n_rep * (n_t + 1),
        "distill": n_rep * n_s * n_d * (n_t + 1),
        "evaluate": n_rep * (1 + n_t + n_s * n_d * (n_t + 1)),
    }
    lines.append("stages (upper bound; shared ones are cached once): " + ", ".join(f"{k} {v}" for k, v in stages.items()))
    return "\n".join(lines)
