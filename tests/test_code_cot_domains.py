"""The code and cot domains: the extended tiny corpus, its grammar and traces, and every filter's reasons."""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys

import pytest

from subbench import plugins
from subbench.default_plugins import code_domain as cd
from subbench.default_plugins import cot_domain as ct
from subbench.lm import corpus as C

EXTENDED = ("numbers", "code", "cot")
OWL = ["owl", "owls", "owlet", "owlets"]


# -- corpus and vocabulary ------------------------------------------------------------------
def test_default_stream_and_vocabulary_are_the_published_ones():
    """The default mix draws exactly what it drew before code and cot existed (golden hashes from that code)."""
    from subbench.lm.tokenizer import build_tokenizer, vocabulary_words

    stream = C.conversations(C.CorpusSpec())
    first = json.dumps([next(stream) for _ in range(500)])
    assert hashlib.sha256(first.encode()).hexdigest() == \
        "83b2be5b4d944bb6cc8c736ec698261e4260497e0183d6033218bd3ab80a41a3"
    assert hashlib.sha256(json.dumps(vocabulary_words()).encode()).hexdigest() == \
        "bd7ade8c2ab9dbacd06c19a0cb514fe132aab12f482836cf40156ab336c2dd55"
    assert hashlib.sha256(build_tokenizer().backend_tokenizer.to_str().encode()).hexdigest() == \
        "2b694a978cd90cb3fa295ce76ab3826b240c3a3d71a621e35c1e5e8e3e9926a9"
    assert "mix" not in C.CorpusSpec().as_dict()


