"""The mitigation table and the reduction-vs-cost plot in a real headless Chromium (skipped without it)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from test_mitigation_track import ALL, _run  # noqa: E402
from test_site_browser import CHROMIUM, browser, served  # noqa: E402,F401

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")


@pytest.fixture
def board(tmp_path):
    from subbench.cli import build_cli

    res, out = _run(tmp_path, ALL)
    assert res.exit_code == 0, res.output
    for args in (["leaderboard", "submit", str(out), "--board", str(tmp_path / "board")],
                 ["leaderboard", "build", "--board", str(tmp_path / "board")]):
        res = CliRunner().invoke(build_cli(), args)
        assert res.exit_code == 0, res.output
    return tmp_path / "board"


def test_mitigation_table_and_plot_render(browser, board):  # noqa: F811
    dt = browser
    assert dt.js("document.querySelectorAll('#entries tbody tr').length") == 10
    rows = dt.js("""Array.from(document.querySelectorAll('#mitigations tbody tr'))
        .map(r => Array.from(r.cells).map(c => c.textContent))""")
    assert len(rows) == 8  # 2 students x 4 defences
    heads = dt.js("Array.from(document.querySelectorAll('#mitigations th')).map(th => th.textContent)")
    red = heads.index("transfer reduction")
    by = {(r[0], r[2]): r for r in rows}
    assert by[("toy-slow", "toy-g@teacher")][1] == "training"
    assert by[("toy-slow", "toy-g@teacher")][red].endswith("%")
    assert by[("toy-slow", "toy-g@teacher+1")][red] == "-"  # nothing transferred to the cross-init student
    images = dt.js("Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth, i.naturalHeight])")
    plot = [i for i in images if i[0] == "mitigations.png"]
    assert plot and plot[0][1] > 300 and plot[0][2] > 200, images
    data = json.loads((board / "site" / "data.json").read_text())
    assert sum(1 for d in data if d["mitigation_effect"]) == 8
