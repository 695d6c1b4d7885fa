"""Entries crafted by a stranger: paths, numbers, nesting, sizes, duplicates, board litter, kills.

Every entry here is resealed (a valid content hash), so the defences tested are the ones
that do not rely on the hash: safe paths, bounded parsing, bounded recomputation,
measurement identity and the journaled submission.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from toy_plugin import toy_results  # noqa: E402,F401

from subbench.cli import build_cli  # noqa: E402
from subbench.entry import seal  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SAME_INIT = "toy-shift-strength=0.5__toy-copy__toy-a-steacher.json"


def cli(*args):
    return CliRunner().invoke(build_cli(), [str(a) for a in args])


def crash_free(res):
    """A verdict, not a crash: a command ends with its exit or a one-line user error, never anything else."""
    from subbench.errors import SubbenchError

    assert res.exception is None or isinstance(res.exception, (SystemExit, SubbenchError)), repr(res.exception)
    assert "\n" not in str(res.exception or "")
    assert "Traceback" not in res.output
    return res


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def write(path: Path, entry: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(entry, indent=2, sort_keys=True))
    return path


def resealed(toy_results, fn, name=SAME_INIT) -> dict:  # noqa: F811
    e = load(toy_results / "toy" / name)
    fn(e)
    return seal(e)


def escaped(tmp_path: Path, *roots: Path) -> list[Path]:
    """Files whose name carries the marker but lie outside every allowed root."""
    hits = [p for p in tmp_path.parent.rglob("*escaped*")]
    return [p for p in hits if not any(p.resolve().is_relative_to(r.resolve()) for r in roots)]


# -- paths built from entry fields stay under their roots ---------------------------------

def test_traversal_in_entry_fields_cannot_write_outside(toy_results, tmp_path):  # noqa: F811
    src = tmp_path / "in"
    for f in sorted((toy_results / "toy").glob("*.json")):
        e = load(f)
        e["teacher"]["family"] = "../../../escaped-teacher"
        if f.name == SAME_INIT:
            e["student"]["family"] = "/tmp/../../escaped-student"
            e["cell"]["id"] = ".."
        write(src / f.name, seal(e))
    assert crash_free(cli("leaderboard", "validate", src)).exit_code == 0

    out, board = tmp_path / "eee", tmp_path / "board"
    res = crash_free(cli("leaderboard", "export", src, "--out", out))
    assert res.exit_code == 0, res.output
    assert len(list(out.rglob("*.json"))) == 9
    res = crash_free(cli("leaderboard", "submit", src, "--board", board))
    assert res.exit_code == 0, res.output
    res = crash_free(cli("leaderboard", "build", "--board", board))
    assert res.exit_code == 0, res.output
    [plot] = (board / "site").glob("strength-*escaped-teacher.png")  # the family's name, made a plain file name
    assert escaped(tmp_path, out, board) == []
    assert not Path("/tmp/escaped-student").exists()
    assert len(list((board / "entries").rglob("*.json"))) == 9
    assert crash_free(cli("leaderboard", "validate", board)).exit_code == 0  # names on the board are canonical


def test_a_planted_symlink_on_the_board_is_not_followed(toy_results, tmp_path):  # noqa: F811
    board, outside = tmp_path / "board", tmp_path / "outside"
    (board / "entries").mkdir(parents=True)
    outside.mkdir()
    (board / "entries" / "toy").symlink_to(outside, target_is_directory=True)
    res = crash_free(cli("leaderboard", "submit", toy_results, "--board", board))
    assert res.exit_code == 1 and "outside" in res.output
    assert list(outside.iterdir()) == []


def test_safe_join_unit(tmp_path):
    from subbench.errors import SubbenchError
    from subbench.leaderboard.paths import safe_join, slug

    root = Path("/srv/board")
    for part in ("../../../x", "/abs/x", "..", ".hidden", "a/../../b", "\x00", "x" * 500):
        p = safe_join(root, part, "y", suffix=".json")
        assert p.parent.parent == root and not p.parent.name.startswith(".")
    assert slug("toy-shift-strength=0.5__toy-copy__toy-a-steacher") == "toy-shift-strength=0.5__toy-copy__toy-a-steacher"
    assert len(slug("x" * 500)) <= 120 and slug("x" * 500) != slug("x" * 499)
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "link").symlink_to(tmp_path)
    with pytest.raises(SubbenchError, match="outside"):
        safe_join(tmp_path / "root", "link", "x")  # a link under the root that leaves it


# -- validate is total and bounded ---------------------------------------------------------

@pytest.mark.parametrize("replace, expected", [
    ("NaN", "NaN, which is not a JSON number"),
    ("Infinity", "Infinity, which is not a JSON number"),
    ("-Infinity", "-Infinity, which is not a JSON number"),
    ("1e400", "overflows a double"),
    ("9" * 5000, "integer of 5000 digits"),
])
def test_non_finite_and_huge_numbers_are_verdicts(toy_results, tmp_path, replace, expected):  # noqa: F811
    text = (toy_results / "toy" / SAME_INIT).read_text()
    e = load(toy_results / "toy" / SAME_INIT)
    needle = f'"teacher_effect": {json.dumps(e["teacher_effect"])}'
    assert needle in text
    bad = tmp_path / "bad.json"
    bad.write_text(text.replace(needle, f'"teacher_effect": {replace}'))
    res = crash_free(cli("leaderboard", "validate", bad))
    assert res.exit_code == 1 and expected in res.output, res.output
    assert crash_free(cli("compare", bad)).exit_code == 1
    assert crash_free(cli("leaderboard", "submit", bad, "--board", tmp_path / "b")).exit_code == 1


def test_deep_nesting_and_huge_files_are_verdicts(tmp_path, monkeypatch):
    deep = tmp_path / "deep.json"
    deep.write_text('{"a": ' + "[" * 200_000 + "]" * 200_000 + "}")
    t = time.monotonic()
    res = crash_free(cli("leaderboard", "validate", deep))
    assert res.exit_code == 1 and "deeper than 64 levels" in res.output
    assert time.monotonic() - t < 5

    from subbench.leaderboard import entries

    monkeypatch.setattr(entries, "MAX_ENTRY_BYTES", 1 << 20)
    big = tmp_path / "big.json"
    big.write_text('{"x": "' + "a" * (2 << 20) + '"}')
    res = crash_free(cli("leaderboard", "validate", big))
    assert res.exit_code == 1 and "larger than 1 MiB" in res.output


def test_a_resealed_entry_asking_for_1e8_bootstrap_draws_is_refused_fast(toy_results, tmp_path):  # noqa: F811
    bad = write(tmp_path / "boot.json", resealed(toy_results, lambda e: e["analysis"].__setitem__("bootstrap", 10**8)))
    t = time.monotonic()
    res = crash_free(cli("leaderboard", "validate", bad))
    assert res.exit_code == 1 and "analysis.bootstrap 100000000 is more than the 100000" in res.output
    assert time.monotonic() - t < 5


@pytest.mark.parametrize("mutate", [
    lambda e: e.__setitem__("seeds", []),
    lambda e: e["scores"]["base"].__setitem__("samples", [[]]),
    lambda e: e["scores"]["base"].__setitem__("samples", [["x"]]),
    lambda e: e.__setitem__("schema_version", [1]),
    lambda e: e.__setitem__("schema_version", True),
    lambda e: e["analysis"].__setitem__("bootstrap", -1),
    lambda e: e.__setitem__("ci95", [1.0]),
    lambda e: e["scores"].__setitem__("student", {"samples": 1}),
    lambda e: e.__setitem__("experiment", None),
])
def test_malformed_resealed_entries_end_in_a_verdict(toy_results, tmp_path, mutate):  # noqa: F811
    bad = write(tmp_path / "m.json", resealed(toy_results, mutate))
    res = crash_free(cli("leaderboard", "validate", bad))
    assert res.exit_code == 1 and f"{bad}: " in res.output


# -- identity: volatile fields do not make a new measurement -------------------------------

def test_duplicates_differing_only_in_volatile_fields(toy_results, tmp_path):  # noqa: F811
    orig = toy_results / "toy" / SAME_INIT
    twin = write(tmp_path / "twin" / "twin.json", resealed(toy_results, lambda e: (
        e.__setitem__("created", "2031-01-01T00:00:00Z"), e["environment"].__setitem__("python", "9.9"),
        e.__setitem__("git_commit", "deadbeef"))))
    assert load(twin)["content_hash"] != load(orig)["content_hash"]

    res = crash_free(cli("leaderboard", "submit", orig, twin, "--board", tmp_path / "b1"))
    assert res.exit_code == 1 and f"{twin}: duplicate: the same measurement" in res.output
    assert crash_free(cli("leaderboard", "submit", orig, "--board", tmp_path / "b2")).exit_code == 0
    res = crash_free(cli("leaderboard", "submit", twin, "--board", tmp_path / "b2"))
    assert res.exit_code == 1 and "already on the board" in res.output

    data = json.loads(cli("compare", orig, twin, "--rows", "teacher_setting", "--cols", "relation",
                          "--format", "json").output)
    [cell] = data["cells"]
    assert cell["n"] == 1

    from subbench.leaderboard.compare import matrix

    m = matrix([load(orig), load(twin)], "teacher_setting", "relation")
    assert [c.n for c in m.cells.values()] == [1]


# -- what a board holds is what validate and build see -------------------------------------

def test_hidden_and_non_json_files_on_a_board_are_reported(toy_results, tmp_path):  # noqa: F811
    board = tmp_path / "board"
    assert cli("leaderboard", "submit", toy_results, "--board", board).exit_code == 0
    (board / "entries" / ".gitkeep").write_text("")
    assert crash_free(cli("leaderboard", "validate", board)).exit_code == 0
    shutil.copy(toy_results / "toy" / SAME_INIT, board / "entries" / "toy" / ".sneaky.json")
    (board / "entries" / "toy" / "notes.txt").write_text("hi")
    shutil.copy(toy_results / "toy" / SAME_INIT, board / "entries" / "toy" / "renamed.json")
    res = crash_free(cli("leaderboard", "validate", board))
    assert res.exit_code == 1
    assert ".sneaky.json is hidden or not *.json" in res.output and "notes.txt is hidden or not *.json" in res.output
    assert "renamed.json but its content files it as" in res.output
    res = crash_free(cli("leaderboard", "build", "--board", board))
    assert res.exit_code == 1 and "problems on the board" in str(res.exception)


# -- all-or-nothing submission, even when killed ---------------------------------------------

def test_submit_killed_mid_batch_is_finished_by_the_next_submit(toy_results, tmp_path):  # noqa: F811
    board = tmp_path / "board"
    env = {**os.environ, "PYTHONPATH": str(REPO), "SUBBENCH_TEST_SUBMIT_SLEEP": "0.4", "SUBBENCH_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "subbench", "leaderboard", "submit", str(toy_results),
                             "--board", str(board)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            moved = list((board / "entries").rglob("*.json")) if (board / "entries").exists() else []
            if (board / ".submit-pending").exists() and len(moved) >= 2:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the submission never reached its moves")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    partial = list((board / "entries").rglob("*.json"))
    assert 2 <= len(partial) < 9 and (board / ".submit-pending").exists()

    res = crash_free(cli("leaderboard", "submit", toy_results, "--board", board))
    assert res.exit_code == 0, res.output
    assert "left by an interrupted submission" in res.output and "OK: 9 entries filed" in res.output
    assert len(list((board / "entries").rglob("*.json"))) == 9
    assert not [p for p in board.iterdir() if p.name.startswith(".submit")]
    assert crash_free(cli("leaderboard", "validate", board)).exit_code == 0


def test_uncommitted_staging_is_rolled_back(toy_results, tmp_path):  # noqa: F811
    board = tmp_path / "board"
    stage = board / ".submit-424242.tmp"
    stage.mkdir(parents=True)
    shutil.copy(toy_results / "toy" / SAME_INIT, stage / "000000.json")
    (board / "entries").mkdir()
    assert crash_free(cli("leaderboard", "build", "--board", board)).exit_code == 0  # opening the board rolls back
    assert not stage.exists() and list((board / "entries").iterdir()) == []
    assert cli("leaderboard", "submit", toy_results, "--board", board).exit_code == 0
    assert len(list((board / "entries").rglob("*.json"))) == 9


def test_build_cleans_temporary_dirs_of_dead_builds(toy_results, tmp_path):  # noqa: F811
    board = tmp_path / "board"
    assert cli("leaderboard", "submit", toy_results, "--board", board).exit_code == 0
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for name in (f".site.tmp-{dead.pid}", f".site.old-{dead.pid}"):
        (board / name / "assets").mkdir(parents=True)
    alive = board / f".site.tmp-{os.getppid()}"  # a live pid, recent: another build in progress
    alive.mkdir()
    res = crash_free(cli("leaderboard", "build", "--board", board))
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in board.iterdir()) == sorted(["entries", "site", alive.name])


# -- compare facets ---------------------------------------------------------------------------

def test_compare_does_not_pool_different_distillations_unless_asked(toy_results, tmp_path):  # noqa: F811
    other = write(tmp_path / "d" / "sft.json", resealed(toy_results, lambda e: e["cell"].__setitem__(
        "distillation", "toy-sft")))
    mixed = [toy_results, other]
    data = json.loads(cli("compare", *mixed, "--format", "json").output)
    assert {f["distillation"] for f in data["facets"]} == {"toy-copy", "toy-sft"}
    assert all(c["facet"]["distillation"] in ("toy-copy", "toy-sft") for c in data["cells"])
    assert data["pooled_over"] == {}
    table = cli("compare", *mixed).output
    assert "== distillation=toy-copy," in table and "== distillation=toy-sft," in table

    pooled = cli("compare", *mixed, "--pool")
    assert pooled.exit_code == 0
    assert "POOLED (--pool) across distillation (toy-copy, toy-sft)" in pooled.output
    assert json.loads(cli("compare", *mixed, "--pool", "--format", "json").output)["pooled_over"] == {
        "distillation": ["toy-copy", "toy-sft"]}
    png = tmp_path / "facets.png"
    assert cli("compare", *mixed, "--plot", png).exit_code == 0 and png.stat().st_size > 5000