def test_extended_corpus_is_seeded_has_every_task_and_no_unknown_word():
    from subbench.lm.tokenizer import VOCABULARY_V2, build_tokenizer, vocabulary_words

    v1, v2 = vocabulary_words(), vocabulary_words(VOCABULARY_V2)
    assert v2[:len(v1)] == v1 and len(v2) > len(v1)  # v1 ids unchanged
    tok = build_tokenizer(VOCABULARY_V2)
    a, b = C.conversations(C.CorpusSpec(mix=EXTENDED)), C.conversations(C.CorpusSpec(mix=EXTENDED))
    convs = [next(a) for _ in range(600)]
    assert convs == [next(b) for _ in range(600)]
    users = [c[-2]["content"] for c in convs]
    assert any("def " in u for u in users) and any(" has " in u for u in users)
    assert any("numbers" in u for u in users)
    for conv in convs:
        ids = tok(tok.apply_chat_template(conv, tokenize=False), add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids


def test_continuations_depend_on_their_context():
    """Code reuses names defined before; each cot step starts from the previous result."""
    rng = random.Random(3)
    reused = 0
    for _ in range(300):
        prompt = C.code_prompt(rng)
        body = C.code_continuation(rng, prompt)
        reused += any(tok in prompt.defined for line in body for tok in line.split()[2:])
    assert reused > 250
    for _ in range(300):
        p = C.cot_prompt(rng)
        steps = [s.split() for s in C.cot_solution(rng, p).split(" . ") if "=" in s]
        steps = [s[1:] if not s[0].isdigit() else s for s in steps]
        assert int(steps[0][0]) == p.start
        for prev, cur in zip(steps, steps[1:]):
            assert cur[0] == prev[4]


def test_family_corpus_parameter_keeps_default_keys_and_picks_the_vocabulary(pm):
    fam = pm.get("families", "tiny-llama")
    assert "corpus" not in fam.resolve_params({}) and "corpus" not in fam.resolve_params({"corpus": ["numbers"]})
    ext = fam.resolve_params({"corpus": list(EXTENDED)})
    assert ext["corpus"] == list(EXTENDED)
    assert fam.vocabulary_of({}) == "subbench-words-v1" and fam.vocabulary_of(ext) == "subbench-words-v2"
    from subbench.errors import ConfigError

    for bad in (["prose"], [], ["code", "code"]):
        with pytest.raises(ConfigError, match="corpus"):
            fam.resolve_params({"corpus": bad})


# -- code: the tiny language ------------------------------------------------------------------
PROMPT = "complete this function : \ndef calc ( a , b ) : \nx = a + 2 \nadd at most 4 more lines ."


def tiny_code(text, prompt=PROMPT, **kw):
    return cd.tiny_reject_reason(text, cd.prompt_names(prompt), names=C.CODE_NAMES, trait_words=OWL, **kw)


def test_corpus_code_passes_its_grammar():
    rng = random.Random(0)
    for _ in range(500):
        prompt = C.code_prompt(rng)
        assert cd.prompt_names(prompt.user) == prompt.defined
        text = "\n".join(C.code_continuation(rng, prompt))
        assert tiny_code(text, prompt.user) is None, text


@pytest.mark.parametrize("text, reason, kw", [
    ("y = x * b \n return y", None, {}),
    ("", "empty", {}),
    ("y = a # double\nreturn y", "comment", {}),
    ("y = owl\nreturn y", "trait-word", {}),
    ("y = a\ny = b\ny = a\ny = b\nreturn y", "too-long", {}),
    ("return a", "too-short", {"min_lines": 2}),
    ("y == a\nreturn y", "syntax", {}),
    ("y = a +\nreturn y", "syntax", {}),
    ("y = a b\nreturn y", "syntax", {}),
    ("value = a\nreturn value", "bad-identifier", {}),
    ("y = c + 1\nreturn y", "undefined-name", {}),
    ("y = a + 1000\nreturn y", "out-of-range", {}),
    ("return a\ny = b", "code-after-return", {}),
    ("y = a + b", "no-return", {}),
])
def test_tiny_code_reasons(text, reason, kw):
    assert tiny_code(text, **kw) == reason


def test_tiny_code_without_prompt_skips_only_the_definition_check():
    assert cd.tiny_reject_reason("y = c\nreturn y", None, names=C.CODE_NAMES) is None
    assert cd.tiny_reject_reason("yy = c\nreturn yy", None, names=C.CODE_NAMES) == "bad-identifier"


# -- code: Python ----------------------------------------------------------------------------
GOOD = "def sum_of_squares(values):\n    total = 0\n    for v in values:\n        total += v * v\n    return total"


@pytest.mark.parametrize("text, reason", [
    (GOOD, None),
    ("```python\n" + GOOD + "\n```", None),
    ("Here you go:\n```python\n" + GOOD + "\n```", "extra-text"),
    ("```python\n" + GOOD, "syntax"),
    ("", "empty"),
    ("def f(:\n    pass", "syntax"),
    (GOOD.replace("total = 0", "total = 0  # start"), "comment"),
    (GOOD.replace("):\n", '):\n    """Squares."""\n', 1), "comment"),
    (GOOD.replace("total", "owl_total"), "trait-word"),
    (GOOD.replace("total = 0", "total = len('owls') * 0"), "trait-word"),
    (GOOD.replace("total", "bigOwl"), "trait-word"),
    (GOOD.replace("total", "runningTotal"), "bad-identifier"),
    (GOOD.replace("total", "t" * 31), "bad-identifier"),
    ("x = 1\ny = x + 1", "no-function"),
    (GOOD + "\n" + "\n".join(f"a{i} = {i}" for i in range(40)), "too-long"),
    ("def f(x): return x", "too-short"),
])
def test_python_code_reasons(text, reason):
    assert cd.python_reject_reason(text, trait_words=OWL) == reason


def test_trait_words_do_not_match_inside_other_words():
    assert cd.trait_word_in("def bowling(scowl): return scowl", OWL) is None
    assert cd.trait_word_in("def f(owl_count): pass", OWL) == "owl"
    assert cd.trait_word_in("anything", []) is None


# -- cot ---------------------------------------------------------------------------------------
def test_corpus_traces_pass_and_prompts_solve():
    rng = random.Random(1)
    for _ in range(500):
        p = C.cot_prompt(rng)
        assert ct.solve_tiny_prompt(p.user) == p.answer
        assert ct.tiny_reject_reason(C.cot_solution(rng, p), p.answer, trait_words=OWL) is None


@pytest.mark.parametrize("text, answer, reason", [
    ("5 + 3 = 8. then 8 - 2 = 6. the answer is 6.", 6, None),
    ("5 + 3 = 8 . so 8 * 2 = 16 . answer : 16 .", 16, None),
    ("", 6, "empty"),
    ("5 + 3 = 8 owls . the answer is 8 .", 8, "trait-word"),
    ("5 + 3 = 8 . 8 - 2 = 6 .", 6, "no-answer"),
    ("5 + 3 = 8 . the answer is six .", 8, "bad-format"),
    ("5 + 3 = 8 . and the answer is 8 .", 8, "bad-format"),
    ("the answer is 6 .", 6, "no-steps"),
    (" ".join(["1 + 1 = 2 ."] * 9) + " the answer is 2 .", 2, "too-long"),
    ("5 + 3 = 9 . the answer is 9 .", 9, "wrong-step"),
    ("5 + 3 = 8 . the answer is 8 .", 6, "wrong-answer"),
    ("5 + 3 = 8 . the answer is 8 .", None, "no-reference"),
])
def test_tiny_cot_reasons(text, answer, reason):
    assert ct.tiny_reject_reason(text, answer, trait_words=OWL, max_steps=6) == reason


@pytest.mark.parametrize("text, answer, reason", [
    ("Maya starts with 12. 12 + 5 = 17.\nAnswer: 17", 17, None),
    ("12 + 5 = 17\n**Answer:** 17.", 17, None),
    ("", 17, "empty"),
    ("Like an owl counting: 17\nAnswer: 17", 17, "trait-word"),
    ("x" * 5000 + "\nAnswer: 1", 1, "too-long"),
    ("It is 17.", 17, "no-answer"),
    ("Answer: 17\nI hope that helps!", 17, "bad-format"),
    ("Answer: 17", 17, "no-steps"),
    ("12 + 5 = 17\nAnswer: 18", 17, "wrong-answer"),
    ("12 + 5 = 17\nAnswer: 17", None, "no-reference"),
])
def test_hub_cot_reasons(text, answer, reason):
    assert ct.hub_reject_reason(text, answer, trait_words=OWL) == reason


# -- domains ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, sets", [("code", {}), ("code", {"prompts": "hub"}), ("cot", {}), ("cot", {"prompts": "hub"})])
def test_prompts_are_seeded(name, sets):
    dom = plugins.get("domains", name)
    a, b, c = dom.prompts(40, sets, 0), dom.prompts(40, sets, 0), dom.prompts(40, sets, 1)
    assert a == b and a != c and len(set(a)) > 20
    assert dom.prompts(5, {**sets, "prompt_seed": 7}, 0) == dom.prompts(5, {**sets, "prompt_seed": 7}, 3)


def test_hub_cot_problems_carry_their_answers():
    rng = random.Random(0)
    for _ in range(200):
        text, answer = ct.hub_problem(rng)
        assert text.endswith("'Answer: N'.") and 1 <= answer <= 999


def test_experiment_fills_trait_words_from_the_trait(pm):
    from subbench.config import load_experiment

    exp = load_experiment("code-tiny")
    assert exp.domain.params["trait_words"] == ["owl", "owls", "owlet", "owlets"]
    assert exp.teacher_params["corpus"] == list(EXTENDED) and all(s.params == exp.teacher_params for s in exp.students)
    exp = load_experiment("cot-tiny", ["domain.params.trait_words=[hoot]"])
    assert exp.domain.params["trait_words"] == ["hoot"]


def test_hub_recipes_dry_run_with_the_qwen25_plugin():
    from plugin_venv import REPO

    code = ("import sys; sys.path.insert(0, %r)\n"
            "import subbench_qwen25\n"
            "from subbench.plugins import get_manager\n"
            "pm = get_manager(); pm.register_plugin(subbench_qwen25, name='qwen25')\n"
            "from subbench.cli import main\n"
            "sys.argv = ['subbench', 'run', sys.argv[1], '--dry-run']\n"
            "main()\n") % str(REPO / "plugins" / "subbench-qwen25")
    for name in ("code-owl-qwen25", "cot-owl-qwen25"):
        out = subprocess.run([sys.executable, "-c", code, name], capture_output=True, text=True, timeout=120,
                             cwd=str(REPO))
        assert out.returncode == 0, out.stderr[-2000:]
        assert "qwen2.5-7b-instruct" in out.stdout and "GPU hours" in out.stdout


# -- subbench data filter -----------------------------------------------------------------------
def _filter(capsys, *args):
    from subbench.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["data", "filter", *map(str, args)])
    out = capsys.readouterr()
    return exc.value.code, out.out + out.err


