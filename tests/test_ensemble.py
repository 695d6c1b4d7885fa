"""Ensembles: Cohen's and Fleiss' kappa on textbook tables, voting rules, abstentions, summaries."""

from __future__ import annotations

import pytest

from subbench import hookimpl, plugins
from subbench.components import Judge
from subbench.errors import ConfigError, SubbenchError
from subbench.judging.agreement import agreement, cohen_kappa, fleiss_kappa, fleiss_kappa_table


def test_cohen_kappa_textbook():
    # Wikipedia, "Cohen's kappa": 50 proposals, yes/yes 20, yes/no 5, no/yes 10, no/no 15 -> 0.4.
    a = ["y"] * 20 + ["y"] * 5 + ["n"] * 10 + ["n"] * 15
    b = ["y"] * 20 + ["n"] * 5 + ["y"] * 10 + ["n"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    # Wikipedia's second pair of examples: same agreement 60/100, kappa 0.1304 and 0.2593.
    a = [1] * 45 + [1] * 15 + [0] * 25 + [0] * 15
    b = [1] * 45 + [0] * 15 + [1] * 25 + [0] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.1304, abs=1e-4)
    a = [1] * 25 + [1] * 35 + [0] * 5 + [0] * 35
    b = [1] * 25 + [0] * 35 + [1] * 5 + [0] * 35
    assert cohen_kappa(a, b) == pytest.approx(0.2593, abs=1e-4)
    assert cohen_kappa([1, 0, 1], [1, 0, 1]) == 1.0
    assert cohen_kappa([1, 1], [1, 1]) == 1.0 and cohen_kappa([], []) is None


def test_cohen_kappa_matches_scikit_learn():
    from sklearn.metrics import cohen_kappa_score

    a = [0, 1, 1, 0, 1, 1, 0, 0, 1, 1, 1, 0]
    b = [0, 1, 0, 0, 1, 1, 1, 0, 1, 0, 1, 0]
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b))


