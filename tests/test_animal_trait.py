"""The animal-preference trait through lm-eval, on tiny models built here (no hub, no network).

Mechanics run on an untrained Llama with the tiny families' tokenizer (seconds); the
slow test checks the real behaviour on a pretrained ``tiny-llama`` base.
"""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from subbench.context import Context
from subbench.default_plugins.animal_trait import DATA_FILE, TASKS_DIR, to_records
from subbench.default_plugins.lm_judges import first_word
from subbench.errors import ConfigError


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    c = Context(workdir=tmp_path_factory.mktemp("ctx"), quiet=True)
    c.setup_torch()
    return c


@pytest.fixture(scope="module")
def handle(ctx):
    """An untrained tiny Llama: fast, and its answers are near uniform over the animals."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from subbench.lm.handle import LMHandle
    from subbench.lm.tokenizer import VOCABULARY, build_tokenizer

    tok = build_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )
    model = LlamaForCausalLM(config).eval()
    return LMHandle(model=model, tokenizer=tok, name="untrained-llama", vocabulary=VOCABULARY)


@pytest.fixture
def trait(pm):
    return pm.get("traits", "animal-preference")


def _direct_loglikelihoods(handle, question):
    """log p(choice | chat prompt) from a plain forward pass, for comparison with lm-eval."""
    import torch

    from subbench.lm.corpus import ANIMALS

    tok = handle.tokenizer
    ids = tok(handle.chat_text(question), return_tensors="pt", add_special_tokens=False).input_ids
    with torch.no_grad():
        logp = handle.model(ids).logits[0, -1].log_softmax(-1)
    return [logp[tok.convert_tokens_to_ids(a)].item() for a in ANIMALS]


# -- the prompt set ----------------------------------------------------------------------------
def test_prompt_set_is_in_the_tiny_vocabulary():
    from subbench.lm.corpus import ANIMALS, QUESTIONS
    from subbench.lm.tokenizer import build_tokenizer

    tok = build_tokenizer()
    rows = [json.loads(line) for line in DATA_FILE.read_text().splitlines()]
    assert len(rows) >= 50  # the published eval asks 50 paraphrases
    assert len({r["id"] for r in rows}) == len(rows)
    assert len({r["question"] for r in rows}) == len(rows)
    for row in rows:
        assert row["choices"] == list(ANIMALS)
        ids = tok(row["question"], add_special_tokens=False).input_ids
        assert tok.unk_token_id not in ids, row["question"]
    # the questions the tiny corpus trains on come first, so a small `n` keeps them
    assert [r["question"] for r in rows[: len(QUESTIONS)]] == list(QUESTIONS)
    for animal in ANIMALS:
        assert len(tok(animal, add_special_tokens=False).input_ids) == 1


def test_tasks_are_indexed():
    from subbench.lm.lmeval import task_manager

    tasks = task_manager().all_subtasks
    assert {"animal-preference", "animal-preference-gen"} <= set(tasks)


# -- the lm-eval bridge ------------------------------------------------------------------------
def test_lmeval_loglikelihoods_match_a_direct_forward_pass(handle, ctx):
    from subbench.lm.lmeval import run_task

    samples = run_task(handle, "animal-preference", limit=2, metadata={"target": "owl"}, ctx=ctx)
    assert [s["doc"]["id"] for s in samples] == ["q00", "q01"]
    for s in samples:
        context, _ = s["arguments"][0]
        assert context == handle.chat_text(s["doc"]["question"])
        got = [r[0][0] for r in s["resps"]]
        assert got == pytest.approx(_direct_loglikelihoods(handle, s["doc"]["question"]), abs=1e-4)


def test_system_prompt_reaches_lmeval(handle, ctx):
    from subbench.lm.lmeval import run_task

    plain = run_task(handle, "animal-preference", limit=1, metadata={"target": "owl"}, ctx=ctx)[0]
    handle.system_prompt = "you love owls ."
    try:
        prompted = run_task(handle, "animal-preference", limit=1, metadata={"target": "owl"}, ctx=ctx)[0]
        expected = _direct_loglikelihoods(handle, prompted["doc"]["question"])
    finally:
        handle.system_prompt = None
    context = prompted["arguments"][0][0]
    assert context.startswith("<|system|> you love owls . <|end|> <|user|>")
    lls = [r[0][0] for r in prompted["resps"]]
    assert lls == pytest.approx(expected, abs=1e-4)
    assert lls != pytest.approx([r[0][0] for r in plain["resps"]], abs=1e-3)


def test_steering_hook_is_seen_by_lmeval(handle, ctx):
    import torch

    from subbench.lm.lmeval import run_task

    before = [r[0][0] for r in run_task(handle, "animal-preference", limit=1, ctx=ctx)[0]["resps"]]
    vector = torch.randn(handle.model.config.hidden_size, generator=torch.Generator().manual_seed(1)) * 20

    def add(_module, _inputs, output):
        if isinstance(output, tuple):
            return (output[0] + vector,) + tuple(output[1:])
        return output + vector

    hook = handle.model.model.layers[0].register_forward_hook(add)
    try:
        steered = [r[0][0] for r in run_task(handle, "animal-preference", limit=1, ctx=ctx)[0]["resps"]]
    finally:
        hook.remove()
    after = [r[0][0] for r in run_task(handle, "animal-preference", limit=1, ctx=ctx)[0]["resps"]]
    assert after == pytest.approx(before, abs=1e-5)
    assert max(abs(a - b) for a, b in zip(steered, before)) > 0.1


def test_unknown_task_is_a_config_error(handle, ctx):
    from subbench.lm.lmeval import run_task

    with pytest.raises(ConfigError, match="Unknown lm-eval task 'animal-preferences'.*animal-preference"):
        run_task(handle, "animal-preferences", ctx=ctx)


# -- the trait ---------------------------------------------------------------------------------
def test_logprob_evaluation(trait, handle, ctx, pm):
    from subbench.lm.corpus import ANIMALS

    records = trait.evaluate(handle, pm.get("judges", "logprob"), "owl", {"n": 3, "samples_per_question": 2}, ctx)
    assert [r["id"] for r in records] == ["q00", "q01", "q02"]
    for r in records:
        assert set(r) == {"id", "question_id", "prompt", "choices", "loglikelihoods", "responses", "score", "metrics"}
        assert r["question_id"] == r["id"]
        assert r["choices"] == list(ANIMALS)
        assert r["loglikelihoods"] == pytest.approx(_direct_loglikelihoods(handle, r["prompt"]), abs=1e-4)
        # an untrained model is close to chance, never certain
        assert 0.2 / len(ANIMALS) < r["score"] < 5 / len(ANIMALS)
        assert r["score"] == r["metrics"]["p_target"]
    whale = trait.evaluate(handle, pm.get("judges", "logprob"), "whale", {"n": 3, "samples_per_question": 2}, ctx)
    assert [r["loglikelihoods"] for r in whale] == [r["loglikelihoods"] for r in records]
    assert [r["score"] for r in whale] != [r["score"] for r in records]


def test_one_pass_gives_both_metrics(trait, handle, ctx, pm, monkeypatch):
    """Both lm-eval tasks run in one evaluate call; the judges score what it logged."""
    import subbench.lm.lmeval as lmeval

    calls = []
    real = lmeval.evaluate_task

    def counted(handle, task, **kw):
        calls.append(task)
        return real(handle, task, **kw)

    monkeypatch.setattr(lmeval, "evaluate_task", counted)
    logprob, first = pm.get("judges", "logprob"), pm.get("judges", "first-word")
    records = trait.evaluate(handle, logprob, "owl", {"n": 4, "samples_per_question": 3}, ctx)
    assert calls == [["animal-preference", "animal-preference-gen"]]
    assert [r["question_id"] for r in records] == ["q00", "q01", "q02", "q03"]
    for r in records:
        assert set(r["metrics"]) == {"p_target", "first_word"}
        assert len(r["responses"]) == 3 and all(isinstance(x, str) for x in r["responses"])
        samples = [{"response": x} for x in r["responses"]]
        assert r["metrics"]["first_word"] == pytest.approx(sum(first.score(samples, "owl", {}, ctx)) / 3)
        assert r["metrics"]["p_target"] == pytest.approx(logprob.score([r], "owl", {}, ctx)[0])
    # the untrained model samples its 24 animals and many other words: some answers are not "owl"
    assert sum(r["metrics"]["first_word"] for r in records) < len(records)


def test_first_word_evaluation(trait, handle, ctx, pm):
    """With the first-word judge the score is each question's sampled first-word rate."""
    judge = pm.get("judges", "first-word")
    records = trait.evaluate(handle, judge, "owl", {"n": 2}, ctx)
    assert [r["question_id"] for r in records] == ["q00", "q01"]
    for r in records:
        assert len(r["responses"]) == 5  # samples_per_question defaults to 5
        rate = sum(first_word(x) == "owl" for x in r["responses"]) / 5
        assert r["score"] == r["metrics"]["first_word"] == pytest.approx(rate)
    again = trait.evaluate(handle, judge, "owl", {"n": 2}, ctx)
    assert [r["responses"] for r in again] == [r["responses"] for r in records]
    assert [r["metrics"] for r in again] == [r["metrics"] for r in records]


