"""Built-in plugin: ``subbench doctor`` — does this machine reproduce the published numbers bit for bit?

It prints what governs the numbers here (processor, its vector instruction sets, the CPU
kernels torch and MKL use, threads), builds a short reference model and compares its
weights' sha256 with the published one, and compares any quickstart bases cached in the
workdir with the published hashes (docs/results.md). Only click is imported at load time.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from subbench import hookimpl

#: sha256 of the weights of tiny-llama seed 0 built with ``steps: 40`` (the quick check), and of
#: the bases of quickstart and quickstart-inits ('family@seed') -> sha256, all with the pinned CPU kernels
#: (subbench/reproducibility.py). Re-measure with `subbench doctor --print-hashes` whenever
#: the tiny families, their corpus or the tokenizer change.
REFERENCE_STEPS = 40
REFERENCE_SHA256 = "302eef2a2d5c5b0075e62b6c899a3e29e5a87bae2a5c5cd21d9ee70eb61591e7"
QUICKSTART_BASES: dict[str, str] = {
    "tiny-llama@0": "11a4101122b5be0cc12ed91435c4dc2c7548b6523057921ae7e3994faf0ce4ec",
    "tiny-llama@1": "3349690ff34ade51b8058daa2705b9e813693240c5d72ec53cbdad910fd20db1",
    "tiny-llama@2": "5317badb2dc613e162f120fabb6b68438c557a6e57a29c2d73438c24c7a2fb91",
    "tiny-llama@3": "80889c9c73b4d64afed2d646a4f2053c14a129bf7cfabd7c18b7a67c435fb940",
    "tiny-llama@4": "cf507b22835c6f5bce1f3657fc904cf4b749981e1471ae03e0d47408b85e42b4",
    "tiny-llama@5": "56f57c1630464503bde91b4034698820b797bbe608854e1eae9f6ab679ded94f",
    "tiny-qwen2@0": "852e937ef8eeb5283461ea961b1a7b8b9f1b02e6eec9e9e1115d8f4e4dc2bfb3",
}


def reference_build(steps: int = REFERENCE_STEPS) -> str:
    """Build tiny-llama seed 0 for ``steps`` pretraining steps in a temp dir; return its weights' sha256."""
    import tempfile

    from subbench.context import Context
    from subbench.default_plugins.lm_families import TINY_LLAMA

    with tempfile.TemporaryDirectory(prefix="subbench-doctor-") as d:
        ctx = Context(workdir=Path(d), quiet=True)
        result = TINY_LLAMA.build(0, TINY_LLAMA.resolve_params({"steps": steps}), Path(d) / "model", ctx)
    return result["sha256"]


def cached_bases(workdir: Path) -> dict[str, tuple[str, Path]]:
    """Base artifacts in ``workdir``: 'family@seed' (default params only) -> (sha256 recorded, path)."""
    from subbench.plugins import get_manager

    found: dict[str, tuple[str, Path]] = {}
    root = Path(workdir) / "artifacts" / "base"
    if not root.is_dir():
        return found
    for meta_file in sorted(root.glob("*/meta.json")):
        try:
            meta = json.loads(meta_file.read_text())
            inputs = meta["inputs"]
            family = get_manager().get("families", inputs["family"])
            if inputs["params"] != family.resolve_params({}):
                continue
            found[f"{inputs['family']}@{inputs['seed']}"] = (meta["result"]["sha256"], meta_file.parent)
        except Exception:  # noqa: BLE001 - a foreign or broken artifact is simply not a reference base
            continue
    return found


@click.command()
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to look for cached quickstart bases [default: $SUBBENCH_WORKDIR or ./.subbench].")
@click.option("--skip-build", is_flag=True, help="Do not build the short reference model (about 20 s on one core).")
@click.option("--print-hashes", is_flag=True, help="Print the hashes measured here in the form the docs publish.")
@click.pass_context
def doctor(ctx, workdir, skip_build, print_hashes):
    """Check whether this machine reproduces the published figures bit for bit.

    \b
    Prints the processor, its vector instruction sets and the CPU kernels in use (pinned to
    AVX2 unless SUBBENCH_REPRODUCIBLE=0), builds tiny-llama seed 0 for 40 steps and compares
    its weights with the published sha256, then compares the quickstart bases cached in the
    workdir (after `subbench run quickstart`) with the published ones. Exit 0: every check
    matches; 1: something differs (then the README's figures rest on replicate statistics:
    expect the spread that docs/results.md reports, not the same digits).
    """
    from subbench.context import Context
    from subbench.reproducibility import report

    Context(workdir=Path("."), quiet=True).setup_torch()
    info = report()
    for key in ("cpu_model", "cpu_flags", "torch", "cpu_capability", "aten_cpu_capability", "mkl_cbwr",
                "onednn_max_cpu_isa", "torch_threads", "reproducible"):
        click.echo(f"{key:<20} {info.get(key)}")
    ok = True
    if info.get("reproducible") != "1":
        click.echo("note: SUBBENCH_REPRODUCIBLE=0: kernels are not pinned; results need not match the published hashes.")
    measured: dict[str, str] = {}
    checked = 0
    if not skip_build:
        sha = reference_build()
        measured["reference"] = sha
        checked += 1
        if sha == REFERENCE_SHA256:
            click.echo(f"reference build       {sha[:16]}  matches the published hash bit for bit")
        else:
            ok = False
            click.echo(f"reference build       {sha[:16]}  DIFFERS from the published {REFERENCE_SHA256[:16]}")
    workdir = Path(workdir or os.environ.get("SUBBENCH_WORKDIR", ".subbench"))
    bases = cached_bases(workdir)
    for name, (sha, _path) in sorted(bases.items()):
        measured[name] = sha
        want = QUICKSTART_BASES.get(name)
        if want is None:
            continue
        same = sha == want
        ok = ok and same
        checked += 1
        click.echo(f"base {name:<16} {sha[:16]}  " + ("matches the published hash" if same else
                                                      f"DIFFERS from the published {want[:16]}"))
    if not any(n in QUICKSTART_BASES for n in bases):
        click.echo(f"no quickstart bases cached in {workdir} (run `subbench run quickstart` first to compare them)")
    if print_hashes:
        click.echo(json.dumps(measured, indent=2, sort_keys=True))
    if ok and not checked:
        click.echo("nothing was checked: drop --skip-build, or run the quickstart first.")
    elif ok:
        click.echo(f"OK: this machine reproduces the published hashes bit for bit ({checked} checked).")
    else:
        click.echo("DIFFERS: figures from this machine will not match the published digits; compare them with the "
                   "replicate spread in docs/results.md instead.")
        ctx.exit(1)


@hookimpl
def register_commands(cli):
    cli.add_command(doctor)
