"""The artifact store against damage and company: corrupted files, broken meta.json, two runs on one workdir."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from subbench.artifacts import META, QUARANTINE, ArtifactStore
from subbench.cli import build_cli
from subbench.config import load_experiment
from subbench.errors import ConfigError
from toy_plugin import registered, toy_plugin, write_experiment  # noqa: F401 (a fixture)

REPO = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent


def _produce(store, calls, inputs=None, payload=b"weights" * 100):
    def fn(tmp):
        calls.append(1)
        (tmp / "model.bin").write_bytes(payload)
        (tmp / "sub").mkdir()
        (tmp / "sub" / "config.json").write_text("{}")
        return {"sha256": "x"}

    return store.produce("base", inputs or {"family": "f", "seed": 0}, fn)


def test_flipped_byte_in_weights_is_quarantined_and_rebuilt(tmp_path, capfd):
    calls = []
    art = _produce(ArtifactStore(tmp_path), calls)
    meta = json.loads((art.path / META).read_text())
    assert set(meta["files"]) == {"model.bin", "sub/config.json"}
    assert _produce(ArtifactStore(tmp_path), calls).cached and len(calls) == 1

    blob = bytearray((art.path / "model.bin").read_bytes())
    blob[10] ^= 0xFF  # same size: only the sha256 can tell
    (art.path / "model.bin").write_bytes(bytes(blob))
    again = _produce(ArtifactStore(tmp_path), calls)
    assert not again.cached and len(calls) == 2
    assert (again.path / "model.bin").read_bytes() == b"weights" * 100
    moved = list((tmp_path / QUARANTINE / "base").iterdir())
    assert len(moved) == 1 and moved[0].name.startswith(art.key)
    assert (moved[0] / "model.bin").read_bytes() == bytes(blob)  # kept for inspection
    err = capfd.readouterr().err
    assert "model.bin does not match its recorded sha256" in err and "rebuilding" in err
    assert len([line for line in err.splitlines() if "failed its check" in line]) == 1


@pytest.mark.parametrize("damage", ["truncate", "empty", "not-a-dict", "other-inputs", "missing-file", "shorter-file"])
def test_damaged_artifacts_are_rebuilt_without_a_traceback(tmp_path, damage):
    calls = []
    art = _produce(ArtifactStore(tmp_path), calls)
    meta_file = art.path / META
    text = meta_file.read_text()
    if damage == "truncate":
        meta_file.write_text(text[: len(text) // 2])
    elif damage == "empty":
        meta_file.write_text("")
    elif damage == "not-a-dict":
        meta_file.write_text("[1, 2]")
    elif damage == "other-inputs":
        meta = json.loads(text)
        meta["inputs"]["seed"] = 1
        meta_file.write_text(json.dumps(meta))
    elif damage == "missing-file":
        (art.path / "sub" / "config.json").unlink()
    else:
        (art.path / "model.bin").write_bytes(b"weights")
    again = _produce(ArtifactStore(tmp_path), calls)
    assert not again.cached and len(calls) == 2
    assert json.loads((again.path / META).read_text())["inputs"] == {"family": "f", "seed": 0}
    assert len(list((tmp_path / QUARANTINE / "base").iterdir())) == 1


def test_large_artifacts_are_hashed_before_a_stage_runs(tmp_path, monkeypatch):
    import subbench.artifacts as artifacts
    from subbench.errors import SubbenchError

    calls = []
    art = _produce(ArtifactStore(tmp_path), calls)
    monkeypatch.setattr(artifacts, "VERIFY_MAX_BYTES", 10)  # every artifact counts as large
    blob = bytearray((art.path / "model.bin").read_bytes())
    blob[0] ^= 1
    (art.path / "model.bin").write_bytes(bytes(blob))
    store = ArtifactStore(tmp_path)
    assert store.lookup("base", {"family": "f", "seed": 0}) is not None  # sizes only: a cheap lookup
    with pytest.raises(SubbenchError, match="corrupted .*run the same command again"):
        store.verify_pending()
    assert not art.path.exists() and (tmp_path / QUARANTINE / "base").is_dir()


def test_legacy_artifact_sha256_is_checked(tmp_path):
    """Artifacts written before manifests carry only result.sha256 (of the weights)."""
    from subbench.hashing import sha256_file

    calls = []
    art = _produce(ArtifactStore(tmp_path), calls)
    meta = json.loads((art.path / META).read_text())
    del meta["files"]
    meta["result"]["sha256"] = sha256_file(art.path / "model.bin")
    (art.path / META).write_text(json.dumps(meta))
    assert _produce(ArtifactStore(tmp_path), calls).cached
    (art.path / "model.bin").write_bytes(b"other bytes")
    assert not _produce(ArtifactStore(tmp_path), calls).cached and len(calls) == 2


RACER = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    from subbench.artifacts import ArtifactStore

    root, counter = Path(sys.argv[1]), Path(sys.argv[2])
    store = ArtifactStore(root)
    out = []
    for i in range(3):
        def fn(tmp, i=i):
            with open(counter, "a") as f:
                f.write(f"{i} {os.getpid()}\\n")
            time.sleep(0.8)
            (tmp / "value.txt").write_text(f"value {i}")
            return {"i": i}
        art = store.produce("slow", {"i": i}, fn)
        out.append([art.key, str(art.path), (art.path / "value.txt").read_text(), art.cached])
    print(json.dumps(out))
""")


