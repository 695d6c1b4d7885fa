"""Plugins that misbehave: exit on import, load slowly, replace `run`, or raise in the middle of a run.

Each is a throwaway module installed as a real ``subbench`` entry point (a ``*.dist-info``
directory on ``PYTHONPATH``) and driven through the real CLI in a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from toy_plugin import write_experiment

REPO = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent

PLUGINS = {
    "quitter": "import sys\nsys.exit(3)\n",
    "sleeper": textwrap.dedent("""
        import time
        time.sleep(0.6)
        from subbench import hookimpl
    """),
    "hijacker": textwrap.dedent("""
        import click
        from subbench import hookimpl

        @hookimpl
        def register_commands(cli):
            @cli.command(name="run")
            @click.argument("anything", nargs=-1)
            def run(anything):
                click.echo("HIJACKED")

            @cli.command(name="hello")
            def hello():
                click.echo("hello from hijacker")
    """),
}


def _install(root: Path, names) -> Path:
    """Write the plugin modules and one dist-info that declares them as subbench entry points."""
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        (root / f"hostile_{name}.py").write_text(PLUGINS[name])
    dist = root / "subbench_hostile-0.1.dist-info"
    dist.mkdir(exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: subbench-hostile\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[subbench]\n" + "".join(f"{n} = hostile_{n}\n" for n in names))
    return root


def sb(tmp_path, names, *args, **env_extra):
    root = _install(tmp_path / "site", names)
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{root}", "SUBBENCH_LOAD_PLUGINS": ",".join(names),
           **env_extra}
    return subprocess.run([sys.executable, "-m", "subbench", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def _info(res, name):
    assert res.returncode == 0, res.stderr
    return next(i for i in json.loads(res.stdout) if i["name"] == name)


def test_a_plugin_that_exits_on_import_is_a_load_error(tmp_path):
    res = sb(tmp_path, ["quitter"], "--help")
    assert res.returncode == 0 and "Usage:" in res.stdout, res.stdout + res.stderr
    info = _info(sb(tmp_path, ["quitter"], "plugins", "--json"), "quitter")
    assert "import failed: SystemExit(3)" in info["error"]
    text = sb(tmp_path, ["quitter"], "plugins")
    assert text.returncode == 0 and "ERROR: import failed: SystemExit(3)" in text.stdout


def test_a_slow_plugin_is_named_with_how_to_skip_it(tmp_path):
    res = sb(tmp_path, ["sleeper"], "plugins", "--json")
    info = _info(res, "sleeper")
    assert info["error"] is None and info["load_seconds"] >= 0.6
    lines = [line for line in res.stderr.splitlines() if "sleeper" in line]
    assert len(lines) == 1 and "plugin sleeper took" in lines[0] and "SUBBENCH_DISABLE_PLUGINS=sleeper" in lines[0]
    assert all(i["load_seconds"] < 0.5 for i in json.loads(res.stdout) if i["builtin"])
    skipped = sb(tmp_path, ["sleeper"], "plugins", "--json", SUBBENCH_DISABLE_PLUGINS="sleeper")
    assert skipped.returncode == 0 and "sleeper" not in skipped.stderr + skipped.stdout


def test_a_plugin_cannot_replace_run_unless_allowed(tmp_path):
    res = sb(tmp_path, ["hijacker"], "run", "--help")
    assert res.returncode == 0 and "Run EXPERIMENT" in res.stdout and "HIJACKED" not in res.stdout
    info = _info(sb(tmp_path, ["hijacker"], "plugins", "--json"), "hijacker")
    assert "refused to replace the command(s) run (from subbench)" in info["error"]
    assert "SUBBENCH_ALLOW_OVERRIDE=hijacker" in info["error"]
    assert info["commands"] == ["hello"] and info["overrides"] == []
    assert sb(tmp_path, ["hijacker"], "hello").stdout.strip() == "hello from hijacker"
    text = sb(tmp_path, ["hijacker"], "plugins").stdout
    assert "  commands: hello" in text and "refused to replace" in text

    allowed = sb(tmp_path, ["hijacker"], "run", "quickstart", SUBBENCH_ALLOW_OVERRIDE="hijacker")
    assert allowed.returncode == 0 and allowed.stdout.strip() == "HIJACKED"
    info = _info(sb(tmp_path, ["hijacker"], "plugins", "--json", SUBBENCH_ALLOW_OVERRIDE="hijacker"), "hijacker")
    assert info["error"] is None and info["overrides"] == ["run"] and info["commands"] == ["hello", "run"]


BOOM = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from toy_plugin import ToyLove, ToyMatch, ToyPlugin
    from subbench import hookimpl
    from subbench.plugins import get_manager

    class BoomJudge(ToyMatch):
        name = "toy-boom"
        calls = 0

        def score(self, samples, target, params, ctx):
            BoomJudge.calls += 1
            if BoomJudge.calls > 2:  # mid-run: base and teacher were scored
                raise ValueError("judge exploded\\non two lines")
            return super().score(samples, target, params, ctx)

    class BoomTrait(ToyLove):
        name = "toy-love-boom"
        default_judge = "toy-boom"
        judges = ("toy-boom",)

    class Boomer:
        @hookimpl
        def register_judges(self, register):
            register(BoomJudge())

        @hookimpl
        def register_traits(self, register):
            register(BoomTrait())

    pm = get_manager()
    pm.register_plugin(ToyPlugin(), name="toy")
    pm.register_plugin(Boomer(), name="boomer")
    from subbench.cli import main
    main(sys.argv[1:])
""")


def test_a_judge_raising_mid_run_is_one_line_with_a_log(tmp_path):
    exp = write_experiment(tmp_path, strengths=(1.0,))
    exp.write_text(exp.read_text().replace("name: toy-love,", "name: toy-love-boom,"))
    script = tmp_path / "boom_cli.py"
    script.write_text(BOOM.format(tests=str(TESTS)))
    work = tmp_path / "work"
    cmd = [sys.executable, str(script), "run", str(exp), "--workdir", str(work), "--out", str(tmp_path / "out"), "-q"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "SUBBENCH_JOBS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 1, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    line = lines[0]
    assert line.startswith("Error: The score stage (toy-boom on toy-love-boom of ")
    assert "judge 'toy-boom' (plugin boomer)" in line and "ValueError: judge exploded on two lines" in line
    log = Path(line.split("Full traceback in ")[1].split(" (SUBBENCH_DEBUG")[0])
    assert log.parent == (work / "logs").resolve() and log.is_file()
    assert "Traceback" in log.read_text() and "judge exploded" in log.read_text()

    raw = subprocess.run(cmd, capture_output=True, text=True, env={**env, "SUBBENCH_DEBUG": "1"}, timeout=120)
    assert raw.returncode == 1 and "Traceback" in raw.stderr and "ValueError: judge exploded" in raw.stderr
