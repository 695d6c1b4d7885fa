"""The teacher x student heatmap of a multi-teacher run in a real headless Chromium (skipped without it)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from toy_plugin import registered

sys.path.insert(0, str(Path(__file__).parent))
from test_matrix import write  # noqa: E402
from test_site_browser import CHROMIUM, browser, served  # noqa: E402,F401

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")


@pytest.fixture
def board(tmp_path):
    from subbench.cli import build_cli

    exp = write(tmp_path)
    with registered():
        for args in (["run", str(exp), "--workdir", str(tmp_path / "wd"), "--out", str(tmp_path / "results"), "-q"],
                     ["leaderboard", "submit", str(tmp_path / "results"), "--board", str(tmp_path / "board")],
                     ["leaderboard", "build", "--board", str(tmp_path / "board")]):
            res = CliRunner().invoke(build_cli(), args)
            assert res.exit_code == 0, res.output
    return tmp_path / "board"


def test_matrix_heatmap_marks_the_diagonal_and_zero_intervals(browser, board):  # noqa: F811
    dt = browser
    cells = dt.js("""Array.from(document.querySelectorAll('table.matrix td')).map(td => ({
        row: td.dataset.row, col: td.dataset.col, cls: td.className, value: td.dataset.value,
        text: td.innerText, bg: getComputedStyle(td).backgroundColor, img: getComputedStyle(td).backgroundImage,
        outline: getComputedStyle(td).outlineStyle}))""")
    heads = dt.js("Array.from(document.querySelectorAll('table.matrix thead th')).map(th => th.textContent)")
    assert heads[1:] == ["other init", "toy-a", "toy-b"]
    by = {(c["row"], c["col"]): c for c in cells}
    assert len(cells) == 6 and all(c["cls"] != "empty" for c in cells)
    diagonal = [c for c in cells if "same-init" in c["cls"]]
    assert {(c["row"], c["col"]) for c in diagonal} == {("toy-a", "toy-a"), ("toy-b", "toy-b")}
    assert all(c["outline"] == "solid" for c in diagonal)
    assert all(c["outline"] == "none" for c in cells if "same-init" not in c["cls"])
    # the toy's same-init students inherit the shift: a positive ratio whose CI excludes 0, drawn in red
    same = by[("toy-a", "toy-a")]
    assert float(same["value"]) > 0.2 and "ci0" not in same["cls"] and same["bg"].startswith("rgba(178, 24, 43")
    # the cross-init and cross-architecture students learn nothing: hatched cells whose CI includes 0
    for key in [("toy-a", "other init"), ("toy-b", "other init"), ("toy-a", "toy-b"), ("toy-b", "toy-a")]:
        c = by[key]
        assert float(c["value"]) == 0 and "ci0" in c["cls"] and "repeating-linear-gradient" in c["img"], c
    shown = dt.js("document.querySelector('table.matrix').getBoundingClientRect().height")
    assert shown > 50