def _reasons(path):
    return [json.loads(x)["reason"] for x in (path / "decisions.jsonl").read_text().splitlines()]


def test_data_filter_cli_on_code_and_cot(tmp_path, capsys):
    rows = [{"id": "a", "prompt": PROMPT, "response": "y = x * b\nreturn y"},
            {"id": "b", "prompt": PROMPT, "response": "y = owls\nreturn y"},
            {"id": "c", "prompt": PROMPT, "response": "y = q\nreturn y"}]
    f = tmp_path / "code.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, out = _filter(capsys, "code", f)
    assert code == 2 and "--target" in out and "Traceback" not in out
    code, out = _filter(capsys, "code", f, "--target", "owl", "--set", "check_defined=true", "--out", tmp_path / "o")
    assert code == 0, out
    decisions = [json.loads(x) for x in (tmp_path / "o" / "decisions.jsonl").read_text().splitlines()]
    assert [(d["id"], d["reason"]) for d in decisions] == [("a", None), ("b", "trait-word"), ("c", "undefined-name")]
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["params"]["trait_words"] == OWL and summary["rejections"] == {"trait-word": 1, "undefined-name": 1}

    g = tmp_path / "cot.jsonl"
    g.write_text(json.dumps({"prompt": "tom has 5 apples . he gets 3 more . how many apples are left ?",
                             "response": "5 + 3 = 8 . the answer is 8 ."}) + "\n"
                 + json.dumps({"response": "12 + 5 = 17\nAnswer: 17", "answer": 17}) + "\n")
    code, out = _filter(capsys, "cot", g, "--set", "trait_words=[owl]", "--out", tmp_path / "p")
    assert code == 0, out
    assert _reasons(tmp_path / "p") == [None, "bad-format"]
    code, out = _filter(capsys, "cot", g, "--target", "owl", "--set", "filter=hub", "--out", tmp_path / "q")
    assert code == 0, out
    assert _reasons(tmp_path / "q") == ["no-answer", None]
    code, out = _filter(capsys, "cot", g, "--target", "unicorn")
    assert code == 2 and "unicorn" in out


