"""One client for every OpenAI-compatible endpoint: bounded concurrency, retries, time-outs, cache.

Retries cover what a busy server does on a normal day: 429 (waiting as long as its
``Retry-After`` asks), 5xx, time-outs and dropped connections, with exponential backoff.
Any other refusal (400, 401, 404, ...) ends the run at once with one line.

Which secret goes to which host is the user's decision, never an experiment file's: a
shared experiment chooses ``base_url`` and may name ``api_key_env``, but a key is read only
from the variable the user allowed for that host (``SUBBENCH_OPENAI_KEYS`` and the
``[keys]`` table of ``~/.config/subbench/keys.toml``; by default ``OPENAI_API_KEY`` for
api.openai.com only). Loopback hosts need no key. The key is held only in memory, and
anything key-like in a server's message is redacted before it is shown (docs/security.md).
"""

from __future__ import annotations

import email.utils
import ipaddress
import os
import random
import re
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import urlparse

from subbench.errors import ConfigError, SubbenchError
from subbench.hashing import canonical_json
from subbench.judging.cache import ResponseCache, request_key

LOCAL_HOSTS = {"localhost", "0.0.0.0"}
#: What a local server gets as the key: OpenAI's SDK insists on one, local servers ignore it.
LOCAL_DUMMY_KEY = "EMPTY"
MAX_RETRY_AFTER = 120.0

#: The user's host -> key variable mapping: "host=VAR,host2=VAR2".
KEYS_ENV = "SUBBENCH_OPENAI_KEYS"
#: Where the user's keys.toml is, when not ~/.config/subbench/keys.toml.
KEYS_FILE_ENV = "SUBBENCH_KEYS_FILE"
#: Allowed without any configuration.
DEFAULT_KEYS = {"api.openai.com": "OPENAI_API_KEY"}
_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def host_of(base_url: str) -> str:
    return (urlparse(base_url).hostname or "").lower()


def is_local(base_url: str) -> bool:
    host = host_of(base_url)
    if host in LOCAL_HOSTS or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def keys_file() -> Path:
    if os.environ.get(KEYS_FILE_ENV):
        return Path(os.environ[KEYS_FILE_ENV]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "subbench" / "keys.toml"


def allowed_keys() -> dict[str, str]:
    """host -> name of the environment variable whose value may be sent to that host."""
    out = dict(DEFAULT_KEYS)
    path = keys_file()
    if path.is_file():
        import tomllib

        try:
            table = tomllib.loads(path.read_text(encoding="utf-8")).get("keys", {})
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path} cannot be read ({exc}); fix it (a [keys] table of \"host\" = \"VAR\").") from None
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [keys] must be a table of \"host\" = \"VAR\" lines.")
        for host, var in table.items():
            out[str(host).lower()] = var
    for item in re.split(r"[,;\s]+", os.environ.get(KEYS_ENV, "")):
        if item:
            host, _, var = item.partition("=")
            out[host.strip().lower()] = var.strip()
    for host, var in out.items():
        if not isinstance(var, str) or not _VAR.match(var) or not host:
            raise ConfigError(f"The allowed key for {host!r} must name an environment variable (letters, digits, _), "
                              f"not {var!r}; fix {KEYS_ENV} or {path}.")
    return out


def key_env_for(base_url: str, api_key_env: str | None) -> str | None:
    """The variable whose key may go to ``base_url``'s host; refuses what the user has not allowed.

    ``api_key_env`` is what an experiment file asks for. It is honoured only when the user
    allowed exactly that variable for that host, so a shared file cannot send, say,
    AWS_SECRET_ACCESS_KEY to its author's server.
    """
    host = host_of(base_url)
    allowed = allowed_keys().get(host)
    if api_key_env and api_key_env != allowed:
        raise ConfigError(
            f"api_key_env {api_key_env} may not be sent to {host} (subbench sends a key only where you allow it); "
            f"if you trust {host} with it, add {host}={api_key_env} to the environment variable {KEYS_ENV} "
            f"(or \"{host}\" = \"{api_key_env}\" under [keys] in {keys_file()}), or remove api_key_env.")
    return allowed


