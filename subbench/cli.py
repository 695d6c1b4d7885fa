"""The ``subbench`` command line.

Only click, pluggy and the plugin modules (which import nothing heavy) load here, so
``subbench --help`` stays fast; torch and friends load when a stage actually runs.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from subbench import __version__
from subbench.errors import ConfigError, SubbenchError

LIST_KINDS = ("families", "traits", "injectors", "domains", "judges", "mitigations", "distillers", "experiments")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="subbench")
def cli():
    """subbench: measure subliminal learning — how much of a teacher's hidden trait a
    student distilled from its benign outputs inherits.

    \b
    Quick start:   subbench run quickstart
    What exists:   subbench list experiments | families | injectors | ...
    Plugins:       subbench plugins
    """


@cli.command()
@click.argument("experiment")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a field of the experiment, e.g. --set domain.size=500 --set seeds=[0,1]. Repeatable.")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where stage artifacts are cached [default: $SUBBENCH_WORKDIR or ./.subbench].")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("results"), show_default=True,
              help="Where entries are written (one JSON per cell, under OUT/EXPERIMENT/).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--fresh", is_flag=True, help="Recompute every stage instead of reusing cached artifacts.")
@click.option("--jobs", type=click.IntRange(min=1), default=None,
              help="Stages run side by side, one worker process each (1: all in this process, for debugging) "
                   "[default: $SUBBENCH_JOBS, else the number of cores; 1 with --device cuda].")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Where stages run: local worker processes, or Ray tasks (pip install 'subbench[ray]').")
@click.option("--address", default=None, metavar="ADDR",
              help="Ray cluster to join with --executor ray (e.g. 10.0.0.1:6379 or auto) [default: a local one].")
@click.option("--dry-run", is_flag=True, help="Resolve and validate the grid, print its cells and stages, run nothing.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or stage log; print only the final table.")
@click.option("--json", "as_json", is_flag=True, help="Print the entries as JSON instead of the table.")
def run(experiment, sets, workdir, out, device, fresh, jobs, executor, address, dry_run, quiet, as_json):
    """Run EXPERIMENT (a name from `subbench list experiments` or a YAML path).

    Every stage (build base, inject, generate, filter, distill, sample, score) is cached in the
    workdir under the hash of its inputs; re-running skips finished stages and gives the
    same numbers. Each cell (teacher setting x distillation x student) ends in one entry.
    """
    from subbench.config import load_experiment
    from subbench.context import env_threads
    from subbench.pipeline import default_jobs

    exp = load_experiment(experiment, list(sets))
    # one GPU holds one worker's models: local workers share it only when asked (Ray places stages by GPU)
    jobs = jobs or (1 if device == "cuda" and executor == "local" and not os.environ.get("SUBBENCH_JOBS") else default_jobs())
    env_threads()
    workdir = workdir or Path(os.environ.get("SUBBENCH_WORKDIR", ".subbench"))
    _check_writable_dir(workdir, "--workdir")
    _check_writable_dir(out, "--out")
    if dry_run:
        from subbench.dryrun import describe

        from subbench.executor import describe_plan

        click.echo(describe(exp))
        click.echo("\n".join(describe_plan(exp, workdir, jobs)))
        return
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SubbenchError("--device cuda was asked for but torch sees no CUDA device; use --device cpu.")
    from subbench.executor import run_experiment
    from subbench.pipeline import Runner, format_table

    workdir = workdir or Path(os.environ.get("SUBBENCH_WORKDIR", ".subbench"))
    _LOG_DIR[0] = workdir
    if address and executor != "ray":
        raise ConfigError("--address joins a Ray cluster; add --executor ray.")
    runner = Runner(exp, workdir=workdir, out=out, device=device, quiet=quiet, fresh=fresh, jobs=jobs,
                    executor=executor, address=address)
    entries = run_experiment(runner)
    if as_json:
        click.echo(json.dumps(entries, indent=2))
        return
    click.echo(format_table(entries))
    click.echo(
        f"\n{len(entries)} entries written to {out / exp.name}/ "
        f"({runner.stats['run']} stages run, {runner.stats['cached']} cached; workdir {workdir})."
    )


@cli.command()
@click.argument("results", type=click.Path(path_type=Path))
@click.option("--judge", "judge", required=True, metavar="NAME", help="The judge to re-score with (`subbench list judges`).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="A parameter of the judge, e.g. --set skip_articles=false or --set judges=[first-word,refusal]. Repeatable.")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The workdir the run used (its samples live there) [default: $SUBBENCH_WORKDIR or ./.subbench].")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the new entries are written, under OUT/EXPERIMENT/ [default: results-JUDGE].")
@click.option("-q", "--quiet", is_flag=True, help="Print only the final table.")
def score(results, judge, sets, workdir, out, quiet):
    """Re-judge the samples behind the entries in RESULTS (a results directory or an entry file) with another judge.

    Loads no model: the samples the run stored (its `sample` stage) are read from the
    workdir and judged by a `score` stage; the new entries record the judge and
    recompute every score, ratio and interval as `run` does.
    """
    from subbench.context import Context
    from subbench.scoring import rescore

    workdir = workdir or Path(os.environ.get("SUBBENCH_WORKDIR", ".subbench"))
    out = out or Path(f"results-{judge}")
    _check_writable_dir(out, "--out")
    ctx = Context(workdir=workdir, quiet=quiet)
    entries, stats = rescore([results], judge, list(sets), workdir, out, ctx)
    try:
        from subbench.pipeline import format_table

        click.echo(format_table(entries))
    except ImportError:  # pragma: no cover - the table moved
        pass
    click.echo(f"\n{len(entries)} entries re-scored with judge {judge} written to {out}/ "
               f"({stats['run']} score stages run, {stats['cached']} cached; no model loaded).")


def _check_writable_dir(path: Path, option: str) -> None:
    """Refuse a directory that cannot be created or written before any stage runs (creates nothing)."""
    from subbench.errors import ConfigError

    probe = Path(path)
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{option} {path}: {probe} is not a directory; choose a directory subbench can create.")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {path}: {probe} is not writable; choose a directory you can write to.")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins(as_json):
    """List loaded plugins: version, hooks, what each registered (commands included), load time and errors."""
    from subbench.plugins import get_manager

    infos = [i.as_dict() for i in get_manager().infos.values()]
    if as_json:
        click.echo(json.dumps(infos, indent=2))
        return
    for info in infos:
        origin = "built-in" if info["builtin"] else "installed"
        click.echo(f"{info['name']} {info['version'] or ''} ({origin}, {info['module']}, "
                   f"loaded in {info['load_seconds']:.2f} s)")
        if info["hooks"]:
            click.echo(f"  hooks: {', '.join(info['hooks'])}")
        if info["error"]:
            click.echo(f"  ERROR: {info['error']}")
        for kind, names in info["registered"].items():
            click.echo(f"  {kind}: {', '.join(names)}")
        if info["overrides"]:
            click.echo(f"  replaces commands: {', '.join(info['overrides'])} (allowed by SUBBENCH_ALLOW_OVERRIDE)")


@cli.command(name="list")
@click.argument("kind", type=click.Choice(LIST_KINDS))
@click.option("--params", "show_params", is_flag=True,
              help="Also print each component's parameters: type, default, allowed values, what it does.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (parameters included).")
def list_(kind, show_params, as_json):
    """List the registered components of one KIND (or the available experiments)."""
    if kind == "experiments":
        if show_params:
            from subbench.errors import ConfigError

            raise ConfigError("--params lists a component's parameters; experiments have none (see docs/experiments.md).")
        from subbench.config import list_experiments

        items = [{"name": n, "path": str(p), "from": origin}
                 for n, (p, origin) in sorted(list_experiments(with_origin=True).items())]
        for item in items:
            item["description"] = _first_line_description(Path(item["path"]))
    else:
        from subbench.plugins import get_manager

        items = [c.describe() for c in get_manager().registry(kind)]
    if as_json:
        click.echo(json.dumps(items, indent=2, default=str))
        return
    if not items:
        click.echo(f"No {kind} registered.")
    width = max((len(i["name"]) for i in items), default=0)
    for i in items:
        origin = f"  [{i.get('plugin') or i.get('from')}]" if i.get("plugin") or i.get("from") else ""
        click.echo(f"{i['name'].ljust(width)}  {i.get('description') or ''}{origin}")
        if show_params:
            _echo_params(i.get("parameters") or [])


def _echo_params(params: list[dict]) -> None:
    if not params:
        click.echo("    (no parameters)")
        return
    rows = [(p["name"], p["type"], json.dumps(p["default"], default=str), p["allowed"], p["doc"]) for p in params]
    widths = [max(len(r[k]) for r in rows) for k in range(3)]
    for name, type_, default, allowed, doc in rows:
        click.echo(f"    {name.ljust(widths[0])}  {type_.ljust(widths[1])}  {default.ljust(widths[2])}  {allowed}")
        if doc:
            click.echo(f"    {''.ljust(widths[0])}  {doc}")


def _first_line_description(path: Path) -> str:
    """The experiment's `description:`, read as text (a folded `>-` block joined), never executed."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return ""
    for i, line in enumerate(lines):
        if line.startswith("description:"):
            value = line.split(":", 1)[1].strip()
            if value in (">", ">-", "|", "|-", ">+", "|+"):
                block = []
                for more in lines[i + 1:]:
                    if more.strip() and not more[:1].isspace():
                        break
                    block.append(more.strip())
                value = " ".join(b for b in block if b)
            return value.strip("'\"")
    return ""


#: Where an unexpected traceback is logged: the run's workdir once known.
_LOG_DIR: list[Path | None] = [None]


def build_cli() -> click.Group:
    from subbench.plugins import get_manager

    get_manager().add_commands(cli)
    return cli


def main(argv: list[str] | None = None) -> None:
    group = build_cli()
    try:
        rv = group.main(args=argv, prog_name="subbench", standalone_mode=False)
    except SubbenchError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted; finished stages are cached, re-run the same command to resume.", err=True)
        sys.exit(130)
    except Exception as exc:  # a bug (a plugin's or ours): one line here, the traceback in a log
        from subbench.crashlog import debug, one_line, write_log

        if debug():
            raise
        workdir = _LOG_DIR[0] or Path(os.environ.get("SUBBENCH_WORKDIR", ".subbench"))
        try:
            where = f"full traceback in {write_log(workdir, exc)}"
        except OSError:
            where = "set SUBBENCH_DEBUG=1 to see the traceback"
        click.echo(f"Error: unexpected {one_line(exc)} ({where}; SUBBENCH_DEBUG=1 prints it).", err=True)
        sys.exit(1)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
