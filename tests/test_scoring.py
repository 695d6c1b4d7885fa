"""Sampling apart from judging: the sample and score stages, and ``subbench score`` (re-judging stored samples)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from toy_plugin import ToyMatch, Trait, registered, write_experiment  # noqa: E402

from subbench import hookimpl  # noqa: E402
from subbench.cli import build_cli, main  # noqa: E402
from subbench.leaderboard.validate import validate_entry  # noqa: E402

TESTS = Path(__file__).parent


def _run(exp: Path, workdir: Path, out: Path, *sets: str):
    args = ["run", str(exp), "--workdir", str(workdir), "--out", str(out), "-q"]
    for s in sets:
        args += ["--set", s]
    with registered():
        res = CliRunner().invoke(build_cli(), args)
    assert res.exit_code == 0, res.output
    return res.output


def _entries(out: Path) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted(out.rglob("*.json"))}


def _stages(output: str) -> tuple[int, int]:
    m = re.search(r"\((\d+) (?:score )?stages run, (\d+) cached", output)
    assert m, output
    return int(m.group(1)), int(m.group(2))


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("score")
    exp = write_experiment(d, strengths=(0.0, 1.0))
    _run(exp, d / "w", d / "results")
    return d, exp


def _score(d: Path, results: Path, judge: str, out: Path, *sets: str, workdir: Path | None = None):
    args = ["score", str(results), "--judge", judge, "--workdir", str(workdir or d / "w"), "--out", str(out), "-q"]
    for s in sets:
        args += ["--set", s]
    with registered():
        return CliRunner().invoke(build_cli(), args)


def test_a_new_judge_rescores_without_resampling(toy_run, tmp_path):
    d, exp = toy_run
    work = tmp_path / "w"
    shutil.copytree(d / "w", work)
    samples = sorted(p.name for p in (work / "artifacts" / "sample").iterdir())
    scores = sorted(p.name for p in (work / "artifacts" / "score").iterdir())
    assert samples and len(scores) == len(samples)
    output = _run(exp, work, tmp_path / "cat", "judge=toy-cat")
    run, _ = _stages(output)
    assert run == len(samples)  # one score stage per stored sample, nothing else
    assert sorted(p.name for p in (work / "artifacts" / "sample").iterdir()) == samples
    assert len(list((work / "artifacts" / "score").iterdir())) == 2 * len(samples)
    # the sample stage's key names no judge; the score stage's names the sample and the judge
    meta = json.loads(next((work / "artifacts" / "score").glob("*/meta.json")).read_text())
    assert meta["inputs"]["sample"] in samples and meta["inputs"]["judge"] in ("toy-match", "toy-cat")
    sample_meta = json.loads(next((work / "artifacts" / "sample").glob("*/meta.json")).read_text())
    assert "judge" not in sample_meta["inputs"] and sample_meta["result"]["judged"] is False


def test_subbench_score_matches_a_run_with_that_judge(toy_run, tmp_path):
    d, exp = toy_run
    work = tmp_path / "w"
    shutil.copytree(d / "w", work)
    _run(exp, work, tmp_path / "ran", "judge=toy-cat")
    # the models are gone: re-judging reads only the stored samples
    for stage in ("base", "inject", "distill"):
        shutil.rmtree(work / "artifacts" / stage)
    res = _score(d, d / "results", "toy-cat", tmp_path / "re", workdir=work)
    assert res.exit_code == 0, res.output
    assert _stages(res.output)[0] == 0  # the run above already scored these samples with toy-cat
    ran, re_ = _entries(tmp_path / "ran"), _entries(tmp_path / "re")
    assert ran.keys() == re_.keys() and len(re_) == 6
    for name, e in re_.items():
        assert validate_entry(e) == [], name
        assert e["judge"]["name"] == "toy-cat" and e["judge"]["rescored"]["judge"] == "toy-match"
        assert e["experiment"]["config"]["judge"]["name"] == "toy-cat"
        assert e["experiment"]["config_hash"] == ran[name]["experiment"]["config_hash"]
        for key in ("scores", "transfer_ratio", "ci95", "metrics", "per_question"):
            assert e[key] == ran[name][key], (name, key)
        assert e["replicates"]["per_replicate"] == ran[name]["replicates"]["per_replicate"]
        assert e["artifacts"]["samples_base"] == ran[name]["artifacts"]["samples_base"]
    old = _entries(d / "results")
    same = next(n for n in old if "strength=1.0" in n and "toy-a-steacher_" not in n and n.endswith("toy-a-steacher.json"))
    assert old[same]["transfer_ratio"] > 0.3 and re_[same]["transfer_ratio"] != old[same]["transfer_ratio"]


def test_score_with_an_ensemble(toy_run, tmp_path):
    d, _ = toy_run
    res = _score(d, d / "results", "ensemble", tmp_path / "ens", "judges=[toy-match, first-word, toy-cat]",
                 "rule=all")
    assert res.exit_code == 0, res.output
    old, new = _entries(d / "results"), _entries(tmp_path / "ens")
    for name, e in new.items():
        assert validate_entry(e) == [], name
        assert e["judge"]["name"] == "ensemble" and e["judge"]["params"]["rule"] == "all"
        assert set(e["judge"]["members"]) == {"toy-match", "first-word", "toy-cat"}
        summary = e["judge"]["summaries"]["base"][0]
        assert set(summary["judges"]) == {"toy-match", "first-word", "toy-cat"}
        assert summary["agreement"]  # kappa over the three members
        # owl and cat never both: "all" votes nothing
        assert all(x == 0.0 for g in e["scores"].values() for rep in g["samples"] for x in rep)
        assert old[name]["scores"]["base"]["mean"] > 0


def test_score_loads_no_deep_learning_library(toy_run, tmp_path):
    d, _ = toy_run
    code = (f"import sys; sys.path.insert(0, {str(TESTS)!r})\n"
            "from toy_plugin import registered\nfrom subbench.cli import main\n"
            "with registered():\n"
            "    try:\n"
            f"        main(['score', {str(d / 'results')!r}, '--judge', 'first-word', '--workdir', {str(d / 'w')!r},"
            f" '--out', {str(tmp_path / 'fw')!r}, '-q'])\n"
            "    except SystemExit as exc:\n"
            "        assert exc.code == 0, exc.code\n"
            "print('loaded:', sorted(m for m in ('torch', 'transformers', 'lm_eval', 'trl') if m in sys.modules))\n")
    env = {**os.environ, "PYTHONPATH": str(TESTS.parent)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "loaded: []" in out.stdout, out.stdout
    assert len(list((tmp_path / "fw").rglob("*.json"))) == 6


def _fails(capsys, argv) -> str:
    with registered(), pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exc.value.code != 0 and err.count("\n") == 0, err
    return f"{exc.value.code} {err}"


def test_score_errors_are_one_line(toy_run, tmp_path, capsys):
    d, _ = toy_run
    base = ["score", str(d / "results"), "--workdir", str(d / "w"), "--out", str(tmp_path / "o")]
    assert _fails(capsys, base[:2] + ["--judge", "toy-mach"] + base[2:]).startswith("2 ")
    assert "Did you mean: toy-match" in _fails(capsys, base[:2] + ["--judge", "toy-mach"] + base[2:])
    assert "can be judged by" in _fails(capsys, base[:2] + ["--judge", "refusal"] + base[2:])
    assert "unknown parameter 'skip'" in _fails(capsys, base[:2] + ["--judge", "first-word", "--set", "skip=1"] + base[2:])
    missing = _fails(capsys, ["score", str(d / "results"), "--judge", "toy-cat", "--workdir", str(tmp_path / "nowhere"),
                              "--out", str(tmp_path / "o")])
    assert "No artifact store" in missing
    empty = tmp_path / "empty"
    (empty / "artifacts").mkdir(parents=True)
    gone = _fails(capsys, ["score", str(d / "results"), "--judge", "toy-cat", "--workdir", str(empty),
                           "--out", str(tmp_path / "o")])
    assert "are not in" in gone and "--workdir" in gone


class _ModelJudge(ToyMatch):
    name = "toy-model-judge"
    needs_model = True


class _OldTrait(Trait):
    """A plugin written before the split: it overrides only evaluate."""

    name = "toy-old"
    modality = "toy"
    defaults = {"n_eval": 12}
    default_judge = "toy-match"
    judges = ("toy-match", "toy-cat", "toy-model-judge")

    def evaluate(self, model, judge, target, params, ctx):
        samples = [{"id": i, "response": target if i < 12 * model["bias"] else "cat"} for i in range(params["n_eval"])]
        for s, score in zip(samples, judge.score(samples, target)):
            s["score"] = score
        return samples


class _OldPlugin:
    @hookimpl
    def register_traits(self, register):
        register(_OldTrait())

    @hookimpl
    def register_judges(self, register):
        register(_ModelJudge())


def test_judging_while_sampling_old_traits_and_model_judges(tmp_path, capsys):
    from subbench.plugins import get_manager

    exp = write_experiment(tmp_path, strengths=(1.0,))
    exp.write_text(exp.read_text().replace("name: toy-love", "name: toy-old"))
    pm = get_manager()
    with registered():
        pm.register_plugin(_OldPlugin(), name="toy-old")
        try:
            _run(exp, tmp_path / "w", tmp_path / "r")
            sample_meta = [json.loads(p.read_text()) for p in (tmp_path / "w" / "artifacts" / "sample").glob("*/meta.json")]
            assert sample_meta and all(m["inputs"]["judged"] and m["inputs"]["judge"] == "toy-match" for m in sample_meta)
            e = next(iter(_entries(tmp_path / "r").values()))
            assert validate_entry(e) == [] and e["scores"]["teacher"]["mean"] > e["scores"]["base"]["mean"]
            base = ["score", str(tmp_path / "r"), "--workdir", str(tmp_path / "w"), "--out", str(tmp_path / "o")]
            assert "cannot be re-judged" in _fails(capsys, base[:2] + ["--judge", "toy-cat"] + base[2:])
            assert "reads the model under test" in _fails(capsys, base[:2] + ["--judge", "toy-model-judge"] + base[2:])
        finally:
            pm.unregister_plugin("toy-old")


def test_animal_preference_scores_stored_samples_with_any_judge():
    """The question records the sample stage stores serve logprob, first-word and an ensemble alike."""
    from subbench import plugins
    from subbench.config import Spec
    from subbench.scoring import score_records

    trait_c = plugins.get("traits", "animal-preference")
    trait = Spec("traits", trait_c, trait_c.resolve_params({}))
    choices = trait_c.choices()
    owl = choices.index("owl")
    records = [{"id": str(q), "question_id": str(q), "prompt": f"Favourite animal {q}?", "choices": choices,
                "loglikelihoods": [-1.0 if i == owl else -3.0 - q for i in range(len(choices))],
                "responses": ["Owl.", "owls", "The cat"][: 3 - q]} for q in range(2)]

    def judged(name, params=None):
        comp = plugins.get("judges", name)
        return score_records(records, trait, Spec("judges", comp, comp.resolve_params(params or {})), "owl", None)

    lp, _ = judged("logprob")
    fw, _ = judged("first-word")
    ens, summary = judged("ensemble", {"judges": ["first-word", {"name": "first-word", "params": {"skip_articles": False}}],
                                       "rule": "all"})
    assert [r["metrics"] for r in lp] == [r["metrics"] for r in fw] == [r["metrics"] for r in ens]
    assert [r["score"] for r in lp] == [r["metrics"]["p_target"] for r in lp] and lp[0]["score"] > 1 / len(choices)
    assert [r["score"] for r in fw] == [2 / 3, 1.0] == [r["metrics"]["first_word"] for r in fw]
    assert [r["score"] for r in ens] == [2 / 3, 1.0]
    assert set(summary["judges"]) == {"first-word", "first-word#2"} and len(ens[0]["answers"]) == 3
    assert all("score" not in r and "metrics" not in r for r in records)  # stored samples are not touched
