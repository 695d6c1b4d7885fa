"""Built-in plugin: the ``data`` command group (``subbench data filter``).

``data filter`` runs a domain's filter on responses that did not come from a subbench run
(an API teacher's outputs, another paper's released data), so the same keep/reject
decisions can be compared or reused. It needs nothing of a domain but ``filter(sample,
params)``, so every domain gets it. Only click is imported here.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import click

from subbench import hookimpl
from subbench.errors import ConfigError


@click.group()
def data():
    """Tools for domain data outside a run."""


def _parse_sets(sets: tuple[str, ...]) -> dict[str, Any]:
    import yaml

    params: dict[str, Any] = {}
    for item in sets:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"--set {item}: expected key=value, e.g. --set filter=cloud2025.")
        try:
            params[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            params[key.strip()] = value
    return params


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Every row of a JSONL file, or a ConfigError naming the first bad line."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such file; pass a JSONL file with one {{\"response\": ...}} object per line.")
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ConfigError(f"{path}:{lineno}: not valid JSON ({exc.msg}); each line must be one JSON object.") from None
                if not isinstance(row, dict) or "response" not in row:
                    raise ConfigError(f"{path}:{lineno}: a row needs a \"response\" field; add it or drop the line.")
                if row["response"] is not None and not isinstance(row["response"], str):
                    raise ConfigError(f"{path}:{lineno}: \"response\" must be a string (or null), "
                                      f"got {type(row['response']).__name__}.")
                rows.append(row)
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; save the file as UTF-8 JSONL.") from None
    return rows


def filter_rows(domain, rows: list[dict[str, Any]], params: dict[str, Any]):
    """One decision per row (``id``, ``kept``, ``reason``) and the kept rows, in input order.

    A row without an ``id`` is named by its position (0-based) among the rows.
    """
    decisions, kept = [], []
    for i, row in enumerate(rows):
        reason = domain.filter(row, params)
        decisions.append({"id": row.get("id", i), "kept": reason is None, "reason": reason})
        if reason is None:
            kept.append(row)
    return decisions, kept


def write_outputs(out: Path, files: dict[str, str]) -> None:
    """Stage every file in a temporary folder next to ``out``, then move each into place.

    Nothing is written before all content exists, and each file appears whole or not at
    all (``os.replace`` on one file system).
    """
    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".filter-", dir=out))
    try:
        for name, text in files.items():
            with open(stage / name, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
        for name in files:
            os.replace(stage / name, out / name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


@data.command(name="filter")
@click.argument("domain_name", metavar="DOMAIN")
@click.argument("file", type=click.Path(path_type=Path), metavar="FILE.jsonl")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="A domain parameter, e.g. --set filter=cloud2025 --set banned_numbers=[]. Repeatable.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Where decisions.jsonl, kept.jsonl and summary.json go [default: FILE's folder/<FILE stem>.filtered].")
@click.option("--target", default=None, metavar="TARGET",
              help="The trait's target (e.g. owl): domains that refuse the trait's words (code, cot) take them from it.")
@click.option("--trait", "trait_name", default="animal-preference", show_default=True, metavar="TRAIT",
              help="The trait whose words --target names.")
def filter_cmd(domain_name, file, sets, out, target, trait_name):
    """Apply DOMAIN's filter to the rows of FILE.jsonl (each with a "response"; "id" and
    "prompt" optional) and write one decision per row, the kept rows and a summary.

    \b
    subbench data filter numbers teacher.jsonl --set filter=cloud2025
    subbench data filter code teacher.jsonl --target owl --set filter=python
    """
    from subbench.plugins import get_manager

    pm = get_manager()
    domain = pm.get("domains", domain_name)
    given = _parse_sets(sets)
    params = domain.resolve_params(given, where="--set")
    if getattr(domain, "uses_trait_words", False) and params.get("trait_words") is None:
        if target is None:
            raise ConfigError(f"The {domain.name} filter refuses the trait's words; pass --target (e.g. --target owl, "
                              "with --trait if not animal-preference) or --set trait_words=[owl,owls].")
        trait = pm.get("traits", trait_name)
        trait.check_target(target, trait.resolve_params({}))
        given["trait_words"] = list(trait.trait_words(target, trait.resolve_params({})))
        params = domain.resolve_params(given, where="--set")
    out = out if out is not None else file.parent / f"{file.stem}.filtered"
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file, not a folder; pass a folder to write the decisions into.")
    rows = read_rows(file)
    decisions, kept = filter_rows(domain, rows, params)
    reasons = Counter(d["reason"] for d in decisions if not d["kept"])
    rate = len(kept) / len(rows) if rows else 0.0
    summary = {"domain": domain.name, "version": domain.version, "params": params, "input": str(file),
               "rows": len(rows), "kept": len(kept), "rate": rate,
               "rejections": dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])))}
    write_outputs(out, {"decisions.jsonl": _jsonl(decisions), "kept.jsonl": _jsonl(kept),
                        "summary.json": json.dumps(summary, indent=2, default=str) + "\n"})
    shown = ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(given.items())) or "defaults"
    click.echo(f"{domain.name} filter ({shown}) on {file}")
    click.echo(f"rows: {len(rows)}  kept: {len(kept)}  rate: {rate:.3f}")
    for reason, count in summary["rejections"].items():
        click.echo(f"  {reason}: {count}")
    click.echo(f"wrote {out / 'decisions.jsonl'}, {out / 'kept.jsonl'} and {out / 'summary.json'}")


@hookimpl
def register_commands(cli):
    cli.add_command(data)
