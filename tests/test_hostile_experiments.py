"""Hostile experiment files end in one clear line and exit 2: no traceback, hang, unbounded memory or write.

Each case goes through the real entry point (``subbench.cli.main``) from an empty working
directory; the alias bomb also runs in a subprocess to bound its time and memory.
"""

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from subbench.cli import main

GOOD = """name: hostile
teacher: {family: tiny-llama, seed: 0}
trait: {name: animal-preference, target: owl}
injector: {name: system-prompt}
domain: {name: numbers, size: 10}
students: [{family: tiny-llama, seed: teacher}]
distillers: [{name: sft}]
judge: logprob
"""
BOMB = "".join(
    [f"l0: &l0 [{', '.join(['lol'] * 9)}]\n"]
    + [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 10)]
)


@pytest.fixture
def cwd(tmp_path, monkeypatch):
    """An empty working directory (with the experiments kept elsewhere) and an unused workdir."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("SUBBENCH_WORKDIR", str(tmp_path / "wd"))
    monkeypatch.delenv("SUBBENCH_ALLOW_LARGE", raising=False)
    return work


def run_cli(capsys, args):
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def assert_refused(capsys, cwd, args, *needles):
    code, out, err = run_cli(capsys, args)
    lines = err.strip().splitlines()
    assert code == 2, (code, out, err)
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    assert "Traceback" not in err and out == ""
    for needle in needles:
        assert needle in err, err
    assert list(cwd.iterdir()) == [] and not (cwd.parent / "wd").exists()
    return err


def write(path: Path, content) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return str(path)


def test_the_good_file_passes(capsys, cwd, tmp_path):
    code, out, err = run_cli(capsys, ["run", write(tmp_path / "x" / "good.yaml", GOOD), "--dry-run"])
    assert code == 0 and "experiment hostile" in out, err


def test_alias_bomb_is_refused_in_bounded_time_and_memory(tmp_path):
    path = write(tmp_path / "x" / "bomb.yaml", BOMB + GOOD.replace("name: hostile", "name: hostile\ndescription: *l9"))
    code = ("import resource, sys; from subbench.cli import main\n"
            "resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))\n"
            f"main(['run', {path!r}, '--dry-run'])")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                          env=env)
    elapsed = time.monotonic() - start
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "aliases are expanded" in proc.stderr
    assert elapsed < 20
    assert resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss < 1_000_000  # KiB: under 1 GB


def test_alias_bomb_in_process_and_in_set(capsys, cwd, tmp_path):
    path = write(tmp_path / "x" / "bomb.yaml", BOMB + GOOD.replace("name: hostile", "name: hostile\ndescription: *l9"))
    assert_refused(capsys, cwd, ["run", path, "--dry-run"], "bomb.yaml: refused", "aliases are expanded")
    good = write(tmp_path / "x" / "good.yaml", GOOD)
    assert_refused(capsys, cwd, ["run", good, "--dry-run", "--set", "description=" + BOMB.replace("\n", ", ").join("{}")],
                   "--set description: refused")


def test_deep_include_chain(capsys, cwd, tmp_path):
    d = tmp_path / "chain"
    for i in range(2000):
        write(d / f"f{i}.yaml", f"include: f{i + 1}.yaml\n" if i < 1999 else GOOD)
    assert_refused(capsys, cwd, ["run", str(d / "f0.yaml"), "--dry-run"], "chain deeper than 32 files")


def test_include_fan_out_is_bounded(capsys, cwd, tmp_path):
    d = tmp_path / "fan"
    for i in range(6):
        write(d / f"f{i}.yaml", "include: [" + ", ".join([f"f{i + 1}.yaml"] * 8) + "]\n")
    write(d / "f6.yaml", GOOD)
    assert_refused(capsys, cwd, ["run", str(d / "f0.yaml"), "--dry-run"], "more than 256 files")


@pytest.mark.parametrize("value", ["5", "{a: 1}", "[]", "[5]", "true"])
def test_include_must_name_files(capsys, cwd, tmp_path, value):
    path = write(tmp_path / "x" / "inc.yaml", f"include: {value}\n" + GOOD)
    assert_refused(capsys, cwd, ["run", path, "--dry-run"], "include: expected a file name or a list of file names")


@pytest.mark.parametrize(
    "content,needle",
    [
        (b"name: caf\xe9\n" + GOOD.encode(), "is not UTF-8 text"),
        (bytes(range(256)) * 4, "is a binary file"),
        (b"\x7fELF\x02\x01\x01" + b"\x00" * 100, "is a binary file"),
        ("- teacher\n- trait\n", "an experiment must be a mapping of fields (teacher:, trait:, ...), got a list"),
        ("42\n", "got a int (42)"),
        ("just a sentence\n", "an experiment must be a mapping"),
        ("[" * 5000 + "]" * 5000, "nested deeper than 64 levels"),
        ("a: [1, 2\nb: ]]\n", "is not valid YAML"),
        ("!!python/object/apply:os.system [echo hi]\n", "is not valid YAML"),
        ("seeds: [" + ", ".join(str(i) for i in range(200_000)) + "]\n", "more than an experiment file may hold"),
    ],
)
def test_unreadable_files(capsys, cwd, tmp_path, content, needle):
    path = write(tmp_path / "x" / "bad.yaml", content)
    assert_refused(capsys, cwd, ["run", path, "--dry-run"], needle)


@pytest.mark.parametrize(
    "sets,needle",
    [
        (["distillers.0.params.lr=.nan"], "distillers[0].params.lr: expected a number in (0, 10], got nan."),
        (["distillers.0.params.lr=.inf"], "distillers[0].params.lr: expected a number in (0, 10], got inf."),
        (["distillers.0.params.lr=1e400"], "got inf."),
        (["distillers.0.params.epochs=1e9"], "distillers[0].params.epochs: expected a number in (0, 1000]"),
        (["teacher.params={hidden_size: 1e9}"], "teacher.params.hidden_size: expected an integer in [4, 4096], got 1000000000.0."),
        (["teacher.params={hidden_size: 1000000000}"], "teacher.params.hidden_size: expected an integer in [4, 4096]"),
        (["domain.size=1000000000000"], "domain.size: expected an integer in [1, 10000000], got 1000000000000."),
        (["domain.size=1e12"], "domain.size: expected an integer"),
        (["seeds=[100000000000000000000000]"], "seeds[0]: expected an integer in [0, 2147483647]"),
        (["seeds=[-1]"], "seeds[0]: expected an integer in [0, 2147483647], got -1."),
        (["seeds=[" + ",".join(map(str, range(1001))) + "]"], "seeds: expected at most 1000 items, got 1001."),
        (["teacher.seed=seed+2147483647", "seeds=[5]"], "teacher.seed: 'seed+2147483647' gives 2147483652"),
        (["teacher.seed=100000000000000000000000"], "teacher.seed: expected an integer in [0, 2147483647]"),
        (["analysis={bootstrap: '1000'}"], "analysis.bootstrap: expected an integer in [100, 100000], got '1000'."),
        (["analysis={bootstrap: 1.5}"], "analysis.bootstrap: expected an integer in [100, 100000], got 1.5."),
        (["analysis={bootstrap: -5}"], "got -5."),
        (["analysis={bootstrap: true}"], "got true."),
        (["analysis={bootstrap: 1e8}"], "got 100000000.0."),
        (["analysis={bootstrap: 100000000}"], "got 100000000."),
        (["analysis={min_teacher_effect: .nan}"], "analysis.min_teacher_effect: expected a number in [0, 1], got nan."),
        (["analysis={min_teacher_effect: 2}"], "analysis.min_teacher_effect: expected a number in [0, 1], got 2."),
        (["analysis={bootstrap_seed: 4294967296}"], "analysis.bootstrap_seed: expected an integer in [0, 2147483647]"),
        (["injector={name: steering, params: {strength: [" + ",".join(["1"] * 200) + "], layer: ["
          + ",".join(["0"] * 200) + "]}}"], "more than 10000 teacher settings"),
        (["students=[" + ",".join(["tiny-llama"] * 101) + "]"], "students: expected at most 100 items, got 101."),
        (["domain.size=5000000", "seeds=[0,1,2]"], "refused: the run needs about 30,000,000 generated samples"),
        (["teacher.params={hidden_size: 4096, intermediate_size: 16384, layers: 64, heads: 64}"],
         "set SUBBENCH_ALLOW_LARGE=1 to build it anyway"),
        (["trait.params.n=0"], "trait.params.n: expected an integer in [1, 1000000] or null, got 0."),
        (["judge={name: first-word, params: {skip_articles: 1}}"], "judge.params.skip_articles: expected true or false, got 1."),
    ],
)
def test_bad_values(capsys, cwd, tmp_path, sets, needle):
    path = write(tmp_path / "x" / "exp.yaml", GOOD)
    args = ["run", path, "--dry-run"]
    for s in sets:
        args += ["--set", s]
    assert_refused(capsys, cwd, args, needle)


def test_the_size_override_lets_a_large_run_through(capsys, cwd, tmp_path, monkeypatch):
    path = write(tmp_path / "x" / "exp.yaml", GOOD)
    args = ["run", path, "--dry-run", "--set", "domain.size=5000000", "--set", "seeds=[0,1,2]"]
    monkeypatch.setenv("SUBBENCH_ALLOW_LARGE", "1")
    code, out, err = run_cli(capsys, args)
    assert code == 0 and "x5000000" in out, err
    monkeypatch.setenv("SUBBENCH_ALLOW_LARGE", "maybe")
    assert_refused(capsys, cwd, args, "SUBBENCH_ALLOW_LARGE must be 1 or 0, got 'maybe'.")


@pytest.mark.parametrize(
    "env,needle",
    [
        ({"SUBBENCH_JOBS": "abc"}, "SUBBENCH_JOBS must be a whole number from 1 to 1024, got 'abc'"),
        ({"SUBBENCH_JOBS": "0"}, "SUBBENCH_JOBS must be a whole number"),
        ({"SUBBENCH_THREADS": "abc"}, "SUBBENCH_THREADS must be a whole number from 1 to 1024, got 'abc'"),
        ({"SUBBENCH_THREADS": "1e9"}, "SUBBENCH_THREADS must be a whole number"),
    ],
)
def test_bad_environment(capsys, cwd, tmp_path, monkeypatch, env, needle):
    path = write(tmp_path / "x" / "exp.yaml", GOOD)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert_refused(capsys, cwd, ["run", path, "--dry-run"], needle)
    assert_refused(capsys, cwd, ["run", path], needle)


@pytest.mark.parametrize("option", ["--workdir", "--out"])
def test_unwritable_directories(capsys, cwd, tmp_path, option):
    path = write(tmp_path / "x" / "exp.yaml", GOOD)
    err = assert_refused(capsys, cwd, ["run", path, option, "/dev/null/x"], f"{option} /dev/null/x: /dev/null is not a directory")
    assert "choose a directory" in err


def test_list_params_for_experiments_is_one_line(capsys, cwd):
    assert_refused(capsys, cwd, ["list", "experiments", "--params"], "--params lists a component's parameters")
