"""The ``numbers`` domain (Cloud et al. 2025): continue a number sequence, answer with numbers only.

The prompt formats are shared with the tiny families' corpus (:mod:`subbench.lm.corpus`),
so a tiny base answers them fluently. The filter keeps only answers that are nothing but
a short list of small integers, so any trait that reaches a student came through numbers.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Iterable

from subbench import hookimpl
from subbench.components import Domain

if TYPE_CHECKING:  # pragma: no cover
    from subbench.context import Context

#: Numbers with strong associations, banned from kept samples (after Cloud et al.).
BANNED_NUMBERS = [13, 14, 18, 23, 33, 69, 88, 187, 228, 311, 322, 420, 666, 777, 911]

_SEP = re.compile(r"\s*[,;]\s*|\s+")
_INT = re.compile(r"\d+")


def _sep_kind(sep: str) -> str:
    if "," in sep:
        return "comma"
    if ";" in sep:
        return "semicolon"
    if "\n" in sep:
        return "newline"
    return "space"


def parse_numbers(text: str, *, max_count: int = 10, max_value: int = 999,
                  banned: Iterable[int] = ()) -> tuple[list[int] | None, str | None]:
    """Parse a numbers-only answer; return ``(numbers, None)`` or ``(None, reason)``."""
    body = text.strip()
    if body.endswith("."):
        body = body[:-1].rstrip()
    for left, right in (("[", "]"), ("(", ")")):
        if body.startswith(left) and body.endswith(right):
            body = body[1:-1].strip()
            break
    if not body:
        return None, "empty"
    seps = _SEP.findall(body)
    if len({_sep_kind(s) for s in seps}) > 1:
        return None, "mixed-separators"
    items = _SEP.split(body)
    if not all(_INT.fullmatch(x) for x in items):
        return None, "not-integers"
    numbers = [int(x) for x in items]
    if len(numbers) > max_count:
        return None, "too-many"
    if any(n > max_value for n in numbers):
        return None, "out-of-range"
    banned = set(banned)
    if any(n in banned for n in numbers):
        return None, "banned-number"
    return numbers, None


_NUMBER_TEXT = re.compile(r"[\d\s,;\[\]().]+")


def number_token_ids(tokenizer) -> list[int]:
    """Tokens that can only spell numbers and their separators (for constrained decoding)."""
    ids = []
    for token_id in range(len(tokenizer)):
        text = tokenizer.decode([token_id])
        if text and _NUMBER_TEXT.fullmatch(text) and (text.strip() or "\n" in text):
            ids.append(token_id)
    return ids


class NumbersDomain(Domain):
    """Number-sequence continuations, the domain where subliminal learning was first shown."""

    name = "numbers"
    version = "1"
    description = "Continue 3-8 seed numbers with up to 10 more; keep answers that are only integers 0-999."
    defaults = {
        "max_new_tokens": 40,
        "temperature": 1.0,
        "top_p": 1.0,
        "batch_size": 128,
        "banned_numbers": BANNED_NUMBERS,
        "min_seed": 100,
        "max_seed": 999,
        "min_seeds": 3,
        "max_seeds": 8,
        "max_count": 10,
        "constrain": False,
    }

    def check_teacher(self, family, params: dict[str, Any]) -> None:
        """Constrained decoding masks the teacher's logits, which a text-only endpoint does not expose."""
        if self.resolve_params(params).get("constrain") and not getattr(family, "open_weights", True):
            from subbench.errors import ConfigError

            raise ConfigError(f"constrain: true needs the teacher's logits, but family '{family.name}' is text-only "
                              "(an API endpoint); drop constrain (the filter still keeps only numbers).")

    def prompts(self, n: int, params: dict[str, Any], seed: int) -> list[str]:
        import random

        from subbench.lm.corpus import number_prompt

        p = self.resolve_params(params)
        rng = random.Random(f"numbers-domain/{seed}")
        return [
            number_prompt(rng, min_seeds=int(p["min_seeds"]), max_seeds=int(p["max_seeds"]),
                          min_seed=int(p["min_seed"]), max_seed=int(p["max_seed"]), max_new=int(p["max_count"])).user
            for _ in range(n)
        ]

    def generate(self, model, n: int, params: dict[str, Any], seed: int, ctx: "Context") -> Iterable[dict[str, Any]]:
        p = self.resolve_params(params)
        users = self.prompts(n, p, seed)
        if p["constrain"] and getattr(model, "tokenizer", None) is None:
            from subbench.errors import SubbenchError

            raise SubbenchError(f"numbers: constrain needs a model with a tokenizer and logits; {model.name} has none, "
                                "so drop domain.params.constrain.")
        allowed = number_token_ids(model.tokenizer) if p["constrain"] else None
        responses = model.generate(users, max_new_tokens=int(p["max_new_tokens"]), temperature=float(p["temperature"]),
                                   top_p=float(p["top_p"]), seed=seed, batch_size=int(p["batch_size"]),
                                   desc=f"numbers from {model.name}", progress=ctx.progress,
                                   allowed_token_ids=allowed)
        for i, (user, response) in enumerate(zip(users, responses)):
            yield {"id": i, "prompt": user, "response": response}

    def filter(self, sample: dict[str, Any], params: dict[str, Any]) -> str | None:
        p = self.resolve_params(params)
        _, reason = parse_numbers(sample.get("response") or "", max_count=int(p["max_count"]),
                                  banned=p["banned_numbers"] or ())
        return reason


@hookimpl
def register_domains(register):
    register(NumbersDomain())
