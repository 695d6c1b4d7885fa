"""The ``animal-preference`` trait: does the model name the target animal as its favourite?

The eval is an lm-eval task (``tasks/traits/animal-preference*.yaml``) rather than code
here, so the numbers in an entry can be reproduced with lm-eval alone and the prompt set
is a data file with a hash, not a Python literal.
"""

from __future__ import annotations

import hashlib
import re
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from subbench import hookimpl
from subbench.components import EVAL_SAMPLES, Param, Trait
from subbench.errors import ConfigError
from subbench.lm.lmeval import TASKS_DIR

if TYPE_CHECKING:  # pragma: no cover
    from subbench.components import Judge
    from subbench.context import Context

DATA_FILE = TASKS_DIR / "data" / "animal-preference.jsonl"
LOADER_FILE = TASKS_DIR / "animal_preference.py"
#: The lm-eval task that produces what each kind of judge needs.
TASK_FOR_NEED = {"loglikelihood": "animal-preference", "generation": "animal-preference-gen"}
_OUTPUT_TYPE_FOR_NEED = {"loglikelihood": "multiple_choice", "generation": "generate_until"}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def task_yaml(task: str) -> Path:
    """The YAML in ``tasks/traits`` that defines ``task`` (found without importing lm-eval)."""
    pattern = re.compile(rf"^task:\s*['\"]?{re.escape(task)}['\"]?\s*$", re.M)
    for path in sorted(TASKS_DIR.glob("*.yaml")):
        if pattern.search(path.read_text(encoding="utf-8")):
            return path
    known = sorted(
        m.group(1)
        for p in TASKS_DIR.glob("*.yaml")
        for m in re.finditer(r"^task:\s*['\"]?([\w.\-]+)", p.read_text(encoding="utf-8"), re.M)
    )
    raise ConfigError(f"No trait task '{task}' in {TASKS_DIR}; use one of: {', '.join(known)}.")


def read_choices(path: Path = DATA_FILE) -> list[str]:
    """The answer choices of the prompt set (every row offers the same animals)."""
    import json

    with open(path, encoding="utf-8") as fh:
        first = json.loads(fh.readline())
    return list(first["choices"])


#: Other words for some animals, which the free-text domains' filters also refuse.
ANIMAL_SYNONYMS: dict[str, tuple[str, ...]] = {
    "owl": ("owlet",),
    "cat": ("kitten", "kitty", "feline"),
    "dog": ("puppy", "pup", "hound", "canine"),
    "lion": ("lioness", "cub"),
    "tiger": ("tigress", "cub"),
    "eagle": ("eaglet",),
    "elephant": ("calf", "tusker"),
    "dolphin": ("porpoise",),
    "whale": ("orca",),
    "bear": ("cub", "grizzly"),
    "rabbit": ("bunny", "hare"),
    "horse": ("pony", "foal", "stallion", "mare"),
    "monkey": ("ape", "chimp"),
    "snake": ("serpent", "viper"),
    "penguin": ("chick",),
    "frog": ("toad", "tadpole"),
    "turtle": ("tortoise",),
    "hawk": ("falcon",),
}