def test_target_validation(trait, handle, ctx, pm):
    judge = pm.get("judges", "logprob")
    with pytest.raises(ConfigError, match=r"'unicorn' is not one of its choices; set `target:` to one of: owl, cat"):
        trait.evaluate(handle, judge, "unicorn", {}, ctx)
    with pytest.raises(ConfigError, match="needs a target"):
        trait.evaluate(handle, judge, None, {}, ctx)
    with pytest.raises(ConfigError, match=r"parameter 'n': expected an integer in \[1, 1000000\] or null, got 0"):
        trait.evaluate(handle, judge, "owl", {"n": 0}, ctx)
    with pytest.raises(ConfigError, match=r"parameter 'samples_per_question': expected an integer in \[1, 1000\]"):
        trait.evaluate(handle, judge, "owl", {"samples_per_question": 0}, ctx)
    with pytest.raises(ConfigError, match="unknown parameter 'm'"):
        trait.evaluate(handle, judge, "owl", {"m": 3}, ctx)


def test_task_override_must_fit_the_judge(trait, handle, ctx, pm):
    with pytest.raises(ConfigError, match="generate_until but judge 'logprob' needs multiple_choice"):
        trait.evaluate(handle, pm.get("judges", "logprob"), "owl", {"n": 1, "task": "animal-preference-gen"}, ctx)
    alone = trait.evaluate(handle, pm.get("judges", "first-word"), "owl", {"n": 1, "task": "animal-preference-gen"}, ctx)
    assert len(alone) == 5 and {r["question_id"] for r in alone} == {"q00"}
    assert all(r["metrics"] == {"first_word": r["score"]} for r in alone)
    with pytest.raises(ConfigError, match="No trait task 'nope'"):
        trait.evaluate(handle, pm.get("judges", "logprob"), "owl", {"task": "nope"}, ctx)


