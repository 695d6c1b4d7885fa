"""Offline generation with vLLM (GPU), optionally through a LoRA adapter, behind the LMHandle interface.

Thin on purpose: the same prompts, chat template and seeds as the transformers path, so a
7B run on a GPU swaps only the engine. vLLM is imported on first use. Unchecked on a GPU
in this repository's CI (no GPU there).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from subbench.errors import SubbenchError

MISSING = "vLLM is not installed; pip install 'subbench[gpu]' (needs a CUDA GPU)."


def import_vllm():
    try:
        import vllm
    except ImportError:
        raise SubbenchError(MISSING) from None
    return vllm


@dataclass
class VLLMHandle:
    """``source`` is a model directory or hub id; ``adapter`` a LoRA directory applied per request."""

    source: str
    name: str
    adapter: str | None = None
    revision: str | None = None
    system_prompt: str | None = None
    vocabulary: str | None = None
    dtype: str = "auto"
    max_lora_rank: int = 64
    gpu_memory_utilization: float = 0.85
    open_weights: bool = True
    hooks: list[Any] = field(default_factory=list, repr=False)
    _llm: Any = field(default=None, repr=False)

    @classmethod
    def from_dir(cls, path: str | Path, name: str, **kw: Any) -> "VLLMHandle":
        """A saved model, or a LoRA adapter directory (its base read from ``adapter_config.json``)."""
        path = Path(path)
        cfg = path / "adapter_config.json"
        if cfg.exists():
            base = json.loads(cfg.read_text())["base_model_name_or_path"]
            return cls(source=str(base), adapter=str(path), name=name, **kw)
        return cls(source=str(path), name=name, **kw)

    @property
    def llm(self):
        if self._llm is None:
            vllm = import_vllm()
            self._llm = vllm.LLM(model=self.source, revision=self.revision, dtype=self.dtype,
                                 enable_lora=self.adapter is not None, max_lora_rank=self.max_lora_rank,
                                 gpu_memory_utilization=self.gpu_memory_utilization)
        return self._llm

    @property
    def model(self):
        return self.llm

    @property
    def tokenizer(self):
        return self.llm.get_tokenizer()

    def chat_text(self, user: str, system: str | None = None) -> str:
        system = self.system_prompt if system is None else system
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def generate(self, users: list[str], *, max_new_tokens: int = 40, temperature: float = 1.0,
                 top_p: float = 1.0, seed: int = 0, batch_size: int = 64, desc: str = "",
                 progress: Callable | None = None) -> list[str]:
        """One vLLM call for all prompts (vLLM batches itself); sample ``i`` uses seed ``seed * 1_000_003 + i``."""
        vllm = import_vllm()
        from vllm.lora.request import LoRARequest

        texts = [self.chat_text(u) for u in users]
        params = [vllm.SamplingParams(max_tokens=int(max_new_tokens), temperature=float(temperature or 0.0),
                                      top_p=float(top_p) if temperature else 1.0, seed=int(seed) * 1_000_003 + i)
                  for i in range(len(texts))]
        lora = LoRARequest("adapter", 1, self.adapter) if self.adapter else None
        outputs = self.llm.generate(texts, params, lora_request=lora, use_tqdm=progress is not None)
        return [o.outputs[0].text.strip() for o in outputs]

    def close(self) -> None:
        self._llm = None
