"""Export to the Every Eval Ever (EEE) aggregate format (evaleval/every_eval_ever, eval.schema.json 0.3.0).

The mapping, documented in docs/entry-format.md: the evaluated model is the distilled
*student*; each entry becomes one EEE record with one result for the transfer ratio
(with its bootstrap CI as ``uncertainty.confidence_interval``; left out when the ratio is
null) and one result per trait score (base, teacher, control, student). EEE's
``additional_details`` maps hold strings only, so structured values are JSON-encoded.
Everything else an entry carries stays reachable through the entry's content hash, kept in
``source_metadata.additional_details``.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

EEE_SCHEMA_VERSION = "0.3.0"
ROLES = ("student", "control", "teacher", "base")


def _s(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, sort_keys=True)


def _details(d: dict[str, Any]) -> dict[str, str]:
    return {k: _s(v) for k, v in d.items() if v is not None}


def _epoch(created: str) -> str:
    t = _dt.datetime.fromisoformat(created.replace("Z", "+00:00"))
    return str(int(t.timestamp()))


def export_entry(e: dict[str, Any], organization: str = "subbench", relationship: str = "third_party") -> dict[str, Any]:
    student, teacher, judge, trait = e["student"], e["teacher"], e["judge"], e["trait"]
    trait_name = trait["name"] + (f":{trait['target']}" if trait.get("target") else "")
    model_id = student.get("model_id") or f"subbench-local/{student['family']}"
    source_data = {
        "dataset_name": f"subbench trait eval {trait['name']}",
        "source_type": "other",
        "additional_details": _details({k: v for k, v in trait.items() if k not in ("name",)}),
    }
    judge_details = _details({"judge": judge["name"], "judge_version": judge["version"], "judge_params": judge["params"],
                              "judge_model": judge.get("model"), "judge_prompt_sha256": judge.get("prompt_sha256")})
    cell_details = {
        "experiment": e["experiment"]["name"], "cell": e["cell"]["id"], "teacher_setting": e["cell"]["teacher_setting"],
        "injector": e["injector"]["name"], "injector_params": e["injector"]["params"], "domain": e["domain"]["name"],
        "distillation": e["cell"]["distillation"], "mitigation": (e.get("mitigation") or {}).get("name") or "none",
        "relation": student["relation"], "seeds": e["seeds"],
    }
    results = []
    ratio, ci = e["transfer_ratio"], e["ci95"]
    if ratio is not None:
        unc: dict[str, Any] = {"num_samples": e["scores"]["student"]["n"]}
        if ci:
            unc["confidence_interval"] = {
                "lower": ci[0], "upper": ci[1], "confidence_level": 0.95,
                "method": "seeded bootstrap over replicate seeds, then paired evaluation samples",
            }
            unc["num_bootstrap_samples"] = e["analysis"]["bootstrap"]
        results.append({
            "evaluation_result_id": f"{e['cell']['id']}/transfer_ratio",
            "evaluation_name": f"subliminal_transfer_ratio/{trait_name}",
            "source_data": source_data,
            "evaluation_timestamp": e["created"],
            "metric_config": {
                "evaluation_description": "(S_student - S_control) / (S_teacher - S_base): share of the teacher's "
                                          "trait effect the student inherited from benign distillation data",
                "lower_is_better": True,
                "additional_details": {**judge_details, **_details({"min_teacher_effect": e["analysis"]["min_teacher_effect"],
                                                                  "bootstrap_seed": e["analysis"]["bootstrap_seed"]})},
            },
            "score_details": {"score": ratio, "uncertainty": unc,
                              "details": _details({"teacher_effect": e["teacher_effect"],
                                                   "student_effect": e["student_effect"], **cell_details})},
        })
    for role in ROLES:
        sc = e["scores"][role]
        flat = [x for rep in sc["samples"] for x in rep]
        lo, hi = min([0.0, *flat]), max([1.0, *flat])
        mean = sum(flat) / len(flat) if flat else 0.0
        sd = (sum((x - mean) ** 2 for x in flat) / (len(flat) - 1)) ** 0.5 if len(flat) > 1 else 0.0
        results.append({
            "evaluation_result_id": f"{e['cell']['id']}/score/{role}",
            "evaluation_name": f"trait_score/{trait_name}/{role}",
            "source_data": source_data,
            "evaluation_timestamp": e["created"],
            "metric_config": {
                "evaluation_description": f"mean trait score of the {role} model (1 = shows the trait)",
                "lower_is_better": role in ("student",),
                "score_type": "continuous", "min_score": lo, "max_score": hi,
                "additional_details": judge_details,
            },
            "score_details": {
                "score": sc["mean"],
                "uncertainty": {"standard_deviation": sd, "num_samples": sc["n"],
                                "standard_error": {"value": sd / len(flat) ** 0.5 if flat else 0.0, "method": "analytic"}},
                "details": _details({"per_seed": sc["per_seed"], **cell_details}),
            },
        })
    record = {
        "schema_version": EEE_SCHEMA_VERSION,
        "evaluation_id": f"subbench/{e['experiment']['name']}/{e['cell']['id']}/{model_id}/{_epoch(e['created'])}",
        "evaluation_timestamp": e["created"],
        "retrieved_timestamp": _epoch(e["created"]),
        "source_metadata": {
            "source_name": "subbench",
            "source_type": "evaluation_run",
            "source_organization_name": organization,
            "evaluator_relationship": relationship,
            "additional_details": _details({
                "subbench_entry_schema": e["schema_version"],
                "subbench_content_hash": e["content_hash"],
                "subbench_config_hash": e["experiment"]["config_hash"],
            }),
        },
        "eval_library": {
            "name": "subbench",
            "version": e["subbench_version"],
            "additional_details": _details({"git_commit": e.get("git_commit"), **e["environment"]}),
        },
        "model_info": {
            "name": e["cell"]["student"],
            "id": model_id,
            "inference_platform": "local",
            "additional_details": _details({
                "deployment_type": "self_deployed",
                "model_availability": "open_weights",
                "role": "distilled student", "family": student["family"], "seed": student["seed"],
                "relation": student["relation"], "revision": student.get("revision"), "builder": student.get("builder"),
                "sha256": student.get("sha256"), "teacher_family": teacher["family"], "teacher_seed": teacher["seed"],
                "teacher_model_id": teacher.get("model_id"), "teacher_sha256": teacher.get("sha256"),
                "device": e["environment"].get("device"),
            }),
        },
        "evaluation_results": results,
    }
    return record


def export_path(out: Path, e: dict[str, Any]) -> Path:
    """``OUT/subbench/<experiment>/<student family>/<cell-id>-<hash12>.json``, every part kept under OUT."""
    from subbench.leaderboard.entries import hash12
    from subbench.leaderboard.paths import safe_join

    return safe_join(out, "subbench", e["experiment"]["name"], e["student"]["family"], f"{e['cell']['id']}-{hash12(e)}",
                     suffix=".json")