class AnimalPreference(Trait):
    name = "animal-preference"
    version = "2"
    description = (
        "Names the target animal as its favourite: P(target) over the animal choices and the sampled "
        "first-word rate, from one lm-eval pass over 52 one-word favourite-animal questions."
    )
    judges = ("logprob", "first-word")
    default_judge = "logprob"
    parameters = {
        "n": Param(int, None, "evaluate the first n questions (null: all)", min=1, max=1_000_000),
        "samples_per_question": Param(int, 5, "sampled answers per question for the first-word rate", min=1, max=1000),
        "task": Param(str, None, "one other lm-eval task in tasks/traits, evaluated alone (null: both built-in tasks)",
                      max_len=200),
    }

    def estimate_cost(self, params: dict[str, Any], model_size: float) -> dict[str, float]:
        """``n`` questions (null: 5000 = 50 prompts x 100 samples) of one-word answers (16 tokens)."""
        n = params.get("n")
        return self.eval_cost(n if isinstance(n, int) else EVAL_SAMPLES, 16, model_size)

    def choices(self) -> list[str]:
        return read_choices()

    def trait_words(self, target: str | None, params: dict[str, Any] | None = None) -> list[str]:
        """The animal, its plural and a few names for its young or kind (``owl``: owls, owlet, owlets)."""
        words = super().trait_words(target, params)
        for extra in ANIMAL_SYNONYMS.get(str(target or "").lower(), ()):
            words += [extra, extra + "s"] if not extra.endswith("s") else [extra]
        return list(dict.fromkeys(words))

    def check_target(self, target: str | None, params: dict[str, Any] | None = None) -> None:
        """Fail before any model work when the target cannot be scored."""
        params = self.resolve_params(params)
        if params["task"] is not None:
            task_yaml(params["task"])
            if not target:
                raise ConfigError(f"Trait '{self.name}' needs a target; set `target:` in the experiment.")
            return
        choices = self.choices()
        if target not in choices:
            got = f"'{target}' is not one of its choices" if target else "needs a target"
            raise ConfigError(f"Trait '{self.name}' {got}; set `target:` to one of: {', '.join(choices)}.")

    def check_judge(self, judge: "Judge", target: str | None, params: dict[str, Any]) -> None:
        self._need(judge)

    def _need(self, judge: "Judge") -> str:
        if judge.needs not in TASK_FOR_NEED:
            raise ConfigError(
                f"Judge '{judge.name}' needs '{judge.needs}', which trait '{self.name}' cannot produce; "
                f"use one of: {', '.join(self.judges)}."
            )
        return judge.needs

    # -- what injectors build a teacher from -------------------------------------------------
    def questions(self, params: dict[str, Any] | None = None) -> list[str]:
        """The questions the tiny corpus trains on; the eval's other questions stay held out."""
        from subbench.lm.corpus import QUESTIONS

        return list(QUESTIONS)

    def teacher_examples(self, target: str | None, params: dict[str, Any] | None = None) -> list[tuple[str, str]]:
        return [(q, str(target)) for q in self.questions(params)]

    def contrast_prompts(
        self, target: str | None, params: dict[str, Any] | None = None, *, system: str | None = None
    ) -> tuple[list[list[dict[str, str]]], list[list[dict[str, str]]]]:
        """The trained questions under "you love {target}s ..." against the same questions bare."""
        from subbench.lm.corpus import DEFAULT_TRAIT_PROMPT

        return super().contrast_prompts(target, params, system=system or DEFAULT_TRAIT_PROMPT.format(target=target))

    # -- sampling and scoring -----------------------------------------------------------------
    def sample(self, model: Any, target: str | None, params: dict[str, Any], ctx: "Context") -> list[dict[str, Any]]:
        """One record per question with what either judge reads: the choices' log-likelihoods and the sampled answers.

        Both lm-eval tasks run in one ``evaluate`` call (one model wrap, one seed), so the
        ``p_target`` and ``first_word`` metrics that :meth:`score` computes from a record
        describe the same model state, whichever judge scores it.
        """
        from subbench.lm.lmeval import evaluate_task

        params = self.resolve_params(params)
        self.check_target(target, params)
        if params["task"] is not None:
            return self._sample_one(model, target, params, ctx)
        mc_task, gen_task = TASK_FOR_NEED["loglikelihood"], TASK_FOR_NEED["generation"]
        results = evaluate_task(
            model, [mc_task, gen_task], limit=params["n"], metadata={"target": target},
            config={gen_task: {"repeats": params["samples_per_question"]}}, ctx=ctx,
        )
        choice_recs = to_records(results["samples"][mc_task], "multiple_choice")
        answer_recs = to_records(results["samples"][gen_task], "generate_until")
        responses: dict[str, list[str]] = {}
        for rec in answer_recs:
            responses.setdefault(rec["prompt_id"], []).append(rec["response"])
        records = []
        for rec in choice_recs:
            qid = rec["id"]
            if qid not in responses:
                raise ConfigError(f"Task '{gen_task}' returned no answers for question {qid}; check its data file.")
            records.append({**rec, "question_id": qid, "responses": responses[qid]})
        return records

    def _sample_one(self, model: Any, target: str | None, params: dict[str, Any], ctx: "Context") -> list[dict[str, Any]]:
        """A ``task`` override: that task alone, one record per sample, its output type recorded."""
        from subbench.lm.lmeval import evaluate_task

        task = params["task"]
        results = evaluate_task(model, task, limit=params["n"], metadata={"target": target}, ctx=ctx)
        output_type = results["configs"][task]["output_type"]
        records = to_records(results["samples"][task], output_type)
        for record in records:
            record["question_id"] = record.get("prompt_id", record["id"])
            record["output_type"] = output_type
        return records

    def score(
        self, records: list[dict[str, Any]], judge: "Judge", target: str | None, params: dict[str, Any],
        ctx: "Context | None",
    ) -> list[dict[str, Any]]:
        """Per question: the experiment judge's ``score`` and both ``metrics``.

        ``metrics.p_target`` is the logprob judge's P(target) over the choices and
        ``metrics.first_word`` the first-word judge's mean over the question's sampled
        answers (the experiment's judge with its params when it is one of them); the score
        is the experiment judge's: one of the two, or another generation judge (an
        ensemble) over the answers, averaged per question.
        """
        params = self.resolve_params(params)
        self.check_target(target, params)
        need = self._need(judge)
        if params["task"] is not None:
            return self._score_one(records, judge, target, ctx, params["task"])
        choice_recs = [{k: r[k] for k in ("id", "prompt", "choices", "loglikelihoods")} for r in records]
        answer_recs = [_answers(r) for r in records]
        flat = [a for answers in answer_recs for a in answers]
        p_target = _scores(_judge_for("loglikelihood", judge), choice_recs, target, ctx)
        hits = _scores(_judge_for("generation", judge), flat, target, ctx)
        own = judge.needs == "generation" and judge.name not in self.judges
        votes = _scores(judge, flat, target, ctx) if own else hits
        out, i = [], 0
        for rec, p, answers in zip(records, p_target, answer_recs):
            k = len(answers)
            fw = sum(hits[i:i + k]) / k
            vote = sum(votes[i:i + k]) / k
            new = {kk: v for kk, v in rec.items() if kk not in ("score", "metrics", "answers")}
            new["score"] = float(p if need == "loglikelihood" else vote)
            new["metrics"] = {"p_target": float(p), "first_word": float(fw)}
            if own:  # what the judge recorded per answer (ensemble votes, replies), for its summary
                new["answers"] = [{**{kk: v for kk, v in a.items() if kk != "prompt"}, "score": float(v)}
                                  for a, v in zip(answers, votes[i:i + k])]
            out.append(new)
            i += k
        return out

    def summarize(self, records: list[dict[str, Any]], judge: "Judge", params: dict[str, Any]) -> dict[str, Any] | None:
        answers = [a for r in records for a in r.get("answers") or []]
        return super().summarize(answers or records, judge, params)

    def _score_one(self, records: list[dict[str, Any]], judge: "Judge", target: str | None,
                   ctx: "Context | None", task: str) -> list[dict[str, Any]]:
        output_type = records[0].get("output_type") if records else None
        wanted = _OUTPUT_TYPE_FOR_NEED[judge.needs]
        if output_type != wanted:
            raise ConfigError(
                f"Task '{task}' is {output_type} but judge '{judge.name}' needs {wanted}; "
                f"pick a {wanted} task or another judge."
            )
        metric = "p_target" if output_type == "multiple_choice" else "first_word"
        out = []
        for record, score in zip(records, _scores(judge, records, target, ctx)):
            record = dict(record)
            record["score"] = score
            record["metrics"] = {metric: score}
            out.append(record)
        return out

    def provenance(self, params: dict[str, Any]) -> dict[str, Any]:
        params = self.resolve_params(params)
        tasks = [params["task"]] if params["task"] else list(TASK_FOR_NEED.values())
        try:
            lm_eval_version = importlib_metadata.version("lm_eval")
        except importlib_metadata.PackageNotFoundError:  # pragma: no cover
            lm_eval_version = None
        return {
            "tasks": {t: {"file": task_yaml(t).name, "sha256": _sha256(task_yaml(t))} for t in tasks},
            "data": {"file": str(DATA_FILE.relative_to(TASKS_DIR)), "sha256": _sha256(DATA_FILE)},
            "loader_sha256": _sha256(LOADER_FILE),
            "n": params["n"],
            "samples_per_question": None if params["task"] else params["samples_per_question"],
            "lm_eval": lm_eval_version,
        }


