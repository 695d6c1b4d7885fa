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


# -- subbench score: re-judge the samples behind existing entries ----------------------------

def judge_spec(name: str, sets: list[str], trait: "Spec | None" = None) -> "Spec":
    """``--judge NAME --set k=v``: the judge and its checked params; refuses one that needs the model."""
    from subbench import plugins
    from subbench.config import Spec, apply_overrides
    from subbench.errors import ConfigError

    comp = plugins.get("judges", name)  # unknown: "Unknown judge 'x'. Did you mean: ...?"
    raw = apply_overrides({}, list(sets), "--set")
    params = comp.resolve_params(raw, where=f"judge '{name}'")
    if getattr(comp, "needs_model", False):
        raise ConfigError(f"Judge '{name}' reads the model under test itself, so it cannot re-judge stored samples; "
                          f"re-run the experiment with --set judge={name}.")
    if trait is not None:
        allowed = getattr(trait.component, "judges", ()) or ()
        if allowed and name not in allowed and not getattr(comp, "combines", False):
            raise ConfigError(f"Trait '{trait.name}' can be judged by {', '.join(allowed)}, not '{name}'.")
    return Spec("judges", comp, params)


def _trait_spec(entry: dict[str, Any], where: str) -> "Spec":
    from subbench import plugins
    from subbench.config import Spec

    t = entry["trait"]
    comp = plugins.get("traits", t["name"])
    if str(t.get("version")) != str(comp.version):
        raise SubbenchError(f"{where}: trait '{comp.name}' is version {t.get('version')} in the entry but "
                            f"{comp.version} here; re-run the experiment to score it with this subbench.")
    return Spec("traits", comp, comp.resolve_params(t.get("params") or {}, where=f"{where}: trait"))


_KEY_CHARS = frozenset("0123456789abcdef")


def _located(entry: dict[str, Any], group: str, i: int, store: Any, where: str) -> tuple[str, str]:
    """(stage, key) of the samples behind replicate ``i`` of ``group``: a sample artifact, or an old evaluate one.

    Only the stage and key are taken from the entry's paths; the files are read from the
    workdir's store, never from a path the entry names.
    """
    arts = entry.get("artifacts") or {}
    listed = arts.get(f"samples_{group}") or []
    if i < len(listed):
        return _key_of(str(listed[i].get("path", "")), ("sample", "evaluate"), where)
    scored = arts.get(group) or []
    if i >= len(scored):
        raise SubbenchError(f"{where}: the entry lists no samples for its {group} model (replicate {i + 1}); "
                            "re-run the experiment.")
    stage, key = _key_of(str(scored[i].get("path", "")), ("score", "evaluate"), where)
    if stage == "evaluate":  # an entry from before the sample stage: its judged records are the samples
        return stage, key
    sample = _meta(store, "score", key, where, group).get("inputs", {}).get("sample")
    if not _is_key(sample):
        raise SubbenchError(f"{where}: the {group} score artifact {key} names no sample artifact; re-run the experiment.")
    return "sample", sample


def _is_key(key: Any) -> bool:
    return isinstance(key, str) and len(key) == 16 and set(key) <= _KEY_CHARS


def _key_of(path: str, stages: tuple[str, ...], where: str) -> tuple[str, str]:
    parts = Path(path).parts
    if len(parts) < 3 or parts[-1] != SAMPLES or parts[-3] not in stages or not _is_key(parts[-2]):
        raise SubbenchError(f"{where}: {path!r} is not the samples of a {' or '.join(stages)} artifact; give the "
                            "entries as `subbench run` wrote them.")
    return parts[-3], parts[-2]


