import copy
import random
import re
from collections import Counter

import pytest

from subbench.context import Context
from subbench.errors import ConfigError


@pytest.fixture
def ctx(tmp_path):
    return Context(workdir=tmp_path, quiet=True)


@pytest.fixture
def shuffle(pm):
    return pm.get("mitigations", "shuffle-numbers")


@pytest.fixture
def dedupe(pm):
    return pm.get("mitigations", "dedupe")


def _number_samples(n=60, seed=3):
    """Kept-looking samples in every format the numbers domain asks for."""
    from subbench.lm.corpus import FORMATS, copy_continuation, format_numbers

    rng = random.Random(seed)
    samples = []
    for i in range(n):
        fmt = list(FORMATS)[i % len(FORMATS)]
        numbers = copy_continuation(rng, [rng.randint(100, 999) for _ in range(4)], rng.randint(1, 10))
        samples.append({"id": i, "prompt": f"prompt {i}", "response": format_numbers(numbers, fmt)})
    return samples


def _skeleton(text):
    return re.sub(r"\d+", "#", text)


def test_shuffle_keeps_format_and_numbers(shuffle, ctx):
    data = _number_samples()
    before = copy.deepcopy(data)
    out = shuffle.apply(data, {}, seed=0, ctx=ctx)
    assert data == before, "the input must not be mutated"
    assert [s["id"] for s in out] == [s["id"] for s in data]
    changed = 0
    for old, new in zip(data, out):
        assert new["prompt"] == old["prompt"]
        assert _skeleton(new["response"]) == _skeleton(old["response"])
        assert Counter(re.findall(r"\d+", new["response"])) == Counter(re.findall(r"\d+", old["response"]))
        changed += new["response"] != old["response"]
    assert changed > len(data) // 2


def test_shuffled_samples_still_pass_the_numbers_filter(pm, shuffle, ctx):
    domain = pm.get("domains", "numbers")
    params = domain.resolve_params({"banned_numbers": []})
    data = [s for s in _number_samples(120) if domain.filter(s, params) is None]
    assert len(data) > 100
    out = shuffle.apply(data, {}, seed=1, ctx=ctx)
    assert [domain.filter(s, params) for s in out] == [None] * len(out)


def test_shuffle_is_deterministic_per_seed(shuffle, ctx):
    data = _number_samples()
    a = shuffle.apply(data, {}, seed=5, ctx=ctx)
    assert shuffle.apply(data, {}, seed=5, ctx=ctx) == a
    assert shuffle.apply(data, {}, seed=6, ctx=ctx) != a
    # a sample's permutation does not depend on its neighbours
    assert shuffle.apply(data[10:20], {}, seed=5, ctx=ctx) == a[10:20]


def test_shuffle_leaves_short_and_numberless_responses(shuffle, ctx):
    data = [{"id": 0, "response": "42."}, {"id": 1, "response": "owl"}, {"id": 2, "response": ""}]
    assert shuffle.apply(data, {}, seed=0, ctx=ctx) == data


def test_shuffle_other_field_and_errors(shuffle, ctx):
    data = [{"id": 0, "completion": "1, 2, 3, 4, 5, 6, 7, 8", "response": "9 8"}]
    out = shuffle.apply(data, {"field": "completion"}, seed=0, ctx=ctx)
    assert out[0]["response"] == "9 8"
    assert sorted(out[0]["completion"].split(", "), key=int) == [str(i) for i in range(1, 9)]
    with pytest.raises(ConfigError, match="needs a text field 'answer'"):
        shuffle.apply(data, {"field": "answer"}, seed=0, ctx=ctx)
    with pytest.raises(ConfigError, match="Did you mean: field"):
        shuffle.apply(data, {"fields": "response"}, seed=0, ctx=ctx)


@pytest.mark.parametrize(
    "responses, params, kept",
    [
        (["1, 2", "1, 2", "3, 4"], {}, [0, 2]),
        (["1, 2", " 1,  2 ", "1\n2", "1 2"], {}, [0, 2, 3]),  # spaces collapse; a newline is a format
        (["[1, 2]", "1, 2"], {}, [0, 1]),  # format differs: a different response
        (["Owl", "owl"], {}, [0]),
        (["1 2", "1 2", "1 2"], {"with_prompt": True}, [0, 1, 2]),
        ([], {}, []),
    ],
)
def test_dedupe_table(dedupe, ctx, responses, params, kept):
    data = [{"id": i, "prompt": f"p{i}", "response": r} for i, r in enumerate(responses)]
    out = dedupe.apply(data, params, seed=0, ctx=ctx)
    assert [s["id"] for s in out] == kept


def test_dedupe_with_prompt_drops_only_exact_pairs(dedupe, ctx):
    data = [
        {"id": 0, "prompt": "a", "response": "1 2"},
        {"id": 1, "prompt": "a", "response": "1 2"},
        {"id": 2, "prompt": "b", "response": "1 2"},
    ]
    assert [s["id"] for s in dedupe.apply(data, {"with_prompt": True}, seed=0, ctx=ctx)] == [0, 2]
    assert [s["id"] for s in dedupe.apply(data, {}, seed=0, ctx=ctx)] == [0]


def test_mitigations_are_registered(pm):
    names = pm.registry("mitigations").names()
    assert {"shuffle-numbers", "dedupe"} <= set(names)
