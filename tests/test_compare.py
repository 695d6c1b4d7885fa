"""`subbench compare`: the cross-architecture matrix, its formats, pooling and plot."""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from toy_plugin import toy_results  # noqa: E402,F401

from subbench.cli import build_cli  # noqa: E402


def cli(*args):
    return CliRunner().invoke(build_cli(), [str(a) for a in args])


def entries(results: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(results.rglob("*.json"))]


def test_default_matrix_is_teacher_by_student(toy_results):  # noqa: F811
    res = cli("compare", toy_results)
    assert res.exit_code == 0, res.output
    facet, head = res.output.splitlines()[0:2]
    assert facet == "== distillation=toy-copy, judge=toy-match, domain=toy-numbers, trait=toy-love:owl, mitigation=none =="
    assert head.split()[0:3] == ["teacher", "\\", "student"]
    for col in ("toy-a (cross-init)", "toy-a (same-init)", "toy-b (cross-architecture)"):
        assert col in head
    assert "pooling: mean of the entries' values" in res.output
    assert "n=2 (+1 null)" in res.output  # strengths 0.5 and 1.0 pooled, strength 0 has a null ratio


def test_json_pools_mean_of_ratios_with_normal_ci(toy_results):  # noqa: F811
    res = cli("compare", toy_results, "--format", "json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["row_dimension"] == "teacher" and data["col_dimension"] == "student"
    cell = next(c for c in data["cells"] if c["col"] == "toy-a (same-init)")
    pooled = [e for e in entries(toy_results)
              if e["student"]["relation"] == "same-init" and e["transfer_ratio"] is not None]
    assert cell["n"] == len(pooled) == 2 and cell["n_null"] == 1
    assert math.isclose(cell["value"], sum(e["transfer_ratio"] for e in pooled) / 2)
    z = 1.959963984540054
    se = math.sqrt(sum(((e["ci95"][1] - e["ci95"][0]) / (2 * z)) ** 2 for e in pooled)) / 2
    assert cell["ci95"] == pytest.approx([cell["value"] - z * se, cell["value"] + z * se])
    assert len(cell["entries"]) == 3


def test_single_entry_cell_keeps_its_bootstrap_ci(toy_results):  # noqa: F811
    res = cli("compare", toy_results, "--rows", "teacher_setting", "--cols", "relation", "--format", "json")
    data = json.loads(res.output)
    by = {(c["row"], c["col"]): c for c in data["cells"]}
    assert len(by) == 9
    e = next(e for e in entries(toy_results)
             if e["cell"]["teacher_setting"] == "strength=1.0" and e["student"]["relation"] == "same-init")
    c = by[("strength=1.0", "same-init")]
    assert c["value"] == e["transfer_ratio"] and c["ci95"] == e["ci95"] and c["n"] == 1
    null = by[("strength=0.0", "cross-architecture")]
    assert null["value"] is None and null["note"] == "ratio null: teacher effect too small"


def test_null_cells_say_why_in_table_and_markdown(toy_results):  # noqa: F811
    for fmt in ("table", "markdown"):
        res = cli("compare", toy_results, "--rows", "teacher_setting", "--cols", "student", "--format", fmt)
        assert res.exit_code == 0
        row = next(line for line in res.output.splitlines() if "strength=0.0" in line)
        assert row.count("n/a (ratio null: teacher effect too small)") == 3
    md = cli("compare", toy_results, "--rows", "relation", "--cols", "injector", "--format", "markdown").output
    lines = md.splitlines()
    assert lines[0].startswith("### distillation=toy-copy")
    assert lines[1].startswith("| relation \\ injector | toy-shift |") and lines[2] == "|---|---|"


def test_csv(toy_results):  # noqa: F811
    res = cli("compare", toy_results, "--rows", "student", "--cols", "teacher_setting", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(res.output)))
    assert len(rows) == 9
    assert set(rows[0]) == {"distillation", "judge", "domain", "trait", "mitigation", "student", "teacher_setting",
                            "transfer_ratio", "ci95_lo", "ci95_hi", "n", "n_null", "note"}
    assert {r["distillation"] for r in rows} == {"toy-copy"}
    null = [r for r in rows if r["teacher_setting"] == "strength=0.0"]
    assert all(r["transfer_ratio"] == "" and r["note"] for r in null)


def test_other_metrics_and_dimensions(toy_results):  # noqa: F811
    res = cli("compare", toy_results, "--rows", "distillation", "--cols", "teacher_setting",
              "--metric", "teacher_effect", "--format", "json")
    data = json.loads(res.output)
    effects = {c["col"]: c["value"] for c in data["cells"]}
    assert effects["strength=0.0"] == pytest.approx(0.0) and effects["strength=1.0"] > effects["strength=0.5"] > 0
    for dim in ("domain", "trait", "injector", "judge", "mitigation", "experiment"):
        assert cli("compare", toy_results, "--rows", dim).exit_code == 0
    bad = cli("compare", toy_results, "--rows", "colour")
    assert bad.exit_code == 2 and "colour" in bad.output


def test_plot_png_and_svg(toy_results, tmp_path):  # noqa: F811
    png, svg = tmp_path / "m.png", tmp_path / "m.svg"
    assert cli("compare", toy_results, "--plot", png).exit_code == 0
    assert cli("compare", toy_results, "--rows", "teacher_setting", "--plot", svg).exit_code == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert "<svg" in svg.read_text() and "n/a" in svg.read_text()
    res = cli("compare", toy_results, "--plot", tmp_path / "m.txt")
    assert res.exit_code == 1 and ".png, .svg or .pdf" in str(res.exception)


def test_board_and_results_together_do_not_double_count(toy_results, tmp_path):  # noqa: F811
    board = tmp_path / "board"
    assert cli("leaderboard", "submit", toy_results, "--board", board).exit_code == 0
    both = json.loads(cli("compare", toy_results, board, "--format", "json").output)
    one = json.loads(cli("compare", board, "--format", "json").output)
    assert both == one


def test_invalid_entries_are_skipped_with_a_reason(toy_results, tmp_path):  # noqa: F811
    mixed = tmp_path / "mixed"
    shutil.copytree(toy_results, mixed)
    victim = mixed / "toy" / "toy-shift-strength=0.5__toy-copy__toy-a-steacher.json"
    e = json.loads(victim.read_text())
    e["transfer_ratio"] = 5.0
    victim.write_text(json.dumps(e))
    res = cli("compare", mixed, "--format", "json")
    assert res.exit_code == 0
    assert res.stderr.startswith(f"skipped {victim}: content_hash")
    data = json.loads(res.stdout)
    assert sum(c["n"] + c["n_null"] for c in data["cells"]) == 8


def test_nothing_to_compare(tmp_path):
    (tmp_path / "empty").mkdir()
    res = cli("compare", tmp_path / "empty")
    assert res.exit_code == 1 and "No entry files" in str(res.exception)