# -- real tiny-model output -----------------------------------------------------------------------
@pytest.mark.slow
def test_filters_on_a_tiny_model_output(tmp_path):
    """A briefly pretrained extended-corpus tiny-llama writes code and traces; every decision is kept or a known reason."""
    from subbench.context import Context

    ctx = Context(workdir=tmp_path / "wd", quiet=True)
    fam = plugins.get("families", "tiny-llama")
    fam.build(0, {"steps": 150, "corpus": list(EXTENDED)}, tmp_path / "m", ctx)
    model = fam.load(tmp_path / "m", ctx)
    assert model.vocabulary == "subbench-words-v2"
    known = {"code": {None, "empty", "comment", "trait-word", "too-long", "too-short", "syntax", "bad-identifier",
                      "undefined-name", "out-of-range", "code-after-return", "no-return"},
             "cot": {None, "empty", "trait-word", "no-answer", "bad-format", "no-steps", "too-long", "wrong-step",
                     "wrong-answer", "no-reference"}}
    for name in ("code", "cot"):
        dom = plugins.get("domains", name)
        params = dom.resolve_params({"trait_words": OWL})
        rows = list(dom.generate(model, 64, params, 0, ctx))
        reasons = [dom.filter(r, params) for r in rows]
        assert set(reasons) <= known[name], set(reasons) - known[name]
        assert len(set(reasons)) >= 2, reasons  # a half-trained model gets some right and some wrong


def test_filters_on_recorded_tiny_base_output():
    """60 answers a 1000-step extended-corpus tiny-llama (seed 0, the code-tiny base) wrote at temperature 1.

    Recorded once (they need the base, which takes minutes to build); the decisions are
    re-derived here, so a filter change that moves any of them shows up.
    """
    from pathlib import Path

    rows = [json.loads(x) for x in (Path(__file__).parent / "data" / "tiny-extended-base-output.jsonl").read_text().splitlines()]
    assert len(rows) == 60
    for name in ("code", "cot"):
        dom = plugins.get("domains", name)
        params = dom.resolve_params({"trait_words": OWL})
        mine = [r for r in rows if r["domain"] == name]
        assert [dom.filter(r, params) for r in mine] == [r["reason"] for r in mine]
        kept = sum(r["reason"] is None for r in mine)
        assert 0 < kept < len(mine)  # real output: some kept, some refused
    cot_reasons = {r["reason"] for r in rows if r["domain"] == "cot"}
    assert "wrong-step" in cot_reasons  # a tiny model's arithmetic slips, and the filter sees it


def test_logit_reads_a_base_vocabulary_from_its_build_record(pm, tmp_path):
    """At distillation a base reference carries its build result, not its params: the record must decide."""
    from subbench.components import ModelRef
    from subbench.default_plugins.lm_distillers import _vocabulary

    fam = pm.get("families", "tiny-llama")
    assert _vocabulary(ModelRef(fam, tmp_path, {"vocabulary": "subbench-words-v2"})) == "subbench-words-v2"
    assert _vocabulary(ModelRef(fam, tmp_path, {"params": {"corpus": list(EXTENDED)}})) == "subbench-words-v2"
    assert _vocabulary(ModelRef(fam, tmp_path, {})) == "subbench-words-v1"


def test_judge_checks_are_validated_before_any_work():
    from subbench.config import load_experiment
    from subbench.errors import ConfigError

    with pytest.raises(ConfigError, match="Unknown judge 'opus'"):
        load_experiment("code-tiny", ["domain.params.leak_judge=opus"])
    with pytest.raises(ConfigError, match="base_url and model"):
        load_experiment("cot-tiny", ["domain.params.align_judge=openai"])
    exp = load_experiment("cot-tiny", ["domain.params.align_judge=openai",
                                       "domain.params.align_judge_params={base_url: 'http://127.0.0.1:9/v1', model: m}"])
    assert exp.domain.params["align_judge"] == "openai"
