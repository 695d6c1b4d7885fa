"""Entry validation: schema, content hash, and numbers recomputed from the stored scores.

A leaderboard is only as trustworthy as its weakest entry, so every number an entry
states that can be recomputed from its per-sample scores is recomputed: group means,
sample counts, the transfer ratio and its seeded bootstrap CI. A hand-edited number
fails the content hash; an edit re-sealed with a new hash fails the recomputation.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable

from subbench.leaderboard.entries import SCHEMA_FILES, Loaded, entry_sources, load_schema, measurement_hash, read_entry

SUPPORTED_SCHEMA_VERSIONS = tuple(sorted(SCHEMA_FILES))
GROUPS = ("base", "teacher", "control", "student")
TOL = 1e-9
#: Bounds on the work one entry may ask of ``validate``: the bootstrap is recomputed, so an
#: entry asking for more draws than this is invalid rather than a denial of service.
MAX_BOOTSTRAP = 100_000
MAX_BOOTSTRAP_WORK = 500_000_000  # bootstrap draws x scored samples
MAX_BOOTSTRAP_LOOPS = 5_000_000  # bootstrap draws x replicates (a Python-level loop)

_VALIDATORS: dict[int, Any] = {}


def _validator(version: int):
    if version not in _VALIDATORS:
        import jsonschema

        _VALIDATORS[version] = jsonschema.Draft202012Validator(load_schema(version))
    return _VALIDATORS[version]


def _where(path) -> str:
    parts = [str(p) if not isinstance(p, int) else f"[{p}]" for p in path]
    out = ""
    for p in parts:
        out += p if p.startswith("[") or not out else "." + p
    return out or "entry"


def _schema_problem(err) -> str:
    where = _where(err.absolute_path)
    if err.validator == "required":
        missing = err.message.split("'")[1] if "'" in err.message else err.message
        field = missing if where == "entry" else f"{where}.{missing}"
        if field.startswith("scores.control") or field == "scores.control":
            return f"missing required field '{field}' (an entry without its control student is not an entry)"
        if field in ("judge.model", "judge.prompt_sha256"):
            return (f"missing required field '{field}' (the judge's provenance() must report its model and "
                    "prompt hash, null when it has none)")
        return f"missing required field '{field}'"
    if err.validator == "additionalProperties":
        return f"{where}: {err.message} (the entry's schema allows no other fields here)"
    return f"field '{where}': {err.message}"


def schema_problems(entry: dict[str, Any]) -> list[str]:
    version = entry.get("schema_version")
    if isinstance(version, bool) or version not in SCHEMA_FILES:
        shown = repr(version) if len(repr(version)) < 40 else repr(version)[:40] + "..."
        return [
            f"schema_version {shown} is not supported (this subbench reads schema_version "
            f"{', '.join(map(str, SCHEMA_FILES))}); re-create the entry with this subbench or upgrade subbench"
        ]
    errors = sorted(_validator(version).iter_errors(entry), key=lambda e: (list(map(str, e.absolute_path)), e.validator))
    return [_schema_problem(e) for e in errors][:50]


def bound_problems(entry: dict[str, Any]) -> list[str]:
    """Requests for more recomputation than any genuine entry needs."""
    a = entry["analysis"]
    n_boot = a["bootstrap"]
    if n_boot > MAX_BOOTSTRAP:
        return [f"analysis.bootstrap {n_boot} is more than the {MAX_BOOTSTRAP} resamples validate recomputes; "
                "re-run the analysis with fewer resamples"]
    samples = sum(len(r) for g in GROUPS for r in entry["scores"][g]["samples"])
    reps = len(entry["seeds"])
    if n_boot * samples > MAX_BOOTSTRAP_WORK or n_boot * reps > MAX_BOOTSTRAP_LOOPS:
        return [f"analysis.bootstrap {n_boot} over {samples} scored samples and {reps} replicates is more work than "
                f"validate does for one entry (draws x samples <= {MAX_BOOTSTRAP_WORK}, draws x replicates <= "
                f"{MAX_BOOTSTRAP_LOOPS}); re-run the analysis with fewer resamples"]
    return []


def hash_problems(entry: dict[str, Any]) -> list[str]:
    from subbench.entry import content_hash

    stated = entry.get("content_hash")
    actual = content_hash(entry)
    if stated != actual:
        return [f"content_hash {stated} does not match the entry's content ({actual}): it was edited after "
                "it was sealed; re-run the experiment to get a genuine entry"]
    return []


def _close(a: float | None, b: float | None, tol: float = TOL) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=tol, abs_tol=tol)


def consistency_problems(entry: dict[str, Any]) -> list[str]:
    """Numbers that disagree with the per-sample scores they were computed from."""
    from subbench.metrics import transfer_ratio

    out: list[str] = []
    scores = entry["scores"]
    n_rep = len(entry["seeds"])
    for g in GROUPS:
        s = scores[g]
        samples = s["samples"]
        if len(samples) != n_rep:
            out.append(f"scores.{g}.samples has {len(samples)} replicate lists but the entry has {n_rep} seeds")
            continue
        if any(len(r) == 0 for r in samples):
            out.append(f"scores.{g}.samples has an empty replicate; every seed needs scored samples")
            continue
        n = sum(len(r) for r in samples)
        if s["n"] != n:
            out.append(f"scores.{g}.n is {s['n']} but scores.{g}.samples holds {n} scores")
        per_seed = [sum(r) / len(r) for r in samples]
        if len(s["per_seed"]) != len(per_seed) or not all(_close(a, b) for a, b in zip(s["per_seed"], per_seed)):
            out.append(f"scores.{g}.per_seed {s['per_seed']} does not match the means of its samples {per_seed}")
        mean = sum(per_seed) / len(per_seed)
        if not _close(s["mean"], mean):
            out.append(f"scores.{g}.mean {s['mean']} does not match its samples (recomputed {mean})")
    if scores["control"]["n"] == 0:
        out.append("scores.control.n is 0: the control student was never evaluated, and an entry needs its control")
    if out:
        return out
    a = entry["analysis"]
    try:
        res = transfer_ratio(*(scores[g]["samples"] for g in GROUPS), min_effect=a["min_teacher_effect"],
                             n_boot=a["bootstrap"], seed=a["bootstrap_seed"]).as_dict()
    except ValueError as exc:
        return [f"the transfer ratio cannot be recomputed from scores.*.samples ({exc})"]
    if not _close(entry["transfer_ratio"], res["transfer_ratio"]):
        out.append(f"transfer_ratio {entry['transfer_ratio']} does not match its scores "
                   f"(recomputed {res['transfer_ratio']} with the entry's analysis settings)")
    ci, rci = entry["ci95"], res["ci95"]
    if (ci is None) != (rci is None) or (ci is not None and not all(_close(x, y) for x, y in zip(ci, rci))):
        out.append(f"ci95 {ci} does not match its scores (recomputed {rci} with bootstrap={a['bootstrap']}, "
                   f"bootstrap_seed={a['bootstrap_seed']})")
    for k in ("teacher_effect", "student_effect"):
        if not _close(entry[k], res[k]):
            out.append(f"{k} {entry[k]} does not match its scores (recomputed {res[k]})")
    if (entry["transfer_ratio_note"] is None) != (res["transfer_ratio_note"] is None):
        out.append("transfer_ratio_note does not match whether the ratio is null")
    if entry["schema_version"] >= 2:
        out += _replicate_problems(entry)
    return out


def _replicate_problems(entry: dict[str, Any]) -> list[str]:
    """v2: per-replicate ratios, their spread and the secondary metrics, recomputed from the samples."""
    from subbench.metrics import replicate_ratios, spread, transfer_ratio

    out: list[str] = []
    a, scores = entry["analysis"], entry["scores"]
    per = replicate_ratios(*(scores[g]["samples"] for g in GROUPS), min_effect=a["min_teacher_effect"])
    stated = entry["replicates"]["per_replicate"]
    if len(stated) != len(per) or not all(_close(x["transfer_ratio"], y["transfer_ratio"]) for x, y in zip(stated, per)):
        out.append("replicates.per_replicate ratios do not match the per-replicate scores")
    sp = spread([p["transfer_ratio"] for p in per])
    if not all(_close(entry["replicates"]["ratio_spread"].get(k), sp[k]) for k in ("mean", "sd", "min", "max")):
        out.append(f"replicates.ratio_spread does not match the per-replicate ratios (recomputed {sp})")
    for m, block in entry["metrics"].items():
        try:
            mg = [scores[g]["metrics"][m]["samples"] for g in GROUPS]
            res = transfer_ratio(*mg, min_effect=a["min_teacher_effect"], n_boot=a["bootstrap"], seed=a["bootstrap_seed"])
        except (KeyError, TypeError, ValueError) as exc:
            out.append(f"metrics.{m} cannot be recomputed from scores.*.metrics.{m}.samples ({exc})")
            continue
        if not _close(block["transfer_ratio"], res.ratio):
            out.append(f"metrics.{m}.transfer_ratio {block['transfer_ratio']} does not match its samples (recomputed {res.ratio})")
    return out


def validate_entry(entry: dict[str, Any], *, recompute: bool = True) -> list[str]:
    """All problems of one entry; an empty list means it can go on the board."""
    problems = schema_problems(entry)
    if problems and problems[0].startswith("schema_version"):
        return problems
    problems += hash_problems(entry)
    structural = [p for p in problems if not p.startswith("content_hash")]
    if not structural:
        structural = bound_problems(entry)
        problems += structural
    if recompute and not structural:
        problems += consistency_problems(entry)
    return problems


def board_name_problems(path: Path, root: Path, entry: dict[str, Any] | None) -> list[str]:
    """A file on a board must sit under the name ``submit`` gives its content."""
    from subbench.leaderboard.board import entry_name

    rel = Path(path).relative_to(root)
    if any(part.startswith(".") for part in rel.parts) or Path(path).suffix != ".json":
        return [f"is not a board entry ({rel} is hidden or not *.json); a board holds only entries filed by "
                "`subbench leaderboard submit`: remove it"]
    if entry is None:
        return []
    try:
        expected = entry_name(entry)
    except Exception:  # noqa: BLE001 - a malformed entry already has its problems
        return []
    if rel != expected:
        return [f"is filed as {rel} but its content files it as {expected}; remove it and submit the entry instead"]
    return []


def validate_file(path: Path, *, recompute: bool = True, board_root: Path | None = None) -> Loaded:
    loaded = read_entry(path)
    if loaded.entry is not None:
        try:
            loaded.problems = validate_entry(loaded.entry, recompute=recompute)
        except Exception as exc:  # noqa: BLE001 - validate is total: any surprise is a verdict, not a crash
            loaded.problems = [f"could not be checked ({type(exc).__name__}: {str(exc)[:120]}); it is not a valid entry"]
    if board_root is not None:
        loaded.problems = board_name_problems(path, board_root, loaded.entry if not loaded.problems else None) \
            + loaded.problems
    return loaded


def validate_paths(paths: Iterable[str | Path], *, recompute: bool = True) -> list[Loaded]:
    from subbench.errors import SubbenchError

    paths = list(paths)
    files = entry_sources(paths)
    if not files:
        raise SubbenchError(f"No entry files (*.json) found in {', '.join(map(str, paths))}.")
    return [validate_file(f, recompute=recompute, board_root=root) for f, root in files]


def collect(paths: Iterable[str | Path], *, recompute: bool = False) -> tuple[list[dict[str, Any]], list[str]]:
    """Valid entries under ``paths`` (each measurement once) and 'PATH: problem' lines for the rest.

    ``recompute`` defaults to off here: readers (compare, export) trust what ``submit``
    already recomputed and check the schema, the bounds and the content hash; the site
    build recomputes. Entries that differ only in volatile fields (``created``,
    ``environment``...) are one measurement (:func:`measurement_hash`) and kept once.
    """
    entries: list[dict[str, Any]] = []
    problems: list[str] = []
    seen: set[str] = set()
    for r in validate_paths(paths, recompute=recompute):
        if r.problems:
            problems += [f"{r.path}: {p}" for p in r.problems]
            continue
        key = measurement_hash(r.entry)
        if key not in seen:
            seen.add(key)
            entries.append(r.entry)
    return entries, problems
