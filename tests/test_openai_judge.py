"""The openai judge's offline parts: templates and verdict parsing, key handling, cache keys, Retry-After."""

from __future__ import annotations

import email.utils
import time

import pytest

from subbench import plugins
from subbench.errors import ConfigError
from subbench.judging.cache import ResponseCache, request_key
from subbench.judging.client import ChatClient, Endpoint, resolve_api_key, retry_after_seconds
from subbench.judging.templates import available, load_template


def test_shipped_templates_load_and_hash():
    names = available()
    assert {"compliance-v1", "trait-score-v1", "tiny-score-v1"} <= set(names)
    for name in names:
        tpl = load_template(name)
        assert len(tpl.sha256) == 64 and tpl.parse in ("label", "score")


@pytest.mark.parametrize("reply, expected", [
    ("COMPLY", 1.0), ("refuse", 0.0), ("Verdict: REFUSE.", 0.0), ("**Comply**", 1.0),
    ("COMPLY or REFUSE", None), ("", None), ("I think it complied", None), ("compliance", None),
])
def test_label_verdicts(reply, expected):
    assert load_template("compliance-v1").verdict(reply) == expected


@pytest.mark.parametrize("reply, expected", [
    ("85", 0.85), ("Score: 100", 1.0), ("0", 0.0), ("42.5 out of 100", 0.425),
    ("250", None), ("-3", None), ("no number", None), ("owl", None), ("3.14.15", None),
])
def test_score_verdicts(reply, expected):
    got = load_template("trait-score-v1").verdict(reply)
    assert got == pytest.approx(expected) if expected is not None else got is None


def test_template_renders_sample_without_reinterpreting_braces():
    tpl = load_template("compliance-v1")
    msgs = tpl.messages({"prompt": "do {target} now", "response": "{response} {x}"}, "compliance")
    assert msgs[0]["role"] == "system"
    assert "do {target} now" in msgs[1]["content"] and "{response} {x}" in msgs[1]["content"]


def test_template_errors_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match="No judge template 'nope'.*compliance-v1"):
        load_template("nope")
    bad = tmp_path / "bad.txt"
    bad.write_text("parse: label\nlabels: YES\n---\n{response}\n")
    with pytest.raises(ConfigError, match="labels as"):
        load_template(str(bad))
    custom = tmp_path / "mine-v2.txt"
    custom.write_text("parse: label\nlabels: YES=1, NO=0\n---\n{response}\n")
    assert load_template(str(custom)).verdict("yes") == 1.0


def test_missing_key_for_remote_endpoint_is_one_line(monkeypatch, tmp_path):
    monkeypatch.delenv("SUBBENCH_NO_SUCH_KEY", raising=False)
    monkeypatch.setenv("SUBBENCH_KEYS_FILE", str(tmp_path / "none.toml"))
    monkeypatch.setenv("SUBBENCH_OPENAI_KEYS", "api.example.com=SUBBENCH_NO_SUCH_KEY")
    with pytest.raises(ConfigError) as err:
        resolve_api_key("https://api.example.com/v1", "SUBBENCH_NO_SUCH_KEY")
    assert "SUBBENCH_NO_SUCH_KEY" in str(err.value) and "\n" not in str(err.value)
    assert resolve_api_key("http://127.0.0.1:8000/v1", None) == "EMPTY"  # loopback: no key needed
    monkeypatch.setenv("SUBBENCH_NO_SUCH_KEY", "sk-x")
    assert resolve_api_key("https://api.example.com/v1", "SUBBENCH_NO_SUCH_KEY") == "sk-x"


def test_judge_refuses_remote_endpoint_without_key_before_any_request(monkeypatch, tmp_path):
    from subbench.context import Context

    monkeypatch.delenv("SUBBENCH_NO_SUCH_KEY", raising=False)
    monkeypatch.setenv("SUBBENCH_KEYS_FILE", str(tmp_path / "none.toml"))
    monkeypatch.setenv("SUBBENCH_OPENAI_KEYS", "api.example.com=SUBBENCH_NO_SUCH_KEY")
    judge = plugins.get("judges", "openai")
    params = {"base_url": "https://api.example.com/v1", "model": "gpt-x", "api_key_env": "SUBBENCH_NO_SUCH_KEY",
              "cache_dir": str(tmp_path)}
    with pytest.raises(ConfigError, match="set the environment variable SUBBENCH_NO_SUCH_KEY"):
        judge.score([{"prompt": "p", "response": "r"}], None, params, Context(tmp_path, quiet=True))


def test_config_errors(tmp_path):
    judge = plugins.get("judges", "openai")
    with pytest.raises(ConfigError, match="base_url and model"):
        judge.score([{"response": "r"}], None, {}, None)
    with pytest.raises(ConfigError, match="unknown parameter 'temprature'.*Did you mean: temperature"):
        judge.resolve_params({"temprature": 0})
    with pytest.raises(ConfigError, match="measures compliance, not owl"):
        judge.score([{"response": "r"}], "owl", {"base_url": "http://127.0.0.1:9/v1", "model": "m",
                                                 "template": "compliance-v1"}, None)
    with pytest.raises(ConfigError, match="base_url must be an http"):
        Endpoint(base_url="localhost:8000", model="m")


def test_provenance_names_template_hash_not_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-should-not-appear")
    judge = plugins.get("judges", "openai")
    prov = judge.provenance({"base_url": "https://api.example.com/v1", "model": "gpt-x", "template": "compliance-v1"})
    assert prov["template"] == "compliance-v1" and prov["template_sha256"] == load_template("compliance-v1").sha256
    assert prov["model"] == "gpt-x" and "sk-should-not-appear" not in repr(prov)


def test_cache_key_covers_endpoint_model_prompt_params(tmp_path):
    msgs = [{"role": "user", "content": "hi"}]
    base = request_key("http://h/v1", "m", msgs, {"temperature": 0})
    assert base == request_key("http://h/v1/", "m", msgs, {"temperature": 0})
    assert len({base, request_key("http://h2/v1", "m", msgs, {"temperature": 0}),
                request_key("http://h/v1", "m2", msgs, {"temperature": 0}),
                request_key("http://h/v1", "m", [{"role": "user", "content": "ho"}], {"temperature": 0}),
                request_key("http://h/v1", "m", msgs, {"temperature": 1})}) == 5
    cache = ResponseCache(tmp_path)
    cache.put(base, "http://h/v1", "m", {"messages": msgs}, "42")
    cache.close()
    again = ResponseCache(tmp_path)
    assert again.get(base) == "42" and again.get("0" * 64) is None and len(again) == 1


def test_retry_after_parsing():
    assert retry_after_seconds({"retry-after": "2"}) == 2.0
    assert retry_after_seconds({"retry-after": "0.5"}) == 0.5
    assert retry_after_seconds({"retry-after": "100000"}) == 120.0
    assert retry_after_seconds({}) is None and retry_after_seconds({"retry-after": "soon"}) is None
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= retry_after_seconds({"retry-after": date}) <= 31


def test_connection_failures_are_retried_then_reported(tmp_path):
    from conftest_server import free_port

    from subbench.errors import SubbenchError

    waits: list[float] = []
    client = ChatClient(Endpoint(base_url=f"http://127.0.0.1:{free_port()}/v1", model="m", max_retries=3,
                                 timeout=2, backoff=0.1), sleep=waits.append)
    with pytest.raises(SubbenchError, match="failed 4 times .last: connection failed"):
        client.complete([{"role": "user", "content": "hi"}])
    assert client.stats.requests == 4 and len(waits) == 3
    assert waits[0] < waits[2]  # exponential backoff
