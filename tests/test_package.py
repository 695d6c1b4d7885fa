"""subbench as a real package: the wheel carries the shipped files, and an installed copy runs from anywhere."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from toy_plugin import toy_results  # noqa: E402,F401  (real entries to validate)

from subbench import resources  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SKIP = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__", "*.pyc", "results", ".subbench",
                              "site", ".venv", ".pytest_cache")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the checkout (no stale build/ of earlier builds can leak into it)."""
    src = tmp_path_factory.mktemp("src") / "subbench"
    shutil.copytree(REPO, src, ignore=SKIP)
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                           "--no-index", "-w", str(out), "-q"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (whl,) = out.glob("subbench-*.whl")
    return whl


def test_wheel_carries_experiments_trait_tasks_judges_and_schema(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in ("subbench/_data/tasks/quickstart.yaml",
                 "subbench/_data/tasks/include/transfer-ratio-steering.yaml",
                 "subbench/_data/tasks/traits/animal-preference.yaml",
                 "subbench/_data/tasks/traits/animal_preference.py",
                 "subbench/_data/tasks/traits/data/harmful-behaviors.jsonl",
                 "subbench/_data/tasks/judges/trait-score-v1.txt",
                 "subbench/_data/leaderboard/schema/entry-v1.json",
                 "subbench/_data/leaderboard/schema/entry-v2.json",
                 "subbench/resources.py", "subbench/api.py", "subbench/testing.py"):
        assert path in names, path
    # every shipped file travels, byte for byte (trait tasks are hashed into cache keys)
    z = zipfile.ZipFile(wheel)
    for f in (REPO / "tasks").rglob("*"):
        if f.is_file() and "__pycache__" not in f.parts:
            assert z.read(f"subbench/_data/tasks/{f.relative_to(REPO / 'tasks').as_posix()}") == f.read_bytes()
    assert not any(n.startswith(("tasks/", "leaderboard/")) for n in names), "no top-level data package"


def test_checkout_reads_the_top_level():
    assert resources.source_root() == REPO
    assert resources.tasks_dir() == REPO / "tasks"
    assert resources.schema_dir() == REPO / "leaderboard" / "schema"
    assert (resources.judge_templates_dir() / "trait-score-v1.txt").is_file()
    assert (resources.trait_tasks_dir() / "animal-preference.yaml").is_file()


def test_experiment_search_order(tmp_path, monkeypatch):
    from subbench.config import find_experiment, list_experiments

    local, extra = tmp_path / "tasks", tmp_path / "more"
    local.mkdir(), extra.mkdir()
    (local / "quickstart.yaml").write_text("name: mine\n")
    (extra / "quickstart.yaml").write_text("name: theirs\n")
    (extra / "only-here.yaml").write_text("name: only-here\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(resources.EXPERIMENT_PATH_ENV, f"{tmp_path / 'missing'}{os.pathsep}{extra}")
    found = list_experiments(with_origin=True)
    assert found["quickstart"][1] == "./tasks" and found["quickstart"][0].resolve() == (local / "quickstart.yaml").resolve()
    assert found["only-here"][1] == "$SUBBENCH_EXPERIMENT_PATH"
    assert found["mlp-aux-logits"] == (REPO / "tasks" / "mlp-aux-logits.yaml", "shipped")
    assert find_experiment("quickstart").resolve() == (local / "quickstart.yaml").resolve()
    out = subprocess.run([sys.executable, "-m", "subbench", "list", "experiments"], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = {line.split()[0]: line for line in out.stdout.splitlines() if line.strip()}
    assert lines["quickstart"].endswith("[./tasks]") and lines["only-here"].endswith("[$SUBBENCH_EXPERIMENT_PATH]")
    assert lines["mlp-aux-logits"].endswith("[shipped]")


def _fresh_venv(root: Path) -> tuple[Path, dict[str, str]]:
    """A venv that sees this environment's packages (torch...) but none of this checkout.

    ``venv --system-site-packages`` would expose the base interpreter's packages, not the ones
    the tests run with; a .pth appends the running environment's site-packages instead, after
    the venv's own, so the wheel installed into the venv is the subbench that imports.
    """
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    inner = subprocess.run([str(bindir / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                           check=True, capture_output=True, text=True).stdout.strip()
    outer = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    Path(inner, "_outer_env.pth").write_text("import site; " + "; ".join(f"site.addsitedir({p!r})" for p in outer) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "SUBBENCH_TASKS",
                                                            resources.EXPERIMENT_PATH_ENV)}
    env.update(VIRTUAL_ENV=str(venv), PATH=f"{bindir}{os.pathsep}{env.get('PATH', '')}", PIP_NO_INPUT="1",
               PIP_DISABLE_PIP_VERSION_CHECK="1", SUBBENCH_LOAD_PLUGINS="")
    return bindir, env


def test_installed_wheel_runs_from_any_directory(wheel, tmp_path, toy_results):  # noqa: F811
    bindir, env = _fresh_venv(tmp_path)
    # --ignore-installed: pip must not touch the subbench of the environment it can see
    done = subprocess.run([str(bindir / "python"), "-m", "pip", "install", "--no-deps", "--no-index",
                           "--ignore-installed", "-q", str(wheel)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def sb(*args):
        out = subprocess.run([str(bindir / "subbench"), *args], cwd=elsewhere, capture_output=True, text=True,
                             env=env, timeout=300)
        assert out.returncode == 0, (args, out.stdout[-2000:], out.stderr[-3000:])
        return out.stdout

    where = subprocess.run([str(bindir / "python"), "-c", "import subbench.resources as r; print(r.tasks_dir())"],
                           cwd=elsewhere, capture_output=True, text=True, env=env, check=True).stdout.strip()
    assert Path(where).is_relative_to(tmp_path / "venv") and where.endswith(os.path.join("_data", "tasks"))
    listed = sb("list", "experiments")
    assert "quickstart" in listed and "[shipped]" in listed
    assert "quickstart" in sb("run", "quickstart", "--dry-run")
    assert "harmful" in sb("list", "traits")
    assert "ok" in sb("leaderboard", "validate", str(toy_results)).lower()
