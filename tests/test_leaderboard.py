"""Leaderboard: validate, submit, build and export real entries made by the real pipeline."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from toy_plugin import toy_results  # noqa: E402,F401

from subbench.cli import build_cli  # noqa: E402
from subbench.entry import content_hash, seal  # noqa: E402

SAME_INIT = "toy-shift-strength=0.5__toy-copy__toy-a-steacher.json"
NULL_RATIO = "toy-shift-strength=0.0__toy-copy__toy-a-steacher.json"


def cli(*args):
    return CliRunner().invoke(build_cli(), [str(a) for a in args])


@pytest.fixture
def results(tmp_path, toy_results):  # noqa: F811
    """A private copy of the module's toy results, free to tamper with."""
    dest = tmp_path / "results"
    shutil.copytree(toy_results, dest)
    return dest


def entry_path(results: Path, name: str = SAME_INIT) -> Path:
    return results / "toy" / name


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def save(path: Path, entry: dict) -> None:
    path.write_text(json.dumps(entry, indent=2, sort_keys=True))


def edited(results: Path, fn, reseal: bool = True, name: str = SAME_INIT) -> Path:
    """Apply ``fn`` to one entry and write it as a single-file results dir of its own."""
    e = load(entry_path(results, name))
    fn(e)
    if reseal:
        e = seal(e)
    out = results.parent / "edited" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    save(out, e)
    return out


def problems_of(res) -> list[str]:
    return [line for line in res.output.splitlines() if ": " in line and not line.startswith(("OK", "FAILED"))]


# -- round trip -------------------------------------------------------------------

