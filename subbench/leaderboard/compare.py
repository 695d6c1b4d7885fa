"""The cross-architecture matrix: any two entry dimensions against each other, with CIs.

Facets: entries that differ in distillation, judge, domain, trait or mitigation measure
different things, so by default each combination of those (minus the two dimensions on the
axes) gets its own matrix, and a cell never mixes, say, logit and sft distillation.
``pool=True`` (``compare --pool``) puts everything in one matrix and says what was pooled.
An entry given twice, or two entries that differ only in volatile fields, count once
(by measurement hash).

Pooling: when several entries fall into one cell, the cell shows the mean of their
values with n (the number of entries pooled). For ``transfer_ratio`` the CI of the pooled
mean comes from the entries' own 95 % CIs by a normal approximation (each entry's
standard error taken as its CI width / 3.92, entries assumed independent); a single entry
keeps its bootstrap CI unchanged. Entries whose ratio is null (teacher effect below
``min_teacher_effect``) are not averaged in; they are counted and named in the cell.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from subbench.errors import SubbenchError
from subbench.leaderboard.entries import DIMENSIONS, measurement_hash

#: Dimensions whose values are not comparable: each combination is its own matrix unless pooled.
FACETS = ("distillation", "judge", "domain", "trait", "mitigation")
MAX_PLOT_FACETS = 24

METRICS = {
    "transfer_ratio": lambda e: e["transfer_ratio"],
    "teacher_effect": lambda e: e["teacher_effect"],
    "student_effect": lambda e: e["student_effect"],
    "student_score": lambda e: e["scores"]["student"]["mean"],
    "control_score": lambda e: e["scores"]["control"]["mean"],
    "teacher_score": lambda e: e["scores"]["teacher"]["mean"],
    "transfer_reduction": lambda e: (e.get("mitigation_effect") or {}).get("transfer_reduction"),
}
#: Where a metric's own CI lives (metrics not listed have none, or the entry's ``ci95``).
METRIC_CI = {"transfer_ratio": lambda e: e.get("ci95"),
             "transfer_reduction": lambda e: (e.get("mitigation_effect") or {}).get("ci95")}
POOLING = ("mean of the entries' values in a cell (n = entries pooled); for transfer_ratio (and transfer_reduction) the 95% CI of that "
           "mean is a normal approximation from the entries' bootstrap CIs (SE = width / 3.92, entries "
           "independent); one entry keeps its own CI; null ratios (teacher effect too small) are not averaged")
Z95 = 1.959963984540054


@dataclass
class Cell:
    row: str
    col: str
    value: float | None
    ci95: list[float] | None
    n: int
    n_null: int
    note: str | None
    entries: list[str]
    facet: dict[str, str] = field(default_factory=dict)

    def text(self, digits: int = 3) -> str:
        if self.value is None:
            return f"n/a ({self.note})" if self.note else "n/a"
        out = f"{self.value:+.{digits}f}"
        if self.ci95:
            out += f" [{self.ci95[0]:+.2f}, {self.ci95[1]:+.2f}]"
        out += f" n={self.n}"
        if self.n_null:
            out += f" (+{self.n_null} null)"
        return out


@dataclass
class Matrix:
    """One facet's matrix."""

    rows: list[str]
    cols: list[str]
    row_dim: str
    col_dim: str
    metric: str
    cells: dict[tuple[str, str], Cell]
    facet: dict[str, str] = field(default_factory=dict)

    def get(self, r: str, c: str) -> Cell | None:
        return self.cells.get((r, c))

    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.facet.items())


@dataclass
class Comparison:
    """All facets' matrices, and what (if anything) was pooled across."""

    matrices: list[Matrix]
    row_dim: str
    col_dim: str
    metric: str
    facet_dims: list[str]
    pooled_over: dict[str, list[str]]  # dimension -> the different values pooled in one matrix (--pool)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": sorted({r for m in self.matrices for r in m.rows}),
            "cols": sorted({c for m in self.matrices for c in m.cols}),
            "row_dimension": self.row_dim, "col_dimension": self.col_dim, "metric": self.metric,
            "facet_dimensions": self.facet_dims, "facets": [m.facet for m in self.matrices],
            "pooled_over": self.pooled_over, "pooling": POOLING,
            "cells": [asdict(c) for m in self.matrices for c in m.cells.values()],
        }

    def pooling_note(self) -> str:
        if self.pooled_over:
            what = "; ".join(f"{d} ({', '.join(v)})" for d, v in self.pooled_over.items())
            return f"POOLED (--pool) across {what}: cells mix entries that measure different things"
        if self.facet_dims:
            return f"one matrix per {', '.join(self.facet_dims)} (--pool to pool them)"
        return ""


