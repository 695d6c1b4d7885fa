"""The static leaderboard site: one self-contained page, its script, style and plots.

Everything is local (no fonts, scripts or images from the network) so the page can be
served from any static host or opened from disk. The build goes to a temporary
directory that replaces ``site/`` only when complete.
"""

from __future__ import annotations

import html
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from subbench import __version__
from subbench.leaderboard.entries import DIMENSIONS, injector_label, student_label, trait_label
from subbench.leaderboard.paths import safe_join

#: A temporary site directory older than this is stale even if its pid is alive (pids are reused).
STALE_SECONDS = 3600

COLUMNS = [
    # (header, "text" or "number": how the column sorts)
    ("teacher", "text"),
    ("injector", "text"),
    ("domain", "text"),
    ("student", "text"),
    ("relation", "text"),
    ("distillation", "text"),
    ("mitigation", "text"),
    ("trait", "text"),
    ("transfer ratio", "number"),
    ("95% CI", "number"),
    ("teacher effect", "number"),
    ("seeds", "number"),
    ("experiment", "text"),
]

SORT_JS = r"""// Click a column header to sort the table; click again to reverse. Empty cells sort last.
(function () {
  var table = document.getElementById("entries");
  if (!table) return;
  var heads = table.tHead.rows[0].cells;
  Array.prototype.forEach.call(heads, function (th, col) {
    th.addEventListener("click", function () {
      var asc = th.getAttribute("aria-sort") !== "ascending";
      Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      var numeric = th.getAttribute("data-type") === "number";
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[col].getAttribute("data-sort"), y = b.cells[col].getAttribute("data-sort");
        if (x === "" && y === "") return 0;
        if (x === "") return 1;
        if (y === "") return -1;
        var c = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
        return asc ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
})();
"""

STYLE_CSS = """body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }
th { background: #f0f0f0; cursor: pointer; user-select: none; }
th[aria-sort=ascending]::after { content: " \\25B2"; }
th[aria-sort=descending]::after { content: " \\25BC"; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.null { color: #888; }
figure { display: inline-block; margin: 1em 1em 1em 0; }
.note { color: #666; }
table.matrix td { text-align: center; font-variant-numeric: tabular-nums; min-width: 7em; }
table.matrix th { cursor: default; }
table.matrix td.same-init { outline: 3px solid #000; outline-offset: -3px; }
table.matrix td.ci0 { background-image: repeating-linear-gradient(45deg, transparent 0 6px, rgba(0,0,0,0.12) 6px 8px); }
table.matrix td.empty { background: #f7f7f7; color: #aaa; }
"""


@dataclass
class Built:
    site: Path
    entries: int
    images: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _row(e: dict[str, Any]) -> list[tuple[str, str]]:
    """(shown, sort key) per column."""
    ratio, ci = e["transfer_ratio"], e["ci95"]
    shown_ratio = "null" if ratio is None else f"{ratio:+.3f}"
    shown_ci = "-" if not ci else f"[{ci[0]:+.2f}, {ci[1]:+.2f}]"
    return [
        (e["teacher"]["family"], e["teacher"]["family"]),
        (injector_label(e), injector_label(e)),
        (e["domain"]["name"], e["domain"]["name"]),
        (e["cell"]["student"], e["cell"]["student"]),
        (e["student"]["relation"], e["student"]["relation"]),
        (e["cell"]["distillation"], e["cell"]["distillation"]),
        (DIMENSIONS["mitigation"](e), DIMENSIONS["mitigation"](e)),
        (trait_label(e), trait_label(e)),
        (shown_ratio, "" if ratio is None else repr(ratio)),
        (shown_ci, "" if not ci else repr(ci[1] - ci[0])),
        (f"{e['teacher_effect']:+.3f}", repr(e["teacher_effect"])),
        (str(len(e["seeds"])), str(len(e["seeds"]))),
        (e["experiment"]["name"], e["experiment"]["name"]),
    ]


