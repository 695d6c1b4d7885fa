"""docs/plugins.md works as written: every ```console command runs, in order, in a throwaway venv.

Lines starting with ``$ `` in a console block are commands (other lines are sample output).
A ```yaml block whose first line is ``# file: NAME`` is written to NAME before the commands
after it run. pip runs offline here (PIP_NO_DEPS, no build isolation), the only difference
from a user's machine with an index to reach.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from plugin_venv import REPO, make_venv

DOC = REPO / "docs" / "plugins.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.M | re.S)


def steps():
    out = []
    for lang, body in FENCE.findall(DOC.read_text(encoding="utf-8")):
        if lang == "console":
            out += [("run", line[2:].strip()) for line in body.splitlines() if line.startswith("$ ")]
        elif lang == "yaml" and body.startswith("# file: "):
            out.append(("file", body))
    return out


def test_doc_has_the_walkthrough():
    cmds = [s for kind, s in steps() if kind == "run"]
    for needed in ("subbench plugin new", "subbench install -e", "pytest", "subbench plugins", "subbench run",
                   "subbench leaderboard validate", "subbench leaderboard submit", "subbench uninstall"):
        assert any(c.startswith(needed) or needed in c for c in cmds), needed
    assert any(kind == "file" for kind, _ in steps())


def test_doc_experiment_validates(tmp_path, monkeypatch):
    import yaml

    from subbench.config import validate
    from subbench.plugins import PluginManager
    from subbench.scaffold import scaffold

    (body,) = [b for kind, b in steps() if kind == "file"]
    target = scaffold("my-model", "family", tmp_path)
    monkeypatch.syspath_prepend(str(target))
    monkeypatch.delitem(__import__("sys").modules, "subbench_my_model", raising=False)
    import subbench_my_model

    manager = PluginManager().load()
    assert manager.register_plugin(subbench_my_model, name="my-model").error is None
    exp = validate(yaml.safe_load(body), "docs/plugins.md", manager)
    assert exp.teacher_family.name == "my-model" and exp.students[0].family.name == "my-model"
    assert exp.teacher_params == exp.students[0].params  # one base: the student shares the teacher's init


@pytest.mark.slow
def test_every_command_in_the_doc_runs(tmp_path):
    env = make_venv(tmp_path / "env")
    env.update(PIP_NO_DEPS="1", PIP_NO_BUILD_ISOLATION="0", SUBBENCH_THREADS="1")
    work = tmp_path / "work"
    work.mkdir()
    (work / "plugins").symlink_to(REPO / "plugins")  # the doc's repository-relative paths
    for kind, item in steps():
        if kind == "file":
            name = item.splitlines()[0][len("# file: "):].strip()
            (work / name).write_text(item, encoding="utf-8")
            continue
        proc = subprocess.run(["bash", "-c", item], cwd=work, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"$ {item}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    entries = sorted((work / "results" / "my-model-owl").glob("*.json"))
    assert entries, "the run wrote no entries"
    filed = sorted((work / "my-board").rglob("*.json"))
    assert len(filed) >= len([e for e in entries if json.loads(e.read_text()).get("schema_version")])
    listed = subprocess.run([env["PYTHON"], "-m", "subbench", "plugins", "--json"], cwd=work, env=env,
                            capture_output=True, text=True, check=True).stdout
    assert "my-model" not in [p["name"] for p in json.loads(listed)]
