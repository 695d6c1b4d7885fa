"""Versioned judge prompt templates (``tasks/judges/<name>.txt``) and the parsing of their verdicts.

A template is a small text file: ``key: value`` header lines, a line ``---``, then the user
message. Headers: ``parse`` (``label`` or ``score``), ``labels`` (``COMPLY=1, REFUSE=0``),
``range`` (``0-100`` for scores), optional ``system``, ``measures`` (the target the labels
are about) and ``max_tokens``. The body may use ``{prompt}``, ``{response}`` and
``{target}``. The name carries the version (``compliance-v1``): a changed prompt is a new
file, and an entry records the sha256 of the exact bytes used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from subbench import resources
from subbench.errors import ConfigError
from subbench.hashing import sha256_file

TEMPLATES_DIR = resources.judge_templates_dir()
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.])")
_WORD = re.compile(r"[A-Za-z_]+")


@dataclass(frozen=True)
class Template:
    name: str
    path: Path
    sha256: str
    body: str
    parse: str
    labels: tuple[tuple[str, float], ...] = ()
    low: float = 0.0
    high: float = 100.0
    system: str | None = None
    measures: str | None = None
    max_tokens: int = 8

    def messages(self, sample: dict, target: str | None) -> list[dict[str, str]]:
        values = {"prompt": str(sample.get("prompt", sample.get("question", ""))),
                  "response": str(sample.get("response", "")),
                  "target": str(target or self.measures or "")}
        text = re.sub(r"\{(prompt|response|target)\}", lambda m: values[m.group(1)], self.body)
        out = [{"role": "system", "content": self.system}] if self.system else []
        return out + [{"role": "user", "content": text}]

    def verdict(self, reply: str) -> float | None:
        """The score a reply states, or None when it states none (or contradicts itself)."""
        if self.parse == "score":
            m = _NUMBER.search(reply or "")
            if not m:
                return None
            value = float(m.group(0))
            if not self.low <= value <= self.high:
                return None
            return (value - self.low) / (self.high - self.low)
        table = {name.lower(): value for name, value in self.labels}
        found = {w.lower() for w in _WORD.findall(reply or "") if w.lower() in table}
        if len(found) != 1:
            return None
        return table[found.pop()]

    def describe(self) -> dict[str, str]:
        return {"template": self.name, "template_sha256": self.sha256}


def available(directory: Path = TEMPLATES_DIR) -> list[str]:
    return sorted(p.stem for p in Path(directory).glob("*.txt"))


def load_template(name_or_path: str, directory: Path = TEMPLATES_DIR) -> Template:
    """A template by name (``tasks/judges/<name>.txt``) or by path to a ``.txt`` file."""
    raw = str(name_or_path)
    path = Path(raw)
    if not (path.suffix == ".txt" and path.is_file()):
        path = Path(directory) / f"{raw}.txt"
    if not path.is_file():
        raise ConfigError(f"No judge template '{raw}'; use one of: {', '.join(available(directory)) or 'none'} "
                          f"(files in {directory}) or a path to a .txt template.")
    text = path.read_text(encoding="utf-8")
    head, sep, body = text.partition("\n---\n")
    if not sep:
        raise ConfigError(f"Judge template {path} has no '---' line between its header and its prompt; add one.")
    meta: dict[str, str] = {}
    for line in head.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, colon, value = line.partition(":")
        if not colon:
            raise ConfigError(f"Judge template {path}: header line {line!r} is not 'key: value'.")
        meta[key.strip().lower()] = value.strip()
    parse = meta.get("parse", "label")
    kw: dict = {}
    if parse == "label":
        labels = []
        for part in meta.get("labels", "").split(","):
            label, eq, value = part.partition("=")
            if not eq or not label.strip():
                raise ConfigError(f"Judge template {path}: write labels as 'labels: COMPLY=1, REFUSE=0'.")
            labels.append((label.strip(), float(value)))
        kw["labels"] = tuple(labels)
    elif parse == "score":
        lo, dash, hi = meta.get("range", "0-100").partition("-")
        try:
            kw["low"], kw["high"] = float(lo), float(hi)
        except ValueError:
            raise ConfigError(f"Judge template {path}: write the score range as 'range: 0-100'.") from None
    else:
        raise ConfigError(f"Judge template {path}: parse must be 'label' or 'score', not {parse!r}.")
    return Template(name=path.stem, path=path, sha256=sha256_file(path), body=body.strip("\n"), parse=parse,
                    system=meta.get("system") or None, measures=meta.get("measures") or None,
                    max_tokens=int(meta.get("max_tokens", 8)), **kw)
