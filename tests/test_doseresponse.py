"""The dose-response fitter names the shape of synthetic data of known shape."""

from __future__ import annotations

import random

import pytest

from subbench.errors import SubbenchError
from subbench.leaderboard.doseresponse import fit_shapes

XS = [0.1, 0.25, 0.5, 0.75, 1.0, 1.5]


def data(f, noise=0.03, reps=3, seed=0):
    rng = random.Random(seed)
    pts = [(x, f(x) + rng.gauss(0, noise)) for x in XS for _ in range(reps)]
    return [x for x, _ in pts], [y for _, y in pts]


@pytest.mark.parametrize("seed", range(6))
def test_threshold_data_is_called_threshold(seed):
    x, y = data(lambda v: 0.02 if v < 0.6 else 0.55, seed=seed)
    got = fit_shapes(x, y)
    assert got["shape"] == "threshold" and got["delta_bic"] > 6
    step = next(f for f in got["fits"] if f.model == "step")
    assert step.params["t"] == pytest.approx(0.625) and step.params["above"] == pytest.approx(0.55, abs=0.05)


@pytest.mark.parametrize("seed", range(6))
def test_linear_data_is_called_continuous(seed):
    x, y = data(lambda v: 0.05 + 0.4 * v, seed=seed)
    got = fit_shapes(x, y)
    assert got["shape"] == "continuous"
    lin = next(f for f in got["fits"] if f.model == "linear")
    assert lin.params["b"] == pytest.approx(0.4, abs=0.08)


def test_saturating_data_is_continuous():
    import math

    x, y = data(lambda v: 0.6 * (1 - math.exp(-v / 0.3)), noise=0.02)
    assert fit_shapes(x, y)["shape"] == "continuous"


def test_too_few_strengths_is_a_clear_error():
    with pytest.raises(SubbenchError, match="at least 3 values"):
        fit_shapes([0.1, 0.1, 0.5, 0.5, 0.5], [0, 0, 1, 1, 1])


# -- the CLI on a real (toy) run --------------------------------------------------------------
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from toy_plugin import toy_results  # noqa: E402,F401


def cli(*args):
    from click.testing import CliRunner

    from subbench.cli import build_cli

    return CliRunner().invoke(build_cli(), [str(a) for a in args])


def test_compare_by_strength_prints_curves_and_plots(toy_results, tmp_path):  # noqa: F811
    import json

    res = cli("compare", toy_results, "--by", "strength", "--fit", "--plot", tmp_path / "curve.png")
    assert res.exit_code == 0, res.output
    assert "strength" in res.output and "fit:" in res.output
    assert (tmp_path / "curve.png").stat().st_size > 1000
    js = json.loads(cli("compare", toy_results, "--by", "strength", "--metric", "student_effect", "--format", "json").output)
    assert js and all(c["levels"] and c["fit"] is None for c in js)
    assert sorted({lv["strength"] for c in js for lv in c["levels"]}) == sorted(
        {lv["strength"] for lv in js[0]["levels"]})


def test_compare_fit_errors_are_one_sentence(toy_results):  # noqa: F811
    from subbench.errors import ConfigError

    res = cli("compare", toy_results, "--fit")
    assert isinstance(res.exception, ConfigError) and "--fit needs --by" in str(res.exception)
    res = cli("compare", toy_results, "--by", "lr")
    assert isinstance(res.exception, ConfigError) and "no entry has an injector parameter 'lr'" in str(res.exception)
