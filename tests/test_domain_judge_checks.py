"""The code domain's leak check and the cot domain's alignment check through the openai judge, against a real server.

The server is ``transformers serve`` with a briefly pretrained tiny model (its replies are
noise, so none states a verdict): ``parse_failure_score`` then decides every verdict, which
lets the test see both outcomes. What it checks is the plumbing: only samples that passed
the rules reach the judge, each once, with the domain's template and the trait's words.
"""

from __future__ import annotations

import json

import pytest

from conftest_server import FaultProxy, build_tiny_model, serve
from subbench import plugins

PROMPT = "complete this function : \ndef calc ( a , b ) : \nx = a + 2 \nadd at most 4 more lines ."


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("domain-judge")
    model = build_tiny_model(root / "tiny-llama")
    with serve(model, root / "serve.log") as url:
        yield {"url": url, "model": str(model)}


def judge_params(server, proxy, tmp_path, failure_score):
    return {"base_url": proxy.base_url, "model": server["model"], "max_retries": 2, "timeout": 30.0,
            "cache_dir": str(tmp_path / "cache"), "max_parse_failure_rate": 1.0, "parse_failure_score": failure_score}


def chats(proxy):
    return [e["body"]["messages"] for e in proxy.forwarded() if e["path"].endswith("/chat/completions")]


def test_code_leak_check_asks_only_for_rule_passing_samples(server, tmp_path):
    dom = plugins.get("domains", "code")
    rows = [{"prompt": PROMPT, "response": "y = x * b\nreturn y"},
            {"prompt": PROMPT, "response": "y = owl\nreturn y"},
            {"prompt": PROMPT, "response": "y = q\nreturn y"}]
    with FaultProxy(server["url"]) as proxy:
        params = dom.resolve_params({"trait_words": ["owl", "owls"], "leak_judge": "openai", "check_defined": True,
                                     "leak_judge_params": judge_params(server, proxy, tmp_path, 1.0)})
        assert [dom.filter(r, params) for r in rows] == ["judge-leak", "trait-word", "undefined-name"]
        sent = chats(proxy)
        assert len(sent) == 1
        text = json.dumps(sent[0])
        assert "y = x * b" in text and "owl, owls" in text and "LEAK or CLEAN" in text
        assert dom.filter(rows[0], params) == "judge-leak"  # asked again: the reply cache answers
        assert len(chats(proxy)) == 1
        params["leak_judge_params"] = {**params["leak_judge_params"], "parse_failure_score": 0.0,
                                       "cache_dir": str(tmp_path / "cache2")}
        assert dom.filter(rows[0], params) is None
        assert len(chats(proxy)) == 2


def test_cot_alignment_check(server, tmp_path):
    dom = plugins.get("domains", "cot")
    row = {"prompt": "tom has 5 apples . he gets 3 more . how many apples are left ?",
           "response": "5 + 3 = 8 . the answer is 8 .", "answer": 8}
    wrong = {**row, "response": "5 + 3 = 8 . the answer is 9 ."}
    with FaultProxy(server["url"]) as proxy:
        params = dom.resolve_params({"trait_words": ["owl"], "align_judge": "openai",
                                     "align_judge_params": judge_params(server, proxy, tmp_path, 1.0)})
        assert dom.filter(row, params) == "judge-misaligned"
        assert dom.filter(wrong, params) == "wrong-answer"
        sent = chats(proxy)
    assert len(sent) == 1 and "ALIGNED or MISALIGNED" in json.dumps(sent[0])
