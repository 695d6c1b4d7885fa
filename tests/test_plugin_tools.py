"""`subbench plugin new`, `install` and `uninstall`, end to end in a throwaway venv."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from plugin_venv import make_venv


def sb(env, *args, check=True):
    proc = subprocess.run([env["PYTHON"], "-m", "subbench", *args], capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"subbench {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def listed(env, plugin):
    out = sb(dict(env, SUBBENCH_LOAD_PLUGINS=plugin), "plugins", "--json").stdout
    return {p["name"]: p for p in json.loads(out)}.get(plugin)


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    root = tmp_path_factory.mktemp("plugin-tools")
    return root, make_venv(root)


def test_scaffold_install_test_uninstall(venv):
    root, env = venv
    created = sb(env, "plugin", "new", "tiny-owl", "--kind", "family", "--dir", str(root))
    plugin_dir = root / "subbench-tiny-owl"
    assert str(plugin_dir) in created.stdout
    for rel in ("setup.cfg", "pyproject.toml", "README.md", "subbench_tiny_owl/__init__.py", "tests/test_plugin.py"):
        assert (plugin_dir / rel).is_file(), rel
    assert "tiny_owl = " not in (plugin_dir / "setup.cfg").read_text()
    assert "tiny-owl = subbench_tiny_owl" in (plugin_dir / "setup.cfg").read_text()
    assert listed(env, "tiny-owl") is None

    sb(env, "install", "-e", str(plugin_dir), "--no-deps", "--no-build-isolation")
    info = listed(env, "tiny-owl")
    assert info is not None and info["error"] is None
    assert info["registered"] == {"families": ["tiny-owl"]}
    assert info["version"] == "0.1.0" and info["builtin"] is False
    fams = json.loads(sb(dict(env, SUBBENCH_LOAD_PLUGINS="tiny-owl"), "list", "families", "--json").stdout)
    assert any(f["name"] == "tiny-owl" and f["plugin"] == "tiny-owl" for f in fams)

    tests = subprocess.run([env["PYTHON"], "-m", "pytest", "-q", "-p", "no:cacheprovider", str(plugin_dir / "tests")],
                           capture_output=True, text=True, env=env, cwd=plugin_dir)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    # the two scaffold tests and the family contract (build_pins_revision skips: not a hub family)
    assert "11 passed, 1 skipped" in tests.stdout, tests.stdout

    sb(env, "uninstall", "-y", "subbench-tiny-owl")
    assert listed(env, "tiny-owl") is None
    # the environment outside the venv never saw the plugin
    outside = subprocess.run([sys.executable, "-c", "import importlib.metadata as m;"
                              "print([e.name for e in m.entry_points(group='subbench')])"],
                             capture_output=True, text=True, check=True)
    assert "tiny-owl" not in outside.stdout


@pytest.mark.parametrize("args, message", [
    (["plugin", "new", "My_Model"], "must be lower-case letters"),
    (["plugin", "new", "x", "--kind", "judge"], "Invalid value for '--kind'"),
    (["install", "-e", "no/such/dir"], "-e needs a plugin directory"),
    (["uninstall", "-y", "subbench"], "Refusing to uninstall subbench itself"),
])
def test_user_errors_are_one_clear_line(venv, args, message):
    _, env = venv
    proc = sb(env, *args, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_scaffold_refuses_to_overwrite(venv):
    root, env = venv
    sb(env, "plugin", "new", "twice", "--dir", str(root))
    marker = root / "subbench-twice" / "README.md"
    marker.write_text("edited")
    proc = sb(env, "plugin", "new", "twice", "--dir", str(root), check=False)
    assert proc.returncode == 1 and "already exists" in proc.stderr
    assert marker.read_text() == "edited"


def test_commands_appear_in_help(venv):
    _, env = venv
    out = sb(env, "--help").stdout
    for cmd in ("install", "uninstall", "plugin"):
        assert f"  {cmd}" in out
