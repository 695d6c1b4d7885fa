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
