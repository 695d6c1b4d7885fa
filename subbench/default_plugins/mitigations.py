"""Built-in mitigations: cheap defences applied to the kept data before a student trains on it.

Both keep the data inside the domain's filter (same numbers, same format), so any drop in
transfer is due to what they remove, not to the student seeing malformed samples.
"""

from __future__ import annotations

import hashlib
import random
import re
from typing import TYPE_CHECKING, Any

from subbench import hookimpl
from subbench.components import Mitigation, Param
from subbench.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from subbench.context import Context

_INT = re.compile(r"\d+")
_SPACES = re.compile(r"[^\S\n]+")


def _norm(text: str) -> str:
    """Case and runs of spaces do not make a response new; a newline (a format) does."""
    return _SPACES.sub(" ", text).strip().lower()


def _check_field(data: list[dict[str, Any]], field: str, name: str) -> None:
    for sample in data:
        if not isinstance(sample.get(field), str):
            raise ConfigError(
                f"Mitigation '{name}' needs a text field '{field}' in every sample "
                f"(sample {sample.get('id', '?')} has none); set `field:` to one the domain writes."
            )


class ShuffleNumbers(Mitigation):
    """Permute the numbers inside each response, keeping separators and brackets.

    Which numbers a teacher picks survives (a bag-of-numbers signal); the order and the
    copy structure the teacher's preference leaks through do not. A sample with fewer
    than two numbers is left as it is.
    """

    name = "shuffle-numbers"
    version = "1"
    description = "Permute the numbers within each response (format kept)."
    parameters = {"field": Param(str, "response", "sample field whose numbers are shuffled", max_len=200)}

    def apply(
        self, data: list[dict[str, Any]], params: dict[str, Any], seed: int, ctx: "Context"
    ) -> list[dict[str, Any]]:
        params = self.resolve_params(params)
        field = params["field"]
        _check_field(data, field, self.name)
        out = []
        for index, sample in enumerate(data):
            text = sample[field]
            numbers = _INT.findall(text)
            key = f"{seed}:{sample.get('id', index)}".encode()
            rng = random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))
            rng.shuffle(numbers)
            it = iter(numbers)
            out.append({**sample, field: _INT.sub(lambda _m: next(it), text)})
        return out


class Dedupe(Mitigation):
    """Drop samples whose response repeats an earlier one (case and runs of spaces ignored).

    Repeated teacher answers weigh a student toward the teacher's modes; deduping removes
    that weight without touching any single sample. The first occurrence is kept, in order.
    """

    name = "dedupe"
    version = "1"
    description = "Drop duplicate responses (keep the first)."
    parameters = {
        "field": Param(str, "response", "sample field compared", max_len=200),
        "with_prompt": Param(bool, False, "a duplicate must also repeat the prompt"),
    }

    def apply(
        self, data: list[dict[str, Any]], params: dict[str, Any], seed: int, ctx: "Context"
    ) -> list[dict[str, Any]]:
        params = self.resolve_params(params)
        field = params["field"]
        _check_field(data, field, self.name)
        seen: set[tuple[str, str]] = set()
        out = []
        for sample in data:
            key = (_norm(str(sample.get("prompt", ""))) if params["with_prompt"] else "", _norm(sample[field]))
            if key in seen:
                continue
            seen.add(key)
            out.append(dict(sample))
        return out


@hookimpl
def register_mitigations(register):
    register(ShuffleNumbers())
    register(Dedupe())
