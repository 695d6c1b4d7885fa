"""The family ``openai``: a model at an OpenAI-compatible endpoint, used as a teacher that only speaks text.

Its parameters are the endpoint parameters the ``openai`` judge declares too
(:mod:`subbench.default_plugins.api_judges`), so a teacher and a judge behind the same
server are configured alike.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from subbench import hookimpl
from subbench.components import Family
from subbench.default_plugins.api_judges import (
    _CACHE_DIR,
    _ENDPOINT_PARAMETERS,
    _check_endpoint,
    _check_endpoint_params,
    _endpoint,
)
from subbench.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from subbench.backends.openai_handle import OpenAIHandle
    from subbench.context import Context


class OpenAIFamily(Family):
    """A model at an OpenAI-compatible endpoint, used as a teacher that only speaks text."""

    name = "openai"
    version = "1"
    open_weights = False
    vocabulary = None
    description = ("A text-only teacher at an OpenAI-compatible endpoint (base_url, model); works with the "
                   "system-prompt injector and text distillation, not with steering or logit distillation.")
    parameters = {**_ENDPOINT_PARAMETERS, "cache_dir": _CACHE_DIR}

    def check_params(self, params: dict[str, Any]) -> None:
        _check_endpoint(params, "Family openai")

    def resolve_params(self, params: dict[str, Any] | None, where: str = "") -> dict[str, Any]:
        return _check_endpoint_params(super().resolve_params(params, where))

    def build(self, seed: int, params: dict[str, Any], out: Path, ctx: "Context") -> dict[str, Any]:
        from subbench.judging.client import resolve_api_key

        params = self.resolve_params(params, where="family openai")
        endpoint = _endpoint(params, "Family openai")
        resolve_api_key(endpoint.base_url, endpoint.api_key_env)
        pointer = {**endpoint.describe(), "max_concurrency": endpoint.max_concurrency,
                   "max_retries": endpoint.max_retries, "timeout": endpoint.timeout,
                   "cache_dir": str(params["cache_dir"]) if params["cache_dir"] else None}
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "endpoint.json").write_text(json.dumps(pointer, indent=2) + "\n")
        return {"model_id": endpoint.model, "base_url": endpoint.base_url, "backend": "openai-compatible"}

    def load(self, path: Path, ctx: "Context") -> "OpenAIHandle":
        from subbench.backends.openai_handle import OpenAIHandle
        from subbench.judging.client import Endpoint

        pointer_path = Path(path) / "endpoint.json"
        if not pointer_path.is_file():
            raise ConfigError(f"No endpoint pointer at {pointer_path}; build the openai base first.")
        p = json.loads(pointer_path.read_text())
        cache_dir = p.pop("cache_dir", None)
        endpoint = Endpoint(**p)
        cache = Path(cache_dir) if cache_dir else Path(ctx.workdir) / "endpoint-cache"
        return OpenAIHandle(endpoint=endpoint, name=f"{self.name}:{endpoint.model}", cache_dir=cache)


@hookimpl
def register_families(register):
    register(OpenAIFamily())
