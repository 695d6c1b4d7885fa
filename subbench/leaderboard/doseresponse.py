"""Transfer ratio against an injector parameter (``compare --by strength``): threshold or continuous?

Points are the per-replicate transfer ratios of each entry, at the entry's value of the
parameter; entries are grouped by student relation (same-init, cross-init, ...) within
each facet (distillation, judge, domain, trait, mitigation), so one curve never mixes them.

``--fit`` fits two threshold models (``step``: two levels switching at t; ``logistic``:
lo + (hi − lo) / (1 + exp(−(x − x0) / w)) with w at most a tenth of the tested range, so
its 10–90 % rise spans under half of it: a wider sigmoid is a smooth curve, and would
pass any straight line off as a "threshold") and two continuous ones (``linear``: a + b·x;
``saturating``: c + A·(1 − exp(−x / τ))) by least squares, with Gaussian AIC and BIC
(n·ln(RSS/n) + k·2 or k·ln n, k counting σ). The shape is the family (threshold or
continuous) of the model with the lowest BIC; ΔBIC to the best model of the other family
says how clearly (> 6 is strong, < 2 is a tie).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from subbench.errors import ConfigError, SubbenchError
from subbench.leaderboard.compare import FACETS, unique
from subbench.leaderboard.entries import DIMENSIONS

SHAPE = {"step": "threshold", "logistic": "threshold", "linear": "continuous", "saturating": "continuous"}


@dataclass
class Fit:
    model: str
    params: dict[str, float]
    se: dict[str, float | None]
    rss: float
    k: int
    aic: float
    bic: float
    predict: Callable[[Any], Any] = field(repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "shape": SHAPE[self.model], "params": self.params, "se": self.se,
                "rss": self.rss, "k": self.k, "aic": self.aic, "bic": self.bic}


def _criteria(rss: float, n: int, k: int) -> tuple[float, float]:
    rss = max(rss, 1e-12 * n)
    return n * math.log(rss / n) + 2 * k, n * math.log(rss / n) + k * math.log(n)


def _linear(x, y) -> Fit:
    import numpy as np

    A = np.vstack([np.ones_like(x), x]).T
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    rss = float(((A @ coef - y) ** 2).sum())
    n = len(x)
    s2 = rss / max(1, n - 2)
    cov = s2 * np.linalg.pinv(A.T @ A)
    aic, bic = _criteria(rss, n, 3)
    a, b = float(coef[0]), float(coef[1])
    return Fit("linear", {"a": a, "b": b}, {"a": float(cov[0, 0]) ** 0.5, "b": float(cov[1, 1]) ** 0.5}, rss, 3, aic, bic,
               lambda t, a=a, b=b: a + b * t)


def _step(x, y) -> Fit:
    import numpy as np

    xs = np.unique(x)
    best = None
    for lo, hi in zip(xs[:-1], xs[1:]):
        t = (lo + hi) / 2
        left, right = y[x < t], y[x >= t]
        rss = float(((left - left.mean()) ** 2).sum() + ((right - right.mean()) ** 2).sum())
        if best is None or rss < best[0]:
            best = (rss, t, float(left.mean()), float(right.mean()), left, right)
    rss, t, a, b, left, right = best
    n = len(x)
    s2 = rss / max(1, n - 3)
    aic, bic = _criteria(rss, n, 4)
    se = {"below": (s2 / len(left)) ** 0.5, "above": (s2 / len(right)) ** 0.5, "t": None}
    return Fit("step", {"below": a, "above": b, "t": float(t)}, se, rss, 4, aic, bic,
               lambda v, a=a, b=b, t=t: np.where(np.asarray(v) < t, a, b))


def _curve(name: str, f, x, y, starts: list[list[float]], names: list[str], bounds) -> Fit | None:
    import numpy as np
    from scipy.optimize import curve_fit

    best = None
    for p0 in starts:
        try:
            p, cov = curve_fit(f, x, y, p0=p0, bounds=bounds, maxfev=20000)
        except (RuntimeError, ValueError):
            continue
        rss = float(((f(x, *p) - y) ** 2).sum())
        if best is None or rss < best[0]:
            best = (rss, p, cov)
    if best is None:
        return None
    rss, p, cov = best
    k = len(p) + 1
    aic, bic = _criteria(rss, len(x), k)
    se = {n: (float(cov[i, i]) ** 0.5 if np.isfinite(cov[i, i]) else None) for i, n in enumerate(names)}
    return Fit(name, dict(zip(names, map(float, p))), se, rss, k, aic, bic, lambda v, p=p: f(np.asarray(v, float), *p))


def fit_shapes(x: list[float], y: list[float]) -> dict[str, Any]:
    """All four models on (x, y), the winner by BIC and its shape; needs >= 3 distinct x and >= 5 points."""
    import numpy as np

    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(np.unique(x)) < 3 or len(x) < 5:
        raise SubbenchError(f"--fit needs at least 3 values of the parameter and 5 points, got {len(np.unique(x))} "
                            f"values and {len(x)} points; run more strengths or replicates.")
    span = float(x.max() - x.min()) or 1.0
    lo_y, hi_y = float(y.min()), float(y.max())
    fits = [_linear(x, y), _step(x, y)]
    logistic = lambda v, lo, hi, x0, w: lo + (hi - lo) / (1 + np.exp(np.clip(-(v - x0) / w, -60, 60)))  # noqa: E731
    starts = [[lo_y, hi_y, float(m), span / d] for m in np.unique(x) for d in (12, 40)]
    fits.append(_curve("logistic", logistic, x, y, starts, ["lo", "hi", "x0", "w"],
                       ([-np.inf, -np.inf, float(x.min()) - span, span / 1000], [np.inf, np.inf, float(x.max()) + span, span / 10])))
    sat = lambda v, c, A, tau: c + A * (1 - np.exp(-v / tau))  # noqa: E731
    starts = [[lo_y, hi_y - lo_y, span * f] for f in (0.1, 0.3, 1, 3)]
    fits.append(_curve("saturating", sat, x, y, starts, ["c", "A", "tau"],
                       ([-np.inf, -np.inf, span / 1000], [np.inf, np.inf, 100 * span])))
    fits = sorted((f for f in fits if f is not None), key=lambda f: f.bic)
    best = fits[0]
    other = next((f for f in fits if SHAPE[f.model] != SHAPE[best.model]), None)
    return {"shape": SHAPE[best.model], "best": best.model, "delta_bic": None if other is None else other.bic - best.bic,
            "n": len(x), "fits": fits}


@dataclass
class Curve:
    facet: dict[str, str]
    group: str
    points: list[tuple[float, float]]  # (x, per-replicate ratio)
    fit: dict[str, Any] | None = None

    def levels(self) -> list[tuple[float, float, list[float] | None, int]]:
        from subbench.metrics import t_interval

        xs = sorted({x for x, _ in self.points})
        out = []
        for x in xs:
            ys = [y for xx, y in self.points if xx == x]
            out.append((x, sum(ys) / len(ys), t_interval(ys), len(ys)))
        return out


#: What a curve can follow, per replicate (``compare --metric``); the effects are never null.
PER_REPLICATE = {
    "transfer_ratio": lambda p: p["transfer_ratio"],
    "student_effect": lambda p: p["S_student"] - p["S_control"],
    "teacher_effect": lambda p: p["S_teacher"] - p["S_base"],
    "student_score": lambda p: p["S_student"],
    "control_score": lambda p: p["S_control"],
    "teacher_score": lambda p: p["S_teacher"],
}


def curves(entries: list[dict[str, Any]], by: str, group: str = "relation", fit: bool = False,
           metric: str = "transfer_ratio") -> list[Curve]:
    """Per-replicate ``metric`` vs the injector parameter ``by``, one curve per facet and ``group``."""
    if metric not in PER_REPLICATE:
        raise ConfigError(f"--by takes --metric {', '.join(PER_REPLICATE)}; got {metric}.")
    value = PER_REPLICATE[metric]
    out: dict[tuple, Curve] = {}
    for e in unique(entries):
        params = (e.get("injector") or {}).get("params") or {}
        if by not in params:
            continue
        try:
            x = float(params[by])
        except (TypeError, ValueError):
            raise ConfigError(f"--by {by}: entry {e['cell']['id']} has {by}={params[by]!r}, not a number.") from None
        facet = {d: DIMENSIONS[d](e) for d in FACETS}
        g = e["student"]["relation"] if group == "relation" else DIMENSIONS[group](e)
        key = (tuple(sorted(facet.items())), g)
        cur = out.setdefault(key, Curve(facet, g, []))
        reps = (e.get("replicates") or {}).get("per_replicate") or []
        ys = [value(p) for p in reps] if reps else ([e["transfer_ratio"]] if metric == "transfer_ratio" else [])
        cur.points += [(x, float(y)) for y in ys if y is not None]
    if not out:
        raise ConfigError(f"--by {by}: no entry has an injector parameter '{by}'; pick one the grid varies "
                          "(e.g. strength).")
    result = [out[k] for k in sorted(out, key=lambda k: (k[0], str(k[1])))]
    if fit:
        for c in result:
            try:
                c.fit = fit_shapes([x for x, _ in c.points], [y for _, y in c.points])
            except SubbenchError as exc:
                c.fit = {"error": str(exc)}
    return result


def render(cs: list[Curve], by: str, fmt: str = "table", metric: str = "transfer_ratio") -> str:
    import json

    if fmt == "json":
        return json.dumps([{"facet": c.facet, "group": c.group,
                            "levels": [{by: x, "mean": m, "ci95": ci, "n": n} for x, m, ci, n in c.levels()],
                            "fit": None if c.fit is None else (
                                c.fit if "error" in c.fit else {**{k: v for k, v in c.fit.items() if k != "fits"},
                                                                "fits": [f.as_dict() for f in c.fit["fits"]]})}
                           for c in cs], indent=2)
    lines: list[str] = []
    for c in cs:
        facet = ", ".join(f"{k}={v}" for k, v in c.facet.items() if v not in ("-", "", None))
        lines += [f"== {c.group}{' | ' + facet if facet else ''} =="]
        lines.append(f"{by:>10}  {metric:>14}  {'95% CI (replicates)':>20}  n")
        for x, m, ci, n in c.levels():
            cis = "-" if not ci else f"[{ci[0]:+.2f}, {ci[1]:+.2f}]"
            lines.append(f"{x:>10g}  {m:>+14.3f}  {cis:>20}  {n}")
        if c.fit is not None:
            if "error" in c.fit:
                lines.append(f"fit: {c.fit['error']}")
            else:
                d = c.fit["delta_bic"]
                lines.append(f"fit: {c.fit['shape']} ({c.fit['best']}), ΔBIC to the other shape "
                             f"{'-' if d is None else f'{d:.1f}'} over {c.fit['n']} points")
                for f in c.fit["fits"]:
                    ps = ", ".join(f"{k}={v:.3g}" + (f"±{1.96 * f.se[k]:.2g}" if f.se.get(k) else "")
                                   for k, v in f.params.items())
                    lines.append(f"  {f.model:<10} {SHAPE[f.model]:<10} AIC {f.aic:8.2f}  BIC {f.bic:8.2f}  {ps}")
        lines.append("")
    lines.append(f"Points are per-replicate {metric} values (null ratios left out); 95% CI: t interval over them; ± on parameters: 1.96 x "
                 "standard error from the fit's covariance.")
    return "\n".join(lines)


def plot(cs: list[Curve], by: str, path: Path, metric: str = "transfer_ratio", title: str | None = None) -> None:
    """Mean ratio per strength with its 95% band and points, and the best fit, one line per group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    path = Path(path)
    if path.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise SubbenchError(f"--plot {path}: use a .png, .svg or .pdf file name.")
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    for i, c in enumerate(cs):
        color = f"C{i % 10}"
        lv = c.levels()
        xs = np.array([x for x, *_ in lv])
        ax.plot(xs, [m for _, m, _, _ in lv], "o-", color=color, label=c.group)
        lo = [ci[0] if ci else m for _, m, ci, _ in lv]
        hi = [ci[1] if ci else m for _, m, ci, _ in lv]
        ax.fill_between(xs, lo, hi, color=color, alpha=0.18)
        ax.scatter([x for x, _ in c.points], [y for _, y in c.points], s=10, color=color, alpha=0.5)
        if c.fit and "fits" in c.fit:
            best = c.fit["fits"][0]
            grid = np.linspace(xs.min(), xs.max(), 200)
            ax.plot(grid, best.predict(grid), "--", color=color, label=f"{c.group}: {best.model} ({c.fit['shape']})")
    ax.axhline(0, color="grey", lw=0.6)
    ax.set_xlabel(by)
    ax.set_ylabel(f"{metric} (per replicate)")
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Date": None} if path.suffix.lower() == ".svg" else None)
    plt.close(fig)