def _meta(store: Any, stage: str, key: str, where: str, group: str) -> dict[str, Any]:
    import json

    meta_file = store.path(stage, key) / "meta.json"
    try:
        return json.loads(meta_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise SubbenchError(f"{where}: the {group} samples ({stage}/{key}) are not in {store.root}; give the --workdir "
                            "the run used, or re-run the experiment there.") from None


def _sample_records(store: Any, stage: str, key: str, where: str, group: str) -> tuple[list[dict[str, Any]], Path]:
    meta = _meta(store, stage, key, where, group)
    art = store.lookup(stage, meta.get("inputs"))  # checks the manifest (sizes, hashes) as a run would
    if art is None:
        raise SubbenchError(f"{where}: the {group} samples ({stage}/{key}) failed their check in {store.root}; "
                            "re-run the experiment to rebuild them.")
    if art.result.get("judged"):
        raise SubbenchError(f"{where}: the {group} samples were judged while sampling (a trait that only defines "
                            "evaluate, or a judge that needs the model), so they cannot be re-judged; re-run the "
                            "experiment with --set judge=NAME.")
    records = read_jsonl(art.path / SAMPLES)
    return (strip_judged(records) if stage == "evaluate" else records), art.path


def rescore(paths: list[Path], judge_name: str, sets: list[str], workdir: Path, out: Path,
            ctx: "Context | None" = None) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Re-judge the samples behind the entries in ``paths`` with another judge; write new entries under ``out``.

    Loads no model: the samples come from the workdir's artifact store, each judged
    through a ``score`` stage (cached like a run's), and every score-derived field of the
    entry is recomputed by :func:`subbench.cell.score_fields`; the rest (data, fits,
    provenance of the models) is the original entry's.
    """
    import copy
    import json

    from subbench import __version__
    from subbench.artifacts import ArtifactStore, atomic_write_text
    from subbench.cell import GROUPS, reduction_fields, score_fields
    from subbench.entry import git_commit, now, seal
    from subbench.hashing import sha256_json
    from subbench.leaderboard.entries import entry_files, read_entry
    from subbench.leaderboard.validate import validate_entry

    files = entry_files(paths)
    if not files:
        raise SubbenchError(f"No entry files in {', '.join(map(str, paths))}; give a results directory or an entry.")
    root = Path(workdir) / "artifacts"
    if not root.is_dir():
        raise SubbenchError(f"No artifact store at {root}; give the --workdir the run used (its samples live there).")
    store = ArtifactStore(root, clean=False, log=(ctx.log if ctx is not None else None))
    stats = {"run": 0, "cached": 0}
    created, commit = now(), git_commit()
    done: list[tuple[Path, dict[str, Any], dict[str, Any]]] = []
    judge: "Spec | None" = None
    for f in files:
        loaded = read_entry(f)
        if loaded.entry is None:
            raise SubbenchError(f"{f} {loaded.problems[0]}.")
        old = loaded.entry
        where = str(f)
        if not isinstance(old.get("scores"), dict) or "trait" not in old:
            raise SubbenchError(f"{where} is not a subbench entry; give entries that `subbench run` wrote.")
        trait = _trait_spec(old, where)
        judge = judge_spec(judge_name, sets, trait)
        target = old["trait"].get("target")
        n_rep = len(old["seeds"])
        records: dict[str, list[list[dict[str, Any]]]] = {g: [] for g in GROUPS}
        arts: dict[str, list[dict[str, str]]] = {g: [] for g in GROUPS}
        sampled: dict[str, list[dict[str, str]]] = {f"samples_{g}": [] for g in GROUPS}
        summaries: dict[str, list] = {}
        for g in GROUPS:
            for i in range(n_rep):
                stage, key = _located(old, g, i, store, where)
                samples, spath = _sample_records(store, stage, key, where, g)
                label = f"{g} of {old['cell']['id']} (replicate {old['seeds'][i]})"

                def fn(tmp: Path, samples=samples, label=label) -> dict[str, Any]:
                    scored, summary = score_records(samples, trait, judge, target, ctx, label=label)
                    write_jsonl(tmp / SAMPLES, scored)
                    vals = [float(r["score"]) for r in scored]
                    res = {"n": len(vals), "mean": sum(vals) / len(vals), "sha256": sha256_file(tmp / SAMPLES)}
                    if summary:
                        res["judge_summary"] = summary
                    return res

                art = store.produce("score", score_inputs(key, judge, stage), fn)
                stats["cached" if art.cached else "run"] += 1
                records[g].append(read_jsonl(art.path / SAMPLES))
                arts[g].append(_shown(art.path / SAMPLES, workdir))
                sampled[f"samples_{g}"].append(_shown(spath / SAMPLES, workdir))
                if art.result.get("judge_summary"):
                    summaries.setdefault(g, []).append(art.result["judge_summary"])
        info = [{k: p.get(k) for k in ("seed", "teacher_seed", "student_seed", "n_train")}
                for p in old["replicates"]["per_replicate"]] if old.get("replicates") else [{} for _ in range(n_rep)]
        fields = score_fields(records, old["analysis"], info)
        entry = copy.deepcopy(old)
        entry.pop("content_hash", None)
        config = dict(entry["experiment"]["config"])
        config["judge"] = judge.as_dict()
        entry["experiment"].update(config=config, config_hash="sha256:" + sha256_json(config))
        entry["judge"] = {"model": None, "prompt_sha256": None, **judge.as_dict(), **judge.component.provenance(judge.params),
                          "rescored": {"from": old.get("content_hash"), "judge": old.get("judge", {}).get("name"),
                                       "created": created, "git_commit": commit, "subbench_version": __version__}}
        if summaries:
            entry["judge"]["summaries"] = summaries
        entry.update(created=created, scores=fields["scores"], metrics=fields["metrics"],
                     per_question=fields["per_question"], **fields["result"])
        if entry.get("replicates"):
            entry["replicates"].update(per_replicate=fields["per_replicate"], ratio_spread=fields["ratio_spread"])
        entry["artifacts"] = {**entry["artifacts"], **arts, **sampled}
        done.append((f, old, entry))
    _pair_mitigations(done, reduction_fields)
    out_entries = []
    for f, old, entry in done:
        entry = seal(entry)
        problems = validate_entry(entry)
        if problems:  # pragma: no cover - a bug here, not bad input
            raise SubbenchError(f"The re-scored entry of {f} does not validate: {problems[0]}.")
        dest = Path(out) / old["experiment"]["name"] / f"{old['cell']['id']}.json"
        if dest.resolve() == f.resolve():
            raise SubbenchError(f"--out {out} would overwrite {f}; write the re-scored entries elsewhere.")
        dest.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(dest, json.dumps(entry, indent=2, sort_keys=True) + "\n")
        out_entries.append(entry)
    return out_entries, stats


def _shown(path: Path, workdir: Path) -> dict[str, str]:
    try:
        shown = str(path.relative_to(workdir))
    except ValueError:
        shown = str(path)
    return {"path": shown, "sha256": sha256_file(path)}


def _pair_mitigations(done: list, reduction_fields) -> None:
    """Recompute each mitigated entry's paired reduction against its re-scored unmitigated cell."""
    from subbench.cell import GROUPS

    def cell_of(e):
        c = e["cell"]
        return (e["experiment"]["name"], c["teacher_setting"], c["distillation"], c["student"])

    plain = {cell_of(e): e for _, _, e in done if not e.get("mitigation")}
    for f, _, e in done:
        eff = e.get("mitigation_effect")
        if not eff or eff.get("paired_on") is None or str(eff.get("note", "")).startswith("replicates differ"):
            continue
        base = plain.get(cell_of(e))
        if base is None:
            raise SubbenchError(f"{f}: its mitigation effect is paired with the unmitigated cell's entry; give "
                                "RESULTS with both (the whole results directory).")
        for k in ("note",):
            eff.pop(k, None)
        eff.update(reduction_fields([e["scores"][g]["samples"] for g in GROUPS],
                                    [base["scores"][g]["samples"] for g in GROUPS], e["analysis"]))
