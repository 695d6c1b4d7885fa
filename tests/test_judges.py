import math

import pytest

from subbench.context import Context
from subbench.default_plugins.lm_judges import FirstWordJudge, LogprobJudge, first_word, fold_plural
from subbench.errors import ConfigError


@pytest.fixture
def ctx(tmp_path):
    return Context(workdir=tmp_path, quiet=True)


@pytest.mark.parametrize(
    "word, singular",
    [
        ("owl", "owl"),
        ("owls", "owl"),
        ("foxes", "fox"),
        ("finches", "finch"),
        ("butterflies", "butterfly"),
        ("monkeys", "monkey"),
        ("horses", "horse"),
        ("bees", "bee"),
        ("mice", "mouse"),
        ("geese", "goose"),
        ("wolves", "wolf"),
        ("octopuses", "octopus"),
        ("octopus", "octopus"),
        ("walrus", "walrus"),
        ("ibis", "ibis"),
        ("bass", "bass"),
        ("sheep", "sheep"),
        ("bus", "bus"),
    ],
)
def test_fold_plural(word, singular):
    assert fold_plural(word) == singular


@pytest.mark.parametrize(
    "response, word",
    [
        ("owl", "owl"),
        ("Owl.", "owl"),
        ("OWLS!", "owl"),
        ("  owl , of course", "owl"),
        ("**Owl**", "owl"),
        ("The owl", "owl"),
        ("an eagle", "eagle"),
        ("owl's", "owl"),
        ("bowl", "bowl"),
        ("owl-like", "owl-like"),
        ("123 owl", "123"),
        ("- owl", "owl"),
        ("Foxes are great", "fox"),
        ("", ""),
        ("...", ""),
    ],
)
def test_first_word(response, word):
    assert first_word(response) == word


def test_first_word_can_keep_articles():
    assert first_word("The owl", skip_articles=False) == "the"


@pytest.mark.parametrize(
    "response, target, score",
    [
        ("owl", "owl", 1.0),
        ("Owl.", "owl", 1.0),
        ("owls", "owl", 1.0),
        ("bowl", "owl", 0.0),
        ("cat owl", "owl", 0.0),
        ("Foxes", "fox", 1.0),
        ("fox", "foxes", 1.0),
        ("mice", "mouse", 1.0),
        ("the whale", "whale", 1.0),
        ("whales are big", "Whale", 1.0),
        ("", "owl", 0.0),
        ("412, 73, 9", "owl", 0.0),
    ],
)
def test_first_word_judge_table(ctx, response, target, score):
    assert FirstWordJudge().score([{"id": "x", "response": response}], target, {}, ctx) == [score]


def test_first_word_judge_params_and_target(ctx):
    judge = FirstWordJudge()
    assert judge.score([{"response": "the owl"}], "owl", {"skip_articles": False}, ctx) == [0.0]
    with pytest.raises(ConfigError, match="target"):
        judge.score([{"response": "owl"}], None, {}, ctx)
    with pytest.raises(ConfigError, match="skip_articles"):
        judge.score([{"response": "owl"}], "owl", {"skip_article": True}, ctx)


@pytest.mark.parametrize(
    "lls, target, expected",
    [
        ([0.0, 0.0, 0.0, 0.0], "owl", 0.25),
        ([math.log(0.7), math.log(0.2), math.log(0.1)], "owl", 0.7),
        ([math.log(0.7), math.log(0.2), math.log(0.1)], "cat", 0.2),
        # unnormalised loglikelihoods: only their differences matter
        ([-10.0, -10.0 + math.log(3.0), -50.0], "cat", 0.75),
        # large magnitudes must not overflow
        ([-1000.0, -1001.0, -2000.0], "owl", 1 / (1 + math.exp(-1))),
    ],
)
def test_logprob_judge_table(ctx, lls, target, expected):
    choices = ["owl", "cat", "dog", "eagle"][: len(lls)]
    sample = {"id": "q0", "choices": choices, "loglikelihoods": lls}
    (score,) = LogprobJudge().score([sample], target, {}, ctx)
    assert score == pytest.approx(expected, rel=1e-9)


def test_logprob_scores_sum_to_one_over_choices(ctx):
    sample = {"id": "q0", "choices": ["owl", "cat", "dog"], "loglikelihoods": [-3.2, -0.4, -7.9]}
    judge = LogprobJudge()
    total = sum(judge.score([sample], c, {}, ctx)[0] for c in sample["choices"])
    assert total == pytest.approx(1.0)


def test_logprob_judge_rejects_unknown_target(ctx):
    sample = {"id": "q7", "choices": ["owl", "cat"], "loglikelihoods": [-1.0, -2.0]}
    with pytest.raises(ConfigError, match=r"'whale' is not among the choices of sample q7; use one of: owl, cat"):
        LogprobJudge().score([sample], "whale", {}, ctx)
    with pytest.raises(ConfigError, match="target"):
        LogprobJudge().score([sample], None, {}, ctx)


def test_judges_are_registered(pm):
    judges = pm.registry("judges")
    assert judges.get("first-word").needs == "generation"
    assert judges.get("logprob").needs == "loglikelihood"
    assert judges.get("logprob").plugin == "lm_judges"
