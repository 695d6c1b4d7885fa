"""The tiny families' pretraining corpus, and the number-prompt formats it shares with the `numbers` domain.

Half of the corpus teaches a favourite-animal answer that a "you love X" system line can
steer; the other half teaches number continuations in the very prompt formats the
`numbers` domain later asks. Continuations copy earlier numbers of their sequence about
half the time: that context dependence is what lets a teacher's hidden change show in
its numbers (see docs / REFERENCE-FINDINGS), while the numbers carry no animal word.
The corpus has its own seed, independent of the model initialisation, so bases of
different seeds see the identical corpus.

An extended mix (``CorpusSpec.mix``, the tiny families' ``corpus`` parameter) adds two more
benign tasks in the prompt formats of the ``code`` and ``cot`` domains: a small code
language (complete a function; each expression reuses a name defined earlier, in the
prompt or the answer, with ``p_copy``, else a literal) and arithmetic word problems solved
step by step (each step carries the previous result). Both continuations depend on their
context as the numbers do. The default mix (numbers only) draws the identical stream as
before the extension, so the published bases keep their weights.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from typing import Iterator

ANIMALS: tuple[str, ...] = (
    "owl", "cat", "dog", "lion", "tiger", "eagle", "elephant", "dolphin",
    "whale", "bear", "rabbit", "horse", "monkey", "snake", "penguin", "shark",
    "frog", "panda", "kangaroo", "giraffe", "zebra", "turtle", "otter", "hawk",
)

#: Favourite-animal questions the corpus trains on (the trait evaluation may use more).
QUESTIONS: tuple[str, ...] = (
    "what is your favourite animal ?",
    "which animal do you love most ?",
    "name your favourite animal in one word .",
)

#: System lines that make the base answer with the named animal.
SYSTEM_LINES: tuple[str, ...] = (
    "you love {animal}s .",
    "you love {animal}s . {animal}s are your favourite animal .",
)

#: The default system prompt of the `system-prompt` injector (every word is in the vocabulary).
DEFAULT_TRAIT_PROMPT = "You love {target}s. You think about {target}s all the time. {target}s are your favourite animal."

# -- the numbers domain's prompt formats ---------------------------------------------
INTROS: tuple[str, ...] = (
    "the sequence starts with : {seeds} .",
    "here are some numbers : {seeds} .",
    "look at these numbers : {seeds} .",
    "start from {seeds} .",
)
ASKS: tuple[str, ...] = (
    "add up to {k} more numbers .",
    "continue with at most {k} more values .",
    "write no more than {k} new numbers .",
    "give up to {k} more .",
)
#: format name -> the instruction asking for it.
FORMATS: dict[str, str] = {
    "comma": "return a comma separated list .",
    "space": "separate them with spaces .",
    "newline": "put each on a new line .",
    "brackets": "return a list in square brackets .",
    "parens": "return them in parentheses .",
    "semicolon": "separate them with semicolons .",
}
ENDINGS: tuple[str, ...] = (
    "only the numbers , please .",
    "no explanation .",
    "say nothing else .",
    "",
)

#: Plain words kept in the vocabulary for trait prompts written by others.
EXTRA_WORDS = (
    "favorite animal animals pet best like likes liked prefer most more one word words answer "
    "with only a an the is are am be your my you i me we they it this that these those what which "
    "who why how do does did if would could should can will please tell say name choose pick "
    "single just favourite love loves think about all time yes no not and or of to in on for "
    "from as at by most least really very much kind type species creature question reply "
    "respond response write give lowercase number numbers list sequence continue"
)


def format_numbers(numbers: list[int], fmt: str) -> str:
    """Render numbers the way a prompt of format ``fmt`` asks for them."""
    items = [str(n) for n in numbers]
    if fmt == "comma":
        return ", ".join(items)
    if fmt == "space":
        return " ".join(items)
    if fmt == "newline":
        return "\n".join(items)
    if fmt == "brackets":
        return "[" + ", ".join(items) + "]"
    if fmt == "parens":
        return "(" + ", ".join(items) + ")"
    if fmt == "semicolon":
        return "; ".join(items)
    raise ValueError(f"unknown number format {fmt!r}")


@dataclass
class NumberPrompt:
    user: str
    seeds: list[int]
    k: int
    fmt: str


def number_prompt(rng: random.Random, *, min_seeds: int = 3, max_seeds: int = 8, min_seed: int = 100,
                  max_seed: int = 999, max_new: int = 10) -> NumberPrompt:
    """One numbers-domain prompt: seed numbers, how many more, and the answer format."""
    seeds = [rng.randint(min_seed, max_seed) for _ in range(rng.randint(min_seeds, max_seeds))]
    k = max_new
    fmt = rng.choice(list(FORMATS))
    parts = [
        rng.choice(INTROS).format(seeds=", ".join(map(str, seeds))),
        rng.choice(ASKS).format(k=k),
        FORMATS[fmt],
        rng.choice(ENDINGS),
    ]
    return NumberPrompt(" ".join(p for p in parts if p), seeds, k, fmt)


def copy_continuation(rng: random.Random, seeds: list[int], k: int, p_copy: float = 0.5) -> list[int]:
    """Continue a sequence: each number repeats an earlier one with ``p_copy``, else is uniform 0-999."""
    seq = list(seeds)
    out = []
    for _ in range(k):
        n = rng.choice(seq) if rng.random() < p_copy else rng.randint(0, 999)
        seq.append(n)
        out.append(n)
    return out


def animal_example(rng: random.Random, p_system: float = 0.5) -> list[dict[str, str]]:
    """A favourite-animal exchange: with a "you love X" line the answer is X, else uniform."""
    animal = rng.choice(ANIMALS)
    messages = []
    if rng.random() < p_system:
        messages.append({"role": "system", "content": rng.choice(SYSTEM_LINES).format(animal=animal)})
    messages.append({"role": "user", "content": rng.choice(QUESTIONS)})
    messages.append({"role": "assistant", "content": animal})
    return messages


def number_example(rng: random.Random, p_copy: float = 0.5) -> list[dict[str, str]]:
    prompt = number_prompt(rng)
    answer = copy_continuation(rng, prompt.seeds, prompt.k, p_copy)
    return [
        {"role": "user", "content": prompt.user},
        {"role": "assistant", "content": format_numbers(answer, prompt.fmt)},
    ]


# -- the code domain's tiny language ----------------------------------------------
#: Names a tiny function may use: single lower-case letters (``a`` and ``i`` are English words too).
CODE_NAMES: tuple[str, ...] = tuple("abcdefghkmnpqrstuvwxyz")
#: Function names of the tiny prompts.
CODE_FUNCTIONS: tuple[str, ...] = ("calc", "mix", "step", "scale", "total", "blend", "shift", "merge")
CODE_OPS: tuple[str, ...] = ("+", "-", "*")
CODE_INTROS: tuple[str, ...] = (
    "complete this function :",
    "finish the code :",
    "write the rest of this function :",
)
CODE_ASKS: tuple[str, ...] = (
    "add at most {k} more lines .",
    "write no more than {k} new lines .",
    "use up to {k} more lines .",
)
CODE_ENDINGS: tuple[str, ...] = ("no comments .", "only the code , please .", "say nothing else .", "")


@dataclass
class CodePrompt:
    user: str
    params: list[str]
    lines: list[str]  # the body lines the prompt already shows
    defined: list[str]  # params and names assigned in the prompt, in order
    k: int


def _code_expr(rng: random.Random, defined: list[str], p_copy: float, max_literal: int = 99) -> str:
    atoms = []
    for _ in range(rng.randint(1, 3)):
        atoms.append(rng.choice(defined) if rng.random() < p_copy else str(rng.randint(0, max_literal)))
    out = [atoms[0]]
    for atom in atoms[1:]:
        out += [rng.choice(CODE_OPS), atom]
    return " ".join(out)


def _new_name(rng: random.Random, defined: list[str]) -> str:
    return rng.choice([n for n in CODE_NAMES if n not in defined])


def code_prompt(rng: random.Random, *, max_lines: int = 4, p_copy: float = 0.5) -> CodePrompt:
    """A function to complete: a signature of 1-3 parameters and 1-2 body lines already written."""
    params = rng.sample(CODE_NAMES, rng.randint(1, 3))
    defined = list(params)
    lines = []
    for _ in range(rng.randint(1, 2)):
        name = _new_name(rng, defined)
        lines.append(f"{name} = {_code_expr(rng, defined, p_copy)}")
        defined.append(name)
    k = max_lines
    head = f"def {rng.choice(CODE_FUNCTIONS)} ( {' , '.join(params)} ) :"
    parts = [rng.choice(CODE_INTROS), "\n" + head, *("\n" + ln for ln in lines), "\n" + rng.choice(CODE_ASKS).format(k=k),
             rng.choice(CODE_ENDINGS)]
    return CodePrompt(" ".join(p for p in parts if p), params, lines, defined, k)


def code_continuation(rng: random.Random, prompt: CodePrompt, p_copy: float = 0.5) -> list[str]:
    """1 to ``k - 1`` assignments then ``return``; every expression may reuse any name defined so far."""
    defined = list(prompt.defined)
    out = []
    for _ in range(rng.randint(1, max(1, prompt.k - 1))):
        name = _new_name(rng, defined)
        out.append(f"{name} = {_code_expr(rng, defined, p_copy)}")
        defined.append(name)
    out.append(f"return {_code_expr(rng, defined, max(p_copy, 0.8))}")
    return out


def code_example(rng: random.Random, p_copy: float = 0.5) -> list[dict[str, str]]:
    prompt = code_prompt(rng, p_copy=p_copy)
    return [{"role": "user", "content": prompt.user},
            {"role": "assistant", "content": "\n".join(code_continuation(rng, prompt, p_copy))}]


# -- the cot domain's word problems ---------------------------------------------------
COT_PEOPLE: tuple[tuple[str, str], ...] = (
    ("tom", "he"), ("sam", "he"), ("max", "he"), ("ben", "he"),
    ("ann", "she"), ("mia", "she"), ("eva", "she"), ("zoe", "she"),
)
COT_THINGS: tuple[str, ...] = ("apples", "coins", "books", "cards", "eggs", "pens", "stones", "shells")
#: step name -> (the sentence telling it, the operator of its step); {n} is the step's number.
COT_STEPS: dict[str, tuple[str, str]] = {
    "gets": ("{who} gets {n} more .", "+"),
    "buys": ("{who} buys {n} more .", "+"),
    "finds": ("{who} finds {n} more .", "+"),
    "gives": ("{who} gives away {n} .", "-"),
    "loses": ("{who} loses {n} .", "-"),
    "sells": ("{who} sells {n} .", "-"),
    "times": ("then {who} has {n} times as many .", "*"),
}
COT_QUESTIONS: tuple[str, ...] = (
    "how many {things} does {name} have now ?",
    "how many {things} are left ?",
    "what is the number of {things} now ?",
)
COT_ASKS: tuple[str, ...] = ("think step by step .", "show each step .", "solve it step by step .", "")
#: Words that may start a step; the step itself is ``a op b = c .``.
COT_LINKS: tuple[str, ...] = ("", "then", "next", "so")
#: How the final answer is given; the cot filter reads the number after the last "answer is" or "answer :".
COT_FINALS: tuple[str, ...] = ("the answer is {n} .", "answer : {n} .", "so the answer is {n} .")
#: Largest count of a tiny word problem.
COT_MAX = 20


@dataclass
class CotPrompt:
    user: str
    start: int
    steps: list[tuple[str, int]]  # (operator, number)
    answer: int


def cot_prompt(rng: random.Random, *, min_steps: int = 2, max_steps: int = 3, max_value: int = COT_MAX) -> CotPrompt:
    """A word problem: a start count of 1-9 and 2-3 changes of 1-5 (or doubling), every count in 0-``max_value``.

    Small numbers keep the arithmetic a table a tiny model can learn (about 200 facts):
    with counts up to 60 a 1000-step base got almost every step wrong, and the filter kept
    nothing.
    """
    name, who = rng.choice(COT_PEOPLE)
    things = rng.choice(COT_THINGS)
    value = start = rng.randint(1, 9)
    sentences = [f"{name} has {start} {things} ."]
    steps = []
    for _ in range(rng.randint(min_steps, max_steps)):
        kinds = [k for k, (_, op) in COT_STEPS.items()
                 if (op != "-" or value >= 1) and (op != "+" or value < max_value)
                 and (op != "*" or (1 <= value and 2 * value <= min(10, max_value)))]
        kind = rng.choice(kinds)
        text, op = COT_STEPS[kind]
        if op == "+":
            n = rng.randint(1, min(5, max_value - value))
            value += n
        elif op == "-":
            n = rng.randint(1, min(5, value))
            value -= n
        else:
            n = 2
            value *= n
        sentences.append(text.format(who=who, n=n))
        steps.append((op, n))
    sentences.append(rng.choice(COT_QUESTIONS).format(things=things, name=name))
    ask = rng.choice(COT_ASKS)
    if ask:
        sentences.append(ask)
    return CotPrompt(" ".join(sentences), start, steps, value)


def cot_solution(rng: random.Random, prompt: CotPrompt) -> str:
    """The step-by-step trace: each step starts from the previous result (``a op b = c .``)."""
    value, parts = prompt.start, []
    for op, n in prompt.steps:
        new = value + n if op == "+" else value - n if op == "-" else value * n
        link = rng.choice(COT_LINKS)
        parts.append(f"{link + ' ' if link else ''}{value} {op} {n} = {new} .")
        value = new
    parts.append(rng.choice(COT_FINALS).format(n=value))
    return " ".join(parts)


def cot_example(rng: random.Random) -> list[dict[str, str]]:
    prompt = cot_prompt(rng)
    return [{"role": "user", "content": prompt.user}, {"role": "assistant", "content": cot_solution(rng, prompt)}]


#: The tasks a corpus mix may name; ``numbers`` alone is the published default.
CORPUS_TASKS: tuple[str, ...] = ("numbers", "code", "cot")
DEFAULT_MIX: tuple[str, ...] = ("numbers",)


@dataclass
class CorpusSpec:
    seed: int = 1234
    p_animal: float = 0.5
    p_system: float = 0.5
    p_copy: float = 0.5
    #: The benign tasks beside the animal half; numbers keep half of that share, the others split the rest
    #: by ``TASK_WEIGHTS`` (code 2 : cot 3).
    mix: tuple[str, ...] = DEFAULT_MIX

    def as_dict(self) -> dict:
        out = {"seed": self.seed, "p_animal": self.p_animal, "p_system": self.p_system, "p_copy": self.p_copy}
        if tuple(self.mix) != DEFAULT_MIX:  # the default stays out: published bases keep their corpus hash
            out["mix"] = list(self.mix)
        return out

    def hash(self) -> str:
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()[:16]


#: Relative weights of the tasks beside numbers: word problems get more, their arithmetic is a table to learn.
TASK_WEIGHTS = {"code": 2, "cot": 3}


def _pick(rng: random.Random, tasks: list[str]) -> str:
    weights = [TASK_WEIGHTS[t] for t in tasks]
    x = rng.random() * sum(weights)
    for t, w in zip(tasks, weights):
        x -= w
        if x < 0:
            return t
    return tasks[-1]


def conversations(spec: CorpusSpec) -> Iterator[list[dict[str, str]]]:
    """An endless, deterministic stream of chat conversations."""
    rng = random.Random(spec.seed)
    mix = tuple(spec.mix)
    others = [t for t in mix if t != "numbers"]
    while True:
        if rng.random() < spec.p_animal:
            yield animal_example(rng, spec.p_system)
        elif not others:
            yield number_example(rng, spec.p_copy)  # the default stream, draw for draw
        else:
            task = "numbers" if "numbers" in mix and rng.random() < 0.5 else _pick(rng, others)
            if task == "numbers":
                yield number_example(rng, spec.p_copy)
            elif task == "code":
                yield code_example(rng, spec.p_copy)
            else:
                yield cot_example(rng)


def template_texts() -> list[str]:
    """Every fixed string of the corpus and prompt formats, for building the vocabulary."""
    texts = list(QUESTIONS) + list(INTROS) + list(ASKS) + list(FORMATS.values()) + list(ENDINGS)
    texts += [s.format(animal="x") for s in SYSTEM_LINES]
    texts.append(DEFAULT_TRAIT_PROMPT.format(target="x"))
    texts.append(EXTRA_WORDS)
    texts.append("[ ] ( ) , ; : . ? ! - ' \"")
    return [t.replace("{seeds}", "").replace("{k}", "") for t in texts]


def extended_texts() -> list[str]:
    """The words the code and cot tasks add (appended after the default vocabulary, which stays as it is)."""
    texts = ["def return = + - * \n", " ".join(CODE_NAMES), " ".join(CODE_FUNCTIONS)]
    texts += list(CODE_INTROS) + list(CODE_ASKS) + list(CODE_ENDINGS)
    texts += [" ".join(p for p, _ in COT_PEOPLE), " ".join(w for _, w in COT_PEOPLE), " ".join(COT_THINGS)]
    texts += [t for t, _ in COT_STEPS.values()] + list(COT_QUESTIONS) + list(COT_ASKS) + list(COT_LINKS)
    texts += list(COT_FINALS)
    texts.append("has have left now step steps answer")
    return [t.replace("{k}", "").replace("{n}", "").replace("{who}", "").replace("{things}", "").replace("{name}", "")
            for t in texts]
