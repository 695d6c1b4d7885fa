"""A teacher reachable only as text: an OpenAI-compatible chat endpoint behind the LMHandle interface.

It has no weights and no logits (``open_weights = False``, ``model = None``), so steering
and logit distillation refuse it; everything that only needs text (system-prompt teachers,
sampled domain data, generation judges) works as with a local model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from subbench.judging.client import ChatClient, Endpoint


@dataclass
class OpenAIHandle:
    endpoint: Endpoint
    name: str
    system_prompt: str | None = None
    vocabulary: str | None = None
    cache_dir: Path | None = None
    open_weights: bool = False
    model: Any = None
    tokenizer: Any = None
    hooks: list[Any] = field(default_factory=list, repr=False)
    _client: ChatClient | None = field(default=None, repr=False)

    @property
    def client(self) -> ChatClient:
        if self._client is None:
            from subbench.judging.cache import ResponseCache

            cache = ResponseCache(self.cache_dir) if self.cache_dir else None
            self._client = ChatClient(self.endpoint, cache=cache)
        return self._client

    def messages(self, user: str, system: str | None = None) -> list[dict[str, str]]:
        system = self.system_prompt if system is None else system
        out = [{"role": "system", "content": system}] if system else []
        return out + [{"role": "user", "content": user}]

    def chat_text(self, user: str, system: str | None = None) -> str:
        """A readable rendering of the conversation; the endpoint applies its own chat template."""
        return "\n".join(f"<|{m['role']}|> {m['content']}" for m in self.messages(user, system))

    def generate(self, users: list[str], *, max_new_tokens: int = 40, temperature: float = 1.0,
                 top_p: float = 1.0, seed: int = 0, batch_size: int = 64, desc: str = "",
                 progress: Callable | None = None, allowed_token_ids: list[int] | None = None) -> list[str]:
        """Replies in input order; sample ``i`` asks for seed ``seed * 1_000_003 + i``.

        Endpoints treat the seed as best effort, so only a cached re-run is guaranteed to
        repeat a sampled reply. ``batch_size`` is accepted for interface parity; the
        endpoint's ``max_concurrency`` bounds the requests in flight instead. An endpoint
        exposes no logits, so ``allowed_token_ids`` (constrained decoding) is refused, not
        silently ignored.
        """
        if allowed_token_ids is not None:
            from subbench.errors import SubbenchError

            raise SubbenchError(f"{self.name} is a text-only endpoint and cannot restrict its tokens; "
                                "drop the domain's constrain option for this teacher.")
        convs = [self.messages(u) for u in users]
        bar = progress(total=len(convs), desc=desc or f"generate {self.name}", unit="sample") if progress else None
        try:
            replies = self.client.complete_many(
                convs, progress=bar, max_tokens=int(max_new_tokens), temperature=float(temperature),
                top_p=float(top_p), params_for=lambda i: {"seed": int(seed) * 1_000_003 + i})
        finally:
            if bar is not None:
                bar.close()
        return [r.strip() for r in replies]

    def close(self) -> None:
        if self._client is not None and self._client.cache is not None:
            self._client.cache.close()
        self._client = None