def test_round_trip_run_validate_submit_build_compare(results, tmp_path):
    board = tmp_path / "board"
    res = cli("leaderboard", "validate", results)
    assert res.exit_code == 0, res.output
    assert res.output.strip().startswith("OK: 9 entries valid")

    res = cli("leaderboard", "submit", results, "--board", board)
    assert res.exit_code == 0, res.output
    filed = sorted((board / "entries" / "toy").glob("*.json"))
    assert len(filed) == 9
    for f in filed:
        e = load(f)
        assert f.name == f"{e['cell']['id']}-{e['content_hash'][7:19]}.json"
        assert e == load(results / "toy" / f"{e['cell']['id']}.json")
    assert not [p for p in board.rglob("*") if ".tmp" in p.name]

    res = cli("leaderboard", "build", "--board", board)
    assert res.exit_code == 0, res.output
    site = board / "site"
    page = (site / "index.html").read_text()
    for f in filed:
        assert load(f)["content_hash"] in page
    for name in ("heatmap.png", "heatmap.svg", "strength-toy-a.png", "strength-toy-a.svg"):
        assert (site / name).stat().st_size > 1000, name
    assert (site / "heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in (site / "heatmap.svg").read_text()
    assert "http://" not in page and "https://" not in page and "//cdn" not in page
    assert (site / "assets" / "sort.js").is_file() and (site / "assets" / "style.css").is_file()
    assert "ratio null, teacher effect too small" in res.output  # strength 0 points are named, not plotted

    on_board = cli("compare", board)
    from_results = cli("compare", results)
    assert on_board.exit_code == 0 and from_results.exit_code == 0
    assert on_board.output == from_results.output
    same_init = load(entry_path(results))["transfer_ratio"]
    assert same_init > 0.3
    assert "toy-a (same-init)" in on_board.output and "toy-b (cross-architecture)" in on_board.output

    # a rebuild replaces the site in one piece and leaves no temporary directory behind
    assert cli("leaderboard", "build", "--board", board).exit_code == 0
    assert sorted(p.name for p in board.iterdir()) == ["entries", "site"]


def test_schema_is_valid_draft_2020_12_and_matches_pipeline_entries(results):
    import jsonschema

    from subbench.leaderboard.entries import load_schema

    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["schema_version"] == {"const": 2}
    for f in (results / "toy").glob("*.json"):
        assert list(jsonschema.Draft202012Validator(schema).iter_errors(load(f))) == []


# -- rejections, each with its own message ----------------------------------------

def test_tampered_number_without_new_hash_is_rejected(results):
    path = edited(results, lambda e: e.__setitem__("transfer_ratio", 0.99), reseal=False)
    res = cli("leaderboard", "validate", path)
    assert res.exit_code == 1
    lines = problems_of(res)
    assert lines[0].startswith(f"{path}: content_hash ") and "edited after it was sealed" in lines[0]
    assert lines[1] == (f"{path}: transfer_ratio 0.99 does not match its scores (recomputed 0.5384615384615384 "
                        "with the entry's analysis settings)")
    assert len(lines) == 2


def test_ratio_that_does_not_match_its_scores_is_rejected(results):
    path = edited(results, lambda e: e.__setitem__("transfer_ratio", 0.9))
    res = cli("leaderboard", "validate", path)
    assert res.exit_code == 1
    out = res.output
    assert "content_hash" not in out
    assert f"{path}: transfer_ratio 0.9 does not match its scores (recomputed 0.538" in out


def test_ci_and_means_are_recomputed_from_samples(results):
    def flip(e):
        e["scores"]["student"]["samples"][0][0] = 1.0 - e["scores"]["student"]["samples"][0][0]

    res = cli("leaderboard", "validate", edited(results, flip))
    assert res.exit_code == 1
    assert "scores.student.per_seed" in res.output and "scores.student.mean" in res.output

    def widen(e):
        e["ci95"] = [e["ci95"][0] - 1e-6, e["ci95"][1]]

    res = cli("leaderboard", "validate", edited(results, widen))
    assert res.exit_code == 1 and "ci95" in res.output and "does not match its scores" in res.output


def test_missing_field_is_rejected(results):
    path = edited(results, lambda e: e.pop("judge").pop("prompt_sha256") and None)
    res = cli("leaderboard", "validate", path)
    assert res.exit_code == 1
    assert f"{path}: missing required field 'judge'" in res.output

    path = edited(results, lambda e: e["judge"].pop("prompt_sha256"))
    res = cli("leaderboard", "validate", path)
    assert f"{path}: missing required field 'judge.prompt_sha256'" in res.output


def test_missing_control_is_rejected(results):
    path = edited(results, lambda e: e["scores"].pop("control"))
    res = cli("leaderboard", "validate", path)
    assert res.exit_code == 1
    assert "missing required field 'scores.control' (an entry without its control student is not an entry)" in res.output

    def empty(e):
        e["scores"]["control"].update(samples=[[], []], n=0)

    res = cli("leaderboard", "validate", edited(results, empty))
    assert res.exit_code == 1
    assert "scores.control.n is 0" in res.output


def test_wrong_schema_version_is_rejected(results):
    path = edited(results, lambda e: e.__setitem__("schema_version", 3))
    res = cli("leaderboard", "validate", path)
    assert res.exit_code == 1
    assert problems_of(res) == [f"{path}: schema_version 3 is not supported (this subbench reads schema_version 1, 2); "
                                "re-create the entry with this subbench or upgrade subbench"]


def as_v1(e):
    """The same measurement in the v1 layout (before replicates, budgets and metrics)."""
    for k in ("replicates", "metrics", "per_question", "flags"):
        e.pop(k)
    e["schema_version"] = 1
    e["domain"].pop("budget")
    for ps in e["domain"]["per_seed"]:
        for k in ("keep_rate", "control_keep_rate", "budget"):
            ps.pop(k)
    for g in e["scores"].values():
        g.pop("metrics", None)
        g.pop("question_ids", None)


def test_v1_entries_are_still_valid_and_checked(results):
    path = edited(results, as_v1)
    res = cli("leaderboard", "validate", path)
    assert res.exit_code == 0, res.output
    bad = edited(results, lambda e: (as_v1(e), e.__setitem__("transfer_ratio", 0.99)))
    res = cli("leaderboard", "validate", bad)
    assert res.exit_code == 1 and "transfer_ratio 0.99 does not match its scores" in res.output


def test_per_replicate_ratios_are_recomputed(results):
    def tamper(e):
        e["replicates"]["per_replicate"][0]["transfer_ratio"] = 0.99
    path = edited(results, tamper)
    res = cli("leaderboard", "validate", path)
    assert res.exit_code == 1
    assert problems_of(res) == [f"{path}: replicates.per_replicate ratios do not match the per-replicate scores"]


def test_not_json_and_wrong_types(results, tmp_path):
    bad = tmp_path / "bad" / "x.json"
    bad.parent.mkdir()
    bad.write_text("{not json")
    res = cli("leaderboard", "validate", bad)
    assert res.exit_code == 1 and "is not valid JSON" in res.output

    path = edited(results, lambda e: e["student"].__setitem__("relation", "sibling"))
    res = cli("leaderboard", "validate", path)
    assert res.exit_code == 1 and "field 'student.relation'" in res.output


def test_one_line_per_problem_and_summary(results):
    bad = edited(results, lambda e: e.__setitem__("schema_version", 3))
    res = cli("leaderboard", "validate", results, bad)
    assert res.exit_code == 1
    assert len(problems_of(res)) == 1
    assert "FAILED: 1 of 10 entries have problems." in res.output


def test_duplicate_is_refused_and_nothing_half_filed(results, tmp_path):
    board = tmp_path / "board"
    one = entry_path(results)
    assert cli("leaderboard", "submit", one, "--board", board).exit_code == 0
    before = sorted(p.name for p in board.rglob("*"))
    res = cli("leaderboard", "submit", results, "--board", board)
    assert res.exit_code == 1
    assert f"{one}: duplicate: the same measurement" in res.output and "already on the board" in res.output
    assert "nothing filed" in res.output
    assert sorted(p.name for p in board.rglob("*")) == before  # all-or-nothing

    copy_ = tmp_path / "copy.json"
    shutil.copy(one, copy_)
    res = cli("leaderboard", "submit", one, copy_, "--board", tmp_path / "board2")
    assert res.exit_code == 1 and f"{copy_}: duplicate: the same measurement" in res.output


def test_invalid_entry_is_not_submitted(results, tmp_path):
    bad = edited(results, lambda e: e.__setitem__("transfer_ratio", 0.9))
    res = cli("leaderboard", "submit", bad, "--board", tmp_path / "board")
    assert res.exit_code == 1 and "does not match its scores" in res.output
    assert not list((tmp_path / "board").rglob("*.json"))


def test_build_refuses_a_directory_that_is_not_a_board(tmp_path):
    res = cli("leaderboard", "build", "--board", tmp_path / "nothing")
    assert res.exit_code == 1
    assert "is not a board" in str(res.exception)


def test_build_empty_board(tmp_path):
    (tmp_path / "b" / "entries").mkdir(parents=True)
    res = cli("leaderboard", "build", "--board", tmp_path / "b")
    assert res.exit_code == 0, res.output
    assert "0 entries" in (tmp_path / "b" / "site" / "index.html").read_text()


def test_no_strength_grid_gives_a_note(tmp_path):
    from toy_plugin import run_experiment

    results = run_experiment(tmp_path / "run", name="single", strengths=[1.0])
    board = tmp_path / "board"
    assert cli("leaderboard", "submit", results, "--board", board).exit_code == 0
    res = cli("leaderboard", "build", "--board", board)
    assert res.exit_code == 0
    assert "No entries vary the injector's strength" in res.output
    assert not list((board / "site").glob("strength-*"))
    assert "No entries vary the injector" in (board / "site" / "index.html").read_text()


# -- export to Every Eval Ever ------------------------------------------------------

# The required structure of evaleval/every_eval_ever eval.schema.json 0.3.0 (a subset, restated here).
EEE_REQUIRED = {
    "type": "object",
    "additionalProperties": False,
    "required": ["schema_version", "evaluation_id", "retrieved_timestamp", "source_metadata", "model_info",
                 "eval_library", "evaluation_results"],
    "properties": {
        "source_metadata": {"type": "object", "required": ["source_type", "source_organization_name",
                                                           "evaluator_relationship"],
                            "properties": {"source_type": {"enum": ["documentation", "evaluation_run"]},
                                           "evaluator_relationship": {"enum": ["first_party", "third_party",
                                                                               "collaborative", "other"]}}},
        "eval_library": {"type": "object", "required": ["name", "version"]},
        **{k: {} for k in ("schema_version", "evaluation_id", "evaluation_timestamp", "retrieved_timestamp",
                           "detailed_evaluation_results")},
        "model_info": {"type": "object", "required": ["name", "id", "additional_details"], "properties": {
            "additional_details": {"required": ["deployment_type", "model_availability"], "properties": {
                "deployment_type": {"enum": ["self_deployed", "externally_managed", "unknown"]},
                "model_availability": {"enum": ["open_weights", "closed_weights", "unknown"]}}}}},
        "evaluation_results": {"type": "array", "items": {
            "type": "object",
            "required": ["evaluation_name", "source_data", "metric_config", "score_details"],
            "properties": {
                "source_data": {"type": "object", "required": ["dataset_name", "source_type"]},
                "metric_config": {"type": "object", "required": ["lower_is_better"]},
                "score_details": {"type": "object", "required": ["score"], "properties": {"score": {"type": "number"}}},
            }}},
    },
}


def _string_maps(obj, where=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in ("additional_details", "details"):
                assert all(isinstance(x, str) for x in v.values()), f"{where}.{k}"
            else:
                _string_maps(v, f"{where}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _string_maps(v, f"{where}[{i}]")


def test_export_eee(results, tmp_path):
    import jsonschema

    res = cli("leaderboard", "export", "--format", "eee", results)
    assert res.exit_code == 0, res.output
    records = json.loads(res.output)
    assert len(records) == 9
    for r in records:
        jsonschema.validate(r, EEE_REQUIRED)
        _string_maps(r)
    entry = load(entry_path(results))
    rec = next(r for r in records if r["source_metadata"]["additional_details"]["subbench_content_hash"]
               == entry["content_hash"])
    ratio = next(x for x in rec["evaluation_results"] if x["evaluation_name"].startswith("subliminal_transfer_ratio"))
    assert ratio["score_details"]["score"] == entry["transfer_ratio"]
    ci = ratio["score_details"]["uncertainty"]["confidence_interval"]
    assert [ci["lower"], ci["upper"]] == entry["ci95"] and ci["confidence_level"] == 0.95
    scores = {x["evaluation_name"].rsplit("/", 1)[1]: x["score_details"]["score"] for x in rec["evaluation_results"][1:]}
    assert scores == {g: entry["scores"][g]["mean"] for g in ("student", "control", "teacher", "base")}
    assert rec["model_info"]["additional_details"]["relation"] == "same-init"

    null = load(entry_path(results, NULL_RATIO))
    rec = next(r for r in records if r["source_metadata"]["additional_details"]["subbench_content_hash"]
               == null["content_hash"])
    assert not [x for x in rec["evaluation_results"] if "transfer_ratio" in x["evaluation_name"]]

    out = tmp_path / "eee"
    res = cli("leaderboard", "export", "--format", "eee", entry_path(results), "--out", out)
    assert res.exit_code == 0, res.output
    [written] = list(out.rglob("*.json"))
    assert written.relative_to(out).parts[:3] == ("subbench", "toy", "toy-a")


def test_export_skips_invalid_entries_and_fails(results):
    bad = edited(results, lambda e: e.__setitem__("transfer_ratio", 0.9), reseal=False)
    res = cli("leaderboard", "export", bad)
    assert res.exit_code == 1 and "content_hash" in res.output


# -- the plugin stays light ----------------------------------------------------------

def test_plugin_import_is_light():
    code = ("import sys, subbench.default_plugins.leaderboard, subbench.leaderboard.validate, "
            "subbench.leaderboard.site, subbench.leaderboard.compare, subbench.leaderboard.eee, "
            "subbench.leaderboard.board; "
            "print(sorted(m for m in ('jsonschema', 'matplotlib', 'numpy', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_content_hash_covers_every_field(results):
    e = load(entry_path(results))
    assert content_hash(e) == e["content_hash"]
    e2 = copy.deepcopy(e)
    e2["environment"]["python"] = "0.0"
    assert content_hash(e2) != e["content_hash"]