def _racers(tmp_path, n=2):
    script = tmp_path / "racer.py"
    script.write_text(RACER)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return [subprocess.Popen([sys.executable, str(script), str(tmp_path / "store"), str(tmp_path / "count")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(n)]


def test_two_processes_racing_produce_each_key_once(tmp_path):
    procs = _racers(tmp_path)
    results = [p.communicate(timeout=60) for p in procs]
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0 and "Traceback" not in err, err
    runs = (tmp_path / "count").read_text().split()
    keys_made = runs[0::2]
    assert sorted(keys_made) == ["0", "1", "2"], runs  # each key produced exactly once
    a, b = (json.loads(out) for out, _ in results)
    assert [x[:3] for x in a] == [x[:3] for x in b]  # same artifacts, same contents
    assert sum(x[3] for x in a + b) == 3  # the other three were reuses
    assert "being produced by another process; waiting" in results[0][1] + results[1][1]
    assert not [p for p in (tmp_path / "store" / "slow").iterdir() if p.name.startswith(".tmp-")]


def test_cleanup_spares_live_producers_and_removes_dead_ones(tmp_path):
    store_dir = tmp_path / "store"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = store_dir / "slow" / f".tmp-{'0' * 16}-{dead.stdout.strip()}"
    stale.mkdir(parents=True)
    (procs := _racers(tmp_path, 1))
    deadline = time.time() + 30
    while not list((store_dir / "slow").glob(".tmp-*-%d" % procs[0].pid)):
        assert time.time() < deadline and procs[0].poll() is None, procs[0].communicate()
        time.sleep(0.05)
    live = list((store_dir / "slow").glob(".tmp-*-%d" % procs[0].pid))[0]
    ArtifactStore(store_dir)  # a second run starting up cleans the store
    assert live.exists() and not stale.exists()
    out, err = procs[0].communicate(timeout=60)
    assert procs[0].returncode == 0, err
    assert [x[2] for x in json.loads(out)] == ["value 0", "value 1", "value 2"]


TOY_CLI = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from toy_plugin import ToyPlugin
    from subbench.plugins import get_manager
    get_manager().register_plugin(ToyPlugin(), name="toy")
    from subbench.cli import main
    main(sys.argv[1:])
""")


def test_two_runs_on_one_workdir_run_each_stage_once(tmp_path):
    exp = write_experiment(tmp_path, strengths=(0.0, 1.0))
    script = tmp_path / "toy_cli.py"
    script.write_text(TOY_CLI.format(tests=str(TESTS)))
    env = dict(os.environ, PYTHONPATH=str(REPO), SUBBENCH_JOBS="1")

    def cmd(work, out):
        return [sys.executable, str(script), "run", str(exp), "--workdir", str(work), "--out", str(out)]

    procs = [subprocess.Popen(cmd(tmp_path / "shared", tmp_path / f"out{i}"), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for i in range(2)]
    outs = [p.communicate(timeout=180) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0 and "Traceback" not in err, err
    alone = subprocess.run(cmd(tmp_path / "alone", tmp_path / "out-alone"), capture_output=True, text=True, env=env)
    assert alone.returncode == 0, alone.stderr

    def counts(text):
        tail = text.split("entries written to")[1]
        return int(tail.split(" stages run")[0].split("(")[1]), int(tail.split(" cached")[0].split(", ")[-1])

    needed, looked_up = counts(alone.stdout)
    (r0, c0), (r1, c1) = counts(outs[0][0]), counts(outs[1][0])
    assert r0 + r1 == needed and r0 + c0 == r1 + c1 == needed + looked_up, (outs, needed)
    for name in os.listdir(tmp_path / "out-alone" / "toy"):
        a = json.loads((tmp_path / "out0" / "toy" / name).read_text())
        b = json.loads((tmp_path / "out1" / "toy" / name).read_text())
        assert a["scores"] == b["scores"] and a["artifacts"] == b["artifacts"]


STUDENTS = """\
name: {name}
teacher: {{family: toy-a, seed: seed}}
trait: {{name: toy-love, target: owl}}
injector: {{name: toy-shift, params: {{strength: 1.0}}}}
domain: {{name: toy-numbers, size: 30}}
students:
{students}
distillation: toy-copy
seeds: [0]
analysis: {{bootstrap: 200}}
"""


def test_students_with_other_params_get_their_own_cell(tmp_path, toy_plugin):
    students = "  - {family: toy-a, seed: teacher}\n  - {family: toy-a, seed: teacher, params: {bias: 0.5}}"
    path = tmp_path / "twins.yaml"
    path.write_text(STUDENTS.format(name="twins", students=students))
    res = CliRunner().invoke(build_cli(), ["run", str(path), "--workdir", str(tmp_path / "w"),
                                           "--out", str(tmp_path / "out"), "--json", "-q"])
    assert res.exit_code == 0, res.output
    entries = json.loads(res.output[res.output.index("["):])
    files = sorted(p.name for p in (tmp_path / "out" / "twins").iterdir())
    assert len(entries) == 2 and len(files) == 2 and entries[0]["cell"]["id"] != entries[1]["cell"]["id"]
    by_bias = {e["student"]["relation"]: e for e in entries}
    assert set(by_bias) == {"same-init", "cross-architecture"}  # another base than the teacher's: not same-init


def test_identical_students_are_refused(tmp_path, toy_plugin):
    students = "  - {family: toy-a, seed: teacher}\n  - {family: toy-a, seed: teacher+0, params: {bias: 0.0}}"
    path = tmp_path / "dup.yaml"
    path.write_text(STUDENTS.format(name="dup", students=students))
    with pytest.raises(ConfigError, match=r"students\[1\]: is the same student as students\[0\]"):
        load_experiment(str(path))


def test_toy_run_rebuilds_a_corrupted_base(tmp_path):
    exp = write_experiment(tmp_path, strengths=(1.0,))
    args = ["run", str(exp), "--workdir", str(tmp_path / "w"), "-q"]
    with registered():
        first = CliRunner().invoke(build_cli(), args + ["--out", str(tmp_path / "a")])
        assert first.exit_code == 0, first.output
        model = next((tmp_path / "w" / "artifacts" / "base").glob("*/model.json"))
        model.write_text(model.read_text().replace('"bias": 0.0', '"bias": 9.0'))  # same length
        meta = next((tmp_path / "w" / "artifacts" / "score").glob(f"*/{META}"))
        meta.write_text(meta.read_text()[:40])
        again = CliRunner().invoke(build_cli(), args + ["--out", str(tmp_path / "b")])
    assert again.exit_code == 0, again.output
    assert "(2 stages run" in again.output and again.output.count("failed its check") == 2, again.output
    for name in os.listdir(tmp_path / "a" / "toy"):
        a = json.loads((tmp_path / "a" / "toy" / name).read_text())
        b = json.loads((tmp_path / "b" / "toy" / name).read_text())
        assert a["scores"] == b["scores"]
    assert len(list((tmp_path / "w" / "artifacts" / QUARANTINE).rglob(META))) >= 1