def strength_plots(entries: list[dict[str, Any]], out: Path) -> tuple[list[tuple[str, str]], list[str]]:
    """Transfer against injector strength, one plot per teacher family.

    Strength is the knob that sets how much of the trait the teacher carries, so this is
    where a reader sees whether transfer follows it. Returns ([(teacher, file stem)], notes).
    """
    by_teacher: dict[str, dict[tuple, list[tuple[float, dict]]]] = {}
    for e in entries:
        s = e["injector"]["params"].get("strength")
        if not isinstance(s, (int, float)) or isinstance(s, bool):
            continue
        series = (e["injector"]["name"], e["domain"]["name"], trait_label(e), e["cell"]["distillation"], student_label(e))
        by_teacher.setdefault(e["teacher"]["family"], {}).setdefault(series, []).append((float(s), e))
    plots, notes = [], []
    for teacher, series in sorted(by_teacher.items()):
        series = {k: v for k, v in series.items() if len({s for s, _ in v}) > 1}
        if not series:
            continue
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
        nulls = []
        for (inj, dom, trait, dist, student), pts in sorted(series.items()):
            pts.sort(key=lambda p: p[0])
            shown = [(s, e["transfer_ratio"], e["ci95"] or [e["transfer_ratio"]] * 2)
                     for s, e in pts if e["transfer_ratio"] is not None]
            xs, ys = [s for s, _, _ in shown], [r for _, r, _ in shown]
            lo, hi = [r - ci[0] for _, r, ci in shown], [ci[1] - r for _, r, ci in shown]
            nulls += [f"{student}, strength {s:g}" for s, e in pts if e["transfer_ratio"] is None]
            if xs:
                many = len({k[0] for k in series}) > 1 or len({k[2] for k in series}) > 1
                label = f"{student} · {dist} · {dom}" + (f" · {inj} · {trait}" if many else "")
                ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=label)
        ax.axhline(0, color="#999", lw=0.8)
        ax.set_xlabel("injector strength")
        ax.set_ylabel("transfer ratio (95% CI)")
        ax.set_title(f"teacher {teacher}: transfer vs injector strength", fontsize=10)
        ax.legend(fontsize=7)
        fig.tight_layout()
        stem = safe_join(out, f"strength-{teacher}").name
        fig.savefig(safe_join(out, stem, suffix=".png"))
        fig.savefig(safe_join(out, stem, suffix=".svg"), metadata={"Date": None})
        plt.close(fig)
        plots.append((teacher, stem))
        if nulls:
            notes.append(f"teacher {teacher}: not plotted (ratio null, teacher effect too small): " + "; ".join(nulls))
    if not plots:
        notes.append("No entries vary the injector's strength, so there is no transfer-vs-strength plot.")
    return plots, notes


def _numeric(v: Any) -> bool:
    import math

    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def fit_caption(c) -> str:
    """One line per curve: its group, the winning fit's shape and ΔBIC, or why there is no fit."""
    if c.fit is None or "error" in c.fit:
        why = (c.fit or {}).get("error", "no fit")
        return f"{c.group}: no fit ({why})"
    d = c.fit["delta_bic"]
    return (f"{c.group}: {c.fit['shape']} ({c.fit['best']}), ΔBIC {'-' if d is None else f'{d:.1f}'} "
            f"to the other shape over {c.fit['n']} points")


