"""Registry, plugin loading, artifact store, overrides and the transfer-ratio maths."""

import json
import os
import subprocess
import sys
import types

import pytest
from click.testing import CliRunner

from subbench import hookimpl
from subbench.artifacts import ArtifactStore
from subbench.components import Injector, Judge
from subbench.config import apply_overrides, resolve_seed
from subbench.errors import ConfigError, SubbenchError, UnknownName
from subbench.metrics import transfer_ratio
from subbench.plugins import PluginManager


class Nudge(Injector):
    name = "nudge"
    description = "test injector"
    defaults = {"strength": 1.0}


class Coin(Judge):
    name = "coin-judge"


def _plugin(**hooks):
    mod = types.ModuleType("throwaway_plugin")
    for name, fn in hooks.items():
        setattr(mod, name, hookimpl(fn))
    return mod


@pytest.fixture
def throwaway(pm):
    def register_injectors(register):
        register(Nudge())

    def register_judges(register):
        register(Coin())

    pm.register_plugin(_plugin(register_injectors=register_injectors, register_judges=register_judges), name="throwaway")
    yield pm
    pm.unregister_plugin("throwaway")


def test_throwaway_plugin_registers_and_unregisters(throwaway):
    assert throwaway.get("injectors", "nudge").plugin == "throwaway"
    info = throwaway.infos["throwaway"]
    assert info.registered == {"injectors": ["nudge"], "judges": ["coin-judge"]}
    assert info.hooks == ["register_injectors", "register_judges"]
    throwaway.unregister_plugin("throwaway")
    assert "nudge" not in throwaway.registry("injectors")
    # re-register for the fixture's teardown
    throwaway.register_plugin(_plugin(register_injectors=lambda register: register(Nudge())), name="throwaway")


def test_cli_lists_throwaway_plugin(throwaway):
    from subbench.cli import cli

    out = CliRunner().invoke(cli, ["plugins", "--json"])
    assert out.exit_code == 0, out.output
    infos = {i["name"]: i for i in json.loads(out.output)}
    assert infos["throwaway"]["registered"]["injectors"] == ["nudge"]
    out = CliRunner().invoke(cli, ["list", "injectors"])
    assert "nudge" in out.output and "[throwaway]" in out.output


def test_broken_plugin_is_reported_not_raised():
    pm = PluginManager()

    def register_judges(register):
        raise RuntimeError("boom")

    info = pm.register_plugin(_plugin(register_judges=register_judges), name="broken")
    assert "register_judges failed: RuntimeError: boom" in info.error
    info = pm.register_plugin(_plugin(register_judges=lambda register: register(object())), name="wrongtype")
    assert "not a subbench.components.Judge" in info.error


def test_broken_builtin_import_is_listed(monkeypatch):
    import subbench.plugins as plugins

    monkeypatch.setattr(plugins, "DEFAULT_PLUGINS", ("subbench.no_such_module",))
    pm = PluginManager().load()
    assert pm.infos["no_such_module"].error.startswith("import failed: ModuleNotFoundError")


