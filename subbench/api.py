"""What a subbench plugin may import: the public, stable surface.

A plugin imports from here and nowhere else in subbench, so that the modules behind these
names can move without breaking plugins (``subbench.default_plugins`` and ``subbench.lm``
are internal)::

    from subbench.api import HFFamily, hookimpl

    FAMILY = HFFamily("my-7b", "org/my-7b", "<commit sha>", steering_layers=(14,))

    @hookimpl
    def register_families(register):
        register(FAMILY)

Names that would import something heavy (or a built-in plugin module) resolve on first
use (module-level ``__getattr__``), so a plugin that imports this module at load time
keeps ``subbench --help`` fast. docs/plugins.md lists every name and what it is for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from subbench.components import (
    MITIGATION_POINTS,
    Component,
    Distiller,
    Domain,
    Family,
    Injector,
    Judge,
    Mitigation,
    ModelRef,
    Param,
    ParamError,
    Trait,
    defaults_of,
    sampling_params,
)
from subbench.errors import ConfigError, SubbenchError, UnknownName
from subbench.hookspecs import hookimpl

#: Name -> (module, attribute), imported when first asked for.
_LAZY = {
    # model families a plugin instantiates
    "HFFamily": ("subbench.default_plugins.lm_families", "HFFamily"),
    "TinyFamily": ("subbench.default_plugins.lm_families", "TinyFamily"),
    "TINY_LLAMA": ("subbench.default_plugins.lm_families", "TINY_LLAMA"),
    "TINY_QWEN2": ("subbench.default_plugins.lm_families", "TINY_QWEN2"),
    # handles: what a family's load returns and traits, domains, distillers receive
    "LMHandle": ("subbench.lm.handle", "LMHandle"),
    "load_handle": ("subbench.lm.handle", "load_handle"),
    "OpenAIHandle": ("subbench.backends.openai_handle", "OpenAIHandle"),
    "VLLMHandle": ("subbench.backends.vllm_handle", "VLLMHandle"),
    # the run's context (workdir, device, progress bars, logging)
    "Context": ("subbench.context", "Context"),
    # the word-level vocabulary of the tiny families, for plugins that build a tiny test model
    "VOCABULARY": ("subbench.lm.tokenizer", "VOCABULARY"),
    "vocabulary_words": ("subbench.lm.tokenizer", "vocabulary_words"),
    "word_pre_tokenizer": ("subbench.lm.tokenizer", "_pre_tokenizer"),
    "build_tokenizer": ("subbench.lm.tokenizer", "build_tokenizer"),
    "save_tokenizer": ("subbench.lm.tokenizer", "save_tokenizer"),
    "load_tokenizer": ("subbench.lm.tokenizer", "load_tokenizer"),
    # a family plugin's tiny random model of its architecture (its contract tests build one)
    "tiny_tokenizer": ("subbench.testing", "tiny_tokenizer"),
    "save_tiny": ("subbench.testing", "save_tiny"),
}

__all__ = [
    "hookimpl",
    "Component", "Family", "Trait", "Injector", "Domain", "Distiller", "Judge", "Mitigation",
    "MITIGATION_POINTS", "Param", "ParamError", "defaults_of", "sampling_params", "ModelRef",
    "SubbenchError", "ConfigError", "UnknownName",
    *_LAZY,
]

if TYPE_CHECKING:  # pragma: no cover
    from subbench.backends.openai_handle import OpenAIHandle  # noqa: F401
    from subbench.backends.vllm_handle import VLLMHandle
    from subbench.context import Context
    from subbench.default_plugins.lm_families import TINY_LLAMA, TINY_QWEN2, HFFamily, TinyFamily
    from subbench.lm.handle import LMHandle, load_handle
    from subbench.lm.tokenizer import VOCABULARY, build_tokenizer, load_tokenizer, save_tokenizer, vocabulary_words
    from subbench.lm.tokenizer import _pre_tokenizer as word_pre_tokenizer
    from subbench.testing import save_tiny, tiny_tokenizer


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'subbench.api' has no attribute {name!r}; the public names are in __all__ "
                         "(docs/plugins.md).")


def __dir__() -> list[str]:
    return sorted(__all__)