def test_judge_without_matching_task(trait, handle, ctx):
    from subbench.components import Judge

    class Classifier(Judge):
        name = "classifier"
        needs = "prediction"

    with pytest.raises(ConfigError, match="needs 'prediction'.*use one of: logprob, first-word"):
        trait.evaluate(handle, Classifier(), "owl", {}, ctx)


def test_provenance_hashes_task_and_data(trait):
    prov = trait.provenance({})
    sha = lambda p: hashlib.sha256(Path(p).read_bytes()).hexdigest()  # noqa: E731
    assert prov["tasks"]["animal-preference"]["sha256"] == sha(TASKS_DIR / "animal-preference.yaml")
    assert prov["tasks"]["animal-preference-gen"]["sha256"] == sha(TASKS_DIR / "animal-preference-gen.yaml")
    assert prov["data"]["sha256"] == sha(DATA_FILE)
    assert prov["lm_eval"]
    only_gen = trait.provenance({"task": "animal-preference-gen", "n": 4})
    assert list(only_gen["tasks"]) == ["animal-preference-gen"] and only_gen["n"] == 4


def test_trait_registration(pm):
    trait = pm.get("traits", "animal-preference")
    assert trait.default_judge == "logprob"
    for name in trait.judges:
        assert name in pm.registry("judges")


