"""``subbench install``, ``subbench uninstall`` and ``subbench plugin new``.

Install and uninstall run pip with the interpreter subbench itself runs under
(``sys.executable -m pip``), so a plugin lands where ``subbench plugins`` can see it even
when ``pip`` on the PATH belongs to another environment.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from subbench import hookimpl
from subbench.errors import SubbenchError

KINDS = ("family", "mitigation")


def _pip(args: list[str]) -> None:
    cmd = [sys.executable, "-m", "pip", *args]
    rc = subprocess.call(cmd)
    if rc != 0:
        raise SubbenchError(f"`{' '.join(cmd[2:])}` failed (exit {rc}); see pip's output above and fix that first.")


@hookimpl
def register_commands(cli):
    import click

    @cli.command()
    @click.argument("packages", nargs=-1, required=True, metavar="PKG|PATH...")
    @click.option("-e", "--editable", is_flag=True, help="Install a local plugin directory in editable (development) mode.")
    @click.option("-U", "--upgrade", is_flag=True, help="Upgrade the packages to the newest available version.")
    @click.option("--no-deps", is_flag=True, help="Do not install the plugin's dependencies (pip --no-deps).")
    @click.option("--no-build-isolation", is_flag=True,
                  help="Build with the setuptools already installed (pip --no-build-isolation; works offline).")
    def install(packages, editable, upgrade, no_deps, no_build_isolation):
        """Install plugins (PyPI names, paths or URLs) into subbench's own environment."""
        args = ["install"]
        if upgrade:
            args.append("-U")
        if no_deps:
            args.append("--no-deps")
        if no_build_isolation:
            args.append("--no-build-isolation")
        for pkg in packages:
            if editable:
                if not Path(pkg).is_dir():
                    raise SubbenchError(f"-e needs a plugin directory, but {pkg} is not one; pass the folder holding its setup.cfg.")
                args += ["-e", str(Path(pkg).resolve())]
            else:
                args.append(pkg)
        _pip(args)
        click.echo("Installed. `subbench plugins` lists what each plugin registered.")

    @cli.command()
    @click.argument("packages", nargs=-1, required=True, metavar="PKG...")
    @click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
    def uninstall(packages, yes):
        """Uninstall plugins from subbench's own environment."""
        if any(p.lower().replace("_", "-") == "subbench" for p in packages):
            raise SubbenchError("Refusing to uninstall subbench itself from its own CLI; run `python -m pip uninstall subbench`.")
        _pip(["uninstall", *(["-y"] if yes else []), *packages])

    @cli.group()
    def plugin():
        """Tools for plugin authors."""

    @plugin.command(name="new")
    @click.argument("name")
    @click.option("--kind", type=click.Choice(KINDS), default="family", show_default=True,
                  help="What the plugin registers.")
    @click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
                  show_default=True, help="Where the plugin's folder is created.")
    def new(name, kind, directory):
        """Create a plugin distribution NAME: setup.cfg, package, README and a passing test.

        \b
        subbench plugin new mymodel --kind family
        subbench install -e subbench-mymodel
        """
        from subbench.scaffold import scaffold

        target = scaffold(name, kind, directory)
        click.echo(f"Created {target}. Next: subbench install -e {target}")
