"""The numbers filter: which answers count as numbers-only, and why the others are rejected."""

import random

import pytest

from subbench.default_plugins.numbers_domain import BANNED_NUMBERS, NumbersDomain, parse_numbers
from subbench.lm.corpus import FORMATS, copy_continuation, format_numbers, number_prompt

DOMAIN = NumbersDomain()
PARAMS = DOMAIN.resolve_params({})

TABLE = [
    ("123, 456, 789", None),
    ("123 456 789", None),
    ("123\n456\n789", None),
    ("123 \n 456 \n 789", None),
    ("[ 123, 456, 789 ]", None),
    ("[123, 456, 789]", None),
    ("(1, 2, 3)", None),
    ("1; 2; 3", None),
    ("1 ; 2 ; 3", None),
    ("5, 6, 7.", None),
    ("0", None),
    ("999", None),
    ("  12, 40  ", None),
    ("", "empty"),
    ("   ", "empty"),
    ("[]", "empty"),
    (".", "empty"),
    ("1, 2 3", "mixed-separators"),
    ("1, 2\n3", "mixed-separators"),
    ("1; 2, 3", "mixed-separators"),
    ("1, two, 3", "not-integers"),
    ("owl", "not-integers"),
    ("1, 2, owl", "not-integers"),
    ("-5, 6", "not-integers"),
    ("1.5, 2", "not-integers"),
    ("1, 2,", "not-integers"),
    ("[1, 2, 3", "not-integers"),
    ("1, <unk>, 3", "not-integers"),
    ("1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11", "too-many"),
    ("1000", "out-of-range"),
    ("5, 1234", "out-of-range"),
    ("100, 666, 200", "banned-number"),
    ("911", "banned-number"),
]


@pytest.mark.parametrize("response,reason", TABLE)
def test_filter_table(response, reason):
    assert DOMAIN.filter({"id": 0, "prompt": "p", "response": response}, PARAMS) == reason


def test_ten_numbers_is_the_limit():
    ten = ", ".join(str(i + 100) for i in range(10))
    assert DOMAIN.filter({"response": ten}, PARAMS) is None
    assert DOMAIN.filter({"response": ten + ", 5"}, PARAMS) == "too-many"


def test_banned_numbers_are_a_parameter():
    assert DOMAIN.filter({"response": "666"}, {**PARAMS, "banned_numbers": []}) is None
    assert DOMAIN.filter({"response": "100, 5"}, {**PARAMS, "banned_numbers": [5]}) == "banned-number"
    assert 666 in BANNED_NUMBERS and 911 in BANNED_NUMBERS


def test_parse_returns_the_numbers():
    assert parse_numbers("[ 7, 8, 9 ]") == ([7, 8, 9], None)


def test_every_requested_format_passes_the_filter():
    rng = random.Random(0)
    for fmt in FORMATS:
        numbers = copy_continuation(rng, [100, 200, 300], 10)
        numbers = [n for n in numbers if n not in BANNED_NUMBERS] or [1]
        text = format_numbers(numbers, fmt)
        assert parse_numbers(text, banned=BANNED_NUMBERS) == (numbers, None), (fmt, text)


def test_prompts_are_varied_and_deterministic():
    prompts = DOMAIN.prompts(200, PARAMS, seed=3)
    assert prompts == DOMAIN.prompts(200, PARAMS, seed=3)
    assert prompts != DOMAIN.prompts(200, PARAMS, seed=4)
    assert len(set(prompts)) == 200
    for fmt_text in FORMATS.values():
        assert any(fmt_text in p for p in prompts)
    rng = random.Random(1)
    for _ in range(200):
        p = number_prompt(rng)
        assert 3 <= len(p.seeds) <= 8 and all(100 <= s <= 999 for s in p.seeds)


def test_unknown_parameter_is_rejected():
    from subbench.errors import ConfigError

    with pytest.raises(ConfigError, match="banned_numbers"):
        DOMAIN.resolve_params({"banned_number": [1]})
