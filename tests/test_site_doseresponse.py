"""The leaderboard site draws the dose-response curve of a strength grid with its fit named on the page."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from toy_plugin import registered, run_experiment  # noqa: E402


def cli(*args):
    from click.testing import CliRunner

    from subbench.cli import build_cli

    return CliRunner().invoke(build_cli(), [str(a) for a in args])


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dose")
    results = run_experiment(tmp, strengths=(0.25, 0.5, 0.75, 1.0))
    with registered():
        assert cli("leaderboard", "submit", results, "--board", tmp / "board").exit_code == 0
        res = cli("leaderboard", "build", "--board", tmp / "board")
    assert res.exit_code == 0, res.output
    return tmp / "board" / "site"


def test_page_shows_the_curve_and_names_the_winning_fit(site):
    page = (site / "index.html").read_text()
    assert "<h2>Dose-response</h2>" in page
    figs = re.findall(r'<figure class="dose"><img src="(dose-\d+)\.png"', page)
    assert figs, page
    for stem in figs:
        assert (site / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (site / f"{stem}.png").stat().st_size > 5000
        assert "<svg" in (site / f"{stem}.svg").read_text()
    # each student relation gets a caption naming its shape and ΔBIC (4 strengths x 2 seeds = 8 points)
    caps = re.findall(r'<span class="fit">([^<]*)</span>', page)
    assert {c.split(":")[0] for c in caps} >= {"same-init", "cross-init"}
    fitted = [c for c in caps if "ΔBIC" in c]
    assert fitted and all(re.search(r"(threshold|continuous) \((step|logistic|linear|saturating)\), ΔBIC -?\d", c)
                          for c in fitted)
    assert any("over 8 points" in c for c in fitted)
    assert "toy-shift strength" in page


def test_site_with_one_strength_draws_no_dose_response(tmp_path):
    results = run_experiment(tmp_path, strengths=(0.5,))
    with registered():
        assert cli("leaderboard", "submit", results, "--board", tmp_path / "board").exit_code == 0
        assert cli("leaderboard", "build", "--board", tmp_path / "board").exit_code == 0
    page = (tmp_path / "board" / "site" / "index.html").read_text()
    assert "Dose-response" not in page and not list((tmp_path / "board" / "site").glob("dose-*"))