def resolve_api_key(base_url: str, api_key_env: str | None) -> str:
    """The key the user allowed for this host; a loopback server may go without one, a remote one may not."""
    env = key_env_for(base_url, api_key_env)
    key = os.environ.get(env, "") if env else ""
    if key:
        return key
    if is_local(base_url):
        return LOCAL_DUMMY_KEY
    if env:
        raise ConfigError(f"No API key for {base_url}: set the environment variable {env}.")
    host = host_of(base_url)
    raise ConfigError(
        f"No API key is allowed for {host}: if you trust it, add {host}=VAR (the variable holding its key) to "
        f"{KEYS_ENV} or to [keys] in {keys_file()}.")


#: Key-like runs: OpenAI-style (also masked: sk-abc1****wxyz), bearer tokens, AWS key ids, long tokens.
_KEYLIKE = re.compile(
    r"(?i)\b(?:sk|pk|rk)-[A-Za-z0-9_*.\-]{3,}"
    r"|\bbearer\s+\S+"
    r"|\bAKIA[0-9A-Z]{12,}"
    r"|(?<![A-Za-z0-9_\-])(?=[A-Za-z0-9_\-]*[0-9])(?=[A-Za-z0-9_\-]*[A-Za-z])[A-Za-z0-9_\-]{24,}"
    r"|[A-Za-z0-9_\-]{2,}\*{3,}[A-Za-z0-9_\-]*")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with the given secrets (and their leading/trailing fragments) and anything key-like replaced by ***."""
    for secret in secrets:
        if secret and secret != LOCAL_DUMMY_KEY and len(secret) >= 4:
            text = text.replace(secret, "***")
    text = _KEYLIKE.sub("***", text)
    for secret in secrets:
        if secret and secret != LOCAL_DUMMY_KEY and len(secret) >= 16:
            text = text.replace(secret[:8], "***").replace(secret[-6:], "***")
    return text


def check_base_url(base_url: Any) -> str:
    parsed = urlparse(base_url) if isinstance(base_url, str) else None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigError(f"base_url must be an http(s) URL such as http://127.0.0.1:8000/v1, not {base_url!r}.")
    if "@" in parsed.netloc or parsed.query or parsed.fragment or re.search(r"[\s\\]", base_url):
        raise ConfigError(f"base_url {base_url!r} has credentials, a query, a fragment, spaces or backslashes; "
                          "give a plain http(s)://host[:port]/path.")
    return base_url.rstrip("/")


def retry_after_seconds(headers: Any) -> float | None:
    """Seconds a 429/503 asks us to wait (``Retry-After`` as seconds or an HTTP date), capped."""
    if headers is None:
        return None
    value = headers.get("retry-after") or headers.get("Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return max(0.0, min(seconds, MAX_RETRY_AFTER))


@dataclass
class Endpoint:
    base_url: str
    model: str
    api_key_env: str | None = None  # what the experiment asks for; the user's allow-list decides
    max_concurrency: int = 4
    max_retries: int = 6
    timeout: float = 60.0
    backoff: float = 0.5
    max_backoff: float = 30.0

    def __post_init__(self) -> None:
        self.base_url = check_base_url(self.base_url)
        if not self.model or not isinstance(self.model, str):
            raise ConfigError("The endpoint needs a model name: set params.model (e.g. gpt-4o-mini).")
        for name in ("max_concurrency",):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be at least 1, not {getattr(self, name)!r}.")
        if int(self.max_retries) < 0 or float(self.timeout) <= 0:
            raise ConfigError("max_retries must be >= 0 and timeout > 0 seconds.")

    def describe(self) -> dict[str, Any]:
        """What an entry may record about the endpoint (never the key, only the name of its variable)."""
        return {"base_url": self.base_url, "model": self.model, "api_key_env": self.api_key_env}


@dataclass
class ClientStats:
    requests: int = 0
    retries: int = 0
    cache_hits: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **kw: int) -> None:
        with self.lock:
            for k, v in kw.items():
                setattr(self, k, getattr(self, k) + v)

    def as_dict(self) -> dict[str, int]:
        return {"requests": self.requests, "retries": self.retries, "cache_hits": self.cache_hits}


class ChatClient:
    """Chat completions against one endpoint; thread-safe, cached when given a cache."""

    def __init__(self, endpoint: Endpoint, cache: ResponseCache | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.endpoint = endpoint
        self.cache = cache
        self._key = resolve_api_key(endpoint.base_url, endpoint.api_key_env)
        self._sleep = sleep
        self._client = None
        self._client_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(int(endpoint.max_concurrency))
        self.stats = ClientStats()

    def _openai(self):
        with self._client_lock:
            if self._client is None:
                try:
                    import openai
                except ImportError:  # pragma: no cover - listed in install_requires
                    raise SubbenchError("The openai package is missing; pip install 'openai>=1.0'.") from None
                self._client = openai.OpenAI(base_url=self.endpoint.base_url, api_key=self._key,
                                             timeout=float(self.endpoint.timeout), max_retries=0)
            return self._client

    def scrub(self, text: str) -> str:
        return redact(text, [self._key])

    def _backoff(self, attempt: int) -> float:
        base = min(self.endpoint.max_backoff, self.endpoint.backoff * (2 ** attempt))
        return base * (0.5 + random.random() / 2)

    def _request(self, messages: list[dict[str, str]], params: dict[str, Any]) -> str:
        import openai

        client = self._openai()
        last = ""
        for attempt in range(int(self.endpoint.max_retries) + 1):
            wait: float | None = None
            try:
                with self._slots:
                    self.stats.add(requests=1)
                    resp = client.chat.completions.create(model=self.endpoint.model, messages=messages, **params)
                if not resp.choices:
                    raise SubbenchError(f"The endpoint at {self.endpoint.base_url} returned no choices; check that "
                                        f"model '{self.endpoint.model}' serves chat completions.")
                return resp.choices[0].message.content or ""
            except openai.APIStatusError as exc:
                status = exc.status_code
                last = f"HTTP {status}"
                if status == 429 or status >= 500 or status == 408:
                    wait = retry_after_seconds(getattr(exc.response, "headers", None))
                else:
                    detail = self.scrub(str(getattr(exc, "message", "") or exc))[:200]
                    raise SubbenchError(
                        f"The endpoint at {self.endpoint.base_url} refused the request with HTTP {status} ({detail}); "
                        "check base_url, model and the key allowed for that host.") from None
            except openai.APITimeoutError:
                last = f"no reply within {self.endpoint.timeout:g} s"
            except openai.APIConnectionError as exc:
                last = f"connection failed ({self.scrub(type(exc.__cause__ or exc).__name__)})"
            if attempt == int(self.endpoint.max_retries):
                break
            self.stats.add(retries=1)
            self._sleep(wait if wait is not None else self._backoff(attempt))
        raise SubbenchError(
            f"The endpoint at {self.endpoint.base_url} failed {int(self.endpoint.max_retries) + 1} times "
            f"(last: {last}); try again later, or raise max_retries / timeout.")

    def complete(self, messages: list[dict[str, str]], **params: Any) -> str:
        """One reply, from the cache when this exact request was answered before."""
        params = {k: v for k, v in params.items() if v is not None}
        key = None
        if self.cache is not None:
            key = request_key(self.endpoint.base_url, self.endpoint.model, messages, params)
            hit = self.cache.get(key)
            if hit is not None:
                self.stats.add(cache_hits=1)
                return hit
        reply = self._request(messages, params)
        if self.cache is not None and key is not None:
            self.cache.put(key, self.endpoint.base_url, self.endpoint.model, {"messages": messages, "params": params}, reply)
        return reply

    def complete_many(self, conversations: list[list[dict[str, str]]], *, progress: Any = None,
                      params_for: Callable[[int], dict[str, Any]] | None = None, **params: Any) -> list[str]:
        """Replies in input order, up to ``max_concurrency`` in flight; the first failure ends the batch."""
        if not conversations:
            return []

        requests = [(conversations[i], {**params, **(params_for(i) if params_for else {})})
                    for i in range(len(conversations))]
        # Identical requests (say, two empty responses to judge) are sent once.
        first: dict[str, int] = {}
        slot = [first.setdefault(canonical_json(r), i) for i, r in enumerate(requests)]
        unique = sorted(set(slot))
        copies = Counter(slot)

        def one(i: int) -> str:
            reply = self.complete(requests[i][0], **requests[i][1])
            if progress is not None:
                progress.update(copies[i])
            return reply

        workers = min(int(self.endpoint.max_concurrency), len(unique))
        if workers == 1:
            replies = {i: one(i) for i in unique}
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="subbench-endpoint") as pool:
                futures = {i: pool.submit(one, i) for i in unique}
                try:
                    replies = {i: f.result() for i, f in futures.items()}
                except BaseException:
                    for f in futures.values():
                        f.cancel()
                    raise
        return [replies[s] for s in slot]