def _pool(values: list[float], cis: list[list[float] | None], metric: str) -> tuple[float, list[float] | None]:
    mean = sum(values) / len(values)
    if metric not in METRIC_CI:
        return mean, None
    if len(values) == 1:
        return mean, (list(cis[0]) if cis[0] else None)
    if any(c is None for c in cis):
        return mean, None
    se = math.sqrt(sum(((c[1] - c[0]) / (2 * Z95)) ** 2 for c in cis)) / len(cis)
    return mean, [mean - Z95 * se, mean + Z95 * se]


def _check(rows: str, cols: str, metric: str) -> None:
    for dim, what in ((rows, "--rows"), (cols, "--cols")):
        if dim not in DIMENSIONS:
            raise SubbenchError(f"{what} {dim!r} is not a dimension; use one of {', '.join(DIMENSIONS)}.")
    if metric not in METRICS:
        raise SubbenchError(f"--metric {metric!r} is unknown; use one of {', '.join(METRICS)}.")


def unique(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each measurement once (the first of entries that differ only in volatile fields)."""
    seen: set[str] = set()
    out = []
    for e in entries:
        key = measurement_hash(e)
        if key not in seen:
            seen.add(key)
            out.append(e)
    return out


def matrix(entries: list[dict[str, Any]], rows: str = "teacher", cols: str = "student",
           metric: str = "transfer_ratio", facet: dict[str, str] | None = None) -> Matrix:
    """One matrix of ``entries`` as given (no faceting); see :func:`compare`."""
    _check(rows, cols, metric)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for e in unique(entries):
        groups.setdefault((DIMENSIONS[rows](e), DIMENSIONS[cols](e)), []).append(e)
    cells = {}
    for (r, c), es in sorted(groups.items()):
        vals = [(METRICS[metric](e), METRIC_CI.get(metric, lambda _e: None)(e)) for e in es]
        kept = [(v, ci) for v, ci in vals if v is not None]
        ids = [f"{e['experiment']['name']}/{e['cell']['id']}" for e in es]
        n_null = len(vals) - len(kept)
        if not kept:
            why = ("no reduction: unmitigated, or nothing transferred" if metric == "transfer_reduction"
                   else "ratio null: teacher effect too small")
            cells[(r, c)] = Cell(r, c, None, None, 0, n_null, why, ids,
                                 dict(facet or {}))
            continue
        value, ci = _pool([v for v, _ in kept], [ci for _, ci in kept], metric)
        note = f"{n_null} entries with a null ratio not pooled" if n_null else None
        cells[(r, c)] = Cell(r, c, value, ci, len(kept), n_null, note, ids, dict(facet or {}))
    row_names = sorted({k[0] for k in groups})
    col_names = sorted({k[1] for k in groups})
    return Matrix(row_names, col_names, rows, cols, metric, cells, dict(facet or {}))


def compare(entries: list[dict[str, Any]], rows: str = "teacher", cols: str = "student",
            metric: str = "transfer_ratio", pool: bool = False) -> Comparison:
    """A matrix per facet (distillation, judge, domain, trait, mitigation), or one pooled matrix."""
    _check(rows, cols, metric)
    entries = unique(entries)
    dims = [d for d in FACETS if d not in (rows, cols)]
    if pool:
        values = {d: sorted({DIMENSIONS[d](e) for e in entries}) for d in dims}
        pooled = {d: v for d, v in values.items() if len(v) > 1}
        return Comparison([matrix(entries, rows, cols, metric)], rows, cols, metric, [], pooled)
    by: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for e in entries:
        by.setdefault(tuple(DIMENSIONS[d](e) for d in dims), []).append(e)
    mats = [matrix(es, rows, cols, metric, dict(zip(dims, key))) for key, es in sorted(by.items())]
    return Comparison(mats, rows, cols, metric, dims, {})


def _grid(m: Matrix) -> list[list[str]]:
    head = [f"{m.row_dim} \\ {m.col_dim}"] + m.cols
    body = [[r] + [(m.get(r, c).text() if m.get(r, c) else "-") for c in m.cols] for r in m.rows]
    return [head] + body


def _table(m: Matrix, fmt: str) -> str:
    grid = _grid(m)
    if fmt == "markdown":
        esc = [[x.replace("|", "\\|") for x in row] for row in grid]
        lines = ["| " + " | ".join(esc[0]) + " |", "|" + "---|" * len(esc[0])]
        lines += ["| " + " | ".join(row) + " |" for row in esc[1:]]
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in grid) for i in range(len(grid[0]))]
    lines = ["  ".join(x.ljust(w) for x, w in zip(row, widths)).rstrip() for row in grid]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render(comp: Comparison, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(comp.as_dict(), indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow([*comp.facet_dims, comp.row_dim, comp.col_dim, comp.metric, "ci95_lo", "ci95_hi", "n", "n_null",
                    "note"])
        for m in comp.matrices:
            for cell in m.cells.values():
                lo, hi = cell.ci95 if cell.ci95 else ("", "")
                w.writerow([*(m.facet[d] for d in comp.facet_dims), cell.row, cell.col,
                            "" if cell.value is None else cell.value, lo, hi, cell.n, cell.n_null, cell.note or ""])
        return buf.getvalue().rstrip("\n")
    parts = []
    for m in comp.matrices:
        head = []
        if m.facet:
            head = [f"### {m.label()}" if fmt == "markdown" else f"== {m.label()} =="]
        parts.append("\n".join(head + [_table(m, fmt)]))
    note = comp.pooling_note()
    foot = f"{comp.metric}, 95% CI in brackets; pooling: {POOLING}." + (f"\n{note}." if note else "")
    return "\n\n".join(parts) + f"\n\n{foot}"


def heatmap(comp: Comparison | Matrix, path: Path, title: str | None = None) -> None:
    """Plot each facet's matrix (one panel per facet); n/a cells are grey and say why. PNG, SVG or PDF by suffix."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    path = Path(path)
    if path.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise SubbenchError(f"--plot {path}: use a .png, .svg or .pdf file name.")
    if isinstance(comp, Matrix):
        comp = Comparison([comp], comp.row_dim, comp.col_dim, comp.metric, list(comp.facet), {})
    mats = comp.matrices[:MAX_PLOT_FACETS]
    width = 2.2 + 2.0 * max([len(m.cols) for m in mats] + [1])
    heights = [1.6 + 0.9 * max(len(m.rows), 1) for m in mats] or [2.5]
    fig, axes = plt.subplots(len(mats) or 1, 1, figsize=(width, sum(heights)), dpi=100, squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="#dddddd")
    for ax, m in zip(axes[:, 0], mats):
        data = np.full((len(m.rows), len(m.cols)), np.nan)
        for (r, c), cell in m.cells.items():
            if cell.value is not None:
                data[m.rows.index(r), m.cols.index(c)] = cell.value
        finite = data[np.isfinite(data)]
        lim = max(1.0, float(np.abs(finite).max())) if finite.size else 1.0
        im = ax.imshow(np.ma.masked_invalid(data), cmap=cmap, vmin=-lim, vmax=lim, aspect="auto")
        for (r, c), cell in m.cells.items():
            i, j = m.rows.index(r), m.cols.index(c)
            if cell.value is None:
                label = "n/a\n(null ratio)"
            else:
                label = f"{cell.value:+.2f}"
                if cell.ci95:
                    label += f"\n[{cell.ci95[0]:+.2f}, {cell.ci95[1]:+.2f}]"
                label += f"\nn={cell.n}"
            ax.text(j, i, label, ha="center", va="center", fontsize=8)
            if cell.ci95 and cell.ci95[0] <= 0 <= cell.ci95[1]:  # no evidence of transfer: hatched
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="//", edgecolor="#888",
                                           linewidth=0))
        for i, r in enumerate(m.rows):  # the same-init diagonal, outlined
            for j, c in enumerate(m.cols):
                if r == c or c.endswith("(same-init)"):
                    ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=2.5))
        ax.set_xticks(range(len(m.cols)), m.cols, rotation=20, ha="right", fontsize=8)
        ax.set_yticks(range(len(m.rows)), m.rows, fontsize=8)
        ax.set_xlabel(m.col_dim)
        ax.set_ylabel(m.row_dim)
        ax.set_title(m.label() or (comp.pooling_note() or "all entries"), fontsize=8)
        fig.colorbar(im, ax=ax, shrink=0.8)
    more = f" (first {MAX_PLOT_FACETS} of {len(comp.matrices)} facets)" if len(comp.matrices) > MAX_PLOT_FACETS else ""
    fig.suptitle((title or f"{comp.metric}: {comp.row_dim} x {comp.col_dim}") + more, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Date": None} if path.suffix.lower() == ".svg" else None)
    plt.close(fig)