def dose_response_plots(entries: list[dict[str, Any]], out: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Per-replicate transfer ratio against each numeric injector parameter a teacher setting varies.

    One figure per teacher family, injector, parameter and facet (distillation, judge,
    domain, trait, mitigation): the points, the mean with its 95% band and the winning
    fit of ``compare --by PARAM --fit``, one line per student relation, so the page says
    whether transfer switches on at a threshold or grows with the dose. Entries that
    differ in another injector parameter as well get separate figures (never pooled).
    Returns ([{stem, title, captions}], notes).
    """
    from subbench.errors import SubbenchError
    from subbench.leaderboard import doseresponse

    groups: dict[tuple, list[dict[str, Any]]] = {}
    for e in entries:
        params = e["injector"].get("params") or {}
        for name, v in params.items():
            if _numeric(v):
                rest = json.dumps({k: w for k, w in params.items() if k != name}, sort_keys=True, default=str)
                groups.setdefault((e["teacher"]["family"], e["injector"]["name"], name, rest), []).append(e)
    figs, notes = [], []
    for (teacher, inj, name, rest), es in sorted(groups.items()):
        if len({float(e["injector"]["params"][name]) for e in es}) < 2:
            continue
        try:
            cs = doseresponse.curves(es, name, fit=True)
        except (SubbenchError, ValueError, ArithmeticError) as exc:  # a bad fit must not stop the site build
            notes.append(f"teacher {teacher} ({inj}, {name}): no dose-response curve: {exc}")
            continue
        siblings = [json.loads(k[3]) for k in groups if k[:3] == (teacher, inj, name)]
        differ = {k for sib in siblings for k in sib if len({json.dumps(s.get(k), default=str) for s in siblings}) > 1}
        fixed = ", ".join(f"{k}={v}" for k, v in json.loads(rest).items() if k in differ)
        by_facet: dict[tuple, list] = {}
        for c in cs:  # a curve at one value of the parameter (another experiment's single cell) is no curve
            if len({x for x, _ in c.points}) > 1:
                by_facet.setdefault(tuple(sorted(c.facet.items())), []).append(c)
        for facet, fcs in by_facet.items():
            shown = ", ".join(f"{k}={v}" for k, v in facet if v not in ("-", "", None))
            short = f"teacher {teacher} · {inj} {name}" + (f" ({fixed})" if fixed else "")
            title = short + (f" · {shown}" if shown else "")
            stem = safe_join(out, f"dose-{len(figs)}").name
            for ext in (".png", ".svg"):
                doseresponse.plot(fcs, name, safe_join(out, stem, suffix=ext), title=short)
            figs.append({"stem": stem, "title": title, "param": name, "captions": [fit_caption(c) for c in fcs]})
    return figs, notes


def _dose_html(figs: list[dict[str, Any]]) -> str:
    esc = html.escape
    if not figs:
        return ""
    items = "".join(
        f'<figure class="dose"><img src="{f["stem"]}.png" alt="transfer ratio vs {esc(f["param"])}, {esc(f["title"])}">'
        f'<figcaption>{esc(f["title"])} (<a href="{f["stem"]}.svg">SVG</a>)<br>'
        + "<br>".join(f'<span class="fit">{esc(c)}</span>' for c in f["captions"]) + "</figcaption></figure>"
        for f in figs)
    return f"""<h2>Dose-response</h2>
<p>Transfer ratio per replicate (points) against each numeric injector parameter the teacher settings vary:
mean with its 95% t band over replicates, and the lowest-BIC fit (dashed) among step, logistic (threshold)
and linear, saturating (continuous). ΔBIC is to the best model of the other shape: over 6 is strong,
under 2 a tie (docs/steering.md; <code>subbench compare --by PARAM --fit</code>).</p>
{items}
"""


MITIGATION_COLUMNS = [
    ("defence", "text"), ("point", "text"), ("student", "text"), ("relation", "text"), ("distillation", "text"),
    ("ratio unmitigated", "number"), ("ratio mitigated", "number"), ("transfer reduction", "number"),
    ("95% CI (paired)", "number"), ("data kept", "number"), ("student fit vs unmitigated", "number"),
    ("detector TPR @ FPR", "number"), ("cost", "text"), ("experiment", "text"),
]


def _fmt(x: Any, spec: str, empty: str = "-") -> tuple[str, str]:
    return (empty, "") if x is None else (format(x, spec), repr(float(x)))


def mitigation_rows(entries: list[dict[str, Any]]) -> list[list[tuple[str, str]]]:
    """(shown, sort key) per column of the mitigation table: each defence against the same cell unmitigated."""
    rows = []
    for e in entries:
        eff = e.get("mitigation_effect")
        if not eff:
            continue
        m, u = e.get("mitigation") or {}, eff.get("utility") or {}
        fit, det, ci = u.get("student_fit") or {}, u.get("detector") or {}, eff.get("ci95")
        label = DIMENSIONS["mitigation"](e)
        rows.append([
            (label, label), (m.get("point", "-"), m.get("point", "")), (e["cell"]["student"], e["cell"]["student"]),
            (e["student"]["relation"], e["student"]["relation"]), (e["cell"]["distillation"], e["cell"]["distillation"]),
            _fmt(eff.get("ratio_unmitigated"), "+.3f"), _fmt(eff.get("ratio_mitigated"), "+.3f"),
            _fmt(eff.get("transfer_reduction"), "+.0%"),
            ("-", "") if not ci else (f"[{ci[0]:+.0%}, {ci[1]:+.0%}]", repr(ci[1] - ci[0])),
            _fmt(u.get("data_kept"), ".0%"),
            ("-", "") if fit.get("relative") is None else (f"x{fit['relative']:.2f} ({fit['metric']})", repr(fit["relative"])),
            ("-", "") if not det else (f"{det['tpr']:.0%} @ {det['fpr']:.0%}"
                                       + (f" (AUC {det['auc']:.2f})" if det.get("auc") is not None else ""), repr(det["tpr"])),
            (m.get("cost") or "-", m.get("cost") or ""), (e["experiment"]["name"], e["experiment"]["name"]),
        ])
    return rows


def mitigation_plot(entries: list[dict[str, Any]], out: Path) -> tuple[str | None, list[str]]:
    """Transfer reduction (paired CI) against what the defence cost the student, one point per defence and student.

    The x axis is the student's fit to its teacher on the benign task relative to the
    unmitigated student (1: no cost; 2: twice the KL or loss); a good defence sits top-left.
    """
    pts, skipped = [], []
    for e in entries:
        eff = e.get("mitigation_effect") or {}
        fit = (eff.get("utility") or {}).get("student_fit") or {}
        if eff.get("transfer_reduction") is None or fit.get("relative") is None:
            if eff:
                skipped.append(f"{DIMENSIONS['mitigation'](e)} on {e['cell']['student']}")
            continue
        pts.append((fit["relative"], eff["transfer_reduction"], eff.get("ci95"), DIMENSIONS["mitigation"](e),
                    e["student"]["relation"]))
    notes = []
    if skipped:
        notes.append("Not in the mitigation plot (no transfer to reduce, or no fit reported): " + "; ".join(skipped))
    if not pts:
        return None, notes
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
    markers = {"same-init": "o", "cross-init": "s", "cross-architecture": "^"}
    for x, y, ci, label, rel in pts:
        yerr = [[y - ci[0]], [ci[1] - y]] if ci else None
        ax.errorbar([x], [y], yerr=yerr, marker=markers.get(rel, "D"), capsize=3, label=f"{label} ({rel})")
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.axhline(0, color="#999", lw=0.8)
    ax.axhline(1, color="#ccc", lw=0.8, ls="--")
    ax.axvline(1, color="#ccc", lw=0.8, ls="--")
    ax.set_xlabel("student fit to its teacher vs unmitigated (x; 1 = no cost)")
    ax.set_ylabel("transfer reduction (paired 95% CI)")
    ax.set_title("defences: transfer removed vs benign-task cost", fontsize=10)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / "mitigations.png")
    fig.savefig(out / "mitigations.svg", metadata={"Date": None})
    plt.close(fig)
    return "mitigations", notes


def _mitigation_html(entries: list[dict[str, Any]], plot: str | None) -> str:
    esc = html.escape
    rows = mitigation_rows(entries)
    if not rows:
        return ""
    head = "".join(f'<th data-type="{kind}">{esc(name)}</th>' for name, kind in MITIGATION_COLUMNS)
    body = "\n".join("<tr>" + "".join(
        f'<td class="{"num" if kind == "number" else ""}{" null" if shown == "-" and kind == "number" else ""}" '
        f'data-sort="{esc(key)}">{esc(shown)}</td>' for (name, kind), (shown, key) in zip(MITIGATION_COLUMNS, r))
        + "</tr>" for r in rows)
    fig = (f'<figure><img src="{plot}.png" alt="transfer reduction vs benign-task cost per defence">'
           f'<figcaption>Transfer reduction vs the student\'s benign-task cost (<a href="{plot}.svg">SVG</a>).'
           "</figcaption></figure>") if plot else ""
    return f"""<h2>Mitigations</h2>
<p>Each defence against the same cell unmitigated (same teacher, replicate seeds and evaluation prompts):
transfer reduction = 1 − ratio_mitigated / ratio_unmitigated, paired bootstrap CI; data kept = the teacher's
kept samples under the defence over those without it (docs/mitigations.md).</p>
<table id="mitigations">
<thead><tr>{head}</tr></thead>
<tbody>
{body}
</tbody>
</table>
{fig}
"""


def is_same_init(row: str, col: str) -> bool:
    """A teacher x student cell on the same-init diagonal: the student family column equal to the teacher
    row (``student_family``), or a ``student`` column labelled same-init."""
    return row == col or col.endswith("(same-init)")


def ci_includes_zero(ci: list[float] | None) -> bool:
    return bool(ci) and ci[0] <= 0 <= ci[1]


def _cell_colour(v: float) -> str:
    """Red for transfer, blue for the opposite, white at 0; |ratio| >= 1 is the full colour."""
    a = min(1.0, abs(v))
    return f"rgba(178,24,43,{a:.2f})" if v >= 0 else f"rgba(33,102,172,{a:.2f})"


def matrix_html(entries: list[dict[str, Any]]) -> str:
    """The teacher x student-family matrix as an HTML heatmap, one table per facet.

    The same-init diagonal is outlined; a cell whose 95% CI includes 0 is hatched and says
    so (no evidence of transfer there), whatever its point estimate.
    """
    from subbench.leaderboard.compare import compare

    comp = compare(entries, "teacher", "student_family")
    esc = html.escape
    parts = []
    for m in comp.matrices:
        head = "<th>teacher \\ student</th>" + "".join(f"<th>{esc(c)}</th>" for c in m.cols)
        body = []
        for r in m.rows:
            tds = []
            for c in m.cols:
                cell = m.get(r, c)
                classes = ["same-init"] if is_same_init(r, c) else []
                if cell is None:
                    tds.append(f'<td class="{" ".join(classes + ["empty"])}" data-row="{esc(r)}" data-col="{esc(c)}">-</td>')
                    continue
                if cell.value is None:
                    classes.append("null")
                    text, style, title = "n/a", "", cell.note or "null ratio"
                else:
                    text = f"{cell.value:+.2f}"
                    if cell.ci95:
                        text += f"<br><small>[{cell.ci95[0]:+.2f}, {cell.ci95[1]:+.2f}]</small>"
                    style = f' style="background-color: {_cell_colour(cell.value)}"'
                    title = "95% CI includes 0" if ci_includes_zero(cell.ci95) else "95% CI excludes 0"
                    if ci_includes_zero(cell.ci95):
                        classes.append("ci0")
                tds.append(f'<td class="{" ".join(classes)}"{style} title="{esc(title)}" data-row="{esc(r)}" '
                           f'data-col="{esc(c)}" data-value="{"" if cell.value is None else cell.value}">{text}</td>')
            body.append(f"<tr><th>{esc(r)}</th>{''.join(tds)}</tr>")
        caption = esc(m.label()) if m.label() else "all entries"
        parts.append(f'<table class="matrix"><caption>{caption}</caption><thead><tr>{head}</tr></thead>'
                     f"<tbody>{''.join(body)}</tbody></table>")
    return ("<h2>Teacher x student</h2>\n<p>Transfer ratio per teacher family (rows) and student family (columns; "
            "<em>other init</em>: the teacher's family from another seed), 95% CI below. Outlined: the same-init "
            "diagonal (the student starts from the teacher's own base). Hatched: the CI includes 0.</p>\n"
            + "\n".join(parts))


def _page(entries: list[dict[str, Any]], plots: list[tuple[str, str]], heat: str | None, notes: list[str],
          mit_plot: str | None = None, dose: list[dict[str, Any]] | None = None) -> str:
    esc = html.escape
    head = "".join(f'<th data-type="{kind}" title="click to sort">{esc(name)}</th>' for name, kind in COLUMNS)
    rows = []
    for e in entries:
        cells = []
        for (name, kind), (shown, key) in zip(COLUMNS, _row(e)):
            cls = "num" if kind == "number" else ""
            if shown in ("null", "-") and kind == "number":
                cls += " null"
            note = e["transfer_ratio_note"] if name == "transfer ratio" else None
            title = f' title="{esc(note)}"' if note else ""
            cells.append(f'<td class="{cls.strip()}" data-sort="{esc(key)}"{title}>{esc(shown)}</td>')
        rows.append(f'<tr data-hash="{esc(e["content_hash"])}">' + "".join(cells) + "</tr>")
    figs = []
    if heat:
        figs.append(f'<figure><img src="{heat}.png" alt="teacher x student heatmap of transfer ratio">'
                    f'<figcaption>Transfer ratio, teacher family x student (<a href="{heat}.svg">SVG</a>).'
                    "</figcaption></figure>")
    for teacher, stem in plots:
        figs.append(f'<figure><img src="{stem}.png" alt="transfer vs strength, teacher {esc(teacher)}">'
                    f'<figcaption>Teacher {esc(teacher)} (<a href="{stem}.svg">SVG</a>).</figcaption></figure>')
    note_html = "".join(f'<p class="note">{esc(n)}</p>' for n in notes)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>subbench leaderboard</title>
<link rel="stylesheet" href="assets/style.css">
</head>
<body>
<h1>subbench leaderboard</h1>
<p>{len(entries)} entries. Transfer ratio = (S_student − S_control) / (S_teacher − S_base), 95% bootstrap CI
over replicate seeds and evaluation samples. Click a column header to sort.</p>
<table id="entries">
<thead><tr>{head}</tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody>
</table>
{matrix_html(entries) if entries else ""}
{_mitigation_html(entries, mit_plot)}
<h2>Plots</h2>
{''.join(figs)}
{_dose_html(dose or [])}
{note_html}
<p class="note">Built by subbench {esc(__version__)}; entry format: docs/entry-format.md.</p>
<script src="assets/sort.js"></script>
</body>
</html>
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(board: Path) -> list[Path]:
    """Remove ``.site.tmp-<pid>`` / ``.site.old-<pid>`` left by killed builds (dead pid, or older than an hour)."""
    removed = []
    for d in list(board.glob(".site.tmp-*")) + list(board.glob(".site.old-*")):
        try:
            pid = int(d.name.rsplit("-", 1)[1])
        except ValueError:
            pid = -1
        try:
            old = time.time() - d.lstat().st_mtime > STALE_SECONDS
        except OSError:
            continue
        if pid == os.getpid() or pid <= 0 or not _alive(pid) or old:
            if d.is_dir() and not d.is_symlink():
                shutil.rmtree(d, ignore_errors=True)
            else:
                d.unlink(missing_ok=True)
            removed.append(d)
    return removed


def build(board: Path) -> Built:
    from subbench.errors import SubbenchError
    from subbench.leaderboard.compare import compare, heatmap
    from subbench.leaderboard.entries import entry_files
    from subbench.leaderboard.validate import collect

    board = Path(board)
    if not (board / "entries").is_dir():
        raise SubbenchError(f"{board} is not a board (it has no entries/ directory); submit an entry first.")
    clean_stale(board)
    files = entry_files([board])
    entries, problems = collect([board], recompute=True) if files else ([], [])
    if problems:
        raise SubbenchError(f"{len(problems)} problems on the board, e.g. {problems[0]}; "
                            "run `subbench leaderboard validate` and remove or fix those entries.")
    entries.sort(key=lambda e: (e["experiment"]["name"], e["cell"]["id"]))
    site = board / "site"
    tmp = board / f".site.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "assets").mkdir(parents=True)
    try:
        notes: list[str] = []
        images: list[str] = []
        heat = None
        if entries:
            heat = "heatmap"
            comp = compare(entries, "teacher", "student")
            heatmap(comp, tmp / "heatmap.png", "transfer ratio: teacher x student")
            heatmap(comp, tmp / "heatmap.svg", "transfer ratio: teacher x student")
            images += ["heatmap.png", "heatmap.svg"]
            if len(comp.matrices) > 1:
                notes.append(f"The heatmap has one panel per {', '.join(comp.facet_dims)}: entries that differ in "
                             "those measure different things and are not pooled.")
            plots, pnotes = strength_plots(entries, tmp)
            images += [f"{stem}.{ext}" for _, stem in plots for ext in ("png", "svg")]
            notes += pnotes
            dose, dnotes = dose_response_plots(entries, tmp)
            images += [f"{f['stem']}.{ext}" for f in dose for ext in ("png", "svg")]
            notes += dnotes
            mit_plot, mnotes = mitigation_plot(entries, tmp)
            if mit_plot:
                images += [f"{mit_plot}.png", f"{mit_plot}.svg"]
            notes += mnotes
        else:
            plots, mit_plot, dose = [], None, []
            notes.append("The board has no entries yet; `subbench leaderboard submit` adds them.")
        (tmp / "assets" / "sort.js").write_text(SORT_JS, encoding="utf-8")
        (tmp / "assets" / "style.css").write_text(STYLE_CSS, encoding="utf-8")
        (tmp / "data.json").write_text(json.dumps([
            {"experiment": e["experiment"]["name"], "cell": e["cell"]["id"], "content_hash": e["content_hash"],
             "teacher": e["teacher"]["family"], "injector": e["injector"]["name"],
             "injector_params": e["injector"]["params"], "domain": e["domain"]["name"],
             "student": e["cell"]["student"], "relation": e["student"]["relation"],
             "distillation": e["cell"]["distillation"], "trait": trait_label(e),
             "transfer_ratio": e["transfer_ratio"], "ci95": e["ci95"], "note": e["transfer_ratio_note"],
             "mitigation": DIMENSIONS["mitigation"](e), "mitigation_effect": e.get("mitigation_effect")}
            for e in entries], indent=1), encoding="utf-8")
        (tmp / "index.html").write_text(_page(entries, plots, heat, notes, mit_plot, dose), encoding="utf-8")
        old = board / f".site.old-{os.getpid()}"
        if site.exists():
            site.rename(old)
        tmp.rename(site)
        if old.exists():
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return Built(site, len(entries), images, notes)