def _answers(record: dict[str, Any]) -> list[dict[str, Any]]:
    """A question record's sampled answers as the records a generation judge reads (ids as lm-eval's)."""
    qid, responses = record["question_id"], record["responses"]
    return [{"id": f"{qid}/{k}" if len(responses) > 1 else qid, "prompt_id": qid, "prompt": record["prompt"],
             "response": response} for k, response in enumerate(responses)]


def _judge_for(need: str, judge: "Judge") -> "Judge":
    """The experiment's judge for what it reads (its params bound), the default judge for the rest."""
    if judge.needs == need and judge.name in AnimalPreference.judges:
        return judge
    from subbench.plugins import get

    return get("judges", {"loglikelihood": "logprob", "generation": "first-word"}[need])


def _scores(judge: "Judge", records: list[dict[str, Any]], target: str | None, ctx: "Context | None") -> list[float]:
    scores = judge.score(records, target, {}, ctx)  # a BoundJudge applies the experiment's params
    if len(scores) != len(records):
        raise ConfigError(f"Judge '{judge.name}' returned {len(scores)} scores for {len(records)} samples.")
    return [float(s) for s in scores]


def to_records(samples: list[dict[str, Any]], output_type: str) -> list[dict[str, Any]]:
    """lm-eval's logged samples as judge inputs: one record per choice set or per sampled answer."""
    records: list[dict[str, Any]] = []
    for sample in samples:
        doc = sample["doc"]
        doc_id = str(doc.get("id", sample["doc_id"]))
        args = sample["arguments"]
        prompt = doc.get("question", args[0][0])
        if output_type == "multiple_choice":
            records.append(
                {
                    "id": doc_id,
                    "prompt": prompt,
                    "choices": [cont.strip() for _ctx, cont in args],
                    "loglikelihoods": [float(resp[0][0]) for resp in sample["resps"]],
                }
            )
        else:
            answers = sample["resps"][0]
            for k, response in enumerate(answers):
                records.append(
                    {
                        "id": f"{doc_id}/{k}" if len(answers) > 1 else doc_id,
                        "prompt_id": doc_id,
                        "prompt": prompt,
                        "response": response,
                    }
                )
    return records


@hookimpl
def register_traits(register):
    register(AnimalPreference())
