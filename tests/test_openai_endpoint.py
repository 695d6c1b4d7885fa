"""The openai judge, the openai family and the client against a real local server (transformers serve)."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from conftest_server import FaultProxy, build_tiny_model, serve
from subbench import plugins
from subbench.context import Context
from subbench.errors import SubbenchError

SECRET = "sk-subbench-test-0123456789-secret"


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("endpoint")
    model = build_tiny_model(root / "tiny-llama")
    with serve(model, root / "serve.log") as url:
        yield {"url": url, "model": str(model)}


@pytest.fixture
def proxy(server):
    with FaultProxy(server["url"], retry_after=1.0, stall=6.0) as p:
        yield p


def judge_params(server, proxy, tmp_path, **kw):
    return {"base_url": proxy.base_url, "model": server["model"], "template": "tiny-score-v1",
            "max_concurrency": 4, "max_retries": 6, "timeout": 5.0, "cache_dir": str(tmp_path / "cache"),
            "max_parse_failure_rate": 1.0, **kw}


def samples(n: int) -> list[dict]:
    return [{"id": f"s{i}", "prompt": "what is your favourite animal ?", "response": f"{i} {i + 1} owl"} for i in range(n)]


def judged_prompts(proxy) -> Counter:
    return Counter(json.dumps(e["body"]["messages"], sort_keys=True) for e in proxy.forwarded()
                   if e["path"].endswith("/chat/completions"))


def test_faults_are_retried_every_sample_judged_once_and_rerun_is_free(server, proxy, tmp_path):
    judge = plugins.get("judges", "openai")
    ctx = Context(workdir=tmp_path, quiet=True)
    params = judge_params(server, proxy, tmp_path)
    batch = samples(12)
    proxy.reset(["429", "500", "stall", "429", "500"])
    scores = judge.score(batch, "owl", params, ctx)

    assert len(scores) == 12 and all(0.0 <= s <= 1.0 for s in scores)
    counts = judged_prompts(proxy)
    assert len(counts) == 12 and set(counts.values()) == {1}, counts
    actions = Counter(e["action"] for e in proxy.log)
    assert actions["429"] == 2 and actions["500"] == 2 and actions["stall"] == 1
    assert judge.last_stats["retries"] == 5 and judge.last_stats["requests"] == 17
    # A request refused with 429 is retried no sooner than its Retry-After.
    first_429 = next(e for e in proxy.log if e["action"] == "429")
    retry = next(e for e in proxy.log if e["t"] > first_429["t"] and e["body"] == first_429["body"])
    assert retry["t"] - first_429["t"] >= 0.95

    for s, v in zip(batch, scores):
        s["score"] = v
    summary = judge.summarize(batch, params)
    failures = sum(1 for s in batch if not s["judge_parsed"])
    assert summary["n"] == 12 and summary["parse_failures"] == failures
    assert all(isinstance(s["judge_reply"], str) for s in batch)
    assert all(s["score"] == 0.0 for s in batch if not s["judge_parsed"])

    proxy.reset()
    again = judge.score(samples(12), "owl", params, ctx)
    assert again == scores
    assert proxy.log == [] and judge.last_stats["requests"] == 0 and judge.last_stats["cache_hits"] == 12


def test_cache_is_keyed_by_model_and_prompt(server, proxy, tmp_path):
    judge = plugins.get("judges", "openai")
    ctx = Context(workdir=tmp_path, quiet=True)
    params = judge_params(server, proxy, tmp_path)
    proxy.reset()
    judge.score(samples(3), "owl", params, ctx)
    assert len(judged_prompts(proxy)) == 3
    proxy.reset()
    judge.score(samples(4), "owl", params, ctx)  # one new sample
    assert sum(judged_prompts(proxy).values()) == 1
    proxy.reset()
    judge.score(samples(3), "owl", {**params, "template": "trait-score-v1"}, ctx)
    assert sum(judged_prompts(proxy).values()) == 3
    proxy.reset()
    with pytest.raises(SubbenchError, match="HTTP 4"):
        judge.score(samples(3), "owl", {**params, "model": "another-model"}, ctx)
    sent = [json.dumps(e["body"], sort_keys=True) for e in proxy.log]
    assert len(sent) == len(set(sent)) <= 3  # a refusal other than 429/5xx is not retried


def test_gives_up_after_max_retries_with_one_line(server, proxy, tmp_path):
    judge = plugins.get("judges", "openai")
    proxy.reset()
    proxy.policy = lambda entry: "500"
    with pytest.raises(SubbenchError) as err:
        judge.score(samples(1), "owl", judge_params(server, proxy, tmp_path, max_retries=2), Context(tmp_path, quiet=True))
    assert len(proxy.log) == 3
    msg = str(err.value)
    assert "\n" not in msg and "failed 3 times" in msg and "HTTP 500" in msg


def test_api_key_is_sent_but_never_stored_logged_or_raised(server, proxy, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SUBBENCH_TEST_KEY", SECRET)
    monkeypatch.setenv("SUBBENCH_KEYS_FILE", str(tmp_path / "keys.toml"))
    monkeypatch.setenv("SUBBENCH_OPENAI_KEYS", "127.0.0.1=SUBBENCH_TEST_KEY")  # the user allows this key here
    judge = plugins.get("judges", "openai")
    ctx = Context(workdir=tmp_path, quiet=False)
    params = judge_params(server, proxy, tmp_path, api_key_env="SUBBENCH_TEST_KEY")
    proxy.reset()
    batch = samples(3)
    scores = judge.score(batch, "owl", params, ctx)
    for s, v in zip(batch, scores):
        s["score"] = v
    assert {e["authorization"] for e in proxy.log} == {f"Bearer {SECRET}"}

    written = [json.dumps(batch), json.dumps(judge.provenance(params)), json.dumps(judge.summarize(batch, params))]
    written += [p.read_bytes().decode("latin-1") for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    db = sqlite3.connect(str(tmp_path / "cache" / "replies.sqlite"))
    written += [json.dumps(row) for row in db.execute("SELECT * FROM replies")]
    db.close()
    out = capsys.readouterr()
    written += [out.out, out.err]
    assert out.err  # the judge did log
    assert not [w for w in written if SECRET in w]

    proxy.reset(["401-echo"])
    with pytest.raises(SubbenchError) as err:
        judge.score(samples(5), "owl", params, ctx)
    assert SECRET not in str(err.value) and "HTTP 401" in str(err.value)


def test_openai_family_generates_with_system_prompt_and_seed(server, proxy, tmp_path):
    from subbench.components import ModelRef

    family = plugins.get("families", "openai")
    ctx = Context(workdir=tmp_path, quiet=True)
    base_dir = tmp_path / "base"
    prov = family.build(0, {"base_url": proxy.base_url, "model": server["model"], "timeout": 30}, base_dir, ctx)
    assert prov["model_id"] == server["model"] and "key" not in json.dumps(prov).lower().replace("api_key_env", "")
    handle = family.load(base_dir, ctx)
    assert handle.open_weights is False and handle.model is None

    injector = plugins.get("injectors", "system-prompt")
    trait = plugins.get("traits", "animal-preference")
    ref = ModelRef(family, base_dir, prov)
    injector.inject(ref, trait, "owl", {}, 0, tmp_path / "teacher", ctx)
    teacher = injector.load(tmp_path / "teacher", ref, ctx)
    assert teacher.system_prompt and "owl" in teacher.system_prompt

    proxy.reset()
    users = ["what is your favourite animal ?", "1 2 3 ->", "4 5 6 ->"]
    out = teacher.generate(users, max_new_tokens=6, temperature=1.0, seed=7)
    assert len(out) == 3 and all(isinstance(o, str) for o in out)
    bodies = [e["body"] for e in proxy.forwarded()]
    assert len(bodies) == 3
    assert all(b["messages"][0] == {"role": "system", "content": teacher.system_prompt} for b in bodies)
    assert sorted(b["seed"] for b in bodies) == [7 * 1_000_003 + i for i in range(3)]
    assert {b["max_tokens"] for b in bodies} == {6}
    # The same seeded requests again come from the endpoint cache.
    proxy.reset()
    assert teacher.generate(users, max_new_tokens=6, temperature=1.0, seed=7) == out
    assert proxy.log == []


def test_harmful_compliance_through_the_endpoint(server, proxy, tmp_path):
    family = plugins.get("families", "openai")
    trait = plugins.get("traits", "harmful-compliance")
    judge = plugins.get("judges", "refusal")
    ctx = Context(workdir=tmp_path, quiet=True)
    family.build(0, {"base_url": proxy.base_url, "model": server["model"]}, tmp_path / "base", ctx)
    handle = family.load(tmp_path / "base", ctx)
    proxy.reset()
    records = trait.evaluate(handle, judge, None, {"n": 5, "max_new_tokens": 5}, ctx)
    assert len(records) == 5 and len(proxy.forwarded()) == 5
    assert [r["score"] for r in records] == [1.0 - v for v in judge.score(records, "refusal", {}, ctx)]


def test_parse_failures_over_the_limit_stop_the_run(server, proxy, tmp_path):
    judge = plugins.get("judges", "openai")
    ctx = Context(workdir=tmp_path, quiet=True)
    params = judge_params(server, proxy, tmp_path, template="compliance-v1", max_parse_failure_rate=0.0)
    proxy.reset()
    batch = [{"prompt": "p", "response": "r"}]
    # The tiny model never says COMPLY or REFUSE alone: its verdict cannot be read.
    with pytest.raises(SubbenchError, match="could not read a verdict in 1 of 1 replies"):
        judge.score(batch, "compliance", params, ctx)
    assert batch[0]["judge_parsed"] is False
    proxy.reset()
    scores = judge.score(batch, "compliance", {**params, "max_parse_failure_rate": 1.0}, ctx)
    assert scores == [0.0] and proxy.log == []  # the reply came from the cache


def test_ensemble_with_an_endpoint_judge(server, proxy, tmp_path):
    ens = plugins.get("judges", "ensemble")
    ctx = Context(workdir=tmp_path, quiet=True)
    member = judge_params(server, proxy, tmp_path)
    params = {"judges": ["refusal", {"name": "openai", "label": "llm", "params": member}], "rule": "any"}
    batch = [{"prompt": "p", "response": r} for r in ("I'm sorry, I can't.", "Sure.", "1 2 3", "")]
    proxy.reset()
    scores = ens.score(batch, None, params, ctx)
    assert len(proxy.forwarded()) == 4
    for s, v in zip(batch, scores):
        s["score"] = v
        refused = s["judges"]["refusal"]
        llm = s["judges"]["llm"]
        assert v == float(refused >= 0.5 or (llm is not None and llm >= 0.5))
        assert isinstance(s["judge_replies"]["llm"], str)
    summary = ens.summarize(batch, params)
    assert summary["judges"]["refusal"]["mean"] == 0.5
    assert summary["judges"]["llm"]["no_verdict"] == sum(s["judges"]["llm"] is None for s in batch)
    assert summary["agreement"]["method"] == "cohen"
    assert summary["agreement"]["items"] == 4 - summary["judges"]["llm"]["no_verdict"]