def test_broken_entry_point_plugin_does_not_crash_cli(tmp_path):
    """A real installed distribution whose module raises on import: `subbench plugins` reports it."""
    dist = tmp_path / "site"
    info = dist / "subbench_brokenplug-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: subbench-brokenplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[subbench]\nbrokenplug = subbench_brokenplug\n")
    (dist / "subbench_brokenplug.py").write_text("raise ImportError('missing dependency xyz')\n")
    env = dict(os.environ, PYTHONPATH=str(dist))
    env.pop("SUBBENCH_LOAD_PLUGINS", None)
    run = subprocess.run([sys.executable, "-m", "subbench", "plugins", "--json"], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    infos = {i["name"]: i for i in json.loads(run.stdout)}
    assert infos["brokenplug"]["error"] == "import failed: ImportError: missing dependency xyz"
    assert infos["brokenplug"]["version"] == "0.1"
    # allow-list: empty means no third-party plugins; disable list removes it too
    env["SUBBENCH_LOAD_PLUGINS"] = ""
    run = subprocess.run([sys.executable, "-m", "subbench", "plugins", "--json"], capture_output=True, text=True, env=env)
    assert "brokenplug" not in {i["name"] for i in json.loads(run.stdout)}
    env.pop("SUBBENCH_LOAD_PLUGINS")
    env["SUBBENCH_DISABLE_PLUGINS"] = "brokenplug"
    run = subprocess.run([sys.executable, "-m", "subbench", "plugins", "--json"], capture_output=True, text=True, env=env)
    assert "brokenplug" not in {i["name"] for i in json.loads(run.stdout)}


def test_unknown_name_suggests(throwaway):
    with pytest.raises(UnknownName) as exc:
        throwaway.get("injectors", "nudg")
    assert str(exc.value).startswith("Unknown injector 'nudg'. Did you mean: nudge?")


def test_duplicate_registration_is_an_error():
    pm = PluginManager()
    pm.register_plugin(_plugin(register_judges=lambda register: register(Coin())), name="a")
    info = pm.register_plugin(_plugin(register_judges=lambda register: register(Coin())), name="b")
    assert "registered twice" in info.error


def test_params_are_validated():
    with pytest.raises(ConfigError, match="unknown parameter 'strenght' for injector 'nudge'. Did you mean: strength"):
        Nudge().resolve_params({"strenght": 2})
    assert Nudge().resolve_params({"strength": 2}) == {"strength": 2}


def test_overrides():
    raw = {"domain": {"size": 10}, "students": [{"family": "a", "seed": 1}]}
    out = apply_overrides(raw, ["domain.size=500", "students.0.seed=teacher+1", "seeds=[0, 1]"], "x.yaml")
    assert out == {"domain": {"size": 500}, "students": [{"family": "a", "seed": "teacher+1"}], "seeds": [0, 1]}
    assert raw["domain"]["size"] == 10
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_overrides(raw, ["domain.size"], "x.yaml")
    with pytest.raises(ConfigError, match="not an index"):
        apply_overrides(raw, ["students.3.seed=1"], "x.yaml")


def test_seed_expressions():
    assert resolve_seed("teacher+1000", teacher=3) == 1003
    assert resolve_seed("seed", seed=4) == 4
    assert resolve_seed(7) == 7
    with pytest.raises(ValueError):
        resolve_seed("teacher-1", teacher=0)


def test_artifact_store_is_atomic_and_cached(tmp_path):
    store = ArtifactStore(tmp_path)
    calls = []

    def work(tmp):
        calls.append(1)
        (tmp / "x.txt").write_text("hi")
        return {"n": 1}

    a = store.produce("stage", {"k": 1}, work)
    b = store.produce("stage", {"k": 1}, work)
    assert calls == [1] and b.cached and b.result == {"n": 1} and (b.path / "x.txt").read_text() == "hi"

    def crash(tmp):
        (tmp / "half.txt").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.produce("stage", {"k": 2}, crash)
    assert [p.name for p in (tmp_path / "stage").iterdir()] == [a.key]
    fresh = ArtifactStore(tmp_path, fresh=True)
    c = fresh.produce("stage", {"k": 1}, work)
    assert calls == [1, 1] and not c.cached
    assert fresh.produce("stage", {"k": 1}, work).cached  # recomputed once per run, not twice


def test_stale_tmp_dirs_are_removed(tmp_path):
    (tmp_path / "stage" / ".tmp-abc-1").mkdir(parents=True)
    ArtifactStore(tmp_path)
    assert not (tmp_path / "stage" / ".tmp-abc-1").exists()


def test_transfer_ratio_known_inputs():
    base = [[0.0] * 10]
    teacher = [[1.0] * 10]
    control = [[0.1] * 10]
    student = [[0.6] * 10]
    r = transfer_ratio(base, teacher, control, student, n_boot=200)
    assert r.ratio == pytest.approx(0.5)
    assert r.ci95 == pytest.approx((0.5, 0.5))  # no variance, no width
    noisy = transfer_ratio([[0, 0, 1, 0]], [[1, 1, 1, 0]], [[0, 1, 0, 0]], [[1, 1, 0, 1]], n_boot=500, seed=1)
    assert noisy.ratio == pytest.approx((0.75 - 0.25) / (0.75 - 0.25))
    lo, hi = noisy.ci95
    assert lo < noisy.ratio < hi
    again = transfer_ratio([[0, 0, 1, 0]], [[1, 1, 1, 0]], [[0, 1, 0, 0]], [[1, 1, 0, 1]], n_boot=500, seed=1)
    assert again.ci95 == noisy.ci95  # seeded: anyone recomputes the same interval


def test_transfer_ratio_over_seeds():
    base = [[0.1, 0.1], [0.1, 0.1]]
    teacher = [[0.9, 0.9], [0.5, 0.5]]
    control = [[0.1, 0.1], [0.1, 0.1]]
    student = [[0.5, 0.5], [0.3, 0.3]]
    r = transfer_ratio(base, teacher, control, student, n_boot=300)
    assert r.ratio == pytest.approx((0.4 - 0.1) / (0.7 - 0.1))
    lo, hi = r.ci95
    assert 0.3 < lo <= r.ratio <= hi < 0.6


def test_transfer_ratio_null_when_teacher_has_no_effect():
    r = transfer_ratio([[0.1]], [[0.12]], [[0.1]], [[0.5]], min_effect=0.05)
    assert r.ratio is None and r.ci95 is None
    assert "below min_teacher_effect 0.05" in r.note


def test_help_is_fast_and_light():
    code = "import sys, subbench.cli; subbench.cli.build_cli(); print(sorted(m for m in ('torch','transformers','lm_eval','trl','matplotlib','sklearn') if m in sys.modules))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.stdout.strip() == "[]", run.stdout + run.stderr


def test_subbench_error_is_one_line(tmp_path):
    run = subprocess.run([sys.executable, "-m", "subbench", "run", "no-such-experiment"], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0 and run.stderr.startswith("Error: Unknown experiment 'no-such-experiment'.")