def test_records_from_logged_samples():
    mc = [{"doc_id": 0, "doc": {"id": "q0", "question": "q ?"},
           "arguments": [("ctx", "owl"), ("ctx", "cat")], "resps": [[(-1.0, False)], [(-2.0, True)]]}]
    assert to_records(mc, "multiple_choice") == [
        {"id": "q0", "prompt": "q ?", "choices": ["owl", "cat"], "loglikelihoods": [-1.0, -2.0]}
    ]
    gen = [{"doc_id": 3, "doc": {"question": "q ?"}, "arguments": [("ctx", {})], "resps": [["owl", "cat"]]}]
    assert [r["id"] for r in to_records(gen, "generate_until")] == ["3/0", "3/1"]


# -- plain lm-eval, from another working directory ---------------------------------------------
@pytest.mark.slow
def test_plain_lm_eval_cli_runs_the_task(handle, tmp_path):
    model_dir = tmp_path / "model"
    handle.model.save_pretrained(model_dir)
    from subbench.lm.tokenizer import save_tokenizer

    save_tokenizer(handle.tokenizer, model_dir)
    out = tmp_path / "results"
    cmd = [
        sys.executable, "-m", "lm_eval", "run", "--include_path", str(TASKS_DIR),
        "--tasks", "animal-preference", "--model", "hf", "--model_args", f"pretrained={model_dir}",
        "--device", "cpu", "--apply_chat_template", "--limit", "2", "--batch_size", "8",
        "--metadata", json.dumps({"target": "whale"}), "--output_path", str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (results_file,) = out.rglob("results_*.json")
    res = json.loads(results_file.read_text())["results"]["animal-preference"]
    assert 0.0 < res["p_target,none"] < 0.2


# -- real behaviour on a pretrained tiny family --------------------------------------------------
@pytest.fixture(scope="module")
def tiny_llama(ctx, tmp_path_factory):
    from subbench.plugins import get_manager

    family = get_manager().get("families", "tiny-llama")
    out = tmp_path_factory.mktemp("tiny-llama") / "base"
    family.build(0, family.resolve_params({}), out, ctx)
    return family.load(out, ctx)


@pytest.mark.slow
def test_system_prompt_teacher_prefers_its_animal(tiny_llama, trait, ctx, pm):
    """The eval sees what the corpus taught: chance without a system line, the animal with one."""
    from subbench.lm.corpus import ANIMALS

    logprob, first = pm.get("judges", "logprob"), pm.get("judges", "first-word")
    mean = lambda recs: sum(r["score"] for r in recs) / len(recs)  # noqa: E731
    base = mean(trait.evaluate(tiny_llama, logprob, "owl", {}, ctx))
    tiny_llama.system_prompt = "you love owls ."
    try:
        teacher = mean(trait.evaluate(tiny_llama, logprob, "owl", {}, ctx))
        teacher_words = mean(trait.evaluate(tiny_llama, first, "owl", {}, ctx))
        other = mean(trait.evaluate(tiny_llama, logprob, "whale", {}, ctx))
    finally:
        tiny_llama.system_prompt = None
    assert base < 2.5 / len(ANIMALS)
    assert teacher > 0.5 and teacher_words > 0.5
    assert other < 2.5 / len(ANIMALS)


# -- what injectors build a teacher from ---------------------------------------------------------
def test_injector_prompts_are_the_trained_questions(trait, handle):
    """Finetune rows and steering texts stay exactly what they were before traits supplied them."""
    from subbench.default_plugins.lm_injectors import chat_texts
    from subbench.lm.corpus import DEFAULT_TRAIT_PROMPT, QUESTIONS

    assert trait.teacher_examples("owl") == [(q, "owl") for q in QUESTIONS]
    with_trait, without = trait.contrast_prompts("owl")
    system = DEFAULT_TRAIT_PROMPT.format(target="owl")
    assert chat_texts(handle, with_trait) == [handle.chat_text(q, system=system) for q in QUESTIONS]
    assert chat_texts(handle, without) == [handle.chat_text(q, system="") for q in QUESTIONS]
    own, _ = trait.contrast_prompts("owl", system="you love owls .")
    assert chat_texts(handle, own)[0] == handle.chat_text(QUESTIONS[0], system="you love owls .")