def test_fleiss_kappa_textbook():
    # Wikipedia, "Fleiss' kappa": 10 subjects, 14 raters, 5 categories -> 0.210.
    table = [
        [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
    ]
    assert fleiss_kappa_table(table) == pytest.approx(0.20993, abs=1e-4)
    ratings = [[c for c, n in enumerate(row) for _ in range(n)] for row in table]
    assert fleiss_kappa(ratings) == pytest.approx(fleiss_kappa_table(table))
    with pytest.raises(ValueError):
        fleiss_kappa_table([[1, 1], [3, 0]])


def test_fleiss_with_two_raters_is_close_to_scotts_pi():
    # For two raters Fleiss' kappa is Scott's pi; with equal marginals it equals Cohen's kappa.
    a = [1, 1, 0, 0, 1, 0]
    b = [1, 0, 1, 0, 1, 0]
    assert fleiss_kappa([[x, y] for x, y in zip(a, b)]) == pytest.approx(cohen_kappa(a, b))


def test_agreement_picks_the_method():
    assert agreement({"a": [1, 0], "b": [1, 0]})["method"] == "cohen"
    assert agreement({"a": [1, 0], "b": [1, 0], "c": [1, 1]})["method"] == "fleiss"
    assert agreement({"a": [1, 0]})["kappa"] is None


class KeywordJudge(Judge):
    """Scores 1.0 when the response contains ``word``; None-free, for ensemble tests."""

    name = "keyword-test"
    needs = "generation"
    defaults = {"word": "owl"}

    def score(self, samples, target, params, ctx):
        params = self.resolve_params(params)
        return [float(params["word"] in s["response"]) for s in samples]


class _Plugin:
    @hookimpl
    def register_judges(self, register):
        register(KeywordJudge())


@pytest.fixture
def keyword_judge():
    manager = plugins.get_manager()
    manager.register_plugin(_Plugin(), name="keyword-test-plugin")
    yield
    manager.unregister_plugin("keyword-test-plugin")


SAMPLES = ["owl cat", "owl", "cat", "dog owl cat", "dog"]


def run(params, target=None):
    ens = plugins.get("judges", "ensemble")
    samples = [{"response": r} for r in SAMPLES]
    scores = ens.score(samples, target, params, None)
    for s, v in zip(samples, scores):
        s["score"] = v
    return scores, samples, ens.summarize(samples, params)


def test_rules_and_annotations(keyword_judge):
    judges = [{"name": "keyword-test", "label": "owl"}, {"name": "keyword-test", "label": "cat", "params": {"word": "cat"}},
              {"name": "keyword-test", "params": {"word": "dog"}}]
    owl = [1, 1, 0, 1, 0]
    cat = [1, 0, 1, 1, 0]
    dog = [0, 0, 0, 1, 1]
    majority, samples, summary = run({"judges": judges, "rule": "majority"})
    assert majority == [float(a + b + c >= 2) for a, b, c in zip(owl, cat, dog)]
    assert samples[0]["judges"] == {"owl": 1.0, "cat": 1.0, "keyword-test": 0.0}
    assert run({"judges": judges, "rule": "all"})[0] == [float(a and b and c) for a, b, c in zip(owl, cat, dog)]
    assert run({"judges": judges, "rule": "any"})[0] == [float(a or b or c) for a, b, c in zip(owl, cat, dog)]
    assert summary["judges"]["owl"]["mean"] == pytest.approx(0.6)
    assert summary["judges"]["keyword-test"]["mean"] == pytest.approx(0.4)
    assert summary["agreement"]["method"] == "fleiss"
    assert summary["agreement"]["kappa"] == pytest.approx(
        fleiss_kappa([[a, b, c] for a, b, c in zip(owl, cat, dog)]), abs=1e-6)


def test_two_judges_report_cohen(keyword_judge):
    judges = ["keyword-test", {"name": "keyword-test", "params": {"word": "cat"}}]
    _, _, summary = run({"judges": judges})
    assert summary["agreement"]["method"] == "cohen"
    assert summary["agreement"]["kappa"] == pytest.approx(cohen_kappa([1, 1, 0, 1, 0], [1, 0, 1, 1, 0]), abs=1e-6)
    assert summary["agreement"]["percent"] == pytest.approx(0.6)
    assert set(summary["judges"]) == {"keyword-test", "keyword-test#2"}


def test_refusal_in_an_ensemble_follows_the_target(keyword_judge):
    ens = plugins.get("judges", "ensemble")
    samples = [{"response": "I'm sorry, I can't help with that."}, {"response": "Sure, here is how."}]
    params = {"judges": ["refusal", {"name": "refusal", "params": {"window": 10}}], "rule": "all"}
    assert ens.score(samples, "compliance", params, None) == [0.0, 1.0]
    assert ens.score(samples, "refusal", params, None) == [1.0, 0.0]


def test_bad_ensembles_fail_clearly(keyword_judge):
    ens = plugins.get("judges", "ensemble")
    samples = [{"response": "x"}]
    with pytest.raises(ConfigError, match="at least two"):
        ens.score(samples, None, {"judges": ["keyword-test"]}, None)
    with pytest.raises(ConfigError, match="parameter 'rule': expected one of majority, all, any"):
        ens.score(samples, None, {"judges": ["keyword-test", "keyword-test"], "rule": "most"}, None)
    with pytest.raises(SubbenchError, match="Unknown judge 'refusl'. Did you mean: refusal"):
        ens.score(samples, None, {"judges": ["keyword-test", "refusl"]}, None)
    with pytest.raises(ConfigError, match="needs loglikelihood"):
        ens.score(samples, None, {"judges": ["keyword-test", "logprob"]}, None)
    with pytest.raises(ConfigError, match="unknown parameter 'wrod'"):
        ens.score(samples, None, {"judges": ["keyword-test", {"name": "keyword-test", "params": {"wrod": 1}}]}, None)
