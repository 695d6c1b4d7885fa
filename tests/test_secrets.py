"""A shared experiment cannot choose which secret goes to which host; servers' messages are redacted.

A real HTTP server on 127.0.0.1 records every request's headers: the assertions are about
what actually left the process, not about what a function returned.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from subbench import plugins
from subbench.cli import build_cli
from subbench.context import Context
from subbench.errors import ConfigError, SubbenchError

AWS = "aws-secret-0123456789-abcdefghijklmnop"
OPENAI = "sk-proj-user0123456789abcdefghijklmnop"


class Recorder:
    """An OpenAI-compatible stub: answers "85", or 401 echoing a masked key like real servers do."""

    def __init__(self):
        self.requests: list[dict] = []
        self.mode = "ok"
        rec = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                rec.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body.decode()})
                auth = self.headers.get("authorization") or ""
                if rec.mode == "401":
                    key = auth.split(" ", 1)[-1]
                    masked = key[:8] + "*" * 12 + key[-4:]
                    msg = f"Incorrect API key provided: {masked}. Your key {key} is wrong; see sk-abcd****wxyz."
                    self._send(401, {"error": {"message": msg, "type": "invalid_request_error"}})
                else:
                    self._send(200, {"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                                     "choices": [{"index": 0, "finish_reason": "stop",
                                                  "message": {"role": "assistant", "content": "85"}}],
                                     "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

            def _send(self, status, obj):
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def carried(self, secret: str) -> list[dict]:
        return [r for r in self.requests if secret in json.dumps(r)]


@pytest.fixture
def server():
    rec = Recorder()
    yield rec
    rec.server.shutdown()
    rec.server.server_close()


@pytest.fixture(autouse=True)
def user_env(monkeypatch, tmp_path):
    """Secrets in the environment, and no user allow-list unless a test sets one."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS)
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI)
    monkeypatch.setenv("SUBBENCH_KEYS_FILE", str(tmp_path / "keys.toml"))
    monkeypatch.delenv("SUBBENCH_OPENAI_KEYS", raising=False)


def judge_params(server, tmp_path, **kw):
    return {"base_url": server.base_url, "model": "m", "template": "tiny-score-v1", "max_retries": 0,
            "timeout": 5.0, "cache_dir": False, **kw}


EXPERIMENT = """name: hostile
teacher: {family: openai, params: {base_url: "URL", model: m, api_key_env: AWS_SECRET_ACCESS_KEY}}
trait: {name: animal-preference, target: owl}
injector: system-prompt
domain: {name: numbers, size: 10}
students: [{family: tiny-llama, seed: 0}]
distillation: sft
"""


def test_hostile_experiment_is_refused_at_validation_with_how_to_allow(server, tmp_path, capsys, monkeypatch):
    from subbench.cli import main

    exp = tmp_path / "hostile.yaml"
    exp.write_text(EXPERIMENT.replace("URL", server.base_url))
    with pytest.raises(SystemExit) as exit_:
        main(["run", str(exp), "--dry-run"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    assert "api_key_env AWS_SECRET_ACCESS_KEY may not be sent to 127.0.0.1" in err
    assert "SUBBENCH_OPENAI_KEYS" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert server.requests == []

    # the user's allow-list is the only way to send it
    monkeypatch.setenv("SUBBENCH_OPENAI_KEYS", "127.0.0.1=AWS_SECRET_ACCESS_KEY")
    allowed = CliRunner().invoke(build_cli(), ["run", str(exp), "--dry-run"])
    assert allowed.exit_code == 0, allowed.output


def test_judge_named_key_never_reaches_a_host_the_user_did_not_allow(server, tmp_path):
    judge = plugins.get("judges", "openai")
    params = judge_params(server, tmp_path, api_key_env="AWS_SECRET_ACCESS_KEY")
    with pytest.raises(ConfigError, match="may not be sent to 127.0.0.1"):
        judge.resolve_params(params)
    # even past validation (a plugin calling score directly), the client refuses before any request
    with pytest.raises(ConfigError, match="may not be sent"):
        judge.score([{"prompt": "p", "response": "r"}], None, params, Context(tmp_path, quiet=True))
    # an ensemble member asking for it is refused when the ensemble's params are resolved
    ensemble = plugins.get("judges", "ensemble")
    with pytest.raises(ConfigError, match="may not be sent"):
        ensemble.resolve_params({"judges": ["refusal", {"name": "openai", "params": params}]})
    assert server.requests == []


def test_default_key_goes_only_to_its_own_host(server, tmp_path):
    judge = plugins.get("judges", "openai")
    scores = judge.score([{"prompt": "p", "response": "r"}], None, judge_params(server, tmp_path),
                         Context(tmp_path, quiet=True))
    assert scores == [0.85]
    assert len(server.requests) == 1
    assert server.requests[0]["headers"].get("authorization") == "Bearer EMPTY"  # loopback: no key
    assert not server.carried(OPENAI) and not server.carried(AWS)
    with pytest.raises(ConfigError, match="may not be sent to 127.0.0.1"):
        judge.resolve_params(judge_params(server, tmp_path, api_key_env="OPENAI_API_KEY"))


def test_an_allowed_key_is_sent(server, tmp_path, monkeypatch):
    (tmp_path / "keys.toml").write_text('[keys]\n"127.0.0.1" = "MY_LOCAL_KEY"\n')
    monkeypatch.setenv("MY_LOCAL_KEY", "local-value-1")
    judge = plugins.get("judges", "openai")
    judge.score([{"prompt": "p", "response": "r"}], None, judge_params(server, tmp_path, api_key_env="MY_LOCAL_KEY"),
                Context(tmp_path, quiet=True))
    assert [r["headers"].get("authorization") for r in server.requests] == ["Bearer local-value-1"]


def test_key_like_fragments_in_server_errors_are_redacted(server, tmp_path, monkeypatch):
    monkeypatch.setenv("SUBBENCH_OPENAI_KEYS", "127.0.0.1=OPENAI_API_KEY")
    server.mode = "401"
    judge = plugins.get("judges", "openai")
    with pytest.raises(SubbenchError) as err:
        judge.score([{"prompt": "p", "response": "r"}], None, judge_params(server, tmp_path),
                    Context(tmp_path, quiet=True))
    msg = str(err.value)
    assert "HTTP 401" in msg and "Incorrect API key provided" in msg
    assert server.carried(OPENAI)  # it was sent (the user allowed it) and the server echoed it back
    for leak in (OPENAI, OPENAI[:8], OPENAI[-4:], "sk-abcd", "wxyz"):
        assert leak not in msg, leak


def test_base_url_tricks_are_refused(server):
    from subbench.judging.client import check_base_url, host_of

    judge = plugins.get("judges", "openai")
    for url in ("http://api.openai.com@127.0.0.1:9/v1", "http://127.0.0.1:9/v1#@api.openai.com",
                "http://127.0.0.1:9/v1?x=api.openai.com", "http://127.0.0.1:9\\@api.openai.com/v1"):
        with pytest.raises(ConfigError, match="base_url"):
            judge.resolve_params({"base_url": url, "model": "m"})
    assert host_of(check_base_url("https://API.OpenAI.com/v1/")) == "api.openai.com"
    assert server.requests == []
