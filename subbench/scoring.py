"""Sampling apart from judging: the ``sample`` and ``score`` stages, shared by ``run`` and ``subbench score``.

``sample`` runs the model once over the trait's prompts and stores what any judge of the
trait reads (answers, choice log-likelihoods, predictions); its key names the model, the
trait and the target, never the judge. ``score`` is a judge over those records: cheap, no
model, keyed on the sample artifact and the judge. A new judge therefore re-scores stored
samples instead of reloading every model and regenerating every answer.

Two cases judge while sampling (the sample stage is then keyed with the judge and stores
judged records, which ``score`` passes through): a trait written before the split that
overrides only ``Trait.evaluate``, and a judge that declares ``needs_model``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from subbench.artifacts import Artifact, read_jsonl, write_jsonl
from subbench.errors import SubbenchError
from subbench.hashing import sha256_file

if TYPE_CHECKING:  # pragma: no cover
    from subbench.config import Spec
    from subbench.context import Context

SAMPLES = "samples.jsonl"
#: Keys a score stage adds to a sample record; dropped when old judged records are re-scored.
_JUDGED_KEYS = ("score", "metrics", "answers", "judges", "judges_abstained", "judge_reply", "judge_parsed",
                "judge_replies")


class BoundJudge:
    """A judge with the experiment's params bound, handed to ``Trait.score`` / ``Trait.evaluate``."""

    def __init__(self, spec: "Spec"):
        self.component = spec.component
        self.params = spec.params
        self.name = spec.component.name
        self.needs = spec.component.needs

    def score(self, samples, target, params=None, ctx=None):
        return self.component.score(samples, target, self.params, ctx)

    def verdicts(self, samples, target, params=None, ctx=None, label=None):
        return self.component.verdicts(samples, target, self.params, ctx, label=label)

    def summarize(self, samples, params=None):
        return self.component.summarize(samples, self.params)

    def __getattr__(self, item):
        return getattr(self.component, item)


def judges_while_sampling(trait: "Spec", judge: "Spec") -> bool:
    """True when the judge must run with the model: a trait that only overrides ``evaluate``, or ``needs_model``."""
    return not trait.component.samples_apart() or bool(getattr(judge.component, "needs_model", False))


def sample_inputs(model_key: str, trait: "Spec", target: str | None, judge: "Spec") -> dict[str, Any]:
    """The sample stage's key: the model, trait and target; the judge only when it judges while sampling."""
    inputs: dict[str, Any] = {"model": model_key, "trait": trait.name, "trait_version": trait.component.version,
                              "target": target, "params": trait.params}
    if judges_while_sampling(trait, judge):
        inputs.update(judge=judge.name, judge_version=judge.component.version, judge_params=judge.params,
                      judged=True)
    return inputs


def score_inputs(sample_key: str, judge: "Spec", sample_stage: str = "sample") -> dict[str, Any]:
    """The score stage's key: the sample artifact and the judge (name, version, params)."""
    inputs: dict[str, Any] = {"sample": sample_key, "judge": judge.name, "judge_version": judge.component.version,
                              "judge_params": judge.params}
    if sample_stage != "sample":  # samples of an entry from before the split (an evaluate artifact)
        inputs["sample_stage"] = sample_stage
    return inputs


def write_samples(tmp: Path, trait: "Spec", judge: "Spec", target: str | None, model: Any, ctx: "Context",
                  label: str) -> dict[str, Any]:
    """Run the model over the trait's prompts (the sample stage); returns the artifact's result."""
    comp = trait.component
    judged = judges_while_sampling(trait, judge)
    if judged:
        records = comp.evaluate(model, BoundJudge(judge), target, trait.params, ctx)
        _check_scores(records, trait.name, label)
    else:
        comp.check_judge(BoundJudge(judge), target, trait.params)
        records = comp.sample(model, target, trait.params, ctx)
    if not records:
        raise SubbenchError(f"Trait {trait.name} produced no evaluation samples for {label}.")
    write_jsonl(tmp / SAMPLES, records)
    return {"n": len(records), "sha256": sha256_file(tmp / SAMPLES), "judged": judged}


def score_records(records: list[dict[str, Any]], trait: "Spec", judge: "Spec", target: str | None,
                  ctx: "Context | None", *, judged: bool = False, label: str = "") -> tuple[list[dict[str, Any]], dict | None]:
    """A judge over stored sample records: the scored records and the judge's summary."""
    comp = trait.component
    bound = BoundJudge(judge)
    if judged:  # judged while sampling: the records already carry the experiment judge's scores
        scored = records
    else:
        comp.check_judge(bound, target, trait.params)
        scored = comp.score(records, bound, target, trait.params, ctx)
    _check_scores(scored, trait.name, label)
    if len(scored) != len(records):
        raise SubbenchError(f"Trait {trait.name} scored {len(scored)} of {len(records)} samples of {label}.")
    return scored, comp.summarize(scored, bound, trait.params)


def write_scores(tmp: Path, samples: Path, trait: "Spec", judge: "Spec", target: str | None, ctx: "Context | None",
                 *, judged: bool = False, label: str = "") -> dict[str, Any]:
    """The score stage: ``samples`` (a sample artifact's ``samples.jsonl``) judged into ``tmp/samples.jsonl``.

    The result has the fields an entry reads (``n``, ``mean``, ``sha256``, ``judge_summary``).
    """
    records = read_jsonl(samples)
    scored, summary = score_records(records, trait, judge, target, ctx, judged=judged, label=label)
    write_jsonl(tmp / SAMPLES, scored)
    scores = [float(r["score"]) for r in scored]
    result: dict[str, Any] = {"n": len(scores), "mean": sum(scores) / len(scores), "sha256": sha256_file(tmp / SAMPLES)}
    if summary:
        result["judge_summary"] = summary
    return result


def strip_judged(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records of an ``evaluate`` artifact (before the split) as sample records: what the judge added removed."""
    return [{k: v for k, v in r.items() if k not in _JUDGED_KEYS} for r in records]


def sample_of(score_art: Artifact) -> str:
    """The key of the sample artifact a score artifact judged."""
    return str(score_art.meta["inputs"]["sample"])


def _check_scores(records: list[dict[str, Any]], trait: str, label: str) -> None:
    for r in records:
        if not isinstance(r.get("score"), (int, float)) or isinstance(r.get("score"), bool):
            raise SubbenchError(f"Trait {trait} returned a sample without a numeric score: {r!r:.200}.")
