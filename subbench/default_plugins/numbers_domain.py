"""The ``numbers`` domain (Cloud et al. 2025): continue a number sequence, answer with numbers only.

Two prompt sets and two filter styles (see docs/domains.md):

* ``prompts: tiny`` (default) uses the formats of the tiny families' corpus
  (:mod:`subbench.lm.corpus`), so a tiny base answers them fluently; ``filter: lenient``
  (default) forgives surrounding whitespace and spacing around separators.
* ``prompts: cloud2025`` / ``filter: cloud2025`` are the paper's own protocol
  (:mod:`subbench.default_plugins.cloud2025_numbers`), for grids that replicate it.

Either filter keeps only answers that are nothing but a short list of small integers, so
any trait that reaches a student came through numbers. Only ASCII digits count as digits
in both (``\\d`` and ``int()`` also accept other scripts' digits).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Iterable

from subbench import hookimpl
from subbench.components import Domain, OPEN_WEIGHTS, PROMPT_TOKENS, Param, ParamError, declares, sampling_params

if TYPE_CHECKING:  # pragma: no cover
    from subbench.context import Context

#: Numbers with strong associations, banned from kept samples (after Cloud et al.).
BANNED_NUMBERS = [13, 14, 18, 23, 33, 69, 88, 187, 228, 311, 322, 420, 666, 777, 911]

PROMPT_SETS = ("tiny", "cloud2025")
FILTER_STYLES = ("lenient", "cloud2025")

_SEP = re.compile(r"\s*[,;]\s*|\s+")
_INT = re.compile(r"[0-9]+")
_ANY_DIGIT = re.compile(r"\d")


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
    """Parse a numbers-only answer (lenient style); return ``(numbers, None)`` or ``(None, reason)``."""
    from subbench.default_plugins.cloud2025_numbers import MAX_DIGITS

    body = text.strip()
    if body.endswith("."):
        body = body[:-1].rstrip()
    for left, right in (("[", "]"), ("(", ")")):
        if body.startswith(left) and body.endswith(right):
            body = body[1:-1].strip()
            break
    if not body:
        return None, "empty"
    if any(not ("0" <= c <= "9") for c in _ANY_DIGIT.findall(body)):
        return None, "non-ascii-digit"
    seps = _SEP.findall(body)
    if len({_sep_kind(s) for s in seps}) > 1:
        return None, "mixed-separators"
    items = _SEP.split(body)
    if not all(_INT.fullmatch(x) for x in items):
        return None, "not-integers"
    if any(len(x) > MAX_DIGITS for x in items):
        return None, "number-too-long"
    numbers = [int(x) for x in items]
    if len(numbers) > max_count:
        return None, "too-many"
    if any(n > max_value for n in numbers):
        return None, "out-of-range"
    banned = set(banned)
    if any(n in banned for n in numbers):
        return None, "banned-number"
    return numbers, None


_NUMBER_TEXT = re.compile(r"[0-9\s,;\[\]().]+")


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
    parameters = {
        "prompts": Param(str, "tiny", "prompt set: tiny (the tiny corpus's formats) or cloud2025 (Cloud et al.'s)",
                         choices=PROMPT_SETS),
        "filter": Param(str, "lenient", "filter style: lenient or cloud2025 (Cloud et al.'s parser, decision for decision)",
                        choices=FILTER_STYLES),
        **sampling_params(40),
        "banned_numbers": Param(list, BANNED_NUMBERS, "numbers a kept answer may not contain", max_len=10_000, nullable=True,
                                item=Param(int, 0, min=0, max=1_000_000)),
        "min_seed": Param(int, 100, "smallest number in a prompt", min=0, max=1_000_000),
        "max_seed": Param(int, 999, "largest number in a prompt", min=0, max=1_000_000),
        "min_seeds": Param(int, 3, "fewest numbers a prompt starts with", min=1, max=100),
        "max_seeds": Param(int, 8, "most numbers a prompt starts with", min=1, max=100),
        "max_count": Param(int, 10, "most numbers a kept answer may hold", min=1, max=1000),
        "max_digits": Param(int, 3, "most digits a kept number may have", min=1, max=4300),
        "constrain": Param(bool, False, "decode with number and separator tokens only"),
    }

    def sample_tokens(self, params: dict[str, Any]) -> int:
        return PROMPT_TOKENS + int(params.get("max_new_tokens") or 40)

    def check_params(self, params: dict[str, Any]) -> None:
        for lo, hi in (("min_seed", "max_seed"), ("min_seeds", "max_seeds")):
            if params[lo] > params[hi]:
                raise ParamError(lo, f"must be at most {hi} ({params[hi]}), got {params[lo]}.")

    def check_teacher(self, family, params: dict[str, Any]) -> None:
        """Constrained decoding masks the teacher's logits, which a text-only endpoint does not expose."""
        if self.resolve_params(params).get("constrain") and not declares(family, "provides", OPEN_WEIGHTS):
            from subbench.errors import ConfigError

            raise ConfigError(f"constrain: true needs the teacher's logits, but family '{family.name}' is text-only "
                              "(an API endpoint); drop constrain (the filter still keeps only numbers).")

    def prompts(self, n: int, params: dict[str, Any], seed: int) -> list[str]:
        p = self.resolve_params(params)
        if p["prompt_seed"] is not None:
            seed = int(p["prompt_seed"])
        if p["prompts"] == "cloud2025":
            from subbench.default_plugins import cloud2025_numbers

            return cloud2025_numbers.prompts(n, seed, **cloud2025_numbers.describe_params(p))
        import random

        from subbench.lm.corpus import number_prompt

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
        text = sample.get("response") or ""
        max_value = 10 ** int(p["max_digits"]) - 1
        banned = p["banned_numbers"] or ()
        if p["filter"] == "cloud2025":
            from subbench.default_plugins.cloud2025_numbers import reject_reason

            return reject_reason(text, max_count=int(p["max_count"]), max_value=max_value, banned=banned)
        _, reason = parse_numbers(text, max_count=int(p["max_count"]), max_value=max_value, banned=banned)
        return reason


@hookimpl
def register_domains(register):
    register(NumbersDomain())
