"""Built-in plugin: the ``leaderboard`` command group and ``compare``.

Only click is imported here; jsonschema, numpy and matplotlib load inside the commands.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from subbench import hookimpl

DIMENSION_NAMES = ("teacher", "student", "student_family", "relation", "injector", "teacher_setting", "domain", "distillation", "trait",
                   "judge", "mitigation", "experiment")
METRIC_NAMES = ("transfer_ratio", "teacher_effect", "student_effect", "student_score", "control_score", "teacher_score",
                "transfer_reduction")
PATHS = click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
BOARD = click.option("--board", type=click.Path(file_okay=False, path_type=Path), default=Path("leaderboard"),
                     show_default=True, help="The board directory (holds entries/ and site/).")


@click.group()
def leaderboard():
    """Validate, submit, publish and export leaderboard entries."""


@leaderboard.command()
@PATHS
@click.pass_context
def validate(ctx, paths):
    """Check entries (files or directories): schema, content hash, and every number that
    can be recomputed from the stored per-sample scores (means, transfer ratio, CI)."""
    from subbench.leaderboard.validate import validate_paths

    results = validate_paths(paths)
    bad = [r for r in results if r.problems]
    for r in bad:
        for p in r.problems:
            click.echo(f"{r.path}: {p}")
    if bad:
        click.echo(f"FAILED: {len(bad)} of {len(results)} entries have problems.", err=True)
        ctx.exit(1)
    click.echo(f"OK: {len(results)} entries valid (schema, content hash, recomputed scores and transfer ratios).")


@leaderboard.command()
@PATHS
@BOARD
@click.pass_context
def submit(ctx, paths, board):
    """Validate entries and file them on the board as entries/<experiment>/<cell-id>-<hash12>.json.

    Nothing is filed when any entry fails or is already on the board (same measurement:
    entries differing only in created, environment, git_commit, subbench_version count as
    one). A submission killed half-way is finished by the next command that opens the board.
    """
    from subbench.leaderboard.board import submit as do_submit

    res = do_submit(paths, board)
    for f in res.completed:
        click.echo(f"finished filing {f} (left by an interrupted submission)")
    for p in res.problems:
        click.echo(p)
    if res.problems:
        click.echo(f"FAILED: nothing filed; fix the {len(res.problems)} problems above and submit again.", err=True)
        ctx.exit(1)
    for src, dest in res.filed:
        click.echo(f"filed {src} -> {dest}")
    click.echo(f"OK: {len(res.filed)} entries filed on {board}; run `subbench leaderboard build --board {board}`.")


@leaderboard.command()
@BOARD
def build(board):
    """Build the static site in BOARD/site/: sortable table, strength plots, teacher x student heatmaps.

    Every entry is validated in full first; a board with any invalid entry is not published.
    """
    from subbench.leaderboard.site import build as do_build

    built = do_build(board)
    for n in built.notes:
        click.echo(f"note: {n}")
    click.echo(f"OK: {built.site / 'index.html'} ({built.entries} entries, {len(built.images)} images).")


@leaderboard.command()
@PATHS
@click.option("--format", "fmt", type=click.Choice(["eee"]), default="eee", show_default=True,
              help="Target format: eee = Every Eval Ever (eval.schema.json 0.3.0).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write one file per entry under OUT/ instead of printing a JSON list.")
@click.option("--organization", default="subbench", show_default=True, help="EEE source_organization_name.")
@click.option("--relationship", type=click.Choice(["first_party", "third_party", "collaborative", "other"]),
              default="third_party", show_default=True, help="EEE evaluator_relationship to the evaluated model.")
@click.pass_context
def export(ctx, paths, fmt, out, organization, relationship):
    """Export valid entries to another leaderboard format."""
    from subbench.leaderboard.board import atomic_write_json
    from subbench.leaderboard.eee import export_entry, export_path
    from subbench.leaderboard.validate import collect

    entries, problems = collect(paths)
    for p in problems:
        click.echo(p, err=True)
    records = [(e, export_entry(e, organization, relationship)) for e in entries]
    if out is None:
        click.echo(json.dumps([r for _, r in records], indent=2))
    else:
        for e, r in records:
            dest = export_path(out, e)
            atomic_write_json(dest, r)
            click.echo(f"wrote {dest}")
    if problems:
        click.echo(f"FAILED: {len(problems)} problems; those entries were not exported.", err=True)
        ctx.exit(1)


@click.command()
@PATHS
@click.option("--rows", type=click.Choice(DIMENSION_NAMES), default="teacher", show_default=True)
@click.option("--cols", type=click.Choice(DIMENSION_NAMES), default="student", show_default=True)
@click.option("--metric", type=click.Choice(METRIC_NAMES), default="transfer_ratio", show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv", "markdown"]), default="table",
              show_default=True)
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the matrices as a heatmap, one panel per facet (.png, .svg or .pdf).")
@click.option("--pool", is_flag=True,
              help="Pool entries of different distillations, judges, domains, traits and mitigations in one matrix "
                   "(by default each combination is its own matrix).")
@click.option("--by", default=None, metavar="PARAM",
              help="Instead of a matrix: the per-replicate --metric (transfer_ratio, student_effect, ...) against this "
                   "injector parameter (e.g. strength), one curve per student relation and facet, with 95% intervals.")
@click.option("--fit", is_flag=True, help="With --by: fit threshold (step, logistic) and continuous (linear, saturating) "
                                          "models and name the shape with the lower BIC.")
@click.pass_context
def compare(ctx, paths, rows, cols, metric, fmt, plot, pool, by, fit):
    """Compare entries (files, results directories or a board) as ROWS x COLS matrices with 95% CIs.

    Entries that measure different things (distillation, judge, domain, trait, mitigation)
    get one matrix each unless --pool; within a cell, several entries are pooled: the mean
    of their values, with n; see the footer (or "pooling" in --format json) for the CI.
    """
    from subbench.errors import SubbenchError
    from subbench.leaderboard.compare import compare as do_compare
    from subbench.leaderboard.compare import heatmap, render
    from subbench.leaderboard.validate import collect

    entries, problems = collect(paths)
    for p in problems:
        click.echo(f"skipped {p}", err=True)
    if not entries:
        raise SubbenchError("No valid entries to compare; check the paths or run `subbench leaderboard validate`.")
    if fit and not by:
        from subbench.errors import ConfigError

        raise ConfigError("--fit needs --by PARAM (e.g. --by strength): it fits transfer against that parameter.")
    if by:
        from subbench.leaderboard import doseresponse

        cs = doseresponse.curves(entries, by, fit=fit, metric=metric)
        click.echo(doseresponse.render(cs, by, "json" if fmt == "json" else "table", metric))
        if plot:
            doseresponse.plot(cs, by, plot, metric)
            click.echo(f"wrote {plot}", err=True)
        return
    comp = do_compare(entries, rows, cols, metric, pool=pool)
    click.echo(render(comp, fmt))
    if plot:
        heatmap(comp, plot)
        click.echo(f"wrote {plot}", err=True)


@hookimpl
def register_commands(cli):
    cli.add_command(leaderboard)
    cli.add_command(compare)
