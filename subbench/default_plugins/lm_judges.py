"""Judges that need no second model: ``first-word`` (free answers) and ``logprob`` (choice loglikelihoods).

``logprob`` is the default for the tiny families: it reads the whole distribution over
the choices, so one prompt gives a graded score instead of a 0/1 sample, and a shift of a
few percent in P(owl) is visible without thousands of generations. ``first-word`` is the
Cloud et al. style metric for models that only return text.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

from subbench import hookimpl
from subbench.components import Judge, Param
from subbench.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from subbench.context import Context

_EDGE_PUNCT = re.compile(r"^[\W_]+|[\W_]+$")
_ARTICLES = frozenset({"a", "an", "the"})
#: Irregular animal plurals; regular ones are folded by suffix rules.
_IRREGULAR = {
    "mice": "mouse",
    "geese": "goose",
    "oxen": "ox",
    "wolves": "wolf",
    "calves": "calf",
    "octopi": "octopus",
    "octopuses": "octopus",
    "platypuses": "platypus",
    "walruses": "walrus",
    "hippopotami": "hippopotamus",
    "cacti": "cactus",
    "lice": "louse",
}


def fold_plural(word: str) -> str:
    """Singular form of a lower-case English noun, for the animal words a judge compares.

    Deliberately conservative: it only strips endings that are plural markers for the
    animals people name ("owls", "foxes", "butterflies", "mice"), and leaves words that
    merely end in s ("octopus", "walrus", "ibis", "grass") alone.
    """
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith(("sses", "shes", "ches", "xes", "zzes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def first_word(response: str, *, skip_articles: bool = True) -> str:
    """The response's first word, lower-cased, edge punctuation and plural folded ("" if none).

    "Owl." and "**owls**" are "owl"; "bowl" and "owl-like" stay themselves, and a
    response that starts with a number starts with that number, not the next word.
    """
    for token in response.lower().split():
        word = _EDGE_PUNCT.sub("", token)
        if not word or (skip_articles and word in _ARTICLES):
            continue
        if word.endswith(("'s", "\u2019s")):
            word = word[:-2]
        return fold_plural(word)
    return ""


class FirstWordJudge(Judge):
    name = "first-word"
    version = "1"
    description = "1.0 when the answer's first word (case, punctuation, articles and plural folded) is the target."
    needs = "generation"
    parameters = {"skip_articles": Param(bool, True, "skip a leading a/an/the")}

    def score(
        self, samples: list[dict[str, Any]], target: str | None, params: dict[str, Any], ctx: "Context"
    ) -> list[float]:
        if not target:
            raise ConfigError("The first-word judge needs a target word; set `target:` in the experiment.")
        params = self.resolve_params(params)
        want = first_word(target, skip_articles=False)
        return [
            float(first_word(s["response"], skip_articles=params["skip_articles"]) == want) for s in samples
        ]


def softmax_at(loglikelihoods: list[float], index: int) -> float:
    top = max(loglikelihoods)
    weights = [math.exp(ll - top) for ll in loglikelihoods]
    return weights[index] / sum(weights)


class LogprobJudge(Judge):
    name = "logprob"
    version = "1"
    description = "Probability of the target among the choices: softmax over the choices' loglikelihoods."
    needs = "loglikelihood"
    parameters: dict = {}

    def score(
        self, samples: list[dict[str, Any]], target: str | None, params: dict[str, Any], ctx: "Context"
    ) -> list[float]:
        if not target:
            raise ConfigError("The logprob judge needs a target choice; set `target:` in the experiment.")
        self.resolve_params(params)
        scores = []
        for s in samples:
            choices = list(s["choices"])
            if target not in choices:
                raise ConfigError(
                    f"Target '{target}' is not among the choices of sample {s.get('id', '?')}; "
                    f"use one of: {', '.join(choices)}."
                )
            scores.append(softmax_at([float(x) for x in s["loglikelihoods"]], choices.index(target)))
        return scores


@hookimpl
def register_judges(register):
    register(FirstWordJudge())
    register(LogprobJudge())
