"""Transfer ratio and its bootstrap confidence interval.

    transfer_ratio = (S_student - S_control) / (S_teacher - S_base)

Each ``S`` is given as per-sample scores for every replicate seed: ``scores[r][i]``. The
point estimate averages per-replicate means. The CI resamples replicates and then, within
each drawn replicate, evaluation samples (paired across base/teacher/control/student when
they were scored on the same prompts, which is the usual case). The bootstrap is seeded,
so anyone recomputing it from an entry's stored scores gets the same interval.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

Scores = Sequence[Sequence[float]]

DEFAULT_MIN_EFFECT = 0.05
DEFAULT_BOOTSTRAP = 1000


@dataclass
class RatioResult:
    ratio: float | None
    ci95: tuple[float, float] | None
    note: str | None
    teacher_effect: float
    student_effect: float

    def as_dict(self) -> dict:
        return {
            "transfer_ratio": self.ratio,
            "ci95": list(self.ci95) if self.ci95 else None,
            "transfer_ratio_note": self.note,
            "teacher_effect": self.teacher_effect,
            "student_effect": self.student_effect,
        }


def mean_of_means(scores: Scores) -> float:
    reps = [sum(r) / len(r) for r in scores if len(r)]
    if not reps:
        raise ValueError("no scores")
    return sum(reps) / len(reps)


def transfer_ratio(
    base: Scores,
    teacher: Scores,
    control: Scores,
    student: Scores,
    *,
    min_effect: float = DEFAULT_MIN_EFFECT,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    level: float = 0.95,
) -> RatioResult:
    import numpy as np

    groups = [base, teacher, control, student]
    n_rep = len(base)
    if n_rep == 0 or any(len(g) != n_rep for g in groups):
        raise ValueError("base, teacher, control and student need scores for the same replicates")
    s_base, s_teacher, s_control, s_student = (mean_of_means(g) for g in groups)
    t_eff = s_teacher - s_base
    st_eff = s_student - s_control
    if abs(t_eff) < min_effect or t_eff == 0:
        return RatioResult(
            None,
            None,
            f"teacher effect S_teacher - S_base = {t_eff:.4f} is below min_teacher_effect {min_effect}: "
            "the injector did not install the trait strongly enough to measure transfer",
            t_eff,
            st_eff,
        )
    ratio = st_eff / t_eff

    arrays = [[np.asarray(r, dtype=float) for r in g] for g in groups]
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        reps = rng.integers(0, n_rep, n_rep)
        means = np.zeros(4)
        for r in reps:
            lengths = {len(g[r]) for g in arrays}
            if len(lengths) == 1:  # paired: the same eval prompts for all four models
                idx = rng.integers(0, lengths.pop(), len(arrays[0][r]))
                for k in range(4):
                    means[k] += arrays[k][r][idx].mean()
            else:
                for k in range(4):
                    a = arrays[k][r]
                    means[k] += a[rng.integers(0, len(a), len(a))].mean()
        means /= n_rep
        denom = means[1] - means[0]
        if abs(denom) < 1e-12:
            continue
        boots.append((means[3] - means[2]) / denom)
    ci = None
    if boots:
        alpha = (1 - level) / 2
        lo, hi = np.quantile(np.asarray(boots), [alpha, 1 - alpha])
        ci = (float(lo), float(hi))
    return RatioResult(float(ratio), ci, None, t_eff, st_eff)


def replicate_ratios(base: Scores, teacher: Scores, control: Scores, student: Scores, *,
                     min_effect: float = DEFAULT_MIN_EFFECT) -> list[dict]:
    """Each replicate's own scores and ratio (None where its teacher effect is below ``min_effect``).

    The pooled ratio and its bootstrap interval say how precisely the mean is known; these
    say how much one replicate differs from the next, which is what a second run (another
    machine, another seed) would show.
    """
    out = []
    for b, t, c, s in zip(base, teacher, control, student):
        sb, st, sc, ss = (sum(x) / len(x) for x in (b, t, c, s))
        eff = st - sb
        out.append({"S_base": sb, "S_teacher": st, "S_control": sc, "S_student": ss,
                    "transfer_ratio": (ss - sc) / eff if abs(eff) >= min_effect and eff != 0 else None})
    return out


def spread(values: Sequence[float | None]) -> dict:
    """Mean, sample sd, min and max of the defined values (sd is None for fewer than two)."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return {"n": 0, "mean": None, "sd": None, "min": None, "max": None}
    m = sum(vals) / len(vals)
    sd = (sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5 if len(vals) > 1 else None
    return {"n": len(vals), "mean": m, "sd": sd, "min": min(vals), "max": max(vals)}


def t_interval(values: Sequence[float], level: float = 0.95) -> list[float] | None:
    """Student-t interval of the mean of ``values`` (replicates); None for fewer than two."""
    n = len(values)
    if n < 2:
        return None
    from scipy.stats import t

    m = sum(values) / n
    sd = (sum((v - m) ** 2 for v in values) / (n - 1)) ** 0.5
    half = float(t.ppf(0.5 + level / 2, n - 1)) * sd / n ** 0.5
    return [m - half, m + half]
